"""Widgets for notebook 1: a tokenizer playground and a BPE merge stepper.

Each widget keeps what it shows in plain attributes (``html``, ``ids``, ``summary`` ...), so
tests can set a control's value from code and check the display without a browser.
"""

from __future__ import annotations

import ipywidgets as widgets

from llmhelpers.plots.tokens import chips_html, piece_text, token_pieces


class TokenizerPlayground:
    """Type text, pick a tokenizer, see the coloured tokens, their ids and the counts."""

    def __init__(self, tokenizers: dict, text: str = "To be, or not to be: that is the question."):
        if not tokenizers:
            raise ValueError("tokenizers must name at least one tokenizer")
        self.tokenizers = tokenizers
        self.text_box = widgets.Textarea(
            value=text, description="Text", layout=widgets.Layout(width="95%", height="80px")
        )
        self.choice = widgets.Dropdown(options=list(tokenizers), description="Tokenizer")
        self.output = widgets.HTML()
        self.text_box.observe(self._update, names="value")
        self.choice.observe(self._update, names="value")
        self.widget = widgets.VBox([self.choice, self.text_box, self.output])
        self._update()

    def _update(self, _change=None) -> None:
        text = self.text_box.value
        try:
            pieces = token_pieces(self.tokenizers[self.choice.value], text)
        except (KeyError, ValueError) as error:  # e.g. a character the tokenizer never saw
            self.ids, self.pieces = [], []
            self.summary = f"cannot encode this text: {error}"
            self.html = f"<b style='color:#b00'>{self.summary}</b>"
            self.output.value = self.html
            return
        self.pieces = [piece for _, piece in pieces]
        self.ids = [token_id for token_id, _ in pieces]
        ratio = len(text) / len(pieces) if pieces else 0.0
        self.summary = f"{len(text)} characters → {len(pieces)} tokens ({ratio:.2f} chars/token)"
        self.html = (
            f"<p><b>{self.summary}</b></p>{chips_html(pieces)}"
            f"<p style='font-family:monospace;font-size:small'>ids: {self.ids}</p>"
        )
        self.output.value = self.html

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


class MergeStepper:
    """A slider over the number of BPE merges: watch a text's segmentation change step by step."""

    def __init__(self, tokenizer, text: str, max_merges: int | None = None):
        self.tokenizer = tokenizer
        self.text = text
        limit = len(tokenizer.merges) if max_merges is None else max_merges
        if not 0 <= limit <= len(tokenizer.merges):
            raise ValueError(f"max_merges must be in [0, {len(tokenizer.merges)}], got {limit}")
        self.slider = widgets.IntSlider(
            value=0, min=0, max=limit, description="merges", continuous_update=True,
            layout=widgets.Layout(width="95%"),
        )
        self.output = widgets.HTML()
        self.slider.observe(self._update, names="value")
        self.widget = widgets.VBox([self.slider, self.output])
        self._update()

    def _update(self, _change=None) -> None:
        n_merges = self.slider.value
        self.pieces = [piece_text(p) for p in self.tokenizer.merge_steps(self.text, n_merges)]
        latest = ""
        if n_merges:
            (left, right), new_id = list(self.tokenizer.merges.items())[n_merges - 1]
            vocab = self.tokenizer.vocab
            latest = (
                f" — merge #{n_merges}: {piece_text(vocab[left])!r} + "
                f"{piece_text(vocab[right])!r} → {piece_text(vocab[new_id])!r} (id {new_id})"
            )
        self.summary = f"{n_merges} merges: {len(self.pieces)} tokens{latest}"
        numbered = list(enumerate(self.pieces))
        self.html = f"<p><b>{self.summary}</b></p>" + chips_html(numbered, show_ids=False)
        self.output.value = self.html

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
