"""Attention that learns: a tiny attention-only model trained in seconds on a synthetic task.

The task, "copy the token ``k_back`` positions back", can only be solved by looking at one
specific earlier position, so a trained model must put (almost) all of its attention on the
diagonal ``k_back`` below the main one. Watching that pattern appear shows what training does
to the attention weights.
"""

from __future__ import annotations

import math
import numbers
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from llmhelpers.attention import (
    MultiHeadAttention,
    attention_scores,
    attention_weights,
    check_attention_sizes,
    check_positive_int,
)

IGNORE_INDEX = -100  # targets with this value do not count in the loss (PyTorch's default)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run PyTorch on one CPU thread inside the block, then restore the previous setting.

    The models here are so small that each operation takes microseconds: splitting it across
    threads costs more than it saves, and on a busy machine (or inside a Jupyter kernel) waiting
    for the other threads can make training ten times slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class AttentionOnlyModel(nn.Module):
    """Token + position embeddings, ``n_layers`` residual attention layers, a linear read-out.

    ``ids`` ``(batch, seq)`` -> logits ``(batch, seq, vocab_size)``. No feed-forward blocks: all
    the model can do is move information between positions, which keeps its attention easy to
    read. Sizes may be Python or NumPy integers; ``seed`` an integer or ``None`` (no seeding).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 32,
        n_heads: int = 1,
        n_layers: int = 1,
        context_length: int = 16,
        seed: int | None = 0,
    ):
        super().__init__()
        vocab_size = check_positive_int("vocab_size", vocab_size)
        check_attention_sizes(d_model, n_heads, context_length)
        d_model, n_heads = int(d_model), int(n_heads)
        context_length = int(context_length)
        n_layers = check_positive_int("n_layers", n_layers)
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
                raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
            torch.manual_seed(int(seed))
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(context_length, d_model)
        self.layers = nn.ModuleList(
            MultiHeadAttention(d_model, n_heads, context_length) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def embed(self, ids: Tensor) -> Tensor:
        """``(batch, seq)`` token ids -> ``(batch, seq, d_model)`` token + position vectors."""
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape (batch, seq), got {tuple(ids.shape)}")
        if ids.shape[1] > self.context_length:
            raise ValueError(
                f"sequence length {ids.shape[1]} exceeds context_length={self.context_length}"
            )
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.token_embedding(ids) + self.position_embedding(positions)

    def forward(
        self, ids: Tensor, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits ``(batch, seq, vocab_size)``; with ``return_weights`` also one
        ``(batch, n_heads, seq, seq)`` weight tensor per layer."""
        x = self.embed(ids)
        all_weights = []
        for layer in self.layers:
            update, weights = layer(x, return_weights=True)
            x = x + update
            all_weights.append(weights)
        logits = self.head(self.norm(x))
        return (logits, all_weights) if return_weights else logits


def copy_task_batch(
    batch_size: int, seq_len: int, vocab_size: int, k_back: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Random token ids ``(batch, seq_len)`` and targets where ``target[t] = ids[t - k_back]``.

    The first ``k_back`` targets have no answer yet and are set to ``IGNORE_INDEX``.
    """
    if not 1 <= k_back < seq_len:
        raise ValueError(f"k_back must be in [1, seq_len - 1] = [1, {seq_len - 1}], got {k_back}")
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    targets = torch.full_like(ids, IGNORE_INDEX)
    targets[:, k_back:] = ids[:, :-k_back]
    return ids, targets


def offset_attention(weights: Tensor, k_back: int) -> Tensor:
    """Weight each query puts on the key ``k_back`` positions back.

    ``weights`` ``(..., seq, seq)`` -> ``(..., seq - k_back)``, one value per query
    ``t >= k_back`` (the entries of the ``k_back``-th diagonal below the main one).
    """
    return torch.diagonal(weights, offset=-k_back, dim1=-2, dim2=-1)


@dataclass
class CopyTaskResult:
    """What :func:`train_copy_task` returns.

    ``weights``: mean attention per layer, ``(n_layers, n_heads, seq, seq)``, over a fresh
    evaluation batch. ``snapshots``: the same at a few training steps (step -> tensor).
    """

    model: AttentionOnlyModel
    k_back: int
    weights: Tensor
    accuracy: float
    losses: list[float]
    snapshots: dict[int, Tensor] = field(default_factory=dict)

    @property
    def offset_weight(self) -> float:
        """Mean attention on the expected position ``t - k_back`` (last layer, all heads)."""
        return offset_attention(self.weights[-1], self.k_back).mean().item()


@torch.no_grad()
def _evaluate(
    model: AttentionOnlyModel, ids: Tensor, targets: Tensor
) -> tuple[Tensor, float]:
    model.eval()
    logits, weights = model(ids, return_weights=True)
    model.train()
    answered = targets != IGNORE_INDEX
    accuracy = (logits.argmax(-1) == targets)[answered].float().mean().item()
    return torch.stack([w.mean(0) for w in weights]), accuracy


@single_thread()
def train_copy_task(
    k_back: int = 3,
    steps: int = 200,
    seed: int = 0,
    seq_len: int = 16,
    vocab_size: int = 16,
    d_model: int = 32,
    n_heads: int = 1,
    n_layers: int = 1,
    batch_size: int = 64,
    lr: float = 1e-2,
    snapshot_steps: tuple[int, ...] = (0, 10, 20, 40),
    progress: bool = False,
) -> CopyTaskResult:
    """Train an :class:`AttentionOnlyModel` to output the token ``k_back`` positions back.

    Adam on fresh random batches each step; a few seconds on a CPU with the defaults. Returns
    the trained model, its mean attention on an evaluation batch, the accuracy there, the
    loss curve and attention snapshots taken during training.
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    generator = torch.Generator().manual_seed(seed)
    model = AttentionOnlyModel(vocab_size, d_model, n_heads, n_layers, seq_len, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    eval_ids, eval_targets = copy_task_batch(256, seq_len, vocab_size, k_back, generator)
    losses: list[float] = []
    snapshots: dict[int, Tensor] = {}
    for step in tqdm(range(steps), desc="copy task", disable=not progress):
        if step in snapshot_steps:
            snapshots[step] = _evaluate(model, eval_ids, eval_targets)[0]
        ids, targets = copy_task_batch(batch_size, seq_len, vocab_size, k_back, generator)
        logits = model(ids)
        loss = F.cross_entropy(
            logits.reshape(-1, vocab_size), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    weights, accuracy = _evaluate(model, eval_ids, eval_targets)
    snapshots[steps] = weights
    model.eval()
    return CopyTaskResult(model, k_back, weights, accuracy, losses, snapshots)


@single_thread()
@torch.no_grad()
def layer_attention(
    model: AttentionOnlyModel,
    ids: Tensor,
    layer: int = 0,
    causal: bool = True,
    temperature: float = 1.0,
) -> Tensor:
    """Attention weights of one layer, ``(n_heads, seq, seq)``, for one sequence ``ids``
    ``(seq,)``, recomputed with a chosen mask and softmax temperature.

    The layers below ``layer`` run as trained (causal). In ``layer`` itself the scaled scores
    ``q·k / sqrt(head_dim)`` are divided by ``temperature`` before the softmax: below 1 the
    weights sharpen towards the best-matching key, above 1 they flatten towards uniform.
    ``causal=False`` lifts the mask to show what the head would look at in the future.
    """
    if not 0 <= layer < len(model.layers):
        raise ValueError(f"layer must be in [0, {len(model.layers) - 1}], got {layer}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if ids.dim() != 1 or len(ids) == 0:
        raise ValueError(f"ids must be a non-empty 1-D tensor (seq,), got shape {tuple(ids.shape)}")
    was_training = model.training
    model.eval()
    x = model.embed(ids[None])
    for below in model.layers[:layer]:
        x = x + below(x)
    attention_layer = model.layers[layer]
    queries, keys, _ = attention_layer.project_qkv(x)
    scores = attention_scores(queries, keys) / math.sqrt(attention_layer.head_dim)
    mask = attention_layer.build_mask(len(ids)) if causal else None
    model.train(was_training)
    return attention_weights(scores / temperature, mask)[0]


def time_attention_paths(
    batch_size: int = 8,
    seq_len: int = 256,
    d_model: int = 256,
    n_heads: int = 8,
    repeats: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """Median forward time (seconds) of the explicit and the fused (SDPA) attention paths on the
    same weights and input, and ``speedup = explicit / sdpa``."""
    model = MultiHeadAttention(d_model, n_heads, seq_len).eval()
    fast = MultiHeadAttention(d_model, n_heads, seq_len, use_sdpa=True).eval()
    fast.load_state_dict(model.state_dict())
    x = torch.randn(batch_size, seq_len, d_model, generator=torch.Generator().manual_seed(seed))
    times = {}
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=0, atol=1e-5)
        for name, module in (("explicit", model), ("sdpa", fast)):
            module(x)  # warm-up
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                module(x)
                samples.append(time.perf_counter() - start)
            times[name] = statistics.median(samples)
    times["speedup"] = times["explicit"] / times["sdpa"]
    return times


@dataclass
class NextTokenResult:
    """What :func:`train_next_token_model` returns: the model and its loss per step."""

    model: AttentionOnlyModel
    losses: list[float]


@single_thread()
def train_next_token_model(
    token_ids: Sequence[int] | Tensor,
    vocab_size: int,
    steps: int = 300,
    context_length: int = 32,
    d_model: int = 48,
    n_heads: int = 4,
    n_layers: int = 2,
    batch_size: int = 16,
    lr: float = 5e-3,
    seed: int = 0,
    progress: bool = True,
) -> NextTokenResult:
    """Train an attention-only model to predict the next token of a real text, briefly.

    Random windows of ``context_length + 1`` ids from ``token_ids`` give inputs and targets
    shifted by one. Long enough for heads to find simple habits (look at the previous token,
    at the start, at the same word) that the attention explorer then shows.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    if len(ids) < context_length + 2:
        raise ValueError(
            f"token_ids has {len(ids)} tokens, need more than context_length + 1 = "
            f"{context_length + 1}"
        )
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    generator = torch.Generator().manual_seed(seed)
    model = AttentionOnlyModel(vocab_size, d_model, n_heads, n_layers, context_length, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    offsets = torch.arange(context_length + 1)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="training", disable=not progress):
        starts = torch.randint(0, len(ids) - context_length - 1, (batch_size, 1),
                               generator=generator)
        windows = ids[starts + offsets]
        logits = model(windows[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), windows[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return NextTokenResult(model, losses)


@torch.no_grad()
def offset_attention_by_head(model: AttentionOnlyModel, ids: Tensor, k_back: int) -> Tensor:
    """Mean weight every head puts on the token ``k_back`` positions back, ``(n_layers,
    n_heads)``, over the queries of ``ids`` ``(seq,)`` (``k_back=0``: the token itself)."""
    return torch.stack([
        offset_attention(layer_attention(model, ids, layer), k_back).mean(-1)
        for layer in range(len(model.layers))
    ])


def mean_largest_weight(model: AttentionOnlyModel, windows: Tensor) -> Tensor:
    """How focused each head is: the largest weight of each query's row, averaged over all
    queries of ``windows`` ``(n, seq)``; returns ``(n_layers, n_heads)``.

    A head that spreads its attention evenly over a prefix of ``t`` tokens scores about
    ``1/t``; one that always picks a single key scores 1.
    """
    if windows.dim() != 2:
        raise ValueError(f"windows must have shape (n, seq), got {tuple(windows.shape)}")
    per_window = [
        torch.stack([layer_attention(model, ids, layer) for layer in range(len(model.layers))])
        for ids in windows
    ]
    return torch.stack(per_window).max(dim=-1).values.mean(dim=(0, 3))
