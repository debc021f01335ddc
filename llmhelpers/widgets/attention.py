"""Widget for notebook 2: an attention explorer.

Type a sentence, pick a layer and a head, toggle the causal mask and change the softmax
temperature; the widget shows that head's attention as a heatmap table. What it shows is kept
in plain attributes (``tokens``, ``weights``, ``summary``, ``html``) so tests can drive it
headless.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import torch

from llmhelpers.attention_demo import AttentionOnlyModel, layer_attention
from llmhelpers.plots.attention import token_labels


def _encode(tokenizer, text: str) -> list[int]:
    try:  # ours and tiktoken both accept this keyword: treat special-token text as plain text
        return list(tokenizer.encode(text, disallowed_special=()))
    except TypeError:
        return list(tokenizer.encode(text))


def weights_table_html(weights: np.ndarray, labels: list[str]) -> str:
    """A ``(seq, seq)`` weight matrix as an HTML table: rows are queries, columns keys, the
    cell's blue shade is the weight (white = 0, dark = 1)."""
    header = "".join(
        f"<th style='writing-mode:vertical-rl;font-weight:normal;padding:2px'>"
        f"{html.escape(label)}</th>" for label in labels
    )
    rows = []
    for label, row in zip(labels, weights, strict=True):
        cells = []
        for value in row:
            shade = int(255 * (1 - float(value)))
            text_colour = "#fff" if value > 0.6 else "#000"
            cells.append(
                f"<td title='{value:.3f}' style='background:rgb({shade},{shade},255);"
                f"color:{text_colour};width:26px;height:22px;text-align:center;font-size:9px'>"
                f"{value:.2f}</td>"
            )
        rows.append(
            f"<tr><th style='text-align:right;font-weight:normal;padding-right:4px'>"
            f"{html.escape(label)}</th>{''.join(cells)}</tr>"
        )
    return (
        "<table style='border-collapse:collapse;font-family:monospace;font-size:11px'>"
        f"<tr><th></th>{header}</tr>{''.join(rows)}</table>"
    )


class AttentionExplorer:
    """Explore one head of an :class:`AttentionOnlyModel` on text you type.

    Controls: ``text`` (Textarea), ``layer`` and ``head`` (Dropdowns), ``causal`` (Checkbox),
    ``temperature`` (log slider; the scaled scores are divided by it before the softmax).
    Displayed state: ``tokens`` (labels), ``ids``, ``weights`` ``(seq, seq)`` numpy array,
    ``summary`` (one line) and ``html``. Text longer than the model's context is cut to it.
    Token labels are those of notebook 1 (:func:`llmhelpers.plots.attention.token_label`):
    whitespace made visible, and a token holding only part of a UTF-8 character shown as its
    bytes (``<e2><80>``) rather than as ``�``.
    """

    def __init__(
        self,
        model: AttentionOnlyModel,
        tokenizer,
        text: str = "To be, or not to be, that is the question:",
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        n_layers = len(model.layers)
        n_heads = model.layers[0].n_heads
        self.text = widgets.Textarea(
            value=text, description="Sentence", layout=widgets.Layout(width="95%", height="60px")
        )
        self.layer = widgets.Dropdown(options=list(range(n_layers)), value=0, description="Layer")
        self.head = widgets.Dropdown(options=list(range(n_heads)), value=0, description="Head")
        self.causal = widgets.Checkbox(value=True, description="causal mask")
        self.temperature = widgets.FloatLogSlider(
            value=1.0, base=10, min=-1, max=1, step=0.05, description="temperature",
            readout_format=".2f",
        )
        self.output = widgets.HTML()
        for control in (self.text, self.layer, self.head, self.causal, self.temperature):
            control.observe(self._update, names="value")
        self.widget = widgets.VBox([
            self.text,
            widgets.HBox([self.layer, self.head, self.causal]),
            self.temperature,
            self.output,
        ])
        self._update()

    def _show_message(self, message: str) -> None:
        self.ids, self.tokens, self.weights = [], [], np.zeros((0, 0))
        self.summary = message
        self.html = f"<b style='color:#b00'>{html.escape(message)}</b>"
        self.output.value = self.html

    def _update(self, _change=None) -> None:
        try:
            ids = _encode(self.tokenizer, self.text.value)
        except (KeyError, ValueError) as error:
            self._show_message(f"cannot encode this text: {error}")
            return
        if not ids:
            self._show_message("type a sentence: there are no tokens to attend to")
            return
        context = self.model.context_length
        cut = len(ids) > context
        self.ids = ids[:context]
        self.tokens = token_labels(self.tokenizer, self.ids)
        weights = layer_attention(
            self.model, torch.tensor(self.ids), layer=self.layer.value,
            causal=self.causal.value, temperature=self.temperature.value,
        )
        self.weights = weights[self.head.value].numpy()
        top = self.weights.max(axis=-1)
        count = f"{len(self.ids)} token{'' if len(self.ids) == 1 else 's'}"
        self.summary = (
            f"{count}{f' (cut to the first {context})' if cut else ''} · "
            f"layer {self.layer.value}, head {self.head.value} · "
            f"{'causal' if self.causal.value else 'no mask'} · "
            f"temperature {self.temperature.value:.2f} · mean largest weight {top.mean():.2f}"
        )
        self.html = (
            f"<p><b>{html.escape(self.summary)}</b></p>"
            f"{weights_table_html(self.weights, self.tokens)}"
        )
        self.output.value = self.html

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
