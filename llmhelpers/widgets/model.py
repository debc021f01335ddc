"""Widget for notebook 3: a model-size calculator.

Sliders for layers, heads, ``d_model``, context length and vocabulary (and a dtype) give, live,
the parameter count, the memory for the weights and for training, the FLOPs per token and the
KV-cache size. What it shows is kept in plain attributes (``config``, ``report``, ``summary``,
``html``) so tests can drive it headless.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import torch

from llmhelpers.model import GPTConfig, format_size_report, parameter_breakdown, size_report
from llmhelpers.plots.model import html_table

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelSizeCalculator:
    """How big is a GPT of this shape? Move the sliders and read the table.

    Controls: ``n_layers``, ``n_heads``, ``d_model``, ``context_length``, ``vocab_size``
    (IntSliders) and ``dtype`` (Dropdown). Displayed state: ``config`` (a ``GPTConfig``, or
    None when the shape is invalid), ``report`` (numbers from ``size_report``), ``summary``
    (one line) and ``html``. An invalid shape (``d_model`` not divisible by ``n_heads``) shows
    the reason instead of the table.
    """

    def __init__(self, start: GPTConfig | None = None):
        start = start or GPTConfig.gpt2("124M")
        style = {"description_width": "120px"}
        layout = widgets.Layout(width="520px")

        def slider(description, value, low, high, step):
            return widgets.IntSlider(
                value=value, min=low, max=high, step=step, description=description,
                style=style, layout=layout, continuous_update=True,
            )  # fmt: skip

        self.n_layers = slider("layers", start.n_layers, 1, 96, 1)
        self.n_heads = slider("heads", start.n_heads, 1, 64, 1)
        self.d_model = slider("d_model", start.d_model, 64, 12_288, 64)
        self.context_length = slider("context length", start.context_length, 64, 32_768, 64)
        self.vocab_size = slider("vocabulary", start.vocab_size, 256, 256_000, 1)
        self.dtype = widgets.Dropdown(
            options=list(DTYPES), value="float32", description="dtype", style=style
        )
        self.tie_weights = start.tie_weights
        self.qkv_bias = start.qkv_bias
        self.output = widgets.HTML()
        controls = (
            self.n_layers,
            self.n_heads,
            self.d_model,
            self.context_length,
            self.vocab_size,
            self.dtype,
        )
        for control in controls:
            control.observe(self._update, names="value")
        self.widget = widgets.VBox([*controls, self.output])
        self._update()

    def _update(self, _change=None) -> None:
        try:
            self.config = GPTConfig(
                vocab_size=self.vocab_size.value,
                context_length=self.context_length.value,
                d_model=self.d_model.value,
                n_heads=self.n_heads.value,
                n_layers=self.n_layers.value,
                qkv_bias=self.qkv_bias,
                tie_weights=self.tie_weights,
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
        self.summary = (
            f"{readable['parameters']} parameters "
            f"({100 * embedding_share:.0f}% in the embeddings), "
            f"{readable['weights memory (bytes)']} of weights in {self.dtype.value}, "
            f"head width {self.config.head_dim}"
        )
        self.html = f"<p><b>{html.escape(self.summary)}</b></p>" + html_table(
            ["quantity", "value"], list(readable.items())
        )
        self.output.value = self.html

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
