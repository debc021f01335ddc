"""Figures and tables for notebook 3: LayerNorm, GELU, residual gradients, model sizes.

Every figure function draws on a new figure and returns it; table functions return HTML
strings (wrap them in ``IPython.display.HTML`` to show them).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from llmhelpers.model import (
    COMPONENTS,
    GELU,
    GPTConfig,
    format_size_report,
    human_count,
    parameter_breakdown,
    size_report,
)


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _signed(value: float, decimals: int = 2) -> str:
    """``+0.00`` rather than ``-0.00`` for values that round to zero."""
    return f"{round(float(value), decimals) + 0.0:+.{decimals}f}"


def plot_layernorm_effect(
    before: torch.Tensor,
    after: torch.Tensor,
    n_rows: int = 4,
    labels: Sequence[str] | None = None,
) -> Figure:
    """Histograms of the values in the first ``n_rows`` vectors of ``before`` and ``after``
    ``(n, d_model)``, each legend entry giving the vector's mean and standard deviation:
    different scales before, all centred and unit-width after. ``labels`` name the vectors
    (default ``vector 0``, ``vector 1``...)."""
    before, after = _np(before)[:n_rows], _np(after)[:n_rows]
    if labels is None:
        labels = [f"vector {i}" for i in range(len(before))]
    if len(labels) < len(before):
        raise ValueError(f"labels needs one name per vector ({len(before)}), got {len(labels)}")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    colours = plt.get_cmap("tab10").colors
    panels = ((axes[0], before, "before LayerNorm"), (axes[1], after, "after LayerNorm"))
    for ax, values, title in panels:
        bins = np.linspace(values.min(), values.max(), 40)
        for i, row in enumerate(values):
            label = f"{labels[i]}: mean {_signed(row.mean())}, std {row.std():.2f}"
            ax.hist(row, bins=bins, alpha=0.55, color=colours[i % 10], label=label)
        ax.set_title(title)
        ax.set_xlabel("activation value")
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("count (features)")
    axes[0].set_ylim(0, axes[0].get_ylim()[1] * 1.5)  # room for the legends above the bars
    fig.suptitle("LayerNorm puts every vector on the same scale: mean 0, standard deviation 1")
    fig.tight_layout()
    return fig


def plot_gelu_vs_relu() -> Figure:
    """GELU (tanh approximation) next to ReLU: the functions and their slopes."""
    x = torch.linspace(-4, 4, 801, requires_grad=True)
    gelu = GELU()(x)
    (gelu_slope,) = torch.autograd.grad(gelu.sum(), x)
    relu = torch.relu(x)
    xs = _np(x)
    fig, (ax_f, ax_d) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax_f.plot(xs, _np(gelu), label="GELU (tanh approximation)", lw=2)
    ax_f.plot(xs, _np(relu), "--", label="ReLU", lw=2)
    ax_f.set_title("activation")
    ax_f.set_ylabel("output")
    ax_d.plot(xs, _np(gelu_slope), label="GELU", lw=2)
    ax_d.plot(xs, (xs > 0).astype(float), "--", label="ReLU", lw=2)
    ax_d.set_title("slope (what the gradient is multiplied by)")
    ax_d.set_ylabel("d output / d input")
    for ax in (ax_f, ax_d):
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("input x")
        ax.legend()
    fig.suptitle(
        "GELU is a smooth ReLU: no kink at 0, and moderately negative inputs still pass a gradient"
    )
    fig.tight_layout()
    return fig


def plot_gradient_norms(
    with_residual: Sequence[float], without_residual: Sequence[float]
) -> Figure:
    """Per-block gradient norms (log scale) for the same model with and without residuals."""
    layers = np.arange(len(with_residual))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.semilogy(layers, with_residual, "o-", label="with residual connections")
    ax.semilogy(layers, without_residual, "s-", label="without residual connections")
    ax.set_xlabel("block (0 = first, nearest the input)")
    ax.set_ylabel("gradient norm of the block's parameters")
    ax.set_title("One backward pass: without the residual path the gradient fades toward the input")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_parameter_breakdown(configs: Mapping[str, GPTConfig]) -> Figure:
    """One horizontal bar chart per config: parameters per component, as a share of the total."""
    fig, axes = plt.subplots(1, len(configs), figsize=(5.5 * len(configs), 3.4), squeeze=False)
    for ax, (name, config) in zip(axes[0], configs.items(), strict=True):
        counts = parameter_breakdown(config)
        total = sum(counts.values())
        labels = list(COMPONENTS)
        shares = [100 * counts[c] / total for c in labels]
        bars = ax.barh(labels, shares, color=plt.get_cmap("tab10").colors[: len(labels)])
        for bar, component in zip(bars, labels, strict=True):
            text = human_count(counts[component]) if counts[component] else "0 (tied)"
            ax.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2, text, va="center")
        ax.set_xlim(0, 100)
        ax.invert_yaxis()
        ax.set_xlabel("share of all parameters (%)")
        ax.set_title(f"{name}: {human_count(total)} parameters")
    fig.suptitle("Where the parameters are")
    fig.tight_layout()
    return fig


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain HTML table; the first column is left-aligned, the rest right-aligned."""

    def cell(tag: str, value: object, first: bool) -> str:
        align = "left" if first else "right"
        return (
            f"<{tag} style='text-align:{align};padding:2px 10px'>{html.escape(str(value))}</{tag}>"
        )

    head = "".join(cell("th", h, i == 0) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", v, i == 0) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def size_table(configs: Mapping[str, GPTConfig], dtype: torch.dtype = torch.float32) -> str:
    """HTML table: one row per config with its shape, parameters (head tied to the token
    embedding or separate), memory, FLOPs and KV cache (memory in ``dtype``)."""
    dtype_name = str(dtype).removeprefix("torch.")
    header = ["model", "layers", "heads", "d_model", "context", "vocab", "head"]
    rows = []
    for name, config in configs.items():
        readable = format_size_report(size_report(config, dtype))
        del readable["parameters"]  # the config's own count: one of the two that follow
        if not rows:
            header += [
                f"{label} ({dtype_name})" if label.startswith(("weights", "KV")) else label
                for label in readable
            ]
        shape = [config.n_layers, config.n_heads, config.d_model, config.context_length]
        head = "tied" if config.tie_weights else "untied"
        rows.append([name, *shape, config.vocab_size, head, *readable.values()])
    return html_table(header, rows)


def shape_table(trace: Sequence[tuple[str, tuple]]) -> str:
    """HTML table of ``trace_shapes``' output: module name and output shape."""
    return html_table(["module", "output shape"], [(name, str(shape)) for name, shape in trace])
