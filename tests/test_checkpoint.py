"""Checkpoints: safetensors + JSON, atomic saves, config and tensor checks, RNG state."""

import inspect
import json
import random

import numpy as np
import pytest
import torch

import llmhelpers.checkpoint as checkpoint
from llmhelpers.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_model_tensors,
    read_manifest,
    restore_rng_state,
    save_checkpoint,
    unique_state_dict,
)
from llmhelpers.model import GPTConfig, GPTModel


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not stall when other programs share the
    CPU); the caller's setting is restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**changes):
    values = dict(vocab_size=40, context_length=8, d_model=16, n_heads=2, n_layers=2,
                  tie_weights=True)
    return GPTConfig(**{**values, **changes})


def trained_pair(seed=0, steps=3, **changes):
    """A tiny model and its AdamW optimizer after a few steps (so the optimizer has state)."""
    torch.manual_seed(seed)
    model = GPTModel(tiny_config(**changes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 40, (2, 8))
    for _ in range(steps):
        loss = model(ids).logsumexp(-1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_round_trip_restores_model_optimizer_and_metadata(tmp_path):
    model, optimizer = trained_pair()
    history = {"step": [1, 2, 3], "train_loss": [3.5, 3.2, 3.0]}
    tokenizer = {"name": "shakespeare-bpe", "n_vocab": 40, "fingerprint": "abc"}
    save_checkpoint(tmp_path, model, optimizer, step=3, history=history, tokenizer=tokenizer,
                    train_config={"lr": 0.01}, extra={"note": "hi"})

    torch.manual_seed(99)
    fresh = GPTModel(tiny_config())
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    loaded = load_checkpoint(tmp_path, fresh, fresh_optimizer)
    assert_same_weights(fresh, model)
    original, restored = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert original["param_groups"] == restored["param_groups"]
    for index, state in original["state"].items():
        for key, value in state.items():
            assert torch.equal(restored["state"][index][key], value), (index, key)
    assert (loaded.step, loaded.history, loaded.tokenizer) == (3, history, tokenizer)
    assert loaded.train_config == {"lr": 0.01} and loaded.extra == {"note": "hi"}


def test_load_without_a_model_builds_one_from_the_saved_config(tmp_path):
    model, _ = trained_pair(n_layers=3)
    save_checkpoint(tmp_path, model, step=0)
    loaded = load_checkpoint(tmp_path)
    assert loaded.model.config == model.config
    assert_same_weights(loaded.model, model)
    ids = torch.randint(0, 40, (1, 8))
    model.eval()
    loaded.model.eval()
    assert torch.equal(loaded.model(ids), model(ids))


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    model, _ = trained_pair()
    tensors, aliases = unique_state_dict(model)
    assert aliases == {"out_head.weight": "tok_emb.weight"}
    assert "out_head.weight" not in tensors
    save_checkpoint(tmp_path, model)
    loaded = load_checkpoint(tmp_path)
    assert loaded.model.out_head.weight is loaded.model.tok_emb.weight
    assert torch.equal(loaded.model.out_head.weight, model.out_head.weight)


def test_config_mismatch_names_every_differing_field(tmp_path):
    model, _ = trained_pair()
    save_checkpoint(tmp_path, model)
    other = GPTModel(tiny_config(n_layers=3, dropout=0.1))
    with pytest.raises(CheckpointError, match="n_layers: checkpoint 2, model 3") as error:
        load_checkpoint(tmp_path, other)
    assert "dropout: checkpoint 0.0, model 0.1" in str(error.value)


def test_speed_switches_do_not_block_loading(tmp_path):
    model, _ = trained_pair(use_sdpa=True, use_fused_ops=True)
    save_checkpoint(tmp_path, model)
    written_out = GPTModel(tiny_config(use_sdpa=False, use_fused_ops=False))
    loaded = load_checkpoint(tmp_path, written_out)  # same weights, the other kernels
    assert loaded.model is written_out
    assert_same_weights(model, written_out)
    ids = torch.randint(0, 40, (2, 8))
    torch.testing.assert_close(model.eval()(ids), written_out.eval()(ids), atol=1e-5, rtol=0)
    assert checkpoint.SPEED_ONLY_FIELDS == {"use_sdpa", "use_fused_ops"}


def test_tensor_mismatch_names_missing_unexpected_and_misshapen_tensors():
    model, _ = trained_pair()
    tensors, _ = unique_state_dict(model)
    tensors.pop("final_norm.bias")
    tensors["blocks.9.extra"] = torch.zeros(3)
    tensors["pos_emb.weight"] = torch.zeros(4, 16)
    with pytest.raises(CheckpointError) as error:
        load_model_tensors(model, tensors)
    message = str(error.value)
    assert "missing from the checkpoint: ['final_norm.bias']" in message
    assert "not in the model: ['blocks.9.extra']" in message
    assert "pos_emb.weight: checkpoint (4, 16), model (8, 16)" in message


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = trained_pair(steps=1)
    save_checkpoint(tmp_path, model, optimizer, step=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    later, later_optimizer = trained_pair(steps=4)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user stopped the kernel mid-save

    # 1) interrupted after the new tensor files were written, before the manifest
    monkeypatch.setattr(checkpoint, "write_json_atomically", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, later, later_optimizer, step=4)
    monkeypatch.undo()
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 1
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name

    # 2) interrupted halfway through writing a tensor file
    def half_write(tensors, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", half_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, later, later_optimizer, step=4)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).step == 1
    assert not list(tmp_path.glob("*.tmp")), "temporary files were left behind"

    # a later good save replaces it and removes the orphaned files of the failed one
    save_checkpoint(tmp_path, later, later_optimizer, step=4)
    assert load_checkpoint(tmp_path).step == 4
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and names[0] == "checkpoint.json", names


def test_damaged_or_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint.json is missing"):
        load_checkpoint(tmp_path)
    model, _ = trained_pair()
    save_checkpoint(tmp_path, model)
    model_file = tmp_path / read_manifest(tmp_path)["files"]["model"]
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path)


def test_checkpoint_files_are_readable_by_others_like_any_data(tmp_path):
    model, _ = trained_pair()
    save_checkpoint(tmp_path, model)
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name


def test_files_are_safetensors_and_plain_json_never_pickle(tmp_path):
    model, optimizer = trained_pair()
    save_checkpoint(tmp_path, model, optimizer, step=2)
    manifest = json.loads((tmp_path / "checkpoint.json").read_text())
    assert manifest["model_config"] == model.config.to_dict()
    for name in (manifest["files"]["model"], manifest["files"]["state"]):
        header_size = int.from_bytes((tmp_path / name).read_bytes()[:8], "little")
        json.loads((tmp_path / name).read_bytes()[8 : 8 + header_size])  # a safetensors header
    source = inspect.getsource(checkpoint)
    assert "torch.load" not in source and "import pickle" not in source


def test_rng_state_round_trip():
    tensors, plain = capture_rng_state()
    json.dumps(plain)  # the non-tensor part is plain JSON
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(tensors, json.loads(json.dumps(plain)))
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_load_can_restore_the_random_state(tmp_path):
    model, _ = trained_pair()
    torch.manual_seed(5)
    save_checkpoint(tmp_path, model)
    expected = torch.rand(4)
    torch.manual_seed(6)
    load_checkpoint(tmp_path, restore_rng=True)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("text", ['{"format_version": 1, "files": {"mo', "[1, 2]", "\udcff"])
def test_a_truncated_or_invalid_manifest_is_a_checkpoint_error_naming_the_file(tmp_path, text):
    model, _ = trained_pair()
    save_checkpoint(tmp_path, model)
    manifest = tmp_path / "checkpoint.json"
    if text == "\udcff":
        manifest.write_bytes(b"\xff\xfe{")  # not UTF-8 at all
    else:
        manifest.write_text(text, encoding="utf-8")
    with pytest.raises(CheckpointError, match="checkpoint.json is damaged"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="damaged"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda m: m["files"].pop("sha256"), "'files.sha256' does not list both tensor files"),
        (lambda m: m["files"].update(model=None), "'files.model' is missing"),
        (lambda m: m.update(files=[]), "'files' is not a mapping"),
        (lambda m: m.update(model_config="x"), "'model_config' is not a mapping"),
        (lambda m: m.update(step="3"), "'step' is not an integer"),
        (lambda m: m.update(history=[1]), "'history' is not a mapping"),
    ],
)
def test_a_hand_edited_manifest_is_named_not_a_key_error(tmp_path, edit, words):
    model, _ = trained_pair()
    save_checkpoint(tmp_path, model)
    path = tmp_path / "checkpoint.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="checkpoint.json is damaged") as error:
        load_checkpoint(tmp_path)
    assert words in str(error.value)


def _rehash(directory):
    """Recompute the manifest's SHA-256s, as someone editing files on purpose would."""
    import hashlib

    path = directory / "checkpoint.json"
    manifest = json.loads(path.read_text())
    for name in list(manifest["files"]["sha256"]):
        if (directory / name).exists():
            digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
            manifest["files"]["sha256"][name] = digest
    path.write_text(json.dumps(manifest))
    return manifest


def _edit_state_file(directory, keep):
    from safetensors.torch import load_file, save_file

    path = directory / read_manifest(directory)["files"]["state"]
    save_file({k: v for k, v in load_file(path).items() if keep(k)}, path)


def _replace_state_tensor(directory, name, tensor):
    from safetensors.torch import load_file, save_file

    path = directory / read_manifest(directory)["files"]["state"]
    tensors = load_file(path)
    assert name in tensors
    save_file({**tensors, name: tensor}, path)


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d, m: (d / m["files"]["model"]).write_bytes(
            (d / m["files"]["model"]).read_bytes()[:-100]), "its tensor file cannot be read"),
        (lambda d, m: _edit_state_file(d, lambda k: not k.startswith("optimizer.")),
         "optimizer tensors for parameters .* are missing"),
        (lambda d, m: _edit_state_file(d, lambda k: not k.startswith("rng.")),
         r"its random state cannot be read \(KeyError: 'rng.torch'\)"),
        (lambda d, m: _edit_state_file(d, lambda k: k != "optimizer.0.exp_avg"),
         r"parameters have different optimizer entries"),
        (lambda d, m: _replace_state_tensor(d, "optimizer.0.exp_avg", torch.zeros(3)),
         r"optimizer exp_avg of parameter 0 has shape \(3,\), the parameter \(40, 16\)"),
        (lambda d, m: _replace_state_tensor(d, "optimizer.0.step", torch.zeros(5)),
         r"optimizer step of parameter 0 has shape \(5,\)"),
        (lambda d, m: m["optimizer"]["state_values"].update(nodot=1),
         "its optimizer state cannot be read"),
        (lambda d, m: m["rng"].update(python=[1, 2]), "its random state cannot be read"),
    ],
)
def test_damage_that_passes_the_hash_check_is_still_a_checkpoint_error(tmp_path, damage, words):
    model, optimizer = trained_pair()
    save_checkpoint(tmp_path, model, optimizer)
    manifest = read_manifest(tmp_path)
    damage(tmp_path, manifest)
    (tmp_path / "checkpoint.json").write_text(json.dumps(manifest))
    _rehash(tmp_path)
    fresh_model, fresh_optimizer = trained_pair(seed=1)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(tmp_path, fresh_model, fresh_optimizer, restore_rng=True)


@pytest.mark.parametrize("field, value, words, skeletons", [
    ("context_length", 10**6, "model_config does not match its tensors", ["meta"]),
    ("context_length", 10**12, "its model_config cannot be read", ["meta"]),
    ("d_model", 4096, "model_config does not match its tensors", ["meta"]),
    ("n_layers", 10**6, "model_config has n_layers=1000000, its tensors 2 blocks", []),
])
def test_an_edited_config_is_refused_before_a_model_is_allocated(tmp_path, monkeypatch, field,
                                                                 value, words, skeletons):
    model, _ = trained_pair()
    save_checkpoint(tmp_path, model)
    path = tmp_path / "checkpoint.json"
    manifest = json.loads(path.read_text())
    manifest["model_config"][field] = value
    path.write_text(json.dumps(manifest))
    built = []
    real_init = GPTModel.__init__

    def record(self, config):
        built.append(torch.empty(0).device.type)  # the device models are built on
        real_init(self, config)

    monkeypatch.setattr(GPTModel, "__init__", record)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(tmp_path)
    assert built == skeletons  # at most the memory-free skeleton was built


def test_integer_weights_where_floats_belong_are_refused(tmp_path):
    model, _ = trained_pair()
    tensors, _ = unique_state_dict(model)
    tensors["pos_emb.weight"] = tensors["pos_emb.weight"].to(torch.int32)
    with pytest.raises(CheckpointError, match="integer and floating-point tensors mixed up"):
        load_model_tensors(trained_pair(seed=1)[0], tensors)
