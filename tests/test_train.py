"""Training: the loss, the schedule, the optimizer groups, the loop, stopping and exact resume."""

import contextlib
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from llmhelpers.batches import SlidingWindowDataset
from llmhelpers.checkpoint import CheckpointError
from llmhelpers.model import GPTConfig, GPTModel
from llmhelpers.train import (
    BatchSchedule,
    History,
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    choose_device,
    evaluate_loss,
    loss_per_character,
    lr_at,
    make_optimizer,
    matmul_peak_flops,
    model_flops_utilization,
    next_token_loss,
    parameter_groups,
    perplexity,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not stall when other programs share the
    CPU); the caller's setting is restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PlusOneModel(nn.Module):
    """Puts logit 20 on ``x[t] + 1`` and 0 on every other id (vocabulary 10)."""

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, 10, dtype=torch.float64)
        return logits.scatter_(-1, (ids + 1).unsqueeze(-1), 20.0)


def tiny_config(**changes):
    values = dict(vocab_size=64, context_length=8, d_model=32, n_heads=2, n_layers=2)
    return GPTConfig(**{**values, **changes})


def tiny_trainer(seed=0, model_changes=None, **train_changes):
    torch.manual_seed(seed)
    model = GPTModel(tiny_config(**(model_changes or {})))
    ids = torch.randint(0, 64, (3000,), generator=torch.Generator().manual_seed(1))
    values = dict(max_steps=6, batch_size=4, eval_interval=3, eval_batches=2, warmup_steps=2,
                  lr=3e-3, min_lr=3e-4, progress=False, seed=seed)
    return Trainer(model, ids[:2500], ids[2500:], TrainConfig(**{**values, **train_changes}))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- the objective
def test_loss_on_the_worked_example_and_a_double_shift():
    inputs, targets = SlidingWindowDataset([5, 6, 7, 8], context_length=3, stride=1)[0]
    assert inputs.tolist() == [5, 6, 7] and targets.tolist() == [6, 7, 8]
    logits = PlusOneModel()(inputs.unsqueeze(0))
    loss = next_token_loss(logits, targets.unsqueeze(0))
    assert loss.item() == pytest.approx(math.log1p(9 * math.exp(-20)), rel=1e-9)
    assert loss.item() == pytest.approx(1.855e-8, rel=1e-3)
    # shifting the targets a second time compares each prediction with the wrong token
    double = next_token_loss(logits[:, :-1], targets[1:].unsqueeze(0))
    assert double.item() == pytest.approx(20.0, abs=1e-6)


def test_loss_is_the_mean_negative_log_probability_of_the_targets():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
    assert torch.allclose(next_token_loss(logits, targets), expected)


def test_no_targets_is_an_error_not_nan():
    with pytest.raises(ValueError, match="no targets"):
        next_token_loss(torch.zeros(1, 0, 10), torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="no targets"):
        next_token_loss(torch.zeros(1, 3, 10), torch.full((1, 3), -100))
    with pytest.raises(ValueError, match="targets must be"):
        next_token_loss(torch.zeros(2, 3, 10), torch.zeros(2, 4, dtype=torch.long))


def test_untrained_model_starts_near_log_vocabulary_size():
    torch.manual_seed(0)
    model = GPTModel(tiny_config()).eval()
    ids = torch.randint(0, 64, (8, 8))
    loss = next_token_loss(model(ids), torch.randint(0, 64, (8, 8))).item()
    assert abs(loss - math.log(64)) < 0.1
    assert perplexity(math.log(64)) == pytest.approx(64)


def test_loss_per_character():
    assert loss_per_character(3.0, n_tokens=500, n_characters=1000) == 1.5
    with pytest.raises(ValueError, match="n_tokens"):
        loss_per_character(3.0, 0, 10)


def test_sanity_tiny_gpt_memorises_one_batch():
    """Catches silent bugs (wrong shift, missing zero_grad, detached graph...)."""
    torch.manual_seed(0)
    model = GPTModel(tiny_config())
    batch = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    inputs, targets = batch[:, :-1], batch[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(150):
        loss = next_token_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(64)) < 0.15
    assert losses[-1] < 0.4


# ---------------------------------------------------------------- schedule and optimizer
def test_learning_rate_schedule():
    config = TrainConfig(max_steps=110, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    assert lr_at(0, config) == pytest.approx(1e-4)
    assert lr_at(4, config) == pytest.approx(5e-4)
    assert lr_at(9, config) == pytest.approx(1e-3)
    assert lr_at(10, config) == pytest.approx(1e-3)
    assert lr_at(60, config) == pytest.approx(5.5e-4)  # halfway down the cosine
    assert lr_at(110, config) == pytest.approx(1e-4)
    assert lr_at(500, config) == pytest.approx(1e-4)
    decay = [lr_at(s, config) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert lr_at(20, config, progress=1.0) == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_steps", 0), ("batch_size", -1), ("lr", 0.0), ("min_lr", 1.0), ("beta2", 1.0),
     ("grad_clip", 0.0), ("warmup_steps", -1), ("time_limit_s", 0), ("device", "tpu"),
     ("lr", math.inf), ("weight_decay", math.nan), ("grad_clip", math.inf),
     ("sample_temperature", math.nan), ("seed", -1), ("seed", 2**63), ("num_threads", 0),
     ("device", "cuda:x"), ("device", 0)],
)
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_warmup_defaults_to_five_percent_of_the_run_and_may_not_outlast_it():
    assert TrainConfig(max_steps=2000).warmup_steps == 100
    assert TrainConfig(max_steps=60).warmup_steps == 3
    assert TrainConfig(max_steps=1).warmup_steps == 1
    assert TrainConfig(max_steps=10**6).warmup_steps == 100
    assert TrainConfig(max_steps=10, warmup_steps=0).warmup_steps == 0
    with pytest.raises(ValueError, match=r"warmup_steps must be <= max_steps \(100\), got 500"):
        TrainConfig(max_steps=100, warmup_steps=500)


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", "x"), ("seed", 1.5), ("lr", "1e-3"), ("warmup_steps", True), ("max_steps", 2.0),
     ("progress", "yes"), ("compile", 1), ("bf16_autocast", None), ("sample_prompt", 5)],
)
def test_train_config_rejects_wrong_types(field, value):
    with pytest.raises(TypeError, match=field):
        TrainConfig(**{field: value})


def test_weight_decay_only_on_weight_matrices():
    torch.manual_seed(0)
    model = GPTModel(tiny_config(tie_weights=True, qkv_bias=True))
    decay, no_decay = parameter_groups(model)
    assert set(decay) | set(no_decay) == {n for n, _ in model.named_parameters()}
    assert "tok_emb.weight" in no_decay and "pos_emb.weight" in no_decay
    assert "out_head.weight" not in decay  # tied to the embedding: one tensor, no decay
    assert all(name.endswith("weight") for name in decay)
    assert "blocks.0.ff.fc_in.weight" in decay and "blocks.1.attn.out_proj.weight" in decay
    assert "blocks.0.norm1.weight" in no_decay and "blocks.0.ff.fc_in.bias" in no_decay
    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.1))
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_choose_device():
    assert choose_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            choose_device("cuda")
        if not torch.backends.mps.is_available():
            assert choose_device("auto") == torch.device("cpu")


def test_batch_schedule_visits_every_window_once_per_epoch():
    schedule = BatchSchedule(n_windows=10, global_batch_size=3, seed=0)
    assert schedule.steps_per_epoch == 3
    epoch0 = torch.cat([schedule.indices(s) for s in range(3)])
    epoch1 = torch.cat([schedule.indices(s) for s in range(3, 6)])
    assert len(set(epoch0.tolist())) == 9 and len(set(epoch1.tolist())) == 9
    assert not torch.equal(epoch0, epoch1)
    again = BatchSchedule(n_windows=10, global_batch_size=3, seed=0)
    assert torch.equal(again.indices(4), schedule.indices(4))
    with pytest.raises(ValueError, match="batch_size"):
        BatchSchedule(n_windows=2, global_batch_size=3, seed=0)


# ---------------------------------------------------------------- the loop
def test_gradient_accumulation_equals_one_big_batch():
    one = tiny_trainer(batch_size=8, grad_accum_steps=1)
    two = tiny_trainer(batch_size=4, grad_accum_steps=2)
    assert one.global_batch_size == two.global_batch_size == 8
    loss_one, grad_norm_one = one.train_step()
    loss_two, grad_norm_two = two.train_step()
    assert loss_one == pytest.approx(loss_two, abs=1e-6)
    # AdamW's first step barely depends on the gradient's scale, so also compare the gradient
    # itself (through its norm, measured before clipping): k summed micro-batch gradients
    # without the 1/k would be k times too large.
    assert grad_norm_one == pytest.approx(grad_norm_two, rel=1e-5)
    for (name, a), b in zip(one.model.state_dict().items(), two.model.state_dict().values(),
                            strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_run_logs_history_evaluates_and_calls_back():
    events = []
    trainer = tiny_trainer()
    trainer.callbacks.append(lambda t, event: events.append((t.step, event)))
    history = trainer.run()
    assert history.step == [1, 2, 3, 4, 5, 6]
    assert history.tokens_seen == [32 * s for s in range(1, 7)]
    assert history.eval_step == [3, 6] and len(history.val_loss) == 2
    assert history.lr[:2] == pytest.approx([1.5e-3, 3e-3])
    assert history.lr[-1] == pytest.approx(lr_at(5, trainer.config))
    assert all(v > 0 for v in history.tokens_per_s)
    assert events.count((3, "eval")) == 1 and events[-1] == (6, "end")
    assert [e for e in events if e[1] == "step"] == [(s, "step") for s in range(1, 7)]
    assert trainer.model.training
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))) == history


def test_evaluation_is_in_eval_mode_without_gradients():
    trainer = tiny_trainer(model_changes={"dropout": 0.5})
    seen = []
    trainer.model.register_forward_hook(
        lambda module, args, out: seen.append((module.training, torch.is_grad_enabled()))
    )
    first, second = trainer.evaluate(), trainer.evaluate()
    assert first == second  # dropout is off
    assert seen and all(state == (False, False) for state in seen)
    assert trainer.model.training
    everything = evaluate_loss(trainer.model, trainer.val_data, batch_size=4)
    assert math.isfinite(everything)


def test_runs_repeat_exactly_with_the_same_seed():
    a = tiny_trainer(model_changes={"dropout": 0.2})
    b = tiny_trainer(model_changes={"dropout": 0.2})
    assert a.run().train_loss == b.run().train_loss
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_stop_request_and_interrupt_keep_the_model_so_far():
    trainer = tiny_trainer()
    trainer.callbacks.append(lambda t, e: t.request_stop() if t.step == 3 else None)
    history = trainer.run()
    assert history.step == [1, 2, 3] and history.stop_reason == "stopped"

    reference = tiny_trainer()
    reference.run(2)

    def interrupt(t, event):
        if t.step == 2 and event == "step":
            raise KeyboardInterrupt

    trainer = tiny_trainer()
    trainer.callbacks.append(interrupt)
    history = trainer.run()
    assert history.step == [1, 2] and history.stop_reason == "interrupted"
    for x, y in zip(trainer.model.state_dict().values(), reference.model.state_dict().values(),
                    strict=True):
        assert torch.equal(x, y)
    trainer.callbacks.clear()
    assert trainer.run().step[-1] == 6  # and it can carry on


def test_ids_outside_the_vocabulary_are_refused_when_the_trainer_is_made():
    model = GPTModel(tiny_config())
    good = torch.randint(0, 64, (200,), generator=torch.Generator().manual_seed(0))
    bad = torch.cat([good, torch.tensor([64])])
    config = TrainConfig(max_steps=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match=r"train_ids holds id 64.*\[0, 64\)"):
        Trainer(model, bad, good, config)
    with pytest.raises(ValueError, match=r"val_ids holds id 64"):
        Trainer(model, good, bad, config)


def test_compiled_model_trains_like_the_eager_one_in_one_graph():
    model = GPTModel(tiny_config())
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    explained = torch._dynamo.explain(model)(ids)
    assert explained.graph_break_count == 0, explained.break_reasons
    eager = tiny_trainer(max_steps=3)
    compiled = tiny_trainer(max_steps=3, compile=True)
    assert compiled.forward_model is not compiled.model  # really compiled
    assert compiled.run().train_loss == pytest.approx(eager.run().train_loss, rel=1e-5)
    for (name, a), b in zip(eager.model.state_dict().items(),
                            compiled.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


def test_bf16_autocast_is_for_cuda_only_and_changes_nothing_on_the_cpu():
    plain, asked = tiny_trainer(max_steps=2), tiny_trainer(max_steps=2, bf16_autocast=True)
    assert asked.device.type == "cpu" and isinstance(asked.autocast(), contextlib.nullcontext)
    assert asked.run().train_loss == plain.run().train_loss


def test_nan_loss_stops_with_a_helpful_error():
    trainer = tiny_trainer()

    def poison(t, event):
        if t.step == 2 and event == "step":
            with torch.no_grad():
                t.model.pos_emb.weight.fill_(math.nan)

    trainer.callbacks.append(poison)
    with pytest.raises(TrainingDivergedError, match=r"at step 2: try a lower learning rate"):
        trainer.run()


@pytest.mark.parametrize("steps", [-1, 2.5, True, "3"])
def test_run_refuses_a_step_count_that_is_not_a_whole_number_of_steps(steps):
    with pytest.raises(ValueError, match=r"steps must be an int >= 0 or None"):
        tiny_trainer().run(steps)


def test_time_limit_stops_the_run_and_finishes_the_decay():
    trainer = tiny_trainer(max_steps=1000, time_limit_s=1e-9)
    history = trainer.run()
    assert history.step == [1] and history.stop_reason == "time limit"
    # the run is evaluated where it stopped, so the val loss reported is the final model's
    assert history.eval_step == [1] and history.val_loss == [trainer.evaluate()]
    # with a time limit the cosine decay follows the clock: near min_lr when time is up
    trainer = tiny_trainer(max_steps=10**6, warmup_steps=0, time_limit_s=1.0, eval_interval=10**6)
    history = trainer.run()
    assert history.stop_reason == "time limit" and 1.0 <= history.train_seconds < 3.0
    assert history.lr[0] == pytest.approx(3e-3)
    assert history.lr[-1] < 1.5e-3
    assert all(a >= b for a, b in zip(history.lr, history.lr[1:], strict=False))


# ---------------------------------------------------------------- checkpoints and resume
def test_resume_in_process_is_exact(tmp_path):
    changes = {"dropout": 0.2}
    straight = tiny_trainer(model_changes=changes)
    straight.run()

    first = tiny_trainer(model_changes=changes)
    first.run(3)
    first.save(tmp_path)
    torch.manual_seed(12345)  # whatever happens in between must not matter
    ids = torch.randint(0, 64, (3000,), generator=torch.Generator().manual_seed(1))
    resumed = Trainer.from_checkpoint(tmp_path, ids[:2500], ids[2500:])
    assert resumed.step == 3
    resumed.run()
    assert resumed.history.train_loss == straight.history.train_loss
    for x, y in zip(resumed.model.state_dict().values(), straight.model.state_dict().values(),
                    strict=True):
        assert torch.equal(x, y)


CLI_TINY = ["--d-model", "32", "--n-layers", "2", "--n-heads", "2", "--context-length", "16",
            "--batch-size", "4", "--eval-interval", "2", "--eval-batches", "2",
            "--dropout", "0.1", "--warmup-steps", "2", "--no-progress"]


def run_cli(*args):
    command = [sys.executable, "-m", "llmhelpers.train", *CLI_TINY, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_command_line_resume_in_a_fresh_process_is_exact(tmp_path):
    from llmhelpers.checkpoint import load_checkpoint
    from llmhelpers.tokenizer import shakespeare_bpe

    shakespeare_bpe()  # make sure the tokenizer is cached before three processes need it
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_cli("--out", str(straight), "--steps", "6")
    run_cli("--out", str(split), "--steps", "6", "--stop-at", "3")
    assert load_checkpoint(split).step == 3
    out = run_cli("--out", str(split), "--resume")
    assert "step 6:" in out
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a.history["train_loss"] == b.history["train_loss"]
    assert a.history["val_loss"] == b.history["val_loss"]
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                            strict=True):
        assert torch.equal(x, y), name
    history = json.loads((straight / "history.json").read_text())
    assert history["step"] == [1, 2, 3, 4, 5, 6]


def test_generate_command_samples_from_a_checkpoint(tmp_path):
    run_cli("--out", str(tmp_path), "--steps", "2")
    command = [sys.executable, "-m", "llmhelpers.generate", str(tmp_path), "--prompt", "ROMEO:",
               "--max-new-tokens", "8", "--seed", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) > len("ROMEO:\n")


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--temperature", "-1"], "temperature must be a finite number >= 0"),
        (["--temperature", "nan"], "temperature must be a finite number >= 0"),
        (["--temperature", "inf"], "temperature must be a finite number >= 0"),
        (["--top-k", "0"], "top_k must be >= 1"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--max-new-tokens", "-3"], "--max-new-tokens must be >= 0"),
        (["--seed", "99999999999999999999999"], "--seed must be in [0, 2**63"),
        (["--num-samples", "0"], "--num-samples must be >= 1"),
        (["--prompt", ""], "--prompt must not be empty"),
    ],
)
def test_generate_command_refuses_bad_flags_in_one_line(tmp_path, capsys, flags, words):
    from llmhelpers.generate import main as generate_main
    from llmhelpers.train import main

    main(cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "1"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        generate_main([str(tmp_path / "run"), *flags])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and words in err.strip().splitlines()[-1]


def test_generate_command_names_a_missing_or_damaged_checkpoint(tmp_path, capsys):
    from llmhelpers.generate import main as generate_main
    from llmhelpers.train import main

    def error_of(argv):
        with pytest.raises(SystemExit) as stopped:
            generate_main(argv)
        assert stopped.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert "checkpoint.json is missing" in error_of([str(tmp_path / "nowhere")])
    main(cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "1"))
    capsys.readouterr()
    run = tmp_path / "run"
    model_file = next(run.glob("model-*.safetensors"))
    model_file.write_bytes(model_file.read_bytes()[:100])
    assert "damaged" in error_of([str(run)])


# ---------------------------------------------------------------- speed figures
def test_matmul_peak_and_mfu_arithmetic():
    peak = matmul_peak_flops(size=128, repeats=2)
    assert peak > 1e6
    assert model_flops_utilization(1000.0, 2e6, 4e9) == pytest.approx(0.5)


# ---------------------------------------------------------------- the default model for notebook 5
def test_pretrained_model_is_trained_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    import llmhelpers.train as train

    monkeypatch.setattr(train, "default_model_config", lambda vocab_size: GPTConfig(
        vocab_size=vocab_size, context_length=16, d_model=32, n_heads=2, n_layers=1))
    monkeypatch.setattr(train, "default_train_config", lambda **changes: TrainConfig(
        **{"max_steps": 3, "batch_size": 4, "eval_interval": 3, "eval_batches": 1, **changes}))
    runs = []
    original_run = Trainer.run
    monkeypatch.setattr(Trainer, "run", lambda self, *a: runs.append(1) or original_run(self, *a))

    first = train.pretrained_shakespeare_model(progress=False, root=tmp_path)
    assert len(runs) == 1 and not first.training
    second = train.pretrained_shakespeare_model(progress=True, root=tmp_path)
    assert len(runs) == 1  # loaded, not trained again
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # a notebook run with samples and a live plot trains the same model: it is cached as one
    notebook_run = train.default_trainer(sample_interval=1, progress=False, eval_interval=1)
    notebook_run.run()
    assert train.cache_default_model(notebook_run, tmp_path) == next(tmp_path.iterdir())
    stopped = train.default_trainer(progress=False)
    stopped.run(1)
    assert train.cache_default_model(stopped, tmp_path) is None  # unfinished: not cached
    # a different configuration is a different cache entry
    monkeypatch.setattr(train, "default_train_config", lambda **changes: TrainConfig(
        **{"max_steps": 2, "batch_size": 4, "eval_interval": 2, "eval_batches": 1, **changes}))
    train.pretrained_shakespeare_model(progress=False, root=tmp_path)
    assert len(runs) == 4 and len(list(tmp_path.iterdir())) == 2


def test_tokenizer_identity_round_trip():
    from llmhelpers.tokenizer import shakespeare_bpe
    from llmhelpers.train import tokenizer_from_identity, tokenizer_identity

    tokenizer = shakespeare_bpe()
    identity = tokenizer_identity(tokenizer, "shakespeare-bpe", vocab_size=512)
    assert identity["n_vocab"] == tokenizer.n_vocab == 513
    rebuilt = tokenizer_from_identity(json.loads(json.dumps(identity)))
    assert rebuilt.encode("To be, or not to be") == tokenizer.encode("To be, or not to be")
    with pytest.raises(ValueError, match="encodes text differently"):
        tokenizer_from_identity({**identity, "fingerprint": "0" * 16})
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tokenizer_from_identity({**identity, "name": "mystery"})


def test_num_threads_applies_during_the_run_only():
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        trainer = tiny_trainer(max_steps=2, num_threads=1)
        trainer.callbacks.append(lambda t, e: e == "step" and seen.append(torch.get_num_threads()))
        trainer.run()
        assert set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)
    with pytest.raises(ValueError, match="num_threads"):
        TrainConfig(num_threads=0)


def test_command_line_reads_a_config_file_and_flags_override_it(tmp_path, capsys):
    from llmhelpers.train import main

    text = tmp_path / "corpus.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 200, encoding="utf-8")
    assert len(text.read_text(encoding="utf-8")) == 8600
    config = tmp_path / "run.json"
    config.write_text(json.dumps({
        "data": {"text_file": str(text)},
        "model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "context_length": 16},
        "train": {"max_steps": 2, "batch_size": 4, "eval_batches": 1, "progress": False},
    }))
    trainer = main(["--config", str(config), "--out", str(tmp_path / "out"), "--steps", "3"])
    assert trainer.step == 3 and trainer.config.batch_size == 4
    assert trainer.model.config.d_model == 32 and trainer.model.config.context_length == 16
    content = text.read_text(encoding="utf-8")  # trained on the first 90% of the given file
    assert trainer.tokenizer.decode(trainer.train_data.ids.tolist()) == content[:int(0.9 * 8600)]
    assert "step 3:" in capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "history.json").read_text())
    assert saved["step"] == [1, 2, 3]


# ---------------------------------------------------------------- command line: errors and resume
def cli_corpus(tmp_path, name="corpus.txt", line="To be, or not to be, that is the question.\n"):
    path = tmp_path / name
    path.write_text(line * 100, encoding="utf-8")
    return str(path)


def cli_args(tmp_path, *extra):
    tiny = ["--d-model", "32", "--n-heads", "2", "--n-layers", "1", "--context-length", "16",
            "--batch-size", "4", "--eval-interval", "2", "--eval-batches", "1", "--no-progress"]
    return ["--out", str(tmp_path / "run"), *tiny, *extra]


def cli_error(capsys, argv):
    """Run ``main(argv)`` expecting a one-line usage error; return that line."""
    from llmhelpers.train import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_command_line_refuses_to_overwrite_a_run_unless_asked(tmp_path, capsys):
    from llmhelpers.train import main

    args = cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "2")
    main(args)
    line = cli_error(capsys, args)
    assert "already holds a training run" in line and "--overwrite" in line
    assert "--resume" in line
    assert main([*args, "--overwrite"]).step == 2
    assert "contradict" in cli_error(capsys, [*args, "--overwrite", "--resume"])


def test_resume_takes_corpus_and_tokenizer_from_the_checkpoint(tmp_path, capsys):
    from llmhelpers.train import main

    corpus = cli_corpus(tmp_path)
    first = main(cli_args(tmp_path, "--text-file", corpus, "--steps", "4", "--stop-at", "2"))
    resumed = main(cli_args(tmp_path, "--steps", "4", "--resume"))  # no --text-file given
    assert resumed.step == 4
    assert torch.equal(resumed.train_data.ids, first.train_data.ids)
    assert resumed.tokenizer_info == first.tokenizer_info

    other = cli_corpus(tmp_path, "other.txt", "All the world's a stage.\n")
    line = cli_error(capsys, cli_args(tmp_path, "--resume", "--text-file", other))
    assert "text_file" in line and "corpus.txt" in line and "other.txt" in line
    line = cli_error(capsys, cli_args(tmp_path, "--resume", "--tokenizer", "gpt2"))
    assert "tokenizer: checkpoint 'shakespeare-bpe', given 'gpt2'" in line
    line = cli_error(capsys, cli_args(tmp_path, "--resume", "--vocab-size", "300"))
    assert "vocab_size: checkpoint 512, given 300" in line
    line = cli_error(capsys, cli_args(tmp_path, "--resume", "--corpus", "tiny-shakespeare"))
    assert "corpus: checkpoint None, given 'tiny-shakespeare'" in line

    manifest_path = tmp_path / "run" / "checkpoint.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tokenizer"]["fingerprint"] = "0123456789abcdef"
    manifest_path.write_text(json.dumps(manifest))
    line = cli_error(capsys, cli_args(tmp_path, "--resume", "--steps", "6"))
    assert "fingerprint: checkpoint '0123456789abcdef', rebuilt" in line


def test_resume_refuses_model_changes_and_announces_training_changes(tmp_path, capsys):
    from llmhelpers.train import main

    corpus = cli_corpus(tmp_path)
    main(cli_args(tmp_path, "--text-file", corpus, "--steps", "4", "--stop-at", "2"))
    argv = cli_args(tmp_path, "--resume")
    argv[argv.index("--d-model") + 1] = "64"
    argv[argv.index("--n-layers") + 1] = "2"
    line = cli_error(capsys, argv)
    assert "d_model: checkpoint 32, given 64" in line and "n_layers: checkpoint 1, given 2" in line

    argv = cli_args(tmp_path, "--resume", "--stop-at", "3")
    argv[argv.index("--batch-size") + 1] = "2"
    trainer = main(argv)
    assert trainer.step == 3 and trainer.config.batch_size == 2
    err = capsys.readouterr().err
    assert "batch_size=2 overrides the checkpoint's 4" in err and "not exactly" in err
    argv = cli_args(tmp_path, "--resume")
    argv[argv.index("--batch-size") + 1] = "2"  # as saved at step 3: only evaluation changes
    argv[argv.index("--eval-batches") + 1] = "2"
    trainer = main(argv)
    assert trainer.step == 4
    err = capsys.readouterr().err
    assert "eval_batches=2 overrides the checkpoint's 1" in err and "not exactly" not in err


@pytest.mark.parametrize(("flags", "expected"), [
    (["--steps", "-5"], "max_steps must be an int >= 1, got -5"),
    (["--batch-size", "0"], "batch_size must be an int >= 1, got 0"),
    (["--n-heads", "3"], "d_model (32) must be divisible by n_heads (3)"),
    (["--resume"], "checkpoint.json is missing"),
    (["--text-file", "/nonexistent/corpus.txt"],
     "--text-file /nonexistent/corpus.txt cannot be read: No such file or directory"),
    (["--stop-at", "-1"], "--stop-at must be >= 0"),
])
def test_command_line_errors_are_one_clear_line(tmp_path, capsys, flags, expected):
    argv = cli_args(tmp_path, *flags)
    if "--n-heads" in flags:
        argv.pop(argv.index("--n-heads"))
        argv.pop(argv.index("2"))
    line = cli_error(capsys, argv)
    assert line.startswith("python -m llmhelpers.train: error:") and expected in line, line


def test_interrupt_during_evaluation_keeps_the_history_consistent(monkeypatch):
    original = Trainer.evaluate

    def interrupted_once(self, max_batches=None):
        if self.step == 6:
            raise KeyboardInterrupt
        return original(self, max_batches)

    monkeypatch.setattr(Trainer, "evaluate", interrupted_once)
    trainer = tiny_trainer()
    history = trainer.run()
    assert history.stop_reason == "interrupted"
    assert history.eval_step == [3] and len(history.val_loss) == 1  # step 6's never finished
    plots_ready = History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert len(plots_ready.eval_step) == len(plots_ready.val_loss)


def test_command_line_reports_a_damaged_checkpoint(tmp_path, capsys):
    from llmhelpers.train import main

    main(cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "2"))
    manifest = tmp_path / "run" / "checkpoint.json"
    manifest.write_text(manifest.read_text()[:40])
    line = cli_error(capsys, cli_args(tmp_path, "--resume", "--steps", "4"))
    assert "checkpoint.json is damaged" in line


def test_command_line_ctrl_c_saves_and_exits_130(tmp_path, capsys, monkeypatch):
    from llmhelpers.checkpoint import load_checkpoint
    from llmhelpers.train import main

    original = Trainer.train_step

    def interrupt_at_step_3(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_step_3)
    with pytest.raises(SystemExit) as stopped:
        main(cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "8"))
    assert stopped.value.code == 130
    out, err = capsys.readouterr()
    assert "step 3:" in out and "(at step 2)" in out
    assert "interrupted at step 3" in err and "--resume" in err
    assert load_checkpoint(tmp_path / "run").step == 3


def test_command_line_ctrl_c_during_evaluation_exits_130(tmp_path, capsys, monkeypatch):
    from llmhelpers.checkpoint import load_checkpoint
    from llmhelpers.train import main

    original = Trainer.evaluate

    def interrupt_at_step_4(self, max_batches=None):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, max_batches)

    monkeypatch.setattr(Trainer, "evaluate", interrupt_at_step_4)
    args = ["--text-file", cli_corpus(tmp_path), "--steps", "8", "--eval-interval", "2"]
    with pytest.raises(SystemExit) as stopped:
        main(cli_args(tmp_path, *args))
    assert stopped.value.code == 130
    out, err = capsys.readouterr()
    assert "(at step 2)" in out and "interrupted at step 4" in err
    saved = load_checkpoint(tmp_path / "run")
    assert saved.history["eval_step"] == [2] and len(saved.history["val_loss"]) == 1


def test_resume_with_another_number_of_processes_is_announced(tmp_path, capsys):
    from llmhelpers.train import _resume_notices, main

    main(cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "4", "--stop-at", "2"))
    manifest = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert manifest["extra"]["world_size"] == 1
    assert _resume_notices(manifest, {}, world_size=1) == []
    # What a 2-process torchrun resume would print (batch 4 per process, as saved):
    notes = _resume_notices(manifest, {}, world_size=2)
    assert len(notes) == 1
    assert "trained with 1 process(es), this run uses 2" in notes[0]
    assert "from 4 to 8 sequences per step" in notes[0] and "not exactly" in notes[0]
    # ... and a checkpoint written by 2 processes resumed by one, with a new per-process batch:
    manifest["extra"]["world_size"] = 2
    notes = _resume_notices(manifest, {"batch_size": 2}, world_size=1)
    assert "from 8 to 2 sequences per step" in notes[0]


def test_resume_from_a_checkpoint_without_training_settings_is_named(tmp_path, capsys):
    from llmhelpers.train import main

    main(cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "2"))
    path = tmp_path / "run" / "checkpoint.json"
    manifest = json.loads(path.read_text())
    manifest["train_config"] = None
    path.write_text(json.dumps(manifest))
    line = cli_error(capsys, cli_args(tmp_path, "--resume", "--steps", "4"))
    assert "has no training settings (train_config)" in line
    with pytest.raises(CheckpointError, match="no training settings"):
        Trainer.from_checkpoint(tmp_path / "run", list(range(100)), None)


def test_command_line_checks_out_corpus_and_model_before_training(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    argv = cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "2")
    argv[argv.index("--out") + 1] = str(not_a_dir)
    assert "is a file; it must be a directory" in cli_error(capsys, argv)
    line = cli_error(capsys, cli_args(tmp_path, "--corpus", "gpt2-vocab.bpe"))
    assert "--corpus must be one of ['tiny-shakespeare']" in line
    line = cli_error(capsys, cli_args(tmp_path, "--gpt2-size", "124M", "--text-file",
                                      cli_corpus(tmp_path)))
    assert "add --tokenizer gpt2" in line
    argv = cli_args(tmp_path, "--text-file", cli_corpus(tmp_path))
    argv[argv.index("--context-length") + 1] = "100000"  # refused before any mask is allocated
    assert "too short for one window" in cli_error(capsys, argv)
    assert "device must be" in cli_error(capsys, cli_args(tmp_path, "--device", "cuda:x"))
    assert "lr must be a finite number" in cli_error(capsys, cli_args(tmp_path, "--lr", "inf"))


@pytest.mark.parametrize("content, words", [
    ({"data": {"vocab-size": 300}}, r"unknown 'data' settings \['vocab-size'\]"),
    ({"train": []}, "section 'train' must be a JSON object, got list"),
    ({"model": "big"}, "section 'model' must be a JSON object, got str"),
    ({"train": {"max_step": 3}}, r"unknown 'train' settings \['max_step'\]; allowed: \['max_st"),
    ({"model": {"layers": 3}}, r"unknown 'model' settings \['layers'\]"),
    ({"data": {"text_file": 5}}, "text_file must be a string, got int 5"),
    ("train", "must hold a JSON object with 'data', 'model' and 'train' sections, got str"),
    (5, "must hold a JSON object .* got int"),
])
def test_a_config_file_with_unknown_or_malformed_sections_is_refused(tmp_path, capsys,
                                                                      content, words):
    config = tmp_path / "run.json"
    config.write_text(json.dumps(content))
    assert re.search(words, cli_error(capsys, cli_args(tmp_path, "--config", str(config))))


def test_resume_with_fewer_total_steps_than_done_is_refused(tmp_path, capsys):
    from llmhelpers.train import main

    main(cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "4"))
    line = cli_error(capsys, cli_args(tmp_path, "--resume", "--steps", "3"))
    assert "--steps 3 is below the checkpoint's step 4" in line and "--steps 4)" in line
    line = cli_error(capsys, cli_args(tmp_path, "--resume", "--warmup-steps", "9"))
    assert "warmup_steps must be <= max_steps (4), got 9" in line


def test_trainer_names_empty_data_and_a_config_of_the_wrong_kind():
    torch.manual_seed(0)
    model = GPTModel(tiny_config())
    ids = torch.randint(0, 64, (500,))
    with pytest.raises(ValueError, match="the text has 0 tokens, too short for one window"):
        Trainer(model, [], ids, TrainConfig(progress=False))
    with pytest.raises(TypeError, match="config must be a TrainConfig .* got dict"):
        Trainer(model, ids, ids, {"max_steps": 3})


def test_unreadable_inputs_and_outputs_are_named_by_their_flag(tmp_path, capsys):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    line = cli_error(capsys, cli_args(tmp_path, "--text-file", str(binary)))
    assert f"--text-file {binary} is not UTF-8 text (byte 128" in line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = cli_args(tmp_path, "--text-file", cli_corpus(tmp_path))
    argv[argv.index("--out") + 1] = str(blocker / "sub")
    line = cli_error(capsys, argv)
    assert f"--out {blocker / 'sub'} cannot be created: Not a directory" in line


def test_a_save_that_fails_after_training_keeps_the_model_elsewhere(tmp_path, capsys, monkeypatch):
    from llmhelpers import train
    from llmhelpers.checkpoint import load_checkpoint

    real_save = train.Trainer.save

    def full_disk(self, directory):
        if Path(directory) == tmp_path / "run":
            raise OSError(28, "No space left on device")
        return real_save(self, directory)

    monkeypatch.setattr(train.Trainer, "save", full_disk)
    with pytest.raises(SystemExit) as stopped:
        train.main(cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "2"))
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    rescue = re.search(r"the model is saved in (\S+) instead", err).group(1)
    assert "No space left on device" in err and load_checkpoint(rescue).step == 2
    shutil.rmtree(rescue)


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(train_config={}), r"its train_config lacks \['batch_size', "),
    (lambda m: m["train_config"].pop("lr"), r"its train_config lacks \['lr'\]"),
    (lambda m: m["train_config"].update(lr=True), "its train_config cannot be read .*lr"),
    (lambda m: m["model_config"].update(n_layers=-1), "its model_config cannot be read"),
    (lambda m: (m["extra"].pop("data"), m["tokenizer"].pop("name")),
     "records no tokenizer or corpus"),
])
def test_resume_names_a_hand_edited_manifest(tmp_path, capsys, edit, words):
    from llmhelpers.train import main

    main(cli_args(tmp_path, "--text-file", cli_corpus(tmp_path), "--steps", "2", "--stop-at", "1"))
    path = tmp_path / "run" / "checkpoint.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    line = cli_error(capsys, ["--out", str(tmp_path / "run"), "--resume", "--no-progress"])
    assert re.search(words, line), line
