"""Tokenizers: from text to the integer ids a model reads, and back.

Three ways to cut text into pieces, in the order the notebook meets them:

* ``CharTokenizer``: one id per character of a training text. Tiny vocabulary, long sequences,
  and any character it never saw is an error.
* ``WordTokenizer``: one id per word or punctuation mark. Short sequences, but the vocabulary
  is huge and every unseen word collapses into ``<|unk|>``.
* ``BPETokenizer``: byte-level byte-pair encoding, as in GPT-2. Start from the 256 byte values
  (so every text can be encoded), then learn "merges": the most frequent adjacent pair of
  tokens becomes a new token, again and again, until the vocabulary has the size we want.

How a ``BPETokenizer`` is organised
-----------------------------------
* Text is first pre-split with GPT-2's regular expression into chunks (a word with its leading
  space, a run of digits, a run of punctuation, a run of whitespace). Merges never cross a chunk
  boundary, so " the" can become one token but "e t" never can.
* The vocabulary is a table ``ranks``: token bytes -> id. The id doubles as the merge priority
  (lower id = learned earlier). Our own tokenizers give byte ``b`` the id ``b`` and number merges
  256, 257, ...; GPT-2's table uses other ids for single bytes, and the same code handles both.
* Encoding a chunk works like tiktoken: start from single bytes, then repeatedly join the
  adjacent pair whose joined bytes have the lowest rank (leftmost first on ties) until no joined
  pair is in the table. Because this is exactly tiktoken's rule, ``to_tiktoken()`` gives the same
  ids by construction, and the tokenizer built from GPT-2's files gives GPT-2's ids.
  ``bpe_encode_piece_simple`` is that rule written plainly (O(n²) for a chunk of n bytes);
  ``bpe_encode_piece``, used for encoding, is the same rule with a heap (O(n log n)), so that
  one very long chunk (a run of 100,000 letters) does not take minutes.
* The pre-split pattern must match every character: a pattern that skips one (``"."`` skips
  line breaks) is refused when the tokenizer is built and whenever a text would lose a
  character, so encoding never silently drops text.
* Special-token strings in a text are an explicit decision (see ``encode``); for whole raw
  corpora ``encode_corpus(tokenizer, text, special_tokens="as_text" | "as_special")``
  makes that decision a required argument.

Training rules (what makes the merges reproducible)
---------------------------------------------------
* Pairs are counted over all adjacent token pairs of all chunks (overlapping: "zzz" holds the
  pair (z, z) twice); each merge then replaces occurrences left to right without overlap
  ("zzz" -> "zz" + "z").
* The pair with the highest count wins. Ties go to the pair that occurs first in the current
  token sequence of the training text. This is the convention of the best-known from-scratch
  implementations (a fresh dict of counts filled in text order, then ``max``), so a learner's
  own trainer learns the same merges.
* A pair whose joined bytes are already a token is never chosen, so every token has unique
  bytes. This is a guard more than a rule (we have not seen it fire on real text): the encoder
  above looks tokens up by their bytes and could never produce a second token with the same
  bytes, and tiktoken's table, a mapping bytes -> id, cannot even hold one.
* ``vocab_size`` counts the 256 byte tokens plus the merges; special tokens such as
  ``<|endoftext|>`` come on top, with the ids ``vocab_size, vocab_size + 1, ...``. ``n_vocab`` is
  the total number of ids, which is the size a model's embedding table needs.

Saved format (JSON, written by ``save`` and read by ``load``)::

    {"format": "llmhelpers-bpe", "version": 1, "name": ..., "pattern": <pre-split regex>,
     "byte_ids": [id of byte 0, id of byte 1, ..., id of byte 255],
     "merges": [[left id, right id, new id, "the new token's bytes, readable"], ...],
     "special_tokens": {"<|endoftext|>": 512},
     "training": {...}}            # optional: the training log, see ``TrainingLog``

Readable bytes are UTF-8 text where possible and ``\\xNN`` escapes elsewhere; they are checked
against the ids on loading.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import operator
import os
import tempfile
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import regex
from tqdm.auto import tqdm

ENDOFTEXT = "<|endoftext|>"
UNKNOWN = "<|unk|>"
DEFAULT_VOCAB_SIZE = 512

# GPT-2's pre-split pattern in the form tiktoken uses (possessive quantifiers, same chunks as
# the original). Alternatives, in order: English contractions, an optional space + letters,
# an optional space + digits, an optional space + other symbols, whitespace at the end of the
# text, whitespace not followed by a non-space (so "  x" gives " " and " x"), any other space.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

FORMAT_NAME = "llmhelpers-bpe"
FORMAT_VERSION = 1

Pair = tuple[int, int]


# --------------------------------------------------------------------------------------------
# Teaching tokenizers
# --------------------------------------------------------------------------------------------


class CharTokenizer:
    """One id per distinct character; ids follow the sorted order of the characters."""

    def __init__(self, chars: Sequence[str]):
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("chars must be single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not contain duplicates")
        self.chars = list(chars)
        self._id_of = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary is every character that occurs in ``text``."""
        _check_text(text)
        if not text:
            raise ValueError("text must not be empty")
        return cls(sorted(set(text)))

    @property
    def n_vocab(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        _check_text(text)
        ids = []
        for position, char in enumerate(text):
            if char not in self._id_of:
                raise ValueError(
                    f"character {char!r} (U+{ord(char):04X}) at position {position} is not in "
                    f"the vocabulary: a character tokenizer only knows the {self.n_vocab} "
                    "characters of the text it was built from"
                )
            ids.append(self._id_of[char])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[_checked_id(i, self.n_vocab)] for i in _checked_ids(ids))


# A word (letters/digits, with inner apostrophes as in "o'er") or a single punctuation mark.
WORD_PATTERN = r"\w+(?:'\w+)*|[^\w\s]"
_NO_SPACE_BEFORE = set(".,;:!?')]}")
_NO_SPACE_AFTER = set("([{")


class WordTokenizer:
    """One id per word or punctuation mark; id 0 is ``<|unk|>`` for everything else.

    Whitespace is thrown away, so ``decode`` can only guess it: a space between tokens, none
    before closing punctuation. Line breaks are lost.
    """

    def __init__(self, words: Sequence[str]):
        if len(set(words)) != len(words) or UNKNOWN in words:
            raise ValueError(f"words must be distinct and must not contain {UNKNOWN!r}")
        self.words = [UNKNOWN, *words]
        self._id_of = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def from_text(cls, text: str, max_vocab: int | None = None) -> WordTokenizer:
        """Keep the ``max_vocab - 1`` most frequent words of ``text`` (ties: first seen first).

        ``max_vocab`` counts ``<|unk|>``; ``None`` keeps every word.
        """
        if max_vocab is not None and (
            not isinstance(max_vocab, int) or isinstance(max_vocab, bool) or max_vocab < 2
        ):
            raise ValueError(f"max_vocab must be an int >= 2 or None, got {max_vocab!r}")
        counts = Counter(cls.tokenize(text))  # checks that text is a str
        keep = None if max_vocab is None else max_vocab - 1
        return cls([word for word, _ in counts.most_common(keep)])

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """Split into words and punctuation marks, dropping whitespace."""
        return regex.findall(WORD_PATTERN, _check_text(text))

    @property
    def n_vocab(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self._id_of.get(word, 0) for word in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        pieces: list[str] = []
        for i in _checked_ids(ids):
            word = self.words[_checked_id(i, self.n_vocab)]
            glue = not pieces or word in _NO_SPACE_BEFORE or pieces[-1] in _NO_SPACE_AFTER
            pieces.append(word if glue else " " + word)
        return "".join(pieces)

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` that would become ``<|unk|>``, in order."""
        return [word for word in self.tokenize(text) if word not in self._id_of]

    def unknown_rate(self, text: str) -> float:
        """The fraction of the tokens of ``text`` that become ``<|unk|>``."""
        words = self.tokenize(text)
        return len(self.unknown_words(text)) / len(words) if words else 0.0


def _check_text(text: object, name: str = "text") -> str:
    """``text`` itself if it is a str, else a TypeError naming the parameter."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    return text


def _checked_ids(ids: object) -> Iterable:
    """``ids`` if it is a one-dimensional collection of ids (list, tuple, array, tensor)."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError("ids must be a sequence of token ids (a list, tuple, 1-d array or "
                        f"tensor), got {type(ids).__name__}")
    if getattr(ids, "ndim", 1) != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {tuple(ids.shape)}")
    return ids


def _checked_id(token_id: object, n_vocab: int) -> int:
    """``token_id`` as an int in ``[0, n_vocab)``, or a clear error naming it."""
    try:
        if isinstance(token_id, bool):
            raise TypeError
        index = operator.index(token_id)  # ints, numpy ints, 0-d integer tensors
    except TypeError:
        raise TypeError(f"token ids must be integers, got {token_id!r}") from None
    if not 0 <= index < n_vocab:
        raise ValueError(f"token id {index} does not exist (valid ids: 0..{n_vocab - 1})")
    return index


# --------------------------------------------------------------------------------------------
# Byte-pair encoding: the two small operations everything else is built from
# --------------------------------------------------------------------------------------------


def bpe_encode_piece_simple(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of one pre-split chunk, given a table token bytes -> rank (= id).

    Repeatedly join the adjacent pair whose joined bytes have the lowest rank (the leftmost
    such pair on ties) until no joined pair is a token. A chunk that is itself a token is
    returned at once, as tiktoken does. Each join rescans the whole chunk, so a chunk of ``n``
    bytes costs O(n²); ``bpe_encode_piece`` gives the same ids in O(n log n).
    """
    if piece in ranks:
        return [ranks[piece]]
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_rank, best_index = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_index = rank, i
        if best_rank is None:
            break
        parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]
    return [ranks[part] for part in parts]


def bpe_encode_piece(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """The ids of ``bpe_encode_piece_simple`` (same rule: lowest rank first, leftmost on ties),
    in O(n log n) for a chunk of ``n`` bytes, so one very long chunk stays fast.

    Instead of rescanning the chunk for every join, keep every possible join in a heap ordered
    by (rank, position), so the top is the lowest rank and, on ties, the leftmost. A join
    changes only its two neighbouring candidates: push those, and skip heap entries whose
    parts have changed since they were pushed.
    """
    if piece in ranks:
        return [ranks[piece]]
    n = len(piece)
    # The current parts, identified by their start offset: part ``s`` is ``piece[s:end[s]]``
    # and the part before it starts at ``start_before[s]`` (-1 for the first part).
    # ``end[s] = -1`` marks an offset that is no longer the start of a part.
    end = list(range(1, n + 1))
    start_before = list(range(-1, n - 1))

    def candidate(start: int) -> tuple[int, int, int] | None:
        """(rank, start, stop) for joining part ``start`` with the next part, if a token."""
        if start < 0 or end[start] >= n:
            return None
        stop = end[end[start]]
        rank = ranks.get(piece[start:stop])
        return None if rank is None else (rank, start, stop)

    heap = [join for start in range(n - 1) if (join := candidate(start))]
    heapq.heapify(heap)
    while heap:
        _, start, stop = heapq.heappop(heap)
        if end[start] == -1 or end[start] >= n or end[end[start]] != stop:
            continue  # out of date: one of the two parts was joined to something else
        end[end[start]] = -1  # the right part disappears into the left one
        end[start] = stop
        if stop < n:
            start_before[stop] = start
        for join in (candidate(start_before[start]), candidate(start)):
            if join:
                heapq.heappush(heap, join)
    ids, start = [], 0
    while start < n:
        ids.append(ranks[piece[start : end[start]]])
        start = end[start]
    return ids


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``ids`` by ``new_id``, left to right, no overlap."""
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class TrainingLog:
    """What happened while training, one entry per merge.

    ``merge_counts[k]`` is how often the pair of merge ``k`` occurred when it was chosen and
    ``n_tokens[k]`` the length of the training text in tokens after merge ``k``; before any
    merge the text is ``n_bytes`` tokens long (one per byte).
    """

    n_chars: int
    n_bytes: int
    merge_counts: list[int] = field(default_factory=list)
    n_tokens: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("n_chars", "n_bytes"):
            if not _is_positive_int(getattr(self, name)):
                raise ValueError(f"TrainingLog: {name} must be an int >= 1, "
                                 f"got {getattr(self, name)!r}")
        for name in ("merge_counts", "n_tokens"):
            values = getattr(self, name)
            if not isinstance(values, list) or not all(map(_is_positive_int, values)):
                raise ValueError(f"TrainingLog: {name} must be a list of ints >= 1")
        if len(self.merge_counts) != len(self.n_tokens):
            raise ValueError("TrainingLog: merge_counts and n_tokens must have one entry per "
                             f"merge, got {len(self.merge_counts)} and {len(self.n_tokens)}")

    def chars_per_token(self) -> tuple[list[int], list[float]]:
        """``(vocab_sizes, chars_per_token)`` from 256 (bytes only) to the final size."""
        lengths = [self.n_bytes, *self.n_tokens]
        return [256 + k for k in range(len(lengths))], [self.n_chars / n for n in lengths]

    def to_json(self) -> dict:
        return {"n_chars": self.n_chars, "n_bytes": self.n_bytes,
                "merge_counts": self.merge_counts, "n_tokens": self.n_tokens}

    @classmethod
    def from_json(cls, data: object) -> TrainingLog:
        """The log ``to_json`` wrote; ValueError for anything else."""
        keys = {"n_chars", "n_bytes", "merge_counts", "n_tokens"}
        if not isinstance(data, dict) or set(data) != keys:
            raise ValueError(f"TrainingLog: expected a dict with the keys {sorted(keys)}")
        return cls(**data)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class TrainingCorpus:
    """The training text as its distinct chunks (in order of first appearance) and counts.

    Token ids are 0..255 for bytes, then 256, 257, ... in the order merges are added.
    """

    words: list[list[int]]  # each chunk as a list of token ids, updated as merges happen
    freqs: list[int]  # how often each chunk occurs in the text
    vocab: dict[int, bytes]  # token id -> bytes, grows with every merge

    @classmethod
    def from_text(cls, text: str, pattern: str = GPT2_SPLIT_PATTERN) -> TrainingCorpus:
        """Pre-split ``text``; each distinct chunk is kept once, as bytes, with its count."""
        # a Counter keeps the order of first appearance
        chunk_counts = Counter(_split(_compile_pattern(pattern), text))
        return cls(
            words=[list(chunk.encode("utf-8")) for chunk in chunk_counts],
            freqs=list(chunk_counts.values()),
            vocab={b: bytes([b]) for b in range(256)},
        )

    def n_tokens(self) -> int:
        """Length of the whole text in tokens (each chunk counted as often as it occurs)."""
        return sum(len(word) * freq for word, freq in zip(self.words, self.freqs))

    def is_known(self, pair: Pair) -> bool:
        """True if joining ``pair`` would give bytes that are already a token."""
        return self.vocab[pair[0]] + self.vocab[pair[1]] in self._known_bytes

    def add_token(self, pair: Pair) -> int:
        """Record the merge ``pair`` -> new id and return the new id."""
        new_id = len(self.vocab)
        self.vocab[new_id] = self.vocab[pair[0]] + self.vocab[pair[1]]
        self._known_bytes.add(self.vocab[new_id])
        self.merges.append((*pair, new_id))
        return new_id

    def __post_init__(self) -> None:
        self._known_bytes = set(self.vocab.values())
        self.merges: list[tuple[int, int, int]] = []


# A merge learner adds up to ``n_merges`` tokens to a ``TrainingCorpus`` and, after each merge,
# calls ``on_merge(pair, new_id, count, n_replaced)``: the pair, its new id, how often the pair
# occurred and how many tokens the text lost (occurrences replaced, times chunk frequency).
MergeCallback = Callable[[Pair, int, int, int], None]


def learn_merges_naive(corpus: TrainingCorpus, n_merges: int, on_merge: MergeCallback) -> None:
    """The textbook trainer: recount every pair of the whole corpus before each merge."""
    for _ in range(n_merges):
        counts: dict[Pair, int] = {}  # insertion order = order of first occurrence
        for word, freq in zip(corpus.words, corpus.freqs):
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + freq
        candidates = {pair: n for pair, n in counts.items() if not corpus.is_known(pair)}
        if not candidates:
            return
        pair = max(candidates, key=candidates.__getitem__)  # the first of the most frequent
        new_id = corpus.add_token(pair)
        n_replaced = 0
        for i, word in enumerate(corpus.words):
            merged = merge_pair(word, pair, new_id)
            n_replaced += (len(word) - len(merged)) * corpus.freqs[i]
            corpus.words[i] = merged
        on_merge(pair, new_id, candidates[pair], n_replaced)


def learn_merges_incremental(
    corpus: TrainingCorpus, n_merges: int, on_merge: MergeCallback
) -> None:
    """The same merges as ``learn_merges_naive``, but each merge only touches the chunks that
    contain the chosen pair, and only the counts of pairs in those chunks change.

    State: ``pair_counts`` (pair -> occurrences in the whole text), ``chunks_with`` (pair -> the
    chunks containing it) and ``pairs_with_count`` (count -> the pairs occurring that often),
    so the most frequent pairs are ``pairs_with_count[top]``, found without a search. ``top``
    only ever goes down: a pair a merge creates contains the new token, so it cannot occur
    more often than the merged pair did.
    """
    pair_counts: dict[Pair, int] = defaultdict(int)
    chunks_with: dict[Pair, set[int]] = defaultdict(set)
    for i, (word, freq) in enumerate(zip(corpus.words, corpus.freqs)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freq
            chunks_with[pair].add(i)
    pairs_with_count: dict[int, set[Pair]] = defaultdict(set)
    for pair, count in pair_counts.items():
        pairs_with_count[count].add(pair)
    top = max(pair_counts.values(), default=0)

    def change_count(pair: Pair, change: int) -> None:
        old = pair_counts.pop(pair, 0)
        if old:
            pairs_with_count[old].discard(pair)
        if old + change > 0:
            pair_counts[pair] = old + change
            pairs_with_count[old + change].add(pair)
        else:
            chunks_with.pop(pair, None)

    def first_in_text(pairs: set[Pair]) -> Pair:
        """The pair of ``pairs`` that occurs first in the text (one scan of one chunk, so
        many tied pairs in one long chunk cost one pass, not one pass each)."""
        word = corpus.words[min(min(chunks_with[pair]) for pair in pairs)]
        return next(pair for pair in zip(word, word[1:]) if pair in pairs)

    def most_frequent() -> Pair | None:
        """The pair to merge next (ties: first occurrence in the text), or None."""
        nonlocal top
        while top > 0:
            # a pair whose bytes are already a token is never chosen
            tied = {pair for pair in pairs_with_count[top] if not corpus.is_known(pair)}
            if tied:
                return first_in_text(tied) if len(tied) > 1 else tied.pop()
            del pairs_with_count[top]
            top -= 1
        return None

    for _ in range(n_merges):
        pair = most_frequent()
        if pair is None:
            return
        count = pair_counts[pair]
        new_id = corpus.add_token(pair)
        changes: dict[Pair, int] = defaultdict(int)
        n_replaced = 0
        for i in chunks_with[pair]:
            old, freq = corpus.words[i], corpus.freqs[i]
            new = merge_pair(old, pair, new_id)
            corpus.words[i] = new
            n_replaced += (len(old) - len(new)) * freq
            old_pairs, new_pairs = Counter(zip(old, old[1:])), Counter(zip(new, new[1:]))
            for p, n in old_pairs.items():
                changes[p] -= n * freq
            for p, n in new_pairs.items():
                changes[p] += n * freq
            for p in old_pairs.keys() - new_pairs.keys() - {pair}:
                chunks_with[p].discard(i)
            for p in new_pairs.keys() - old_pairs.keys():
                chunks_with[p].add(i)
        for p, change in changes.items():
            if change != 0:
                change_count(p, change)  # the merged pair itself drops to 0 and is removed
        on_merge(pair, new_id, count, n_replaced)


# --------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------


class BPETokenizer:
    """Byte-level BPE with GPT-2's pre-split, trained from scratch or built from GPT-2's files.

    Attributes: ``vocab`` (id -> token bytes), ``ranks`` (token bytes -> id), ``merges``
    ((left id, right id) -> new id, in the order learned), ``special_tokens`` (str -> id),
    ``pattern`` (the pre-split regex), ``training_log`` (a ``TrainingLog`` or None).
    """

    def __init__(
        self,
        merges: dict[Pair, int] | Sequence[tuple[int, int, int]] = (),
        byte_ids: Sequence[int] = tuple(range(256)),
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_SPLIT_PATTERN,
        name: str = "bpe",
        training_log: TrainingLog | None = None,
    ):
        """``merges`` maps (left id, right id) -> new id (or is a list of such triples), in
        the order learned; ``byte_ids[b]`` is the id of the single byte ``b``."""
        byte_ids = [_as_id(i, "byte_ids") for i in byte_ids]
        if len(byte_ids) != 256 or len(set(byte_ids)) != 256:
            raise ValueError("byte_ids must hold 256 distinct ids, one per byte value")
        self.vocab: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(byte_ids)}
        if isinstance(merges, dict):
            items = merges.items()
        else:
            items = (((left, right), new) for left, right, new in merges)
        self.merges: dict[Pair, int] = {}
        last_id = -1
        for (left, right), new in items:
            pair = (_as_id(left, "merges"), _as_id(right, "merges"))
            new_id = _as_id(new, "merges")
            if pair[0] not in self.vocab or pair[1] not in self.vocab:
                raise ValueError(f"merge {pair} -> {new_id} uses an id not defined before it")
            if new_id in self.vocab:
                raise ValueError(f"merge {pair} -> {new_id}: id {new_id} is already used")
            if new_id < last_id:
                # the encoder uses ids as merge priorities, so they must follow merge order
                raise ValueError(f"merge {pair} -> {new_id}: merge ids must increase in the "
                                 "order the merges were learned")
            self.vocab[new_id] = self.vocab[pair[0]] + self.vocab[pair[1]]
            self.merges[pair] = new_id
            last_id = new_id
        self.ranks: dict[bytes, int] = {b: i for i, b in self.vocab.items()}
        if len(self.ranks) != len(self.vocab):
            raise ValueError("two tokens have the same bytes; every token's bytes must be unique")
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        for token, token_id in self.special_tokens.items():
            if not isinstance(token, str) or not token:
                raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
            if _as_id(token_id, "special_tokens") in self.vocab:
                raise ValueError(f"special token {token!r} has an id already used: {token_id}")
        if len(set(self.special_tokens.values())) != len(self.special_tokens):
            raise ValueError("special tokens must have distinct ids")
        self._split_regex = _compile_pattern(pattern)
        self.pattern = pattern
        self.name = _check_text(name, "name")
        if training_log is not None:
            if not isinstance(training_log, TrainingLog):
                raise TypeError(f"training_log must be a TrainingLog or None, "
                                f"got {type(training_log).__name__}")
            if len(training_log.merge_counts) != len(self.merges):
                raise ValueError(f"training_log has {len(training_log.merge_counts)} merges, "
                                 f"the tokenizer {len(self.merges)}")
        self.training_log = training_log
        self._special_of_id = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        self._piece_cache: dict[bytes, list[int]] = {}

    # ---- sizes -----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ordinary (byte and merged) tokens, without special tokens."""
        return len(self.vocab)

    @property
    def n_vocab(self) -> int:
        """Number of ids including special tokens (largest id + 1)."""
        return max([*self.vocab, *self.special_tokens.values()]) + 1

    def __repr__(self) -> str:
        return (f"BPETokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
                f"merges={len(self.merges)}, special_tokens={self.special_tokens})")

    # ---- training --------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        pattern: str = GPT2_SPLIT_PATTERN,
        name: str | None = None,
        verbose: bool = False,
        progress: bool = False,
        naive: bool = False,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256`` merges from ``text`` (incrementally; ``naive=True`` uses
        the recount-everything trainer, same result, much slower).

        Special tokens get the ids after the merges. Special-token strings inside ``text`` are
        treated as plain text. Training stops early, with a warning, if the text runs out of
        pairs to merge.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int >= 256, got {vocab_size!r}")
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be >= 256 (the byte tokens), got {vocab_size}")
        if not _check_text(text):
            raise ValueError("text must not be empty: there is nothing to learn merges from")
        special_tokens = _checked_special_token_names(special_tokens)
        _compile_pattern(pattern)
        # every check is done before the (possibly long) pass over the corpus

        corpus = TrainingCorpus.from_text(_without_lone_surrogates(text), pattern)
        log = TrainingLog(n_chars=len(text), n_bytes=corpus.n_tokens())
        n_merges = vocab_size - 256

        bar = tqdm(total=n_merges, desc="BPE merges", disable=not progress)

        def on_merge(pair: Pair, new_id: int, count: int, n_replaced: int) -> None:
            log.merge_counts.append(count)
            log.n_tokens.append((log.n_tokens[-1] if log.n_tokens else log.n_bytes) - n_replaced)
            bar.update(1)
            if verbose:
                print(f"merge {new_id - 255}/{n_merges}: {pair[0]} + {pair[1]} -> {new_id} "
                      f"{corpus.vocab[new_id]!r} ({count} occurrences)")

        learn = learn_merges_naive if naive else learn_merges_incremental
        learn(corpus, n_merges, on_merge)
        bar.close()
        merges = corpus.merges
        if len(merges) < n_merges:
            warnings.warn(f"the text only allowed {len(merges)} merges; vocab_size is "
                          f"{256 + len(merges)} instead of {vocab_size}", stacklevel=2)
        size = 256 + len(merges)
        return cls(
            merges=merges,
            special_tokens={token: size + k for k, token in enumerate(special_tokens)},
            pattern=pattern,
            name=name or f"bpe-{size}",
            training_log=log,
        )

    @classmethod
    def train_naive(cls, text: str, vocab_size: int, **kwargs) -> BPETokenizer:
        """``train`` with the recount-per-merge trainer (for teaching and for testing)."""
        return cls.train(text, vocab_size, naive=True, **kwargs)

    # ---- encoding --------------------------------------------------------------------------

    def pre_split(self, text: str) -> list[str]:
        """The chunks GPT-2's regex cuts ``text`` into; merges never cross their borders."""
        return _split(self._split_regex, _check_text(text))

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` with special-token strings treated as plain text."""
        text = _without_lone_surrogates(_check_text(text))
        ids: list[int] = []
        for chunk in _split(self._split_regex, text):
            piece = chunk.encode("utf-8")
            cached = self._piece_cache.get(piece)
            if cached is None:
                cached = bpe_encode_piece(piece, self.ranks)
                if len(self._piece_cache) < 200_000:
                    self._piece_cache[piece] = cached
            ids.extend(cached)
        return ids

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Token ids of ``text``, with tiktoken's rules for special-token strings in the text.

        A special token that is allowed becomes its id. One that is disallowed (by default all
        that are not allowed) raises ValueError. Pass ``disallowed_special=()`` to encode
        special-token strings as ordinary text.

        Both take ``"all"`` or a collection of token strings such as ``{"<|endoftext|>"}``. A
        bare string like ``"<|endoftext|>"`` is a TypeError, as in tiktoken (which fails on it
        for ``allowed_special`` and silently reads it as a set of characters for
        ``disallowed_special``). Unlike tiktoken, naming a token this tokenizer does not have
        is a ValueError in both, rather than being ignored.
        """
        _check_text(text)
        allowed = self._special_token_set(allowed_special, "allowed_special")
        disallowed = (set(self.special_tokens) - allowed if disallowed_special == "all"
                      else self._special_token_set(disallowed_special, "disallowed_special"))
        if disallowed and (found := _special_regex(frozenset(disallowed)).search(text)):
            token = found.group()
            raise ValueError(
                f"the text contains the special token {token!r} at position {found.start()}. "
                f"To encode it as its id {self.special_tokens[token]}, pass "
                f"allowed_special={{{token!r}}}; to encode it as plain text, pass "
                "disallowed_special=()."
            )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for found in _special_regex(frozenset(allowed)).finditer(text):
            ids.extend(self.encode_ordinary(text[start : found.start()]))
            ids.append(self.special_tokens[found.group()])
            start = found.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    def _special_token_set(self, tokens: object, name: str) -> set[str]:
        """The special tokens named by ``allowed_special``/``disallowed_special``."""
        if isinstance(tokens, str) and tokens == "all":
            return set(self.special_tokens)
        if isinstance(tokens, str) or not isinstance(tokens, Iterable):
            example = tokens if isinstance(tokens, str) else ENDOFTEXT
            raise TypeError(f"{name} must be 'all' or a collection of special-token strings "
                            f"such as {{{example!r}}}, got {tokens!r}")
        tokens = list(tokens)
        if not all(isinstance(token, str) for token in tokens):
            raise TypeError(f"{name} must hold special-token strings, got {tokens!r}")
        if unknown := set(tokens) - set(self.special_tokens):
            raise ValueError(f"{name} names unknown special tokens {sorted(unknown)}; "
                             f"this tokenizer has {sorted(self.special_tokens)}")
        return set(tokens)

    def merge_steps(self, text: str, n_merges: int) -> list[bytes]:
        """The tokens (as bytes) of ``text`` when only the first ``n_merges`` merges exist.

        ``n_merges=0`` gives single bytes, ``len(self.merges)`` the full encoding (special-token
        strings are plain text here).
        """
        _check_text(text)
        if isinstance(n_merges, bool) or not isinstance(n_merges, int):
            raise TypeError(f"n_merges must be an int, got {n_merges!r}")
        if not 0 <= n_merges <= len(self.merges):
            raise ValueError(f"n_merges must be in [0, {len(self.merges)}], got {n_merges}")
        first_ids = set(list(self.merges.values())[:n_merges])
        ranks = {token: i for token, i in self.ranks.items() if len(token) == 1 or i in first_ids}
        text = _without_lone_surrogates(text)
        return [self.vocab[i] for chunk in self.pre_split(text)
                for i in bpe_encode_piece(chunk.encode("utf-8"), ranks)]

    # ---- decoding --------------------------------------------------------------------------

    def id_to_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (special tokens: their UTF-8 text)."""
        index = _checked_id(token_id, self.n_vocab)
        if index in self.vocab:
            return self.vocab[index]
        if index in self._special_of_id:
            return self._special_of_id[index]
        raise ValueError(f"token id {index} does not exist (no token has this id)")

    def decode_tokens(self, ids: Iterable[int]) -> list[bytes]:
        """The bytes of each token, for showing token boundaries."""
        return [self.id_to_bytes(i) for i in _checked_ids(ids)]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD."""
        return b"".join(self.decode_tokens(ids)).decode("utf-8", errors="replace")

    # ---- other formats ---------------------------------------------------------------------

    def to_tiktoken(self):
        """A ``tiktoken.Encoding`` with the same table, for fast bulk encoding."""
        import tiktoken

        return tiktoken.Encoding(
            name=self.name,
            pat_str=self.pattern,
            mergeable_ranks=dict(self.ranks),
            special_tokens=dict(self.special_tokens),
        )

    def to_json(self) -> dict:
        byte_ids = [self.ranks[bytes([b])] for b in range(256)]
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": self.name,
            "pattern": self.pattern,
            "byte_ids": byte_ids,
            "merges": [[left, right, new, _readable(self.vocab[new])]
                       for (left, right), new in self.merges.items()],
            "special_tokens": self.special_tokens,
            "training": self.training_log.to_json() if self.training_log else None,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer as JSON (one merge per line), atomically."""
        data = self.to_json()
        lines = [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},"
                 for key, value in data.items() if key not in ("merges", "training")]
        merges = ",\n".join(f"    {json.dumps(m, ensure_ascii=False)}" for m in data["merges"])
        lines.append(f'  "merges": [\n{merges}\n  ],')
        lines.append(f'  "training": {json.dumps(data["training"])}')
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("{\n" + "\n".join(lines) + "\n}\n")
            os.chmod(tmp, 0o644)  # mkstemp makes files private; a tokenizer is ordinary data
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def from_json(cls, data: dict) -> BPETokenizer:
        """Build from the dict ``to_json`` produces, checking every field: anything malformed
        is a ValueError (never a TypeError or KeyError), so a damaged file is easy to catch."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ValueError(f"not a tokenizer file: 'format' must be {FORMAT_NAME!r}")
        version = data.get("version")
        if type(version) is not int or version != FORMAT_VERSION:  # not True, not 1.0
            raise ValueError(f"unsupported tokenizer format version {version!r} "
                             f"(this code reads version {FORMAT_VERSION})")
        required = {"format", "version", "name", "pattern", "byte_ids", "merges",
                    "special_tokens"}
        if missing := required - set(data):
            raise ValueError(f"tokenizer file: missing {sorted(missing)}")
        if unknown := set(data) - required - {"training"}:
            raise ValueError(f"tokenizer file: unknown keys {sorted(unknown)}")
        for key, kind in (("name", str), ("pattern", str), ("byte_ids", list),
                          ("merges", list), ("special_tokens", dict)):
            if not isinstance(data[key], kind):
                raise ValueError(f"tokenizer file: {key!r} must be a {kind.__name__}")
        merges = []
        for entry in data["merges"]:
            if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[3], str)):
                raise ValueError(f"tokenizer file: bad merge entry {entry!r}, expected "
                                 "[left id, right id, new id, readable bytes]")
            merges.append(tuple(entry[:3]))
        training = data.get("training")
        log = None
        if training is not None:
            try:
                log = TrainingLog.from_json(training)
            except ValueError as error:
                raise ValueError(f"tokenizer file: bad 'training' entry: {error}") from None
        tokenizer = cls(merges=merges, byte_ids=data["byte_ids"],
                        special_tokens=data["special_tokens"], pattern=data["pattern"],
                        name=data["name"], training_log=log)
        for left, right, new, shown in data["merges"]:
            if shown != _readable(tokenizer.vocab[new]):
                raise ValueError(f"tokenizer file: merge {left} + {right} -> {new} is shown as "
                                 f"{shown!r} but its bytes are {tokenizer.vocab[new]!r}")
        return tokenizer

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a file written by ``save`` (plain JSON; nothing is executed or unpickled).

        Any malformed content raises ValueError; a missing file raises FileNotFoundError.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"{path} is not a valid JSON text file: {error}") from None
        return cls.from_json(data)

    @classmethod
    def from_gpt2(cls, cache: str | os.PathLike | None = None) -> BPETokenizer:
        """GPT-2's tokenizer rebuilt from its original files (``encoder.json``, ``vocab.bpe``).

        GPT-2 stores tokens as text: each byte is shown as one printable character (see
        ``gpt2_byte_to_char``). ``encoder.json`` maps token text -> id; ``vocab.bpe`` lists the
        merges in the order they were learned, one "left right" pair per line.
        """
        from llmhelpers.data import fetch

        encoder: dict[str, int] = json.loads(fetch("gpt2-encoder.json", cache).read_text("utf-8"))
        merge_lines = fetch("gpt2-vocab.bpe", cache).read_text("utf-8").splitlines()
        if not merge_lines[0].startswith("#version"):
            raise ValueError("gpt2-vocab.bpe: expected a '#version' header line")
        char_of = gpt2_byte_to_char()
        merges = []
        for line in merge_lines[1:]:
            if line:
                left, right = line.split(" ")
                merges.append((encoder[left], encoder[right], encoder[left + right]))
        return cls(
            merges=merges,
            byte_ids=[encoder[char_of[b]] for b in range(256)],
            special_tokens={ENDOFTEXT: encoder[ENDOFTEXT]},
            name="gpt2-from-scratch",
        )


CorpusPolicy = Literal["as_text", "as_special"]


def encode_corpus(tokenizer, text: str, *, special_tokens: CorpusPolicy) -> list[int]:
    """Encode a raw corpus with an explicit policy for special-token strings inside it.

    ``special_tokens="as_text"``: a string like ``"<|endoftext|>"`` in the corpus is encoded
    as ordinary text, like any other characters (right for text that merely contains the
    marker). ``"as_special"``: each becomes its special-token id (right for a corpus whose
    documents were joined with the marker on purpose). Either way, a marker in the corpus can
    never make encoding fail. ``tokenizer`` is a ``BPETokenizer`` or a ``tiktoken.Encoding``.
    """
    import tiktoken

    if not (isinstance(special_tokens, str) and special_tokens in ("as_text", "as_special")):
        raise ValueError(f"special_tokens must be 'as_text' or 'as_special', "
                         f"got {special_tokens!r}")
    if not isinstance(tokenizer, (BPETokenizer, tiktoken.Encoding)):
        raise TypeError("tokenizer must be a BPETokenizer or a tiktoken.Encoding, "
                        f"got {type(tokenizer).__name__}")
    _check_text(text)
    allowed = "all" if special_tokens == "as_special" else set()
    return tokenizer.encode(text, allowed_special=allowed, disallowed_special=())


MAX_ID = 2**31 - 1  # tiktoken stores ranks as 32-bit integers


def _as_id(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise ValueError(f"{where}: ids must be ints in [0, {MAX_ID}], got {value!r}")
    return value


# Text every pre-split pattern must cut into chunks without losing a character: letters,
# digits, punctuation, every kind of whitespace, accents, other scripts, emoji.
_PATTERN_PROBE = "Hi, it's 2024!\n\n\tx  y\r\n\u00a0caf\u00e9 \u4e2d\u6587 \U0001f600\u200d ok?  "


def _compile_pattern(pattern: object) -> regex.Pattern:
    """The compiled pre-split regex, or a clear error naming ``pattern``."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
    if not pattern:
        raise ValueError("pattern must not be empty (it would cut every text into nothing)")
    try:
        compiled = regex.compile(pattern)
    except regex.error as error:
        raise ValueError(f"pattern is not a valid regex: {error}") from None
    if compiled.groups:
        raise ValueError("pattern must not have capturing groups (they change what findall "
                         "returns); write (?:...) instead of (...)")
    _split(compiled, _PATTERN_PROBE)
    return compiled


def _split(compiled: regex.Pattern, text: str) -> list[str]:
    """The chunks of ``text``; a ValueError if they do not put the whole text back together."""
    chunks = compiled.findall(text)
    if sum(map(len, chunks)) != len(text):
        covered = [False] * len(text)
        for found in compiled.finditer(text):
            covered[found.start() : found.end()] = [True] * (found.end() - found.start())
        lost = covered.index(False) if False in covered else 0
        raise ValueError(f"pattern {compiled.pattern!r} does not match every character of the "
                         f"text (it skips {text[lost]!r} at position {lost}), so encoding would "
                         "lose text; a pre-split pattern must match every character")
    return chunks


def _checked_special_token_names(special_tokens: object) -> list[str]:
    """``special_tokens`` for ``train`` as a list of distinct, non-empty strings."""
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a sequence of strings, e.g. "
                        f"({special_tokens!r},), got the string {special_tokens!r}")
    if not isinstance(special_tokens, Iterable):
        raise TypeError(f"special_tokens must be a sequence of strings, got {special_tokens!r}")
    tokens = list(special_tokens)
    if not all(isinstance(token, str) and token for token in tokens):
        raise ValueError(f"special_tokens must be non-empty strings, got {tokens!r}")
    if duplicates := sorted(token for token, n in Counter(tokens).items() if n > 1):
        raise ValueError(f"special_tokens must be distinct, {duplicates} appear more than once")
    return tokens


def _readable(token: bytes) -> str:
    """Token bytes as text: UTF-8 where valid, ``\\xNN`` escapes for the other bytes."""
    return token.decode("utf-8", errors="backslashreplace")


def _without_lone_surrogates(text: str) -> str:
    """Replace unpaired surrogates (not encodable as UTF-8) by U+FFFD, as tiktoken does."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@lru_cache(maxsize=64)
def _special_regex(tokens: frozenset[str]) -> regex.Pattern:
    return regex.compile("|".join(regex.escape(t) for t in sorted(tokens, key=len, reverse=True)))


# --------------------------------------------------------------------------------------------
# GPT-2 and the project's default tokenizer
# --------------------------------------------------------------------------------------------


def gpt2_byte_to_char() -> dict[int, str]:
    """GPT-2's way to show every byte as one printable character.

    Bytes that are printable Latin-1 characters stand for themselves; the others (control
    characters, space, ...) are mapped, in order, to the characters 256, 257, ... So the space
    byte 32 is shown as "Ġ" (U+0120) and the newline byte 10 as "Ċ" (U+010A).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    char_of = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in char_of]
    char_of.update({b: chr(256 + k) for k, b in enumerate(others)})
    return char_of


def gpt2_tokenizer():
    """GPT-2's real tokenizer, ``tiktoken.get_encoding("gpt2")``, working offline too."""
    import tiktoken

    from llmhelpers.data import seed_tiktoken_gpt2_cache

    seed_tiktoken_gpt2_cache()
    return tiktoken.get_encoding("gpt2")


SHAKESPEARE_CACHE_VERSION = 1  # bump when training or the file format changes


def shakespeare_bpe(
    vocab_size: int = DEFAULT_VOCAB_SIZE, cache: str | os.PathLike | None = None
) -> BPETokenizer:
    """The project's tokenizer: BPE trained on the 90% training split of tiny-shakespeare,
    with ``<|endoftext|>`` as special token (id ``vocab_size``).

    Trained once, then loaded from a JSON file in the data cache, named after the vocabulary
    size, the corpus hash and ``SHAKESPEARE_CACHE_VERSION``.
    """
    from llmhelpers.data import cache_dir, load_text, train_val_split

    train_text = train_val_split(load_text("tiny-shakespeare", cache))[0]
    digest = hashlib.sha256(train_text.encode("utf-8")).hexdigest()[:16]
    path = (cache_dir(cache) /
            f"bpe-tiny-shakespeare-v{SHAKESPEARE_CACHE_VERSION}-{vocab_size}-{digest}.json")
    if path.exists():
        try:
            return BPETokenizer.load(path)
        except ValueError:
            pass  # a damaged cache file: train again and overwrite it
    tokenizer = BPETokenizer.train(train_text, vocab_size, name=f"shakespeare-bpe-{vocab_size}",
                                   progress=True)
    tokenizer.save(path)
    return tokenizer
