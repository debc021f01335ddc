"""Saving and loading training checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is a directory holding three files:

* ``model-<tag>.safetensors``: the model's weights (enough on its own to generate text);
* ``state-<tag>.safetensors``: the optimizer's tensors and the random generators' states;
* ``checkpoint.json``: the model config, tokenizer identity, step, history, the optimizer's
  hyper-parameters, the Python/NumPy random states and the names of the two tensor files.

Nothing is ever unpickled: safetensors stores raw tensors and JSON stores plain values, so
loading a checkpoint from someone else cannot run their code.

Saving is atomic. The tensor files get fresh names, and ``checkpoint.json`` is replaced last
with ``os.replace`` (a single atomic rename). A save interrupted at any point leaves the old
``checkpoint.json`` pointing at the old, untouched tensor files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or does not fit the model it is loaded into."""


@contextlib.contextmanager
def reading(path: str | os.PathLike, part: str) -> Iterator[None]:
    """Turn any error while reading ``part`` of the checkpoint at ``path`` into a
    ``CheckpointError`` that says so (a file edited by hand, or cut short, fails here)."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError,
            OverflowError, SafetensorError) as error:
        raise CheckpointError(
            f"the checkpoint at {path} is damaged: its {part} cannot be read "
            f"({type(error).__name__}: {error})"
        ) from error


@dataclass
class LoadedCheckpoint:
    """What ``load_checkpoint`` returns: the model plus everything saved with it."""

    model: nn.Module
    config: Any
    step: int
    history: dict | None
    tokenizer: dict | None
    train_config: dict | None
    extra: dict = field(default_factory=dict)
    optimizer_state: dict | None = None
    rng_state: dict | None = None


# ---------------------------------------------------------------- writing files atomically
def _write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)``, flush it to disk, then rename it onto ``path``."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp_name)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes files private; a checkpoint is ordinary data
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=1)
    _write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- model tensors
def config_to_dict(config: Any) -> dict:
    """A model config as plain JSON values."""
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"config must be a dataclass or dict, got {type(config).__name__}")


def unique_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's tensors with tied copies removed, and a map ``alias -> saved name``.

    safetensors refuses two names for one piece of memory (a tied output head shares the
    token embedding), so each shared tensor is saved once under its first name.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if tensor.numel() > 0 and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().cpu().contiguous()
    return tensors, aliases


# GPTConfig switches that change how the model computes, never what (fused kernels or the
# written-out maths): weights saved with one setting load into a model with the other.
SPEED_ONLY_FIELDS = frozenset({"use_sdpa", "use_fused_ops"})


def _config_differences(saved: dict, current: dict) -> list[str]:
    absent = "<absent>"
    return [
        f"{name}: checkpoint {saved.get(name, absent)!r}, model {current.get(name, absent)!r}"
        for name in sorted((set(saved) | set(current)) - SPEED_ONLY_FIELDS)
        if saved.get(name) != current.get(name)
    ]


def load_model_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` into ``model``; any missing, unexpected or misshapen name is an error."""
    expected, _ = unique_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshapen = [
        f"{name}: checkpoint {tuple(tensors[name].shape)}, model {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(tensors))
        if tensors[name].shape != expected[name].shape
    ]
    mistyped = [f"{name}: checkpoint {tensors[name].dtype}, model {expected[name].dtype}"
                for name in sorted(set(expected) & set(tensors))
                if tensors[name].is_floating_point() != expected[name].is_floating_point()]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {missing}")
    if mistyped:
        problems.append("integer and floating-point tensors mixed up: " + "; ".join(mistyped[:3]))
    if unexpected:
        problems.append(f"not in the model: {unexpected}")
    if misshapen:
        problems.append("different shapes: " + "; ".join(misshapen))
    if problems:
        raise CheckpointError(
            "the checkpoint's tensors do not fit the model: " + " | ".join(problems)
        )
    with torch.no_grad():
        own = model.state_dict()
        for name, tensor in tensors.items():
            own[name].copy_(tensor)


# ---------------------------------------------------------------- optimizer state
def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and plain values (JSON)."""
    state_dict = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{index}.{key}"] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        for group in state_dict["param_groups"]
    ]
    indices = sorted(int(index) for index in state_dict["state"])
    return tensors, {"param_groups": groups, "state_values": plain, "state_indices": indices}


def _optimizer_from_files(tensors: dict, plain: dict) -> dict:
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    for name, value in plain["state_values"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    missing = sorted(set(plain.get("state_indices", state)) - set(state))
    if missing:  # loading would silently restart AdamW's moments for these parameters
        raise ValueError(f"optimizer tensors for parameters {missing} are missing from the "
                         "state file")
    groups = [
        {k: (tuple(v) if k == "betas" else v) for k, v in group.items()}
        for group in plain["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _check_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """The saved state must fit ``optimizer``'s parameters: same keys for every parameter,
    moment tensors of the parameter's shape, scalar step counts (else training would go on
    with NaN, or fail at the first step)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    key_sets = {frozenset(values) for values in state_dict["state"].values()}
    if len(key_sets) > 1:
        entries = sorted(map(sorted, key_sets))
        raise ValueError(f"parameters have different optimizer entries: {entries}")
    for index, values in state_dict["state"].items():
        if not 0 <= index < len(params):
            raise ValueError(f"optimizer state for parameter {index}, but there are {len(params)}")
        for key, value in values.items():
            if not torch.is_tensor(value):
                continue
            scalar = value.numel() == 1 and key == "step"
            if not scalar and value.shape != params[index].shape:
                raise ValueError(f"optimizer {key} of parameter {index} has shape "
                                 f"{tuple(value.shape)}, the parameter "
                                 f"{tuple(params[index].shape)}")


# ---------------------------------------------------------------- random generators
def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """The torch (CPU and CUDA), NumPy and Python random states: tensors and JSON parts."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    version, mt_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    plain = {
        "python": [version, list(mt_state), gauss],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
    }
    return tensors, plain


def restore_rng_state(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    """Put back the random states saved by ``capture_rng_state``."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    version, mt_state, gauss = plain["python"]
    random.setstate((version, tuple(mt_state), gauss))
    kind, keys, position, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))


# ---------------------------------------------------------------- save / load
def save_checkpoint(
    directory: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    step: int = 0,
    history: dict | None = None,
    tokenizer: dict | None = None,
    train_config: dict | None = None,
    extra: dict | None = None,
    save_rng: bool = True,
) -> Path:
    """Write a checkpoint directory atomically and return its path.

    ``model`` must have a ``config`` (a dataclass). ``tokenizer`` is an identity dict (see
    ``llmhelpers.train.tokenizer_identity``); ``history`` and ``train_config`` plain dicts.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError("model must have a .config (e.g. llmhelpers.model.GPTModel)")

    tag = f"{step:08d}-{secrets.token_hex(4)}"
    model_file, state_file = f"model-{tag}.safetensors", f"state-{tag}.safetensors"
    weights, aliases = unique_state_dict(model)
    _write_atomically(directory / model_file, lambda tmp: save_file(weights, tmp))

    state_tensors: dict[str, torch.Tensor] = {}
    optimizer_plain = None
    if optimizer is not None:
        optimizer_tensors, optimizer_plain = _optimizer_to_files(optimizer)
        state_tensors.update(optimizer_tensors)
    rng_plain = None
    if save_rng:
        rng_tensors, rng_plain = capture_rng_state()
        state_tensors.update(rng_tensors)
    if not state_tensors:  # safetensors needs at least one tensor to be a useful file
        state_tensors["empty"] = torch.zeros(0)
    _write_atomically(directory / state_file, lambda tmp: save_file(state_tensors, tmp))

    manifest = {
        "format_version": FORMAT_VERSION,
        "files": {
            "model": model_file,
            "state": state_file,
            "sha256": {
                model_file: _sha256_file(directory / model_file),
                state_file: _sha256_file(directory / state_file),
            },
        },
        "model_class": type(model).__name__,
        "model_config": config_to_dict(config),
        "tied_aliases": aliases,
        "step": int(step),
        "history": history,
        "tokenizer": tokenizer,
        "train_config": train_config,
        "optimizer": optimizer_plain,
        "rng": rng_plain,
        "extra": extra or {},
    }
    write_json_atomically(directory / MANIFEST, manifest)  # the commit point
    _remove_stale_files(directory, keep={model_file, state_file})
    return directory


def _remove_stale_files(directory: Path, keep: set[str]) -> None:
    for pattern in ("model-*.safetensors", "state-*.safetensors"):
        for path in directory.glob(pattern):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _manifest_problems(manifest: dict) -> list[str]:
    """What is missing or of the wrong kind in a manifest (a file edited by hand, say)."""
    problems = []
    files = manifest["files"]
    if not isinstance(files, dict):
        return ["'files' is not a mapping"]
    for key in ("model", "state"):
        if not isinstance(files.get(key), str):
            problems.append(f"'files.{key}' is missing or not a file name")
    hashes = files.get("sha256")
    if not isinstance(hashes, dict) or not all(
        isinstance(files.get(key), str) and files[key] in hashes for key in ("model", "state")
    ):
        problems.append("'files.sha256' does not list both tensor files")
    if not isinstance(manifest["model_config"], dict):
        problems.append("'model_config' is not a mapping")
    if (isinstance(manifest["step"], bool) or not isinstance(manifest["step"], int)
            or manifest["step"] < 0):
        problems.append("'step' is not an integer >= 0")
    for key in ("history", "tokenizer", "train_config", "optimizer", "rng", "extra"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            problems.append(f"'{key}' is not a mapping")
    return problems


def read_manifest(directory: str | os.PathLike) -> dict:
    """The JSON part of a checkpoint (no tensors loaded)."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {Path(directory)}: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"checkpoint file {path} is damaged (not valid JSON: {error})"
        ) from error
    if not isinstance(manifest, dict) or not {"files", "model_config", "step"} <= set(manifest):
        raise CheckpointError(
            f"checkpoint file {path} is damaged (not a checkpoint manifest: it lacks "
            "'files', 'model_config' or 'step')"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"unsupported checkpoint format_version {manifest.get('format_version')!r} "
            f"(this code reads {FORMAT_VERSION})"
        )
    problems = _manifest_problems(manifest)
    if problems:
        raise CheckpointError(f"checkpoint file {path} is damaged: " + "; ".join(problems))
    return manifest


def _load_tensor_file(directory: Path, name: str, manifest: dict) -> dict[str, torch.Tensor]:
    path = directory / name
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing")
    expected = manifest["files"]["sha256"][name]
    if _sha256_file(path) != expected:
        raise CheckpointError(f"checkpoint file {path} is damaged (SHA-256 does not match)")
    with reading(path, "tensor file"):
        return load_file(path, device="cpu")


def check_tensor_shapes(directory: str | os.PathLike, manifest: dict, config) -> None:
    """Compare the model file's tensor shapes (read from its header alone) with those of a
    model built from ``config`` on the ``meta`` device, which allocates no memory. So an edited
    config (say ``context_length`` 100000) is an error, not a huge allocation. Call it before
    building the model from a checkpoint's config."""
    from llmhelpers.model import GPTModel

    path = Path(directory) / manifest["files"]["model"]
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing")
    with reading(path, "tensor file"), safe_open(path, framework="pt") as tensors:
        saved = {name: tuple(tensors.get_slice(name).get_shape()) for name in tensors.keys()}
    saved_layers = len({name.split(".")[1] for name in saved if name.startswith("blocks.")})
    if config.n_layers != saved_layers:  # before building: a million layers take a while
        raise CheckpointError(f"the checkpoint at {directory} is damaged: its model_config has "
                              f"n_layers={config.n_layers}, its tensors {saved_layers} blocks")
    with reading(directory, "model_config"), torch.device("meta"):
        skeleton = GPTModel(config)
    # Meta tensors have no memory to compare, so tied weights are found by name instead: a
    # parameter reached under a second name (the tied output head) is saved under its first.
    every_name = {name for name, _ in skeleton.named_parameters(remove_duplicate=False)}
    tied = every_name - {name for name, _ in skeleton.named_parameters()}
    expected = {name: t for name, t in skeleton.state_dict().items() if name not in tied}
    differing = [f"{name}: file {saved.get(name, '<absent>')}, config {tuple(tensor.shape)}"
                 for name, tensor in expected.items() if saved.get(name) != tuple(tensor.shape)]
    differing += [f"{name}: not in a model of this config" for name in set(saved) - set(expected)]
    if differing:
        raise CheckpointError(
            f"the checkpoint at {directory} is damaged: its model_config does not match its "
            f"tensors ({'; '.join(sorted(differing)[:3])}{'; ...' if len(differing) > 3 else ''})"
        )


def load_checkpoint(
    directory: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    restore_rng: bool = False,
) -> LoadedCheckpoint:
    """Load a checkpoint, into ``model`` if given (its config must match, except for the speed
    switches in ``SPEED_ONLY_FIELDS``) or a new GPTModel.

    With ``optimizer`` its state is restored too; ``restore_rng=True`` puts back the random
    generators (for an exact resume). A config or tensor mismatch raises ``CheckpointError``
    naming every field or tensor that differs.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    saved_config = manifest["model_config"]
    if model is None:
        from llmhelpers.model import GPTConfig, GPTModel

        with reading(directory, "model_config"):
            config = GPTConfig.from_dict(saved_config)
        check_tensor_shapes(directory, manifest, config)
        model = GPTModel(config)
    else:
        config = getattr(model, "config", None)
        if config is not None:
            differences = _config_differences(saved_config, config_to_dict(config))
            if differences:
                raise CheckpointError(
                    "the checkpoint was saved from a model with a different config: "
                    + "; ".join(differences)
                )
    device = next(model.parameters()).device
    load_model_tensors(model, _load_tensor_file(directory, manifest["files"]["model"], manifest))
    model.to(device)

    state_tensors = _load_tensor_file(directory, manifest["files"]["state"], manifest)
    optimizer_state = None
    if manifest.get("optimizer") is not None:
        with reading(directory, "optimizer state"):
            optimizer_state = _optimizer_from_files(state_tensors, manifest["optimizer"])
    if optimizer is not None:
        if optimizer_state is None:
            raise CheckpointError(f"the checkpoint at {directory} has no optimizer state")
        with reading(directory, "optimizer state"):
            _check_optimizer_state(optimizer, optimizer_state)
            optimizer.load_state_dict(optimizer_state)
    rng_state = None
    if manifest.get("rng") is not None:
        rng_state = {
            "tensors": {k: v for k, v in state_tensors.items() if k.startswith("rng.")},
            "plain": manifest["rng"],
        }
    if restore_rng:
        if rng_state is None:
            raise CheckpointError(f"the checkpoint at {directory} has no random state")
        with reading(directory, "random state"):
            restore_rng_state(rng_state["tensors"], rng_state["plain"])

    return LoadedCheckpoint(
        model=model,
        config=config,
        step=manifest["step"],
        history=manifest.get("history"),
        tokenizer=manifest.get("tokenizer"),
        train_config=manifest.get("train_config"),
        extra=manifest.get("extra") or {},
        optimizer_state=optimizer_state,
        rng_state=rng_state,
    )
