"""Figures for notebook 2: scores, weights, context vectors, masks, heads and learning.

Every function draws on a new figure and returns it; matrices are ``(queries, keys)`` with
queries as rows, so row ``i`` is what token ``i`` looks at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from llmhelpers.plots.tokens import piece_text, visible

__all__ = [
    "visible", "token_label", "token_labels", "draw_heatmap", "plot_heatmap",
    "plot_token_vectors", "plot_weight_bars", "plot_context_vector", "softmax_saturation",
    "plot_softmax_saturation", "plot_causal_masking", "plot_dropout", "plot_head_grid",
    "plot_copy_task",
]


def token_label(tokenizer, token_id: int) -> str:
    """Readable label of one token, as in notebook 1: whitespace made visible (``·``, ``↵``)
    and a token that is only part of a UTF-8 character shown as its bytes, e.g. ``<c3>``.

    Uses the token's own bytes (``id_to_bytes`` of our BPE tokenizer, or tiktoken's
    ``decode_single_token_bytes``); other tokenizers fall back to ``decode([token_id])``.
    """
    token_id = int(token_id)
    if hasattr(tokenizer, "id_to_bytes"):
        piece = piece_text(tokenizer.id_to_bytes(token_id))
    elif hasattr(tokenizer, "decode_single_token_bytes"):
        piece = piece_text(tokenizer.decode_single_token_bytes(token_id))
    else:
        piece = tokenizer.decode([token_id])
    return visible(piece)


def token_labels(tokenizer, ids: Sequence[int]) -> list[str]:
    """:func:`token_label` of every id (our tokenizers and ``tiktoken``)."""
    return [token_label(tokenizer, i) for i in ids]


def _as_numpy(matrix) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().float().cpu().numpy()
    return np.asarray(matrix, dtype=float)


def draw_heatmap(
    ax: Axes,
    matrix,
    query_labels: Sequence[str],
    key_labels: Sequence[str] | None = None,
    title: str = "",
    kind: str = "weights",
    annotate: bool | None = None,
    vmax: float | None = None,
) -> None:
    """Draw a ``(queries, keys)`` matrix on ``ax``.

    ``kind="weights"``: values from 0 to ``vmax`` (default 1) on a white-to-blue scale.
    ``kind="scores"``: any real values on a diverging scale centred at 0; ``-inf`` entries
    (masked) are drawn grey.
    """
    values = _as_numpy(matrix)
    key_labels = query_labels if key_labels is None else key_labels
    if annotate is None:
        annotate = values.shape[0] <= 10 and values.shape[1] <= 10
    finite = np.isfinite(values)
    if kind == "weights":
        limit = 1.0 if vmax is None else float(vmax)
        image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=limit)
    else:
        limit = np.abs(values[finite]).max() if finite.any() else 1.0
        shown = np.ma.masked_where(~finite, values)
        cmap = plt.get_cmap("RdBu_r").copy()
        cmap.set_bad("#bbbbbb")
        image = ax.imshow(shown, cmap=cmap, vmin=-limit, vmax=limit)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(key_labels)), key_labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(query_labels)), query_labels, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    if annotate:
        for (row, col), value in np.ndenumerate(values):
            text = "−∞" if value == -np.inf else f"{value:.2f}"
            strong = np.isfinite(value) and (
                value > 0.6 * limit if kind == "weights" else abs(value) > 0.6 * limit
            )
            ax.text(col, row, text, ha="center", va="center", fontsize=7,
                    color="white" if strong else "black")


def plot_heatmap(
    matrix, labels: Sequence[str], title: str, kind: str = "weights", size: float = 5.5
) -> Figure:
    """One ``(seq, seq)`` score or weight matrix as a labelled heatmap."""
    figure, ax = plt.subplots(figsize=(size, size * 0.85))
    draw_heatmap(ax, matrix, labels, title=title, kind=kind)
    figure.tight_layout()
    return figure


def plot_token_vectors(vectors, labels: Sequence[str], title: str) -> Figure:
    """2-D token vectors ``(seq, 2)`` as arrows from the origin: aligned arrows have large
    dot products."""
    points = _as_numpy(vectors)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"vectors must have shape (seq, 2), got {points.shape}")
    figure, ax = plt.subplots(figsize=(5.5, 5))
    colours = plt.get_cmap("tab10")
    for i, ((x, y), label) in enumerate(zip(points, labels, strict=True)):
        ax.annotate("", xy=(x, y), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="->", color=colours(i % 10), lw=1.8))
        ax.text(x * 1.08, y * 1.08, label, color=colours(i % 10), fontsize=10,
                ha="center", va="center")
    _square_limits(ax, points)
    ax.set_title(title)
    ax.set_xlabel("dimension 0")
    ax.set_ylabel("dimension 1")
    figure.tight_layout()
    return figure


def _square_limits(ax: Axes, points: np.ndarray) -> None:
    reach = 1.25 * max(np.abs(points).max(), 1e-6)
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-reach, reach)
    ax.set_aspect("equal")
    ax.axhline(0, color="#999", lw=0.6)
    ax.axvline(0, color="#999", lw=0.6)
    ax.grid(alpha=0.3)


def plot_weight_bars(
    scores, weights, labels: Sequence[str], query_label: str
) -> Figure:
    """One query's raw scores and its softmax weights, side by side as bars."""
    scores, weights = _as_numpy(scores), _as_numpy(weights)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    positions = np.arange(len(labels))
    left.bar(positions, scores, color=np.where(scores >= 0, "#4c72b0", "#c44e52"))
    left.set_title(f"scores of query {query_label!r} (any real number)")
    left.set_ylabel("score = query · key")
    right.bar(positions, weights, color="#55a868")
    right.set_title(f"softmax weights of query {query_label!r} (sum = {weights.sum():.3f})")
    right.set_ylabel("attention weight")
    right.set_ylim(0, 1)
    for ax in (left, right):
        ax.set_xticks(positions, labels, rotation=45, ha="right")
        ax.set_xlabel("key token")
        ax.axhline(0, color="#555", lw=0.6)
    for x, w in zip(positions, weights, strict=True):
        right.text(x, w + 0.02, f"{w:.2f}", ha="center", fontsize=8)
    figure.tight_layout()
    return figure


def plot_context_vector(values, weights, labels: Sequence[str], query_label: str) -> Figure:
    """The context vector as a weighted sum of 2-D value vectors ``(seq, 2)``.

    Left: each value vector (faint) and the context vector (bold), which is their weighted
    average. Right: the same sum built head to tail, one ``weight * value`` step per token.
    A repeated token (same vector) is drawn once with its weights added up, in the same colour
    in both panels.
    """
    values, weights = _as_numpy(values), _as_numpy(weights)
    context = weights @ values
    colours = plt.get_cmap("tab10")
    figure, (left, right) = plt.subplots(1, 2, figsize=(12.5, 5))
    # Group positions that hold the same vector (a repeated token), in order of appearance.
    groups: dict[tuple[float, float], list[int]] = {}
    for i, vector in enumerate(values):
        groups.setdefault(tuple(np.round(vector, 6)), []).append(i)
    members_list = list(groups.values())
    start = np.zeros(2)
    chain = [start]
    handles = []
    for g, members in enumerate(members_list):
        colour = colours(g % 10)
        i = members[0]
        x, y = values[i]
        total = weights[members].sum()
        count = f" ×{len(members)}" if len(members) > 1 else ""
        left.annotate("", xy=(x, y), xytext=(0, 0),
                      arrowprops=dict(arrowstyle="->", color=colour, lw=1, alpha=0.6))
        left.text(x * 1.1, y * 1.1, f"{labels[i]}{count}\n{total:.2f}",
                  color=colour, fontsize=8, ha="center", va="center")
        step = total * values[i]
        right.annotate("", xy=tuple(start + step), xytext=tuple(start),
                       arrowprops=dict(arrowstyle="->", color=colour, lw=2))
        start = start + step
        chain.append(start)
        handles.append(Line2D([], [], color=colour, lw=2,
                              label=f"{total:.2f} × {labels[i]}{count}"))
    left.annotate("", xy=tuple(context), xytext=(0, 0),
                  arrowprops=dict(arrowstyle="-|>", color="black", lw=2.5))
    left.text(*context, "  context", fontsize=10, fontweight="bold")
    left.set_title(f"values (with their total weight) and the context of {query_label!r}",
                   fontsize=10)
    (star,) = right.plot(*context, "k*", markersize=14, label="context vector")
    right.legend(handles=[*handles, star], title="weight × value", fontsize=8,
                 loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    right.set_title("the same sum, one weighted value at a time", fontsize=10)
    _square_limits(left, np.vstack([values, context[None]]))
    _square_limits(right, np.vstack(chain))
    for ax in (left, right):
        ax.set_xlabel("dimension 0")
        ax.set_ylabel("dimension 1")
    figure.tight_layout()
    return figure


@torch.no_grad()
def softmax_saturation(
    dims: Sequence[int] = (2, 8, 32, 128, 512, 2048),
    n_keys: int = 16,
    trials: int = 500,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """How peaked the softmax gets as the head dimension ``d_k`` grows.

    For random queries and keys with unit-variance entries, returns per dimension the standard
    deviation of the scores and the mean largest softmax weight among ``n_keys`` keys, with and
    without the ``1/sqrt(d_k)`` scaling.
    """
    generator = torch.Generator().manual_seed(seed)
    result = {name: [] for name in ("std_raw", "std_scaled", "max_raw", "max_scaled")}
    for d_k in dims:
        queries = torch.randn(trials, 1, d_k, generator=generator)
        keys = torch.randn(trials, n_keys, d_k, generator=generator)
        raw = (queries @ keys.transpose(1, 2)).squeeze(1)
        scaled = raw / math.sqrt(d_k)
        result["std_raw"].append(raw.std().item())
        result["std_scaled"].append(scaled.std().item())
        result["max_raw"].append(torch.softmax(raw, -1).max(-1).values.mean().item())
        result["max_scaled"].append(torch.softmax(scaled, -1).max(-1).values.mean().item())
    out = {name: np.array(values) for name, values in result.items()}
    out["dims"] = np.array(dims)
    out["n_keys"] = np.array(n_keys)
    return out


def plot_softmax_saturation(stats: dict[str, np.ndarray]) -> Figure:
    """Two panels from :func:`softmax_saturation`: score spread and largest weight vs ``d_k``."""
    dims = stats["dims"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.plot(dims, stats["std_raw"], "o-", label="q·k (unscaled)")
    left.plot(dims, stats["std_scaled"], "s-", label="q·k / sqrt(d_k)")
    left.plot(dims, np.sqrt(dims), ":", color="grey", label="sqrt(d_k)")
    left.set_yscale("log")
    left.set_title("spread of the scores")
    left.set_ylabel("standard deviation of scores")
    right.plot(dims, stats["max_raw"], "o-", label="unscaled")
    right.plot(dims, stats["max_scaled"], "s-", label="scaled by 1/sqrt(d_k)")
    right.axhline(1.0 / int(stats["n_keys"]), color="grey", ls=":", label="uniform")
    right.set_ylim(0, 1.05)
    right.set_title(f"largest softmax weight among {int(stats['n_keys'])} keys")
    right.set_ylabel("mean largest weight")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("head dimension d_k")
        ax.legend()
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_causal_masking(scores, weights, labels: Sequence[str]) -> Figure:
    """Three steps of causal attention: raw scores, scores with the future set to ``-inf``,
    and the resulting weights (exactly 0 above the diagonal)."""
    scores = _as_numpy(scores)
    masked = scores.copy()
    masked[np.triu_indices(len(scores), k=1)] = -np.inf
    figure, axes = plt.subplots(1, 3, figsize=(16, 5))
    draw_heatmap(axes[0], scores, labels, title="1. scores (every pair)", kind="scores")
    draw_heatmap(axes[1], masked, labels, title="2. future set to −∞", kind="scores")
    draw_heatmap(axes[2], weights, labels, title="3. softmax: rows sum to 1")
    figure.tight_layout()
    return figure


def plot_dropout(weights_eval, weights_train, labels: Sequence[str], p: float) -> Figure:
    """The same attention weights without dropout (eval) and with dropout ``p`` (training).

    Both panels share one colour scale that reaches the largest value, so the survivors'
    ``1 / (1 - p)`` scaling (weights above 1) is visible rather than clipped.
    """
    evaluation, train = _as_numpy(weights_eval), _as_numpy(weights_train)
    vmax = max(1.0, float(evaluation.max()), float(train.max()))
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    draw_heatmap(axes[0], evaluation, labels, title="eval mode: no dropout", vmax=vmax)
    draw_heatmap(
        axes[1], train, labels, vmax=vmax,
        title=f"training, dropout p={p}: zeros, survivors × {1 / (1 - p):.1f}",
    )
    figure.tight_layout()
    return figure


def plot_head_grid(weights, labels: Sequence[str], title: str) -> Figure:
    """Attention of every head: ``(n_heads, seq, seq)`` or ``(n_layers, n_heads, seq, seq)``,
    one heatmap per head (rows = layers)."""
    grid = _as_numpy(weights)
    if grid.ndim == 3:
        grid = grid[None]
    if grid.ndim != 4:
        raise ValueError(f"weights must be 3-D or 4-D, got shape {grid.shape}")
    n_layers, n_heads = grid.shape[:2]
    seq = grid.shape[-1]
    # Panels grow with the sequence so every label gets room; the tick labels are drawn only
    # on the outer panels (all panels share the same tokens).
    panel = max(3.3, 0.2 * seq)
    fontsize = 10 if seq <= 24 else 7
    figure, axes = plt.subplots(
        n_layers, n_heads, figsize=(panel * n_heads + 0.8, panel * n_layers + 0.9),
        squeeze=False, sharex=True, sharey=True, layout="constrained",
    )
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer, head]
            ax.imshow(grid[layer, head], cmap="Blues", vmin=0, vmax=1)
            ax.set_title(f"layer {layer}, head {head}" if n_layers > 1 else f"head {head}",
                         fontsize=11)
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=fontsize)
            ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)
            ax.tick_params(labelbottom=layer == n_layers - 1, labelleft=head == 0)
            if layer == n_layers - 1:
                ax.set_xlabel("key")
            if head == 0:
                ax.set_ylabel("query")
    figure.suptitle(title, fontsize=13)
    return figure


def plot_copy_task(result) -> Figure:
    """Attention snapshots during copy-task training and the loss curve.

    ``result`` is a :class:`llmhelpers.attention_demo.CopyTaskResult`; the expected cells
    (key ``t - k_back`` for query ``t``) are outlined in orange.
    """
    steps = sorted(result.snapshots)
    figure = plt.figure(figsize=(3.0 * len(steps), 6.4))
    grid = figure.add_gridspec(2, len(steps), height_ratios=[1.25, 1])
    seq_len = result.weights.shape[-1]
    for column, step in enumerate(steps):
        ax = figure.add_subplot(grid[0, column])
        ax.imshow(_as_numpy(result.snapshots[step][-1, 0]), cmap="Blues", vmin=0, vmax=1)
        for t in range(result.k_back, seq_len):
            ax.add_patch(Rectangle((t - result.k_back - 0.5, t - 0.5), 1, 1, fill=False,
                                   edgecolor="#ff7f0e", lw=0.8))
        ax.set_title(f"step {step}")
        ax.set_xlabel("key position")
        if column == 0:
            ax.set_ylabel("query position")
    loss_ax = figure.add_subplot(grid[1, :])
    loss_ax.plot(result.losses)
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("training step")
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.set_title(f"loss while learning to copy the token {result.k_back} back "
                      f"(final accuracy {result.accuracy:.1%})")
    loss_ax.grid(alpha=0.3)
    figure.suptitle("attention pattern while training (orange: where the answer is)")
    figure.tight_layout()
    return figure
