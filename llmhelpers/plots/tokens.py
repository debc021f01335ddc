"""Figures for notebook 1: token chips, compression curves, embeddings and sliding windows."""

from __future__ import annotations

import html
from collections.abc import Sequence
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

# A fixed, colour-blind-friendly cycle, so a token keeps its colour across figures and widgets.
CHIP_COLOURS = ("#a6cee3", "#fdbf6f", "#b2df8a", "#fb9a99", "#cab2d6", "#ffff99", "#8dd3c7")


def visible(piece: str) -> str:
    """Make whitespace visible: a space becomes '·', a newline '↵', a tab '→'."""
    return piece.replace(" ", "·").replace("\n", "↵").replace("\t", "→")


def piece_text(piece: bytes) -> str:
    """A token's bytes as text; bytes that are only part of a UTF-8 character show as <hex>."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<{b:02x}>" for b in piece)


def token_pieces(tokenizer, text: str) -> list[tuple[int, str]]:
    """``(id, text of that token)`` for every token of ``text``.

    Works with ``tiktoken.Encoding``, our ``BPETokenizer`` (special-token strings are plain
    text here), ``CharTokenizer`` and ``WordTokenizer``.
    """
    if hasattr(tokenizer, "decode_single_token_bytes"):  # tiktoken.Encoding
        ids = tokenizer.encode(text, disallowed_special=())
        return [(i, piece_text(tokenizer.decode_single_token_bytes(i))) for i in ids]
    if hasattr(tokenizer, "id_to_bytes"):  # BPETokenizer
        ids = tokenizer.encode(text, disallowed_special=())
        return [(i, piece_text(tokenizer.id_to_bytes(i))) for i in ids]
    names = tokenizer.chars if hasattr(tokenizer, "chars") else tokenizer.words
    return [(i, names[i]) for i in tokenizer.encode(text)]


def chips_html(pieces: Sequence[tuple[int, str]], show_ids: bool = True) -> str:
    """Tokens as coloured chips (HTML): one chip per token, its id underneath."""
    chips = []
    for position, (token_id, piece) in enumerate(pieces):
        colour = CHIP_COLOURS[position % len(CHIP_COLOURS)]
        label = f"<br><small style='color:#555'>{token_id}</small>" if show_ids else ""
        chips.append(
            f"<span style='display:inline-block;background:{colour};margin:1px;padding:1px 3px;"
            f"border-radius:3px;font-family:monospace;text-align:center;color:#000'>"
            f"{html.escape(visible(piece))}{label}</span>"
        )
    return "<div style='line-height:2.2'>" + "".join(chips) + "</div>"


@lru_cache(maxsize=1)
def _font_has_glyph_checker():
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    font = FT2Font(font_manager.findfont(font_manager.FontProperties(family="monospace")))
    return lambda char: font.get_char_index(ord(char)) != 0


def _drawable(piece: str) -> str:
    """Replace characters the plotting font cannot draw (emoji, say) by their code point."""
    has_glyph = _font_has_glyph_checker()
    return "".join(c if has_glyph(c) else f"U+{ord(c):X}" for c in visible(piece))


def plot_token_chips(rows: dict[str, Sequence[tuple[int, str]]], title: str, width: float = 60):
    """Each row: a label and its tokens drawn as coloured boxes, wrapped at ``width`` chars."""
    lines: list[tuple[str, list[tuple[float, str, int]]]] = []
    for label, pieces in rows.items():
        x, current = 0.0, []
        lines.append((f"{label} ({len(pieces)} tokens)", current))
        for position, (_, piece) in enumerate(pieces):
            shown = _drawable(piece)
            if x + len(shown) > width and current:
                x, current = 0.0, []
                lines.append(("", current))
            current.append((x, shown, position))
            x += len(shown) + 1.0
    # Monospace text at 9 pt is about 0.075 inch per character; lay the axes out to match.
    char_inches, label_inches = 0.082, 3.0
    height = 0.36 * len(lines) + 0.7
    figure = plt.figure(figsize=(label_inches + char_inches * (width + 3), height))
    axes = figure.add_axes(
        (label_inches / figure.get_figwidth(), 0.05, 1 - label_inches / figure.get_figwidth(),
         1 - 0.6 / height)
    )
    for row, (label, chips) in enumerate(lines):
        y = -row
        axes.text(-1, y, label, ha="right", va="center", fontsize=9, fontweight="bold")
        for x, shown, position in chips:
            axes.text(
                x, y, shown, va="center", fontsize=9, family="monospace",
                bbox=dict(boxstyle="round,pad=0.2", fc=CHIP_COLOURS[position % 7], ec="none"),
            )
    axes.set_xlim(-1, width + 2)
    axes.set_ylim(-len(lines) + 0.4, 0.6)
    axes.axis("off")
    axes.set_title(title)
    return figure


def plot_compression_curve(
    vocab_sizes: Sequence[int], chars_per_token: Sequence[float], chosen: int | None = None
) -> Figure:
    """Characters per token as the vocabulary grows, with the chosen size marked."""
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(vocab_sizes, chars_per_token, color="#1f78b4")
    if chosen is not None:
        index = list(vocab_sizes).index(chosen)
        axes.axvline(chosen, color="#e31a1c", linestyle="--", linewidth=1)
        axes.annotate(
            f"chosen: {chosen} ids\n{chars_per_token[index]:.2f} chars/token",
            (chosen, chars_per_token[index]), xytext=(15, -35), textcoords="offset points",
            arrowprops=dict(arrowstyle="->"),
        )
    axes.set_xlabel("vocabulary size (256 bytes + merges)")
    axes.set_ylabel("characters per token (training text)")
    axes.set_title("BPE compression grows quickly, then flattens")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_sequence_lengths(token_counts: dict[str, int], n_characters: int) -> Figure:
    """How many tokens each tokenizer needs for the same text (fewer = shorter sequences)."""
    figure, axes = plt.subplots(figsize=(7, 3.5))
    names = list(token_counts)
    counts = [token_counts[n] for n in names]
    bars = axes.barh(names, counts, color=CHIP_COLOURS[: len(names)])
    for bar, count in zip(bars, counts):
        axes.text(
            bar.get_width(), bar.get_y() + bar.get_height() / 2,
            f" {count:,} ({n_characters / count:.2f} chars/token)", va="center", fontsize=9,
        )
    axes.set_xlabel("tokens needed for the validation text")
    axes.set_title(f"The same {n_characters:,} characters, {len(names)} ways")
    axes.set_xlim(0, max(counts) * 1.45)
    axes.invert_yaxis()
    figure.tight_layout()
    return figure


def plot_embedding_heatmap(vectors: torch.Tensor, labels: Sequence[str], title: str) -> Figure:
    """Rows are tokens, columns are embedding dimensions: ``vectors`` is (n_tokens, d_model)."""
    values = vectors.detach().float().numpy()
    figure, axes = plt.subplots(figsize=(10, 0.35 * len(labels) + 1.2))
    limit = float(np.abs(values).max())
    image = axes.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    axes.set_yticks(range(len(labels)), [_drawable(label) for label in labels], fontsize=9)
    axes.set_xlabel("embedding dimension")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.03, label="value")
    figure.tight_layout()
    return figure


def plot_sliding_windows(
    pieces: Sequence[str], context_length: int, stride: int, n_windows: int = 3
) -> Figure:
    """Draw the token stream and, under it, each window's inputs and its shifted targets."""
    n_tokens = min(len(pieces), (n_windows - 1) * stride + context_length + 1)
    figure, axes = plt.subplots(figsize=(12, 1.0 + 0.9 * (2 * n_windows + 1)))
    rows = [("token stream", 0, n_tokens, "#dddddd")]
    for w in range(n_windows):
        start = w * stride
        rows.append((f"window {w}: input", start, start + context_length, CHIP_COLOURS[0]))
        rows.append((f"window {w}: target", start + 1, start + context_length + 1, CHIP_COLOURS[1]))
    for row, (label, first, last, colour) in enumerate(rows):
        y = -row
        axes.text(-0.6, y, label, ha="right", va="center", fontsize=9)
        for position in range(first, min(last, n_tokens)):
            axes.add_patch(plt.Rectangle((position, y - 0.35), 0.95, 0.7, color=colour))
            axes.text(
                position + 0.47, y, _drawable(pieces[position])[:6], ha="center", va="center",
                fontsize=8, family="monospace",
            )
    axes.set_xlim(-0.2, n_tokens + 0.2)
    axes.set_ylim(-len(rows) + 0.4, 0.6)
    axes.set_xticks(np.arange(n_tokens) + 0.47, range(n_tokens), fontsize=7)
    axes.set_xlabel("position in the token stream")
    axes.set_yticks([])
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.set_title(
        f"Sliding windows: context_length={context_length}, stride={stride}; "
        "each target is its input shifted one token to the right"
    )
    figure.tight_layout()
    return figure
