"""Notebook-4 figures: they draw the numbers they are given, titled and labelled."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from llmhelpers.generate import next_token_probs  # noqa: E402
from llmhelpers.plots import training as plots  # noqa: E402
from llmhelpers.tokenizer import CharTokenizer  # noqa: E402
from llmhelpers.train import History, TrainConfig, lr_at  # noqa: E402

TOKENIZER = CharTokenizer.from_text("abcdefghij <>&\n")


def a_history():
    return History(step=[1, 2, 3, 4], tokens_seen=[8, 16, 24, 32], train_loss=[4.0, 3.0, 2.5, 2.0],
                   lr=[1e-3] * 4, grad_norm=[1.0] * 4, tokens_per_s=[100.0] * 4,
                   eval_step=[2, 4], val_loss=[3.5, 3.8],
                   samples=[{"step": 2, "text": "a <b> & c"}])


def test_smoothing_window_grows_with_the_run():
    assert plots.smoothing_weight(40) == 0.0  # a short run: the raw losses
    assert plots.smoothing_weight(200) == pytest.approx(0.75)
    assert plots.smoothing_weight(2000) == plots.smoothing_weight(10**6) == pytest.approx(0.9)


def test_smooth_is_bias_corrected():
    assert np.allclose(plots.smooth([2.0] * 5), 2.0)
    assert plots.smooth([1.0, 3.0], weight=0.5)[1] == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)


def test_loss_plot_draws_the_history():
    fig = plots.plot_losses(a_history(), "run", ln_vocab=math.log(16))
    ax = fig.axes[0]
    assert ax.get_title() == "run" and "nats per token" in ax.get_ylabel()
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["validation loss"].get_ydata()) == [3.5, 3.8]
    assert list(lines["train loss"].get_xdata()) == [1, 2, 3, 4]  # 4 steps: not smoothed
    assert list(lines["train loss"].get_ydata()) == a_history().train_loss
    plt.close(fig)
    long = a_history()
    long.step, long.train_loss = list(range(1, 501)), [5.0 - i / 100 for i in range(500)]
    fig = plots.plot_losses(long, "long run")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    smoothed = lines["train loss (smoothed)"].get_ydata()
    assert np.allclose(smoothed, plots.smooth(long.train_loss, plots.smoothing_weight(500)))
    plt.close(fig)


def test_overfitting_plot_marks_the_best_validation_step():
    fig = plots.plot_overfitting(a_history())
    marks = [line for line in fig.axes[0].get_lines() if list(line.get_xdata()) == [2, 2]]
    assert marks, "the best validation step (2) is marked"
    plt.close(fig)


def test_lr_schedule_plot_follows_lr_at():
    config = TrainConfig(max_steps=50, warmup_steps=5, lr=1e-3, min_lr=1e-4)
    fig = plots.plot_lr_schedule(config)
    ys = fig.axes[0].get_lines()[0].get_ydata()
    assert np.allclose(ys, [lr_at(s, config) for s in range(50)])
    plt.close(fig)


def test_decoding_panels_show_the_filtered_probabilities():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0, -1.0] + [-5.0] * 10)
    settings = [{"temperature": 0}, {"temperature": 1.0, "top_k": 2}]
    fig = plots.plot_decoding_settings(logits, TOKENIZER, settings, "ab", n_candidates=4)
    greedy, top2 = fig.axes[0], fig.axes[1]
    assert [p.get_height() for p in greedy.patches] == [1.0, 0.0, 0.0, 0.0]
    expected = next_token_probs(logits, top_k=2)[[1, 3, 2, 0]].tolist()
    assert [p.get_height() for p in top2.patches] == pytest.approx(expected)
    assert greedy.get_title() == "greedy (temperature=0)"
    assert greedy.get_xlabel().startswith("candidate next token") and greedy.get_ylabel()
    # ids 1, 3, 2, 0 are ' ', '<', '&', '\n' (sorted characters), whitespace made visible
    assert [t.get_text() for t in greedy.get_xticklabels()] == ["'·'", "'<'", "'&'", "'↵'"]
    plt.close(fig)


def test_tables_escape_text():
    table = plots.samples_table(a_history().samples)
    assert "a &lt;b&gt; &amp; c" in table and "<b>" not in table
    rows = plots.generations_table([("greedy", "x < y")])
    assert "x &lt; y" in rows
    probs = torch.tensor([0.5, 0.25])
    html = plots.target_probability_table(TOKENIZER, torch.tensor([0, 1]), torch.tensor([1, 2]),
                                          probs)
    assert "0.50000" in html and f"{-math.log(0.25):.3f}" in html


def test_live_plot_shows_one_figure_and_updates_it(monkeypatch):
    import IPython.display

    shown, updated = [], []

    class Handle:
        def update(self, obj):
            updated.append(obj)

    def fake_display(obj, display_id=False):
        shown.append(obj)
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)
    live = plots.LiveLossPlot()
    trainer = type("T", (), {"history": a_history(), "step": 4})()
    live(trainer, "step")  # not an evaluation: nothing drawn
    assert shown == []
    live(trainer, "eval")
    live(trainer, "end")
    assert len(shown) == 1 and len(updated) == 1 and live.redraws == 2
    assert shown[0].data.startswith(b"\x89PNG")
