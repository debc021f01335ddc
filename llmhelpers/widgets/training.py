"""Widgets for notebook 4: a training monitor and a decoding playground.

Both keep what they show in plain attributes (``status``, ``plot_png``, ``distribution``,
``continuation`` ...), so tests can drive them from code and check the display headless.
Figures are drawn on matplotlib ``Figure`` objects that never touch pyplot, which makes it
safe to redraw them from the training thread.
"""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from llmhelpers.generate import last_logits, model_vocab_size, next_token_probs
from llmhelpers.plots.training import (
    decoding_label,
    draw_distribution,
    draw_losses,
    figure_png,
    token_label,
    top_candidates,
)


class TrainingMonitor:
    """Live loss plot, progress bar and a stop button for a ``Trainer``.

    ``start()`` trains in a background thread, so the notebook stays responsive and the stop
    button works; ``wait()`` blocks until training ends. ``run()`` trains in the foreground
    instead (stop it with the kernel's interrupt). Stopping keeps the model trained so far.
    """

    def __init__(self, trainer, redraw_every: int = 20):
        self.trainer = trainer
        self.redraw_every = redraw_every
        self.progress = widgets.IntProgress(
            value=trainer.step, min=0, max=trainer.config.max_steps, description="steps"
        )
        self.status_html = widgets.HTML()
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop")
        self.stop_button.on_click(lambda _button: self.stop())
        self.image = widgets.Image(format="png")
        self.widget = widgets.VBox(
            [widgets.HBox([self.progress, self.stop_button]), self.status_html, self.image]
        )
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.status = ""
        self.plot_png = b""
        self._last_refresh = 0.0
        trainer.callbacks.append(self._on_event)
        self._refresh(draw=True)

    # -- controls
    def start(self, steps: int | None = None) -> TrainingMonitor:
        """Train in a background thread (``steps`` more steps, default up to ``max_steps``)."""
        if self.thread is not None and self.thread.is_alive():
            raise RuntimeError("training is already running; press Stop or call wait()")
        self.error = None
        self.stop_button.disabled = False
        self.thread = threading.Thread(target=self._train, args=(steps,), daemon=True)
        self.thread.start()
        return self

    def run(self, steps: int | None = None) -> TrainingMonitor:
        """Train in the foreground (blocks the notebook until done)."""
        self.stop_button.disabled = False
        self._train(steps)
        if self.error is not None:
            raise self.error
        return self

    def wait(self, timeout: float | None = None) -> TrainingMonitor:
        """Block until background training ends; re-raise its error if it failed."""
        if self.thread is not None:
            self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        """What the Stop button does: finish the current step, keep the model, end the run."""
        self.trainer.request_stop()
        self.stop_button.disabled = True

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    # -- internals
    def _train(self, steps: int | None) -> None:
        try:
            self.trainer.run(steps)
        except BaseException as error:  # shown in the widget, re-raised by wait()/run()
            self.error = error
            self.status = f"training failed: {type(error).__name__}: {error}"
            self.status_html.value = f"<b style='color:#b00'>{html.escape(self.status)}</b>"
        finally:
            self.stop_button.disabled = True

    def _on_event(self, trainer, event: str) -> None:
        draw = event in ("eval", "end") or trainer.step % self.redraw_every == 0
        # Each widget change is a message to the browser: numbers at most 4 times a second.
        if draw or time.monotonic() - self._last_refresh >= 0.25:
            self._refresh(draw=draw, finished=event == "end")

    def _refresh(self, draw: bool, finished: bool = False) -> None:
        self._last_refresh = time.monotonic()
        history = self.trainer.history
        self.progress.value = self.trainer.step
        parts = [f"step {self.trainer.step}/{self.trainer.config.max_steps}"]
        if history.train_loss:
            parts.append(f"train loss {history.train_loss[-1]:.3f}")
        if history.val_loss:
            parts.append(f"val loss {history.val_loss[-1]:.3f} (step {history.eval_step[-1]})")
        if history.tokens_per_s:
            recent = history.tokens_per_s[-20:]
            parts.append(f"{sum(recent) / len(recent):,.0f} tokens/s")
        if finished:
            parts.append(f"finished ({history.stop_reason or 'completed'})")
        self.status = " · ".join(parts)
        self.status_html.value = f"<b>{html.escape(self.status)}</b>"
        if draw:
            fig = Figure(figsize=(8, 3.6))
            draw_losses(fig.add_subplot(), history, "Training monitor")
            fig.tight_layout()
            self.plot_png = figure_png(fig)
            self.image.value = self.plot_png

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


class DecodingPlayground:
    """Prompt, temperature, top-k, top-p and seed -> the next-token distribution and a
    sampled continuation. ``top_k = 0`` on the slider means "off" (``top_k=None``)."""

    def __init__(self, model, tokenizer, prompt: str = "ROMEO:", max_new_tokens: int = 60,
                 n_candidates: int = 12):
        self.model, self.tokenizer = model, tokenizer
        self.n_candidates = n_candidates
        self.prompt = widgets.Textarea(value=prompt, description="Prompt",
                                       layout=widgets.Layout(width="95%", height="60px"))
        self.temperature = widgets.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.05,
                                               description="temperature")
        self.top_k = widgets.IntSlider(value=0, min=0, max=100, description="top-k (0=off)")
        self.top_p = widgets.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05,
                                         description="top-p")
        self.seed = widgets.IntText(value=0, description="seed")
        self.length = widgets.IntSlider(value=max_new_tokens, min=1, max=200,
                                        description="new tokens")
        self.image = widgets.Image(format="png")
        self.text_html = widgets.HTML()
        controls = [self.prompt, widgets.HBox([self.temperature, self.top_k, self.top_p]),
                    widgets.HBox([self.seed, self.length])]
        self.widget = widgets.VBox([*controls, self.image, self.text_html])
        for control in (self.prompt, self.temperature, self.top_k, self.top_p, self.seed,
                        self.length):
            control.observe(self.update, names="value")
        self.distribution: list[tuple[str, float]] = []
        self.continuation = ""
        self.message = ""
        self.update()

    def settings(self) -> dict:
        """The decoding settings the controls describe, as ``generate`` arguments."""
        return {
            "temperature": self.temperature.value,
            "top_k": self.top_k.value or None,
            "top_p": self.top_p.value,
        }

    def update(self, _change=None) -> None:
        """Recompute the distribution and the continuation from the controls."""
        from llmhelpers.generate import generate

        try:
            ids = self.tokenizer.encode(self.prompt.value) if self.prompt.value else []
            problem = "" if ids else "Type a prompt: the model needs a token to continue from."
        except ValueError as error:  # e.g. a character a character-level tokenizer never saw
            ids, problem = [], f"Cannot encode this prompt: {error}"
        if problem:
            self.distribution, self.continuation, self.n_possible = [], "", 0
            self.message = problem
            self.text_html.value = f"<i>{html.escape(self.message)}</i>"
            self.chart_png = b""
            self.image.value = b""
            return
        self.message = ""
        settings = self.settings()
        logits = last_logits(self.model, ids)
        probs = next_token_probs(logits, vocab_size=model_vocab_size(self.model), **settings)
        candidates = top_candidates(logits, self.n_candidates)
        labels = [token_label(self.tokenizer, i) for i in candidates]
        self.distribution = [(label, float(probs[i])) for label, i in zip(labels, candidates,
                                                                            strict=True)]
        self.n_possible = int((probs > 0).sum())
        fig = Figure(figsize=(8, 3))
        draw_distribution(fig.add_subplot(), probs, candidates, labels,
                          f"next token: {decoding_label(settings)}")
        fig.tight_layout()
        self.chart_png = figure_png(fig)
        self.image.value = self.chart_png
        with torch.no_grad():
            out = generate(self.model, ids, self.length.value, seed=self.seed.value, **settings)
        self.continuation = self.tokenizer.decode(out[len(ids):])
        self.text_html.value = (
            "<pre style='white-space:pre-wrap'>"
            f"<b>{html.escape(self.prompt.value)}</b>{html.escape(self.continuation)}</pre>"
        )

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
