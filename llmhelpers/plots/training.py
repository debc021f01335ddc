"""Figures and tables for notebook 4: loss curves, the learning-rate schedule, next-token
distributions under different decoding settings, and a live loss plot for training.

Figure functions draw on a new figure and return it. ``draw_*`` functions draw on an axes you
pass in, so the live plot and the widgets can reuse them on a figure that never touches pyplot
(safe from a background thread).
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from llmhelpers.generate import next_token_probs
from llmhelpers.train import History, TrainConfig, lr_at

TRAIN_COLOUR, VAL_COLOUR = "#1f77b4", "#d62728"


def visible(piece: str) -> str:
    """Make whitespace visible: a space becomes '·', a newline '↵', a tab '→'."""
    return piece.replace(" ", "·").replace("\n", "↵").replace("\t", "→")


def token_label(tokenizer, token_id: int) -> str:
    """A token's text with visible whitespace, quoted, for axis labels."""
    try:
        text = tokenizer.decode([int(token_id)])
    except (KeyError, ValueError):
        text = f"<{token_id}>"
    return f"'{visible(text)}'"


def smooth(values: Sequence[float], weight: float = 0.9) -> np.ndarray:
    """Exponential moving average, bias-corrected (the start is not pulled towards 0)."""
    values = np.asarray(values, dtype=float)
    out, average = np.empty_like(values), 0.0
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        out[i] = average / (1 - weight ** (i + 1))
    return out


def smoothing_weight(n_steps: int) -> float:
    """An EMA weight that averages over about ``n_steps / 50`` steps (between 1 and 10): a long
    run gets a steady line, and a short one is not dragged behind its own fast first drop."""
    window = min(10.0, max(1.0, n_steps / 50))
    return 1.0 - 1.0 / window


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (for ``ipywidgets.Image``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


# ---------------------------------------------------------------- loss curves
def draw_losses(ax: Axes, history: History, title: str = "Training progress") -> None:
    """Train loss per step (faint: raw, solid: smoothed; a short run only raw) and validation
    loss at evaluations."""
    weight = smoothing_weight(len(history.train_loss))
    if history.step and weight > 0:
        ax.plot(history.step, history.train_loss, color=TRAIN_COLOUR, alpha=0.25, lw=0.8)
        smoothed = smooth(history.train_loss, weight)
        ax.plot(history.step, smoothed, color=TRAIN_COLOUR, label="train loss (smoothed)")
    elif history.step:  # too short to smooth
        ax.plot(history.step, history.train_loss, color=TRAIN_COLOUR, label="train loss")
    if history.eval_step:
        ax.plot(history.eval_step, history.val_loss, "o-", color=VAL_COLOUR, ms=4,
                label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if history.step or history.eval_step:
        ax.legend(loc="best")


def plot_losses(history: History, title: str = "Training progress", ln_vocab: float | None = None):
    """Loss curves of a run; ``ln_vocab`` draws the loss of uniform guessing, ``ln(vocab)``."""
    fig, ax = plt.subplots(figsize=(8, 4))
    if ln_vocab is not None:
        ax.axhline(ln_vocab, color="grey", ls="--", lw=1, label="uniform guess: ln(vocab)")
    draw_losses(ax, history, title)
    fig.tight_layout()
    return fig


def plot_overfitting(history: History):
    """Train and validation loss of a run on a tiny subset, the best validation step marked."""
    fig, ax = plt.subplots(figsize=(8, 4))
    draw_losses(ax, history, "Overfitting: a small model memorises a tiny training set")
    if history.val_loss:
        best = int(np.argmin(history.val_loss))
        ax.axvline(history.eval_step[best], color="grey", ls=":", lw=1)
        ax.annotate("validation loss is lowest here;\nafter it the model memorises",
                    (history.eval_step[best], history.val_loss[best]),
                    xytext=(10, 25), textcoords="offset points", fontsize=9)
    fig.tight_layout()
    return fig


def plot_lr_schedule(config: TrainConfig):
    """The learning rate at every step: linear warm-up, then cosine decay to ``min_lr``; the
    right panel zooms in on the warm-up."""
    steps = np.arange(config.max_steps)
    lrs = np.array([lr_at(int(s), config) for s in steps])
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    zoom_end = min(config.max_steps, max(3 * config.warmup_steps, 10))
    for axes, end in ((ax, config.max_steps), (zoom, zoom_end)):
        axes.plot(steps[:end], lrs[:end], color="#2ca02c")
        axes.axvspan(0, config.warmup_steps, color="#2ca02c", alpha=0.12, label="warm-up")
        axes.set_xlabel("optimizer step")
        axes.grid(alpha=0.3)
    ax.set_ylabel("learning rate")
    ax.set_title(f"Cosine decay from {config.lr:g} to {config.min_lr:g}")
    zoom.set_title(f"The first {zoom_end} steps: warm-up")
    zoom.legend(loc="lower right")
    fig.suptitle("Learning-rate schedule")
    fig.tight_layout()
    return fig


class LiveLossPlot:
    """A ``Trainer`` callback that redraws the loss curves in the notebook while training.

    Redraws after every evaluation (and every ``every`` steps if given), replacing its own
    output, so the cell ends with one up-to-date figure.
    """

    def __init__(self, every: int | None = None, title: str = "Training progress (live)"):
        self.every, self.title = every, title
        self.handle = None
        self.redraws = 0

    def figure(self, history: History) -> Figure:
        fig = Figure(figsize=(8, 4))
        draw_losses(fig.add_subplot(), history, self.title)
        fig.tight_layout()
        return fig

    def __call__(self, trainer, event: str) -> None:
        if event == "step" and (not self.every or trainer.step % self.every != 0):
            return
        if event not in ("step", "eval", "end"):
            return
        from IPython.display import Image, display

        image = Image(figure_png(self.figure(trainer.history)))
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
        self.redraws += 1


def samples_table(samples: Sequence[dict], max_chars: int = 300) -> str:
    """HTML table of text samples taken during training (``History.samples``)."""
    rows = "".join(
        f"<tr><td style='vertical-align:top;padding:4px 10px'>{s['step']}</td>"
        f"<td style='text-align:left;padding:4px 10px'><pre style='margin:0;white-space:pre-wrap'>"
        f"{html.escape(s['text'][:max_chars])}</pre></td></tr>"
        for s in samples
    )
    return ("<table><tr><th style='padding:4px 10px'>step</th>"
            "<th style='text-align:left;padding:4px 10px'>sample (same prompt, same seed)</th></tr>"
            f"{rows}</table>")


# ---------------------------------------------------------------- the loss on one example
def target_probability_table(tokenizer, inputs, targets, probs, context_tokens: int = 4) -> str:
    """HTML table: for each position, the last few input tokens, the correct next token, the
    probability the model gave it and its loss ``-ln p``."""
    cell = "<td style='text-align:{};padding:2px 10px'>{}</td>"
    rows = []
    for t in range(len(targets)):
        window = inputs[max(0, t - context_tokens + 1) : t + 1]
        context = "".join(tokenizer.decode([int(i)]) for i in window)
        p = float(probs[t])
        rows.append(
            "<tr>"
            + cell.format("left", f"<code>…{html.escape(visible(context))}</code>")
            + cell.format("left", f"<code>{html.escape(token_label(tokenizer, targets[t]))}</code>")
            + cell.format("right", f"{p:.5f}")
            + cell.format("right", f"{-np.log(p):.3f}")
            + "</tr>"
        )
    header = ("<tr><th style='padding:2px 10px'>input so far</th><th>correct next token</th>"
              "<th>p(correct)</th><th>loss = −ln p</th></tr>")
    return f"<table>{header}{''.join(rows)}</table>"


def plot_target_probabilities(tokenizer, targets, probs_by_model: Mapping[str, Sequence[float]]):
    """Grouped bars: the probability each model gives the correct next token, per position."""
    labels = [token_label(tokenizer, t) for t in targets]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    width = 0.8 / len(probs_by_model)
    for k, (name, probs) in enumerate(probs_by_model.items()):
        values = [float(p) for p in probs]
        mean_loss = -np.mean(np.log(values))
        ax.bar(np.arange(len(values)) + k * width, values, width,
               label=f"{name}: loss {mean_loss:.2f}")
    ax.set_xticks(np.arange(len(labels)) + width * (len(probs_by_model) - 1) / 2, labels,
                  rotation=45, fontsize=9)
    ax.set_yscale("log")
    ax.set_ylabel("p(correct next token), log scale")
    ax.set_xlabel("correct next token at each position")
    ax.set_title("Probability of the right next token, position by position")
    ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- decoding
def top_candidates(logits: torch.Tensor, n: int = 12) -> list[int]:
    """Ids of the ``n`` highest logits, most likely first."""
    return torch.topk(logits, min(n, logits.shape[-1])).indices.tolist()


def draw_distribution(
    ax: Axes, probs: torch.Tensor, candidates: Sequence[int], labels: Sequence[str], title: str
) -> None:
    """Bars: the probability of each candidate id (0 when a filter removed it)."""
    values = [float(probs[i]) for i in candidates]
    colours = ["#1f77b4" if v > 0 else "#cccccc" for v in values]
    ax.bar(range(len(candidates)), values, color=colours)
    ax.set_xticks(range(len(candidates)), labels, rotation=60, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("candidate next token (most likely first)", fontsize=8)
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=10)
    kept = int((probs > 0).sum())
    ax.text(0.98, 0.95, f"{kept} id{'s' if kept != 1 else ''} possible", transform=ax.transAxes,
            ha="right", va="top", fontsize=8)


def decoding_label(settings: Mapping) -> str:
    """``{"temperature": 0.5, "top_k": 5}`` -> ``'temperature=0.5, top_k=5'``."""
    if settings.get("temperature", 1.0) == 0:
        return "greedy (temperature=0)"
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "plain sampling (temperature=1)"


def plot_decoding_settings(
    logits: torch.Tensor, tokenizer, settings: Sequence[Mapping], prompt: str = "",
    n_candidates: int = 12, vocab_size: int | None = None,
):
    """One bar chart per decoding setting, over the same top candidates of ``logits``."""
    candidates = top_candidates(logits, n_candidates)
    labels = [token_label(tokenizer, i) for i in candidates]
    n = len(settings)
    columns = min(3, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, setting in zip(axes.flat, settings, strict=False):
        probs = next_token_probs(logits, vocab_size=vocab_size, **setting)
        draw_distribution(ax, probs, candidates, labels, decoding_label(setting))
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"The next token after {prompt[-40:]!r} under different decoding settings")
    fig.tight_layout()
    return fig


def generations_table(rows: Sequence[tuple[str, str]], max_chars: int = 260) -> str:
    """HTML table: decoding setting -> generated text."""
    body = "".join(
        f"<tr><td style='vertical-align:top;padding:4px 10px;white-space:nowrap'>"
        f"{html.escape(label)}</td><td style='text-align:left;padding:4px 10px'>"
        f"<pre style='margin:0;white-space:pre-wrap'>{html.escape(text[:max_chars])}</pre>"
        "</td></tr>"
        for label, text in rows
    )
    return ("<table><tr><th style='padding:4px 10px'>decoding</th>"
            f"<th style='text-align:left;padding:4px 10px'>generated text</th></tr>{body}</table>")


def throughput_table(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column HTML table of named figures (tokens/s, peak FLOP/s, MFU ...)."""
    body = "".join(
        f"<tr><td style='text-align:left;padding:2px 10px'>{html.escape(name)}</td>"
        f"<td style='text-align:right;padding:2px 10px'>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return f"<table>{body}</table>"
