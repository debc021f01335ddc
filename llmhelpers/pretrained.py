"""Load OpenAI's GPT-2 weights (Hugging Face layout) into our ``GPTModel``.

A GPT-2 checkpoint in the Hugging Face layout is a directory with ``config.json`` (the sizes)
and ``model.safetensors`` (the tensors). Safetensors files hold raw arrays only, so loading one
never runs code: we never unpickle (``torch.load``) a downloaded file, and TensorFlow is not
involved. The checkpoint comes from a local directory or, if the optional ``huggingface_hub``
package is installed and the network is up, from the Hugging Face hub.

The mapping, GPT-2 name -> our name (``{i}`` is the layer; names may also start with
``transformer.``, as ``save_pretrained`` writes them):

==============================  =====================================  ============================
GPT-2 (Hugging Face)            ours                                   rule
==============================  =====================================  ============================
``wte.weight``                  ``tok_emb.weight``                     copy
``wpe.weight``                  ``pos_emb.weight``                     copy
``h.{i}.ln_1.weight/bias``      ``blocks.{i}.norm1.weight/bias``       copy
``h.{i}.attn.c_attn.weight``    ``blocks.{i}.attn.W_query.weight``,    split ``(d, 3d)`` into
                                ``W_key.weight``, ``W_value.weight``   q, k, v; transpose each
``h.{i}.attn.c_attn.bias``      ``...W_query/W_key/W_value.bias``      split ``(3d,)`` into q, k, v
``h.{i}.attn.c_proj.weight``    ``blocks.{i}.attn.out_proj.weight``    transpose
``h.{i}.attn.c_proj.bias``      ``blocks.{i}.attn.out_proj.bias``      copy
``h.{i}.ln_2.weight/bias``      ``blocks.{i}.norm2.weight/bias``       copy
``h.{i}.mlp.c_fc.weight``       ``blocks.{i}.ff.fc_in.weight``         transpose
``h.{i}.mlp.c_fc.bias``         ``blocks.{i}.ff.fc_in.bias``           copy
``h.{i}.mlp.c_proj.weight``     ``blocks.{i}.ff.fc_out.weight``        transpose
``h.{i}.mlp.c_proj.bias``       ``blocks.{i}.ff.fc_out.bias``          copy
``ln_f.weight/bias``            ``final_norm.weight/bias``             copy
``lm_head.weight``              ``out_head.weight``                    copy; when absent the head
                                                                       is tied to ``tok_emb``
``h.{i}.attn.bias``,            (none)                                 skipped: the causal mask
``h.{i}.attn.masked_bias``                                             and its fill value, not
                                                                       weights
==============================  =====================================  ============================

Why transpose: GPT-2's block matrices are "Conv1D" layers that compute ``x @ W + b`` with
``W`` stored ``(in, out)``; ``nn.Linear`` computes ``x @ W.T + b`` with ``W`` stored
``(out, in)``. A square matrix loads without any shape error when left untransposed, and
silently computes the wrong thing, so the tests check outputs, not shapes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from llmhelpers.model import GPTConfig, GPTModel

GPT2_DIR_ENV_VAR = "LLMHELPERS_GPT2_DIR"
"""Environment variable naming a local directory that holds GPT-2 124M (Hugging Face layout)."""
GPT2_HUB_REPOS = {
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}
HUB_HOST = "huggingface.co"
SKIPPED_BUFFERS = ("attn.bias", "attn.masked_bias")
"""Buffers some checkpoints store in every layer, ``h.{i}.attn.bias`` (the causal mask) and
``h.{i}.attn.masked_bias`` (its fill value). Skipped, never loaded as weights; a name that
merely ends the same way (``h.0.crossattention.q_attn.bias``) is not skipped."""
LFS_POINTER_PREFIX = b"version https://git-lfs"
"""How a git-lfs pointer file starts: a few lines of text standing in for the real file."""
GPT2_CONFIG_DEFAULTS = {"n_positions": 1024}
"""Settings ``transformers`` fills in when config.json leaves them out (GPT-2's values)."""

HOW_TO_GET_GPT2 = f"""\
To use the real GPT-2 (124M, a 548 MB model.safetensors), either
  * on a machine with internet:  pip install huggingface_hub  and call
      load_gpt2("openai-community/gpt2")   (downloads once into the Hugging Face cache), or
  * download config.json and model.safetensors from
      https://huggingface.co/openai-community/gpt2/tree/main
    into one directory and point the notebooks at it:
      export {GPT2_DIR_ENV_VAR}=/path/to/that/directory
      (or call load_gpt2("/path/to/that/directory") yourself)."""


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model: names missing, unused or mis-shaped."""


# --- The mapping rules -----------------------------------------------------------------------


def conv1d_to_linear(weight: Tensor) -> Tensor:
    """GPT-2 Conv1D weight ``(in, out)`` -> ``nn.Linear`` weight ``(out, in)`` (a transpose)."""
    if weight.dim() != 2:
        raise ValueError(f"a Conv1D weight must be 2-D (in, out), got shape {tuple(weight.shape)}")
    return weight.t().contiguous()


def split_qkv(weight: Tensor, bias: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """Split GPT-2's fused ``c_attn`` into query, key and value ``nn.Linear`` parameters.

    ``weight`` ``(d, 3d)`` (Conv1D layout: its columns are q's outputs, then k's, then v's) and
    ``bias`` ``(3d,)`` -> ``{"W_query": (weight (d, d), bias (d,)), "W_key": ..., "W_value": ...}``
    with each weight in ``(out, in)`` layout.
    """
    if weight.dim() != 2 or weight.shape[1] != 3 * weight.shape[0]:
        raise ValueError(f"c_attn.weight must have shape (d, 3d), got {tuple(weight.shape)}")
    if bias.shape != (weight.shape[1],):
        raise ValueError(
            f"c_attn.bias must have shape ({weight.shape[1]},), got {tuple(bias.shape)}"
        )
    weights = weight.split(weight.shape[0], dim=1)
    biases = bias.split(weight.shape[0])
    return {
        name: (conv1d_to_linear(w), b.contiguous())
        for name, w, b in zip(("W_query", "W_key", "W_value"), weights, biases, strict=True)
    }


_REQUIRED_HF_KEYS = {
    "vocab_size": "vocab_size",
    "n_embd": "d_model",
    "n_head": "n_heads",
    "n_layer": "n_layers",
}


def config_from_hf(hf_config: Mapping, **overrides) -> GPTConfig:
    """Our ``GPTConfig`` from a GPT-2 ``config.json`` (as a dict); ``overrides`` win.

    ``vocab_size``, ``n_embd``, ``n_head`` and ``n_layer`` are required; the context length is
    ``n_positions`` (or the older ``n_ctx``), 1024 when neither is there, as in
    ``transformers``. Refuses variants our model does not implement (another activation,
    unscaled attention...) rather than loading them into a model that computes something else.
    Every problem with the file is a ``ValueError`` naming config.json and the key.
    """
    if not isinstance(hf_config, Mapping):
        raise ValueError(
            "config.json must hold a JSON object of GPT-2 settings such as "
            f'{{"n_embd": 768, ...}}, got a {type(hf_config).__name__}: {hf_config!r:.80}'
        )
    model_type = hf_config.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(
            f"config.json describes a {model_type!r} model (key 'model_type'); "
            "only 'gpt2' is supported"
        )
    activation = hf_config.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(
            f"config.json's activation_function {activation!r} is not supported: our GELU is "
            "the tanh approximation ('gelu_new')"
        )
    if not hf_config.get("scale_attn_weights", True) or hf_config.get(
        "scale_attn_by_inverse_layer_idx", False
    ):
        raise ValueError(
            "config.json asks for non-standard attention scaling (scale_attn_weights / "
            "scale_attn_by_inverse_layer_idx): only GPT-2's 1/sqrt(head_dim) scaling is supported"
        )
    missing = [key for key in _REQUIRED_HF_KEYS if key not in hf_config]
    if missing:
        raise ValueError(
            f"config.json has no {missing[0]!r} (missing: {missing}); a GPT-2 config.json "
            f"needs {list(_REQUIRED_HF_KEYS)}"
        )
    if "n_positions" in hf_config:
        context_key = "n_positions"
    elif "n_ctx" in hf_config:
        context_key = "n_ctx"
    else:
        context_key = None
    eps = hf_config.get("layer_norm_epsilon", 1e-5)
    values = dict(
        vocab_size=hf_config["vocab_size"],
        context_length=(
            hf_config[context_key] if context_key else GPT2_CONFIG_DEFAULTS["n_positions"]
        ),
        d_model=hf_config["n_embd"],
        n_heads=hf_config["n_head"],
        n_layers=hf_config["n_layer"],
        dropout=0.0,
        qkv_bias=True,
        tie_weights=hf_config.get("tie_word_embeddings", True),
        d_ff=hf_config.get("n_inner"),
        layer_norm_eps=eps,
    )
    hf_keys = {
        **{ours: hf for hf, ours in _REQUIRED_HF_KEYS.items()},
        "context_length": context_key or "n_positions",
        "tie_weights": "tie_word_embeddings",
        "d_ff": "n_inner",
        "layer_norm_eps": "layer_norm_epsilon",
    }
    try:
        config = GPTConfig(**values)
    except (TypeError, ValueError) as err:
        culprit = next((hf_keys[name] for name in hf_keys if str(err).startswith(name)), None)
        where = f" (key {culprit!r})" if culprit else ""
        raise ValueError(f"config.json has an unusable value{where}: {err}") from err
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(GPTConfig)})
    if unknown:
        raise TypeError(f"unknown GPTConfig override(s) {unknown}")
    return dataclasses.replace(config, **overrides)


def convert_gpt2_state_dict(
    hf_tensors: Mapping[str, Tensor], config: GPTConfig
) -> dict[str, Tensor]:
    """Rename and reshape a GPT-2 state dict into ours, following the table in this module.

    Returns one tensor per distinct parameter of ``GPTModel(config)`` (with a tied head there
    is no separate ``out_head.weight``). Raises ``CheckpointMismatchError`` naming every
    checkpoint tensor that no rule uses.
    """
    source: dict[str, Tensor] = {}
    for name, tensor in hf_tensors.items():
        short = _strip_prefix(name)
        if short in source:
            raise CheckpointMismatchError(
                f"the checkpoint holds {short!r} twice (with and without 'transformer.')"
            )
        source[short] = tensor
    ours: dict[str, Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> Tensor:
        if name not in source:
            raise CheckpointMismatchError(f"the checkpoint has no tensor {name!r}")
        used.add(name)
        return source[name]

    def put(name: str, tensor: Tensor) -> None:
        if name in ours:
            raise CheckpointMismatchError(f"{name!r} would be assigned twice")
        ours[name] = tensor

    put("tok_emb.weight", take("wte.weight"))
    put("pos_emb.weight", take("wpe.weight"))
    for i in range(config.n_layers):
        hf, our = f"h.{i}.", f"blocks.{i}."
        for norm_hf, norm_ours in (("ln_1", "norm1"), ("ln_2", "norm2")):
            for p in ("weight", "bias"):
                put(f"{our}{norm_ours}.{p}", take(f"{hf}{norm_hf}.{p}"))
        qkv = split_qkv(take(f"{hf}attn.c_attn.weight"), take(f"{hf}attn.c_attn.bias"))
        for name, (w, b) in qkv.items():
            put(f"{our}attn.{name}.weight", w)
            if config.qkv_bias:
                put(f"{our}attn.{name}.bias", b)
            elif b.abs().max() > 0:
                raise CheckpointMismatchError(
                    f"{hf}attn.c_attn.bias is non-zero but config.qkv_bias is False"
                )
        for conv, linear in (
            ("attn.c_proj", "attn.out_proj"),
            ("mlp.c_fc", "ff.fc_in"),
            ("mlp.c_proj", "ff.fc_out"),
        ):
            put(f"{our}{linear}.weight", conv1d_to_linear(take(f"{hf}{conv}.weight")))
            put(f"{our}{linear}.bias", take(f"{hf}{conv}.bias"))
    put("final_norm.weight", take("ln_f.weight"))
    put("final_norm.bias", take("ln_f.bias"))

    if "lm_head.weight" in source:
        head = take("lm_head.weight")
        if not config.tie_weights:
            put("out_head.weight", head)
        elif not torch.equal(head, ours["tok_emb.weight"]):
            raise CheckpointMismatchError(
                "the config ties the output head to the token embedding, but the checkpoint's "
                "lm_head.weight differs from wte.weight; load with tie_weights=False"
            )

    skipped = {f"h.{i}.{buffer}" for i in range(config.n_layers) for buffer in SKIPPED_BUFFERS}
    unused = sorted(name for name in source if name not in used and name not in skipped)
    if unused:
        raise CheckpointMismatchError(f"checkpoint tensors not used by any rule: {unused}")
    return ours


def _strip_prefix(name: str) -> str:
    return name.removeprefix("transformer.")


def assign_parameters(model: GPTModel, tensors: Mapping[str, Tensor]) -> None:
    """Copy ``tensors`` into ``model``: every distinct parameter exactly once, shapes checked.

    Raises ``CheckpointMismatchError`` naming any parameter without a tensor, any tensor
    without a parameter, and any shape that differs.
    """
    params = dict(model.named_parameters())  # a tied head appears once, as tok_emb.weight
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"parameters without a tensor: {missing}; tensors without a parameter: {unexpected}"
        )
    for name, param in params.items():
        if tensors[name].shape != param.shape:
            raise CheckpointMismatchError(
                f"{name}: the checkpoint has shape {tuple(tensors[name].shape)}, "
                f"the model expects {tuple(param.shape)}"
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])


# --- Finding and reading a checkpoint --------------------------------------------------------


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict, dict[str, Tensor]]:
    """``(config.json as a dict, tensors)`` from a Hugging Face-layout directory.

    Reads ``model.safetensors`` (or the shards listed in ``model.safetensors.index.json``).
    Pickle-based files (``pytorch_model.bin``) are refused: unpickling runs arbitrary code.
    A broken file (invalid JSON, a truncated download, a git-lfs pointer) is a ``ValueError``
    naming it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json\n{HOW_TO_GET_GPT2}")
    hf_config = _read_json(config_path)
    if not isinstance(hf_config, dict):
        raise ValueError(
            f"{config_path}: config.json must hold a JSON object of GPT-2 settings such as "
            f'{{"n_embd": 768, ...}}, got a JSON {type(hf_config).__name__}'
        )
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return hf_config, load_safetensors(single)
    if index.is_file():
        index_data = _read_json(index)
        weight_map = index_data.get("weight_map") if isinstance(index_data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no 'weight_map' object naming the shard files")
        tensors: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (directory / shard).is_file():
                raise FileNotFoundError(f"{index} lists {shard!r}, which is not in {directory}")
            tensors.update(load_safetensors(directory / shard))
        return hf_config, tensors
    pickled = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
    hint = (
        f" (found {pickled}: pickle files are never loaded, they can run code)" if pickled else ""
    )
    raise FileNotFoundError(f"{directory} has no model.safetensors{hint}\n{HOW_TO_GET_GPT2}")


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def load_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of one ``.safetensors`` file (raw arrays: nothing in it can run code).

    A file that is not valid safetensors (empty, truncated by an interrupted download, or a
    git-lfs pointer, i.e. a clone made without ``git lfs``) is a ``ValueError`` naming it.
    """
    path = Path(path)
    problem = f"{path} is not a valid safetensors file (incomplete download or git-lfs pointer?)"
    with open(path, "rb") as file:
        start = file.read(len(LFS_POINTER_PREFIX))
    if start == LFS_POINTER_PREFIX:
        raise ValueError(
            f"{problem}: it is a git-lfs pointer, a small text file standing in for the real "
            f"one (run `git lfs pull` in the clone, or download the file directly)\n"
            f"{HOW_TO_GET_GPT2}"
        )
    try:
        return load_file(path)
    except SafetensorError as err:
        size = path.stat().st_size
        raise ValueError(f"{problem}: {err} ({size:,} bytes)\n{HOW_TO_GET_GPT2}") from None


def hub_unreachable_reason(timeout_s: float = 2.0) -> str | None:
    """None when the Hugging Face hub answers a TCP connection within ``timeout_s`` seconds,
    otherwise what happened, in words (offline mode set, the connection failed, no answer)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return "HF_HUB_OFFLINE is set, so the hub was not contacted"
    finished, errors = threading.Event(), []
    start = time.monotonic()

    def connect() -> None:
        try:
            with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
                pass
        except OSError as err:
            errors.append(err)
        finally:
            finished.set()

    # A thread, because the name lookup inside create_connection ignores the timeout.
    threading.Thread(target=connect, daemon=True).start()
    if not finished.wait(timeout_s):
        return f"{HUB_HOST} did not answer within {timeout_s:g} s"
    if errors:
        elapsed = time.monotonic() - start
        return f"connecting to {HUB_HOST} failed after {elapsed:.1f} s ({errors[0]})"
    return None


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout_s`` seconds."""
    return hub_unreachable_reason(timeout_s) is None


def download_from_hub(repo_id: str, timeout_s: float = 2.0) -> Path:
    """Directory holding ``config.json`` and ``model.safetensors`` of a hub repository.

    Uses the local Hugging Face cache when the files are already there (works offline);
    otherwise downloads them, which needs ``pip install huggingface_hub`` and a network.
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise ImportError(
            f"downloading {repo_id!r} needs the optional package huggingface_hub "
            "(pip install 'llmhelpers[hub]' or pip install huggingface_hub)\n" + HOW_TO_GET_GPT2
        ) from err
    files = ("config.json", "model.safetensors")
    try:
        paths = [hf_hub_download(repo_id, f, local_files_only=True) for f in files]
        return Path(paths[1]).parent
    except Exception:  # not cached yet (the exception type varies across versions)
        pass
    reason = hub_unreachable_reason(timeout_s)
    if reason is not None:
        raise ConnectionError(
            f"{repo_id!r} is not in the local Hugging Face cache and {reason}.\n{HOW_TO_GET_GPT2}"
        )
    paths = [hf_hub_download(repo_id, f, etag_timeout=timeout_s) for f in files]
    return Path(paths[1]).parent


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_checkpoint(source: str | os.PathLike, timeout_s: float = 2.0) -> Path:
    """A local directory as is; a GPT-2 size ("124M"...) or hub id ("openai-community/gpt2")
    via the hub (cache first). Raises a clear error, quickly, when neither works."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    name = str(source)
    if name in GPT2_HUB_REPOS:
        name = GPT2_HUB_REPOS[name]
    if path.exists() or not _REPO_ID.match(name):
        raise FileNotFoundError(
            f"{source} is neither a checkpoint directory nor a hub id\n{HOW_TO_GET_GPT2}"
        )
    try:
        return download_from_hub(name, timeout_s)
    except ConnectionError as err:
        raise ConnectionError(f"there is no local directory {str(source)!r}; {err}") from None


def load_gpt2(
    source: str | os.PathLike = "124M",
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    timeout_s: float = 2.0,
    **config_overrides,
) -> GPTModel:
    """A ``GPTModel`` holding GPT-2's weights, in eval mode.

    ``source``: a directory with ``config.json`` and ``model.safetensors`` (Hugging Face
    layout), a hub id such as ``"openai-community/gpt2"``, or a size ``"124M"``, ``"355M"``,
    ``"774M"``, ``"1558M"``. ``config_overrides`` go to ``GPTConfig`` (e.g. ``dropout=0.1`` to
    fine-tune, ``use_sdpa=True``). Network access is tried for at most about ``timeout_s``
    seconds before a ``ConnectionError`` that explains how to get the files. ``dtype`` is a
    floating-point ``torch.dtype`` (``torch.float16``, not ``"float16"``); ``device`` is
    anything ``torch.device`` accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            "dtype must be a floating-point torch.dtype such as torch.float32, torch.float16 "
            f"or torch.bfloat16, got {dtype!r}"
        )
    device = _check_device(device)
    directory = resolve_checkpoint(source, timeout_s)
    hf_config, hf_tensors = read_checkpoint(directory)
    try:
        config_from_hf(hf_config)  # the file's own problems, reported with its path
    except ValueError as err:
        raise ValueError(f"{directory / 'config.json'}: {err}") from None
    config = config_from_hf(hf_config, **config_overrides)
    model = GPTModel(config)
    assign_parameters(model, convert_gpt2_state_dict(hf_tensors, config))
    return model.to(device=device, dtype=dtype).eval()


def _check_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device must be a torch device such as 'cpu', 'cuda', 'cuda:0' or 'mps', "
            f"got {device!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but MPS is not available here")
    return device


def gpt2_dir_from_env() -> Path | None:
    """The directory named by ``$LLMHELPERS_GPT2_DIR`` if it is set and exists, else None."""
    value = os.environ.get(GPT2_DIR_ENV_VAR)
    if value and Path(value).expanduser().is_dir():
        return Path(value).expanduser()
    return None


def find_gpt2(timeout_s: float = 2.0) -> Path | None:
    """Where GPT-2 124M can be loaded from right now, or None (never raises, never waits long).

    Tries ``$LLMHELPERS_GPT2_DIR``, then the Hugging Face cache, then (if ``huggingface_hub``
    is installed and the hub answers within ``timeout_s``) a download.
    """
    local = gpt2_dir_from_env()
    if local is not None:
        return local
    try:
        return download_from_hub(GPT2_HUB_REPOS["124M"], timeout_s)
    except (ImportError, ConnectionError, OSError):
        return None
    except Exception:  # a failed download of any kind: report "not available"
        return None


# --- Proof without a download: a small random GPT-2 in the Hugging Face layout ----------------


def save_random_hf_gpt2(
    directory: str | os.PathLike | None = None,
    *,
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 64,
    vocab_size: int = 1000,
    n_positions: int = 64,
    tie_word_embeddings: bool = True,
    seed: int = 0,
):
    """Build a small randomly initialised ``transformers.GPT2LMHeadModel`` and save it with
    ``save_pretrained`` (safetensors). Returns ``(hf_model in eval mode, directory)``.

    Needs the ``transformers`` package (a development dependency); no download involved.
    """
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    hf_config = GPT2Config(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        vocab_size=vocab_size,
        n_positions=n_positions,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
    )
    hf_model = GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():  # make the biases and norms non-trivial so every rule is exercised
        for name, param in hf_model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
    directory = Path(directory or tempfile.mkdtemp(prefix="random-gpt2-"))
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a one-file save needs no progress bar
    try:
        hf_model.save_pretrained(directory, safe_serialization=True)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return hf_model, directory


def compare_with_hf(
    hf_model, model: GPTModel, batch_size: int = 2, seq_len: int | None = None, seed: int = 0
) -> float:
    """Largest absolute difference between the two models' logits on the same random ids."""
    seq_len = seq_len or model.config.context_length
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.real_vocab_size, (batch_size, seq_len), generator=generator)
    with torch.no_grad():
        ours = model.eval()(ids)
        theirs = hf_model.eval()(ids).logits
    return (ours - theirs).abs().max().item()
