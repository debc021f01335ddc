"""Widget for notebook 3: a model-size calculator.

Sliders for layers, heads, ``d_model``, the feed-forward width, context length and vocabulary
(and a dtype) give, live, the parameter count, the memory for the weights and for training,
the FLOPs per token and the KV-cache size. What it shows is kept in plain attributes
(``config``, ``report``, ``summary``, ``html``) so tests can drive it headless.
"""

from __future__ import annotations

import html
import math

import ipywidgets as widgets
import torch

from llmhelpers.model import (
    GPTConfig,
    format_size_report,
    human_bytes,
    parameter_breakdown,
    size_report,
)
from llmhelpers.plots.model import html_table

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SLIDER_RANGES = {
    # name: (min, max, step) before widening to fit the starting config; GPT-3 175B fits
    # (96 layers, 96 heads, d_model 12,288, d_ff 49,152).
    "n_layers": (1, 128, 1),
    "n_heads": (1, 128, 1),
    "d_model": (64, 12_288, 64),
    "d_ff": (64, 4 * 12_288, 64),
    "context_length": (64, 32_768, 64),
    "vocab_size": (256, 256_000, 1),
}


def _slider_range(name: str, start: int) -> tuple[int, int, int]:
    """``(min, max, step)`` for a slider that must show ``start`` exactly: the default range,
    widened to include it, with a step that divides it (so dragging can come back to it)."""
    low, high, step = SLIDER_RANGES[name]
    if start % step:
        step = math.gcd(step, start)
        low = step
    return min(low, start), max(high, start), step


class ModelSizeCalculator:
    """How big is a GPT of this shape? Move the sliders and read the table.

    Controls: ``n_layers``, ``n_heads``, ``d_model``, ``context_length``, ``vocab_size`` and
    ``d_ff`` (IntSliders), ``ff_default`` (Checkbox: ``d_ff = 4 x d_model``, which then moves
    with ``d_model``) and ``dtype`` (Dropdown). The starting config is shown exactly: slider
    ranges widen to include its values, and its ``d_ff``, ``tie_weights`` and ``qkv_bias`` are
    kept. Displayed state: ``config`` (a ``GPTConfig``, or None when the shape is invalid),
    ``report`` (numbers from ``size_report``), ``summary`` (one line) and ``html``. An invalid
    shape (``d_model`` not divisible by ``n_heads``) shows the reason instead of the table.
    """

    def __init__(self, start: GPTConfig | None = None):
        start = start or GPTConfig.gpt2("124M")
        if not isinstance(start, GPTConfig):
            raise TypeError(f"start must be a GPTConfig or None, got {type(start).__name__}")
        style = {"description_width": "120px"}
        layout = widgets.Layout(width="520px")

        def slider(name, description, value):
            low, high, step = _slider_range(name, value)
            return widgets.IntSlider(
                value=value, min=low, max=high, step=step, description=description,
                style=style, layout=layout, continuous_update=True,
            )  # fmt: skip

        self.n_layers = slider("n_layers", "layers", start.n_layers)
        self.n_heads = slider("n_heads", "heads", start.n_heads)
        self.d_model = slider("d_model", "d_model", start.d_model)
        self.ff_default = widgets.Checkbox(
            value=start.d_ff is None, description="d_ff = 4 × d_model", style=style
        )
        self.d_ff = slider("d_ff", "d_ff (feed-forward)", start.ff_dim)
        self.d_ff.max = max(self.d_ff.max, 4 * self.d_model.max)
        self.d_ff.min = min(self.d_ff.min, 4 * self.d_model.min)
        self.d_ff.disabled = self.ff_default.value
        self.context_length = slider("context_length", "context length", start.context_length)
        self.vocab_size = slider("vocab_size", "vocabulary", start.vocab_size)
        self.dtype = widgets.Dropdown(
            options=list(DTYPES), value="float32", description="dtype", style=style
        )
        self.tie_weights = start.tie_weights
        self.qkv_bias = start.qkv_bias
        self.output = widgets.HTML()
        self._updating = False
        controls = (
            self.n_layers,
            self.n_heads,
            self.d_model,
            self.ff_default,
            self.d_ff,
            self.context_length,
            self.vocab_size,
            self.dtype,
        )
        for control in controls:
            control.observe(self._update, names="value")
        self.widget = widgets.VBox([*controls, self.output])
        self._update()

    def _update(self, _change=None) -> None:
        if self._updating:  # the d_ff slider following d_model calls back in
            return
        self._updating = True
        try:
            self.d_ff.disabled = self.ff_default.value
            if self.ff_default.value:
                self.d_ff.value = 4 * self.d_model.value
            self._show()
        finally:
            self._updating = False

    def _show(self) -> None:
        try:
            self.config = GPTConfig(
                vocab_size=self.vocab_size.value,
                context_length=self.context_length.value,
                d_model=self.d_model.value,
                n_heads=self.n_heads.value,
                n_layers=self.n_layers.value,
                qkv_bias=self.qkv_bias,
                tie_weights=self.tie_weights,
                d_ff=None if self.ff_default.value else self.d_ff.value,
            )
        except ValueError as error:
            self.config, self.report = None, {}
            self.summary = f"invalid shape: {error}"
            self.html = f"<b style='color:#b00'>{html.escape(self.summary)}</b>"
            self.output.value = self.html
            return
        dtype = DTYPES[self.dtype.value]
        self.report = size_report(self.config, dtype)
        readable = format_size_report(self.report)
        breakdown = parameter_breakdown(self.config)
        total = self.report["parameters"]
        embedding_share = (breakdown["token embedding"] + breakdown["position embedding"]) / total
        head = "tied to the token embedding" if self.tie_weights else "separate"
        self.summary = (
            f"{readable['parameters']} parameters (output head {head}; "
            f"{100 * embedding_share:.0f}% in the embeddings), "
            f"{human_bytes(self.report['weights memory (bytes)'])} of weights in "
            f"{self.dtype.value}, attention head width {self.config.head_dim}, "
            f"feed-forward width {self.config.ff_dim}"
        )
        rows = [
            (f"{name} ({self.dtype.value})" if name.startswith(("weights", "KV")) else name, value)
            for name, value in readable.items()
        ]
        self.html = f"<p><b>{html.escape(self.summary)}</b></p>" + html_table(
            ["quantity", "value"], rows
        )
        self.output.value = self.html

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
