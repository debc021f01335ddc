"""Benchmark: our GPTModel against Hugging Face's GPT2LMHeadModel holding the same weights.

A randomly initialised ``transformers`` GPT-2 (no download) is saved in the Hugging Face layout
and loaded into our model with ``llmhelpers.pretrained``; both then run the same inputs in this
process, in eval mode without gradients (and, with ``--train``, forward + backward). Results
are printed as ratios (our time / Hugging Face's time), since absolute times depend on the
machine. Our model is timed three ways: written out (explicit attention), with the fused SDPA
attention kernel, and with SDPA plus PyTorch's fused LayerNorm and GELU (``use_fused_ops``).

    python benchmarks/bench_model.py [--size 124M] [--batch 2] [--seq 128] [--repeats 3] [--train]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from timing import median_time  # benchmarks/timing.py, beside this script

from llmhelpers.model import GPT2_SIZES
from llmhelpers.pretrained import compare_with_hf, load_gpt2, save_random_hf_gpt2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(GPT2_SIZES), default="124M")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", action="store_true", help="also time forward + backward")
    args = parser.parse_args()

    d_model, n_heads, n_layers = GPT2_SIZES[args.size]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; GPT-2 {args.size} "
        f"shape (random weights), batch {args.batch} x seq {args.seq}"
    )
    with tempfile.TemporaryDirectory() as directory:
        hf_model, _ = save_random_hf_gpt2(
            directory, n_layer=n_layers, n_head=n_heads, n_embd=d_model, vocab_size=50_257,
            n_positions=1024,
        )  # fmt: skip
        ours = {
            "ours (explicit attention)": load_gpt2(directory),
            "ours (fused SDPA)": load_gpt2(directory, use_sdpa=True),
            "ours (SDPA + fused norm/GELU)": load_gpt2(
                directory, use_sdpa=True, use_fused_ops=True
            ),
        }
    for model in ours.values():
        assert compare_with_hf(hf_model, model, batch_size=1, seq_len=32) <= 1e-4
    print(
        f"same logits as Hugging Face (max difference <= 1e-4); "
        f"HF attention: {hf_model.config._attn_implementation}"
    )

    ids = torch.randint(
        0, 50_257, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)
    )
    models = {"Hugging Face GPT2LMHeadModel": lambda x: hf_model(x).logits}
    models |= {name: model for name, model in ours.items()}
    with torch.no_grad():
        forward = {
            name: median_time(lambda f=f: f(ids), args.repeats) for name, f in models.items()
        }
    backward = {}
    if args.train:
        for name, f in models.items():
            backward[name] = median_time(lambda f=f: f(ids).float().mean().backward(), args.repeats)

    reference = "Hugging Face GPT2LMHeadModel"
    print(
        f"\n{'model':<30} {'forward ms':>10} {'ratio':>6}"
        + (f" {'fwd+bwd ms':>11} {'ratio':>6}" if args.train else "")
    )
    for name in models:
        line = f"{name:<30} {1e3 * forward[name]:>10.1f} {forward[name] / forward[reference]:>6.2f}"
        if args.train:
            line += f" {1e3 * backward[name]:>11.1f} {backward[name] / backward[reference]:>6.2f}"
        print(line)
    print("\nratio = time / Hugging Face's time (below 1: ours is faster)")


if __name__ == "__main__":
    main()
