"""Headless tests of the notebook-4 widgets: drive the controls from code, check the display."""

import math

import pytest
import torch

from llmhelpers.generate import generate
from llmhelpers.model import GPTConfig, GPTModel
from llmhelpers.tokenizer import CharTokenizer
from llmhelpers.train import TrainConfig, Trainer, TrainingDivergedError
from llmhelpers.widgets.training import DecodingPlayground, TrainingMonitor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not stall when other programs share the
    CPU); the caller's setting is restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

TEXT = "to be or not to be, that is the question. " * 40
PNG_MAGIC = b"\x89PNG"


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.from_text(TEXT)


def tiny_model(tokenizer, seed=0):
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(vocab_size=tokenizer.n_vocab, context_length=16, d_model=32,
                              n_heads=2, n_layers=2))


def tiny_trainer(tokenizer, **changes):
    ids = tokenizer.encode(TEXT)
    values = dict(max_steps=8, batch_size=4, eval_interval=4, eval_batches=2, warmup_steps=2,
                  progress=False)
    config = TrainConfig(**{**values, **changes})
    return Trainer(tiny_model(tokenizer), ids[:1500], ids[1500:], config, tokenizer)


# ---------------------------------------------------------------- training monitor
def test_monitor_shows_progress_and_the_stop_button_keeps_the_model(tokenizer):
    trainer = tiny_trainer(tokenizer)
    before = trainer.model.tok_emb.weight.detach().clone()
    monitor = TrainingMonitor(trainer, redraw_every=4)
    assert monitor.progress.value == 0 and monitor.progress.max == 8
    trainer.callbacks.append(lambda t, e: monitor.stop_button.click() if t.step == 5 else None)
    monitor.run()
    assert trainer.step == 5 and monitor.progress.value == 5
    assert "step 5/8" in monitor.status and "finished (stopped)" in monitor.status
    assert trainer.history.eval_step == [4, 5]  # a stopped run is evaluated where it stopped
    assert f"val loss {trainer.history.val_loss[-1]:.3f} (step 5)" in monitor.status
    assert monitor.plot_png.startswith(PNG_MAGIC)
    assert bytes(monitor.image.value) == monitor.plot_png
    assert monitor.stop_button.disabled
    assert not torch.equal(trainer.model.tok_emb.weight, before)  # the model so far is kept
    # and it can carry on where it stopped
    monitor.run()
    assert trainer.step == 8 and "finished (completed)" in monitor.status


def test_monitor_trains_in_the_background_and_stops_on_request(tokenizer):
    trainer = tiny_trainer(tokenizer)
    monitor = TrainingMonitor(trainer).start()
    monitor.wait(timeout=120)
    assert not monitor.running and trainer.step == 8
    assert monitor.progress.value == 8 and len(trainer.history.val_loss) == 2

    trainer = tiny_trainer(tokenizer, max_steps=100_000)
    monitor = TrainingMonitor(trainer)
    trainer.callbacks.append(lambda t, e: monitor.stop() if t.step == 2 else None)
    monitor.start().wait(timeout=120)
    assert trainer.step == 2 and trainer.history.stop_reason == "stopped"
    with pytest.raises(RuntimeError, match="already running"):
        monitor.thread = type("Alive", (), {"is_alive": lambda self: True})()
        monitor.start()


def test_monitor_reports_a_failed_run(tokenizer):
    trainer = tiny_trainer(tokenizer)

    def poison(t, event):
        if t.step == 1 and event == "step":
            with torch.no_grad():
                t.model.pos_emb.weight.fill_(math.nan)

    trainer.callbacks.append(poison)
    monitor = TrainingMonitor(trainer).start()
    with pytest.raises(TrainingDivergedError):
        monitor.wait(timeout=120)
    assert monitor.status.startswith("training failed: TrainingDivergedError")


# ---------------------------------------------------------------- decoding playground
def test_playground_greedy_is_one_certain_token(tokenizer):
    model = tiny_model(tokenizer)
    playground = DecodingPlayground(model, tokenizer, prompt="to be", max_new_tokens=10)
    playground.temperature.value = 0.0
    assert playground.distribution[0][1] == 1.0
    assert all(p == 0.0 for _, p in playground.distribution[1:])
    assert playground.n_possible == 1
    greedy = generate(model, tokenizer.encode("to be"), 10, temperature=0)
    assert playground.continuation == tokenizer.decode(greedy[5:])
    assert playground.chart_png.startswith(PNG_MAGIC)
    assert bytes(playground.image.value) == playground.chart_png
    assert "to be" in playground.text_html.value


def test_playground_filters_and_seed(tokenizer):
    playground = DecodingPlayground(tiny_model(tokenizer), tokenizer, prompt="the q",
                                    max_new_tokens=12)
    playground.temperature.value = 1.0
    assert playground.n_possible == tokenizer.n_vocab and playground.settings()["top_k"] is None
    playground.top_k.value = 3
    assert playground.n_possible == 3 and playground.settings()["top_k"] == 3
    assert sum(p > 0 for _, p in playground.distribution) == 3
    assert sum(p for _, p in playground.distribution) == pytest.approx(1.0)
    playground.top_k.value = 0
    playground.top_p.value = 0.05
    assert playground.n_possible == 1
    playground.top_p.value = 1.0
    playground.temperature.value = 1.5
    playground.seed.value = 1
    first = playground.continuation
    playground.seed.value = 2
    assert playground.continuation != first
    playground.seed.value = 1
    assert playground.continuation == first


def test_playground_empty_prompt_asks_for_one(tokenizer):
    playground = DecodingPlayground(tiny_model(tokenizer), tokenizer, prompt="to")
    playground.prompt.value = ""
    assert playground.message.startswith("Type a prompt")
    assert playground.distribution == [] and playground.continuation == ""
    playground.prompt.value = "to Z"  # 'Z' is not in this character tokenizer's vocabulary
    assert playground.message.startswith("Cannot encode this prompt")
    assert "'Z'" in playground.message
    playground.prompt.value = "to"
    assert playground.message == "" and playground.continuation
