"""Benchmark our BPE: training time, encoding speed against tiktoken, characters per token.

Run: ``.venv/bin/python benchmarks/bench_tokenizer.py [--vocab-sizes 512 1024] [--naive]
[--simple]``

Trains on the full tiny-shakespeare corpus (the notebooks' default tokenizer uses the 90%
training split; the numbers barely differ). Encoding is timed on the whole corpus, with our
pure-Python encoder (cold: empty chunk cache; warm: second pass) and with the same table in
tiktoken's Rust encoder (``to_tiktoken()``). All times are the best of ``--repeats`` runs.

Last, one very long pre-split chunk (24,000 letters, ``"the" * 8000``) with GPT-2's table:
our heap encoder ``bpe_encode_piece`` against tiktoken (``--simple`` adds the O(n²) teaching
version ``bpe_encode_piece_simple``: about a minute), and training on one long chunk.
"""

from __future__ import annotations

import argparse
import time

from llmhelpers.data import load_text, train_val_split
from llmhelpers.tokenizer import (
    DEFAULT_VOCAB_SIZE,
    BPETokenizer,
    bpe_encode_piece,
    bpe_encode_piece_simple,
    gpt2_tokenizer,
)


def best_time(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[DEFAULT_VOCAB_SIZE, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive", action="store_true",
                        help="also time the recount-per-merge trainer (slow) on the first size")
    parser.add_argument("--simple", action="store_true",
                        help="also time the O(n^2) chunk encoder on the long chunk (~1 min)")
    args = parser.parse_args()

    text = load_text("tiny-shakespeare")
    validation = train_val_split(text)[1]
    print(f"corpus: tiny-shakespeare, {len(text):,} characters")

    for vocab_size in args.vocab_sizes:
        train_s, tokenizer = best_time(lambda v=vocab_size: BPETokenizer.train(text, v), 1)
        encoding = tokenizer.to_tiktoken()

        cold_s, ids = best_time(lambda t=tokenizer: t.encode(text), 1)
        warm_s, _ = best_time(lambda t=tokenizer: t.encode(text), args.repeats)
        fast_s, fast_ids = best_time(lambda e=encoding: e.encode(text), args.repeats)
        assert ids == fast_ids, "our encoder and tiktoken disagree"

        print(f"\nvocab_size={vocab_size} ({tokenizer.n_vocab} ids with special tokens)")
        print(f"  training (incremental):  {train_s:8.2f} s")
        if args.naive and vocab_size == args.vocab_sizes[0]:
            naive_s, naive = best_time(lambda v=vocab_size: BPETokenizer.train_naive(text, v), 1)
            assert naive.merges == tokenizer.merges
            print(f"  training (naive):        {naive_s:8.2f} s  "
                  f"(incremental is {naive_s / train_s:.0f}x faster, same merges)")
        mb = len(text.encode("utf-8")) / 1e6
        print(f"  encode, ours (cold):     {cold_s:8.3f} s  {mb / cold_s:7.2f} MB/s")
        print(f"  encode, ours (warm):     {warm_s:8.3f} s  {mb / warm_s:7.2f} MB/s")
        print(f"  encode, to_tiktoken():   {fast_s:8.3f} s  {mb / fast_s:7.2f} MB/s  "
              f"(ours cold/warm is {cold_s / fast_s:.1f}x / {warm_s / fast_s:.1f}x slower)")
        print(f"  characters per token:    {len(text) / len(ids):8.3f} (whole corpus), "
              f"{len(validation) / len(tokenizer.encode(validation)):.3f} (validation split)")

    gpt2 = gpt2_tokenizer()
    ours_gpt2 = BPETokenizer.from_gpt2()
    cold_s, ids = best_time(lambda: ours_gpt2.encode(text), 1)
    fast_s, fast_ids = best_time(lambda: gpt2.encode(text), args.repeats)
    assert ids == fast_ids, "BPETokenizer.from_gpt2() and tiktoken's gpt2 disagree"
    print("\nGPT-2 (50,257 ids), ours from GPT-2's files vs tiktoken's gpt2: identical ids")
    print(f"  encode, ours (cold):     {cold_s:8.3f} s, tiktoken {fast_s:.3f} s "
          f"({cold_s / fast_s:.1f}x slower)")
    print(f"  characters per token:    {len(text) / len(ids):8.3f}")

    long_chunk = "the" * 8000
    piece = long_chunk.encode()
    assert len(ours_gpt2.pre_split(long_chunk)) == 1
    heap_s, ids = best_time(lambda: bpe_encode_piece(piece, ours_gpt2.ranks), args.repeats)
    fast_s, fast_ids = best_time(lambda: gpt2.encode(long_chunk), args.repeats)
    assert ids == fast_ids
    print(f"\none pre-split chunk of {len(long_chunk):,} letters, GPT-2's table: identical ids")
    print(f"  bpe_encode_piece (heap): {heap_s:8.3f} s, tiktoken {fast_s:.4f} s "
          f"({heap_s / fast_s:.0f}x slower)")
    if args.simple:
        simple_s, simple_ids = best_time(
            lambda: bpe_encode_piece_simple(piece, ours_gpt2.ranks), 1)
        assert simple_ids == ids
        print(f"  bpe_encode_piece_simple: {simple_s:8.3f} s ({simple_s / heap_s:.0f}x the heap "
              "version)")
    for chunk_text in ("ab" * 20_000, "the" * 8000):
        train_s, _ = best_time(lambda t=chunk_text: BPETokenizer.train(t, DEFAULT_VOCAB_SIZE), 1)
        print(f"  training {DEFAULT_VOCAB_SIZE} ids on {chunk_text[:6]!r}... "
              f"({len(chunk_text):,} characters, one chunk): {train_s:.2f} s")


if __name__ == "__main__":
    main()
