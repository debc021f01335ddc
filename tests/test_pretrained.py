"""Tests for llmhelpers.pretrained: each mapping rule on exact numbers, then the proof that a
Hugging Face GPT-2 saved with save_pretrained loads into our model with identical logits."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from llmhelpers import pretrained
from llmhelpers.model import GPTConfig, GPTModel, count_parameters, parameter_count
from llmhelpers.pretrained import (
    GPT2_DIR_ENV_VAR,
    HOW_TO_GET_GPT2,
    CheckpointMismatchError,
    assign_parameters,
    compare_with_hf,
    config_from_hf,
    conv1d_to_linear,
    convert_gpt2_state_dict,
    download_from_hub,
    find_gpt2,
    hub_reachable,
    hub_unreachable_reason,
    load_gpt2,
    read_checkpoint,
    resolve_checkpoint,
    save_random_hf_gpt2,
    split_qkv,
)

transformers = pytest.importorskip("transformers")


# --- Mapping rules on exact matrices ---------------------------------------------------------


def test_conv1d_weight_is_transposed_into_linear():
    # Conv1D computes x @ W + b: [1, 0] @ [[1, 2], [3, 4]] = [1, 2]. A square matrix would
    # load without a shape error if left untransposed, and then give [1, 3].
    conv_weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    linear = nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(conv1d_to_linear(conv_weight))
        linear.bias.zero_()
    assert linear(torch.tensor([1.0, 0.0])).tolist() == [1.0, 2.0]
    assert linear(torch.tensor([0.0, 1.0])).tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="2-D"):
        conv1d_to_linear(torch.zeros(3))


def test_fused_qkv_splits_into_query_key_value_in_order():
    weight = torch.arange(12.0).reshape(2, 6)  # rows [[0..5], [6..11]]
    bias = torch.arange(6.0)
    parts = split_qkv(weight, bias)
    assert list(parts) == ["W_query", "W_key", "W_value"]
    assert parts["W_query"][0].tolist() == [[0, 6], [1, 7]]
    assert parts["W_key"][0].tolist() == [[2, 8], [3, 9]]
    assert parts["W_value"][0].tolist() == [[4, 10], [5, 11]]
    assert [parts[n][1].tolist() for n in parts] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match=r"\(d, 3d\)"):
        split_qkv(torch.zeros(2, 5), torch.zeros(5))


def test_split_qkv_computes_what_c_attn_computes():
    torch.manual_seed(0)
    d = 4
    weight, bias = torch.randn(d, 3 * d), torch.randn(3 * d)
    x = torch.randn(5, d)
    fused = x @ weight + bias  # GPT-2's c_attn, then split into q, k, v
    for (w, b), expected in zip(split_qkv(weight, bias).values(), fused.split(d, -1), strict=True):
        torch.testing.assert_close(nn.functional.linear(x, w, b), expected)


def tiny_hf_config(**overrides) -> dict:
    values = dict(
        model_type="gpt2",
        vocab_size=30,
        n_positions=8,
        n_embd=8,
        n_head=2,
        n_layer=1,
        activation_function="gelu_new",
    )
    values.update(overrides)
    return values


def tiny_hf_tensors(config: GPTConfig, head: bool = False, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    d, v, ctx = config.d_model, config.vocab_size, config.context_length

    def r(*shape):
        return torch.randn(*shape, generator=g)

    tensors = {
        "wte.weight": r(v, d),
        "wpe.weight": r(ctx, d),
        "ln_f.weight": r(d),
        "ln_f.bias": r(d),
    }
    for i in range(config.n_layers):
        h = f"h.{i}."
        tensors |= {
            h + "ln_1.weight": r(d),
            h + "ln_1.bias": r(d),
            h + "ln_2.weight": r(d),
            h + "ln_2.bias": r(d),
            h + "attn.c_attn.weight": r(d, 3 * d),
            h + "attn.c_attn.bias": r(3 * d),
            h + "attn.c_proj.weight": r(d, d),
            h + "attn.c_proj.bias": r(d),
            h + "mlp.c_fc.weight": r(d, 4 * d),
            h + "mlp.c_fc.bias": r(4 * d),
            h + "mlp.c_proj.weight": r(4 * d, d),
            h + "mlp.c_proj.bias": r(d),
            # Buffers older checkpoints carry: the causal mask and its fill value.
            h + "attn.bias": torch.ones(1, 1, ctx, ctx).tril(),
            h + "attn.masked_bias": torch.tensor(-1e4),
        }
    if head:
        tensors["lm_head.weight"] = r(v, d)
    return tensors


def test_config_from_hf_reads_sizes_and_refuses_other_models():
    config = config_from_hf(tiny_hf_config(n_ctx=8))
    assert (config.vocab_size, config.context_length, config.d_model) == (30, 8, 8)
    assert (config.n_heads, config.n_layers, config.ff_dim) == (2, 1, 32)
    assert config.qkv_bias and config.tie_weights and config.dropout == 0.0
    assert not config_from_hf(tiny_hf_config(tie_word_embeddings=False)).tie_weights
    assert config_from_hf(tiny_hf_config(), dropout=0.1).dropout == 0.1
    with pytest.raises(ValueError, match="activation_function"):
        config_from_hf(tiny_hf_config(activation_function="relu"))
    with pytest.raises(ValueError, match="only 'gpt2'"):
        config_from_hf(tiny_hf_config(model_type="llama"))
    with pytest.raises(ValueError, match="scaling"):
        config_from_hf(tiny_hf_config(scale_attn_by_inverse_layer_idx=True))


def test_every_parameter_is_assigned_once_and_mask_buffers_are_skipped():
    config = config_from_hf(tiny_hf_config())
    tensors = tiny_hf_tensors(config)
    ours = convert_gpt2_state_dict(tensors, config)
    model = GPTModel(config)
    assert set(ours) == set(dict(model.named_parameters()))
    assert not any("mask" in name for name in ours)
    assign_parameters(model, ours)
    torch.testing.assert_close(model.blocks[0].ff.fc_out.weight, tensors["h.0.mlp.c_proj.weight"].T)
    torch.testing.assert_close(
        model.blocks[0].attn.W_value.bias, tensors["h.0.attn.c_attn.bias"][16:]
    )
    assert model.out_head.weight is model.tok_emb.weight
    torch.testing.assert_close(model.out_head.weight, tensors["wte.weight"])
    # With the "transformer." prefix save_pretrained writes, the result is the same.
    prefixed = {f"transformer.{k}": t for k, t in tensors.items()}
    assert convert_gpt2_state_dict(prefixed, config).keys() == ours.keys()


def test_untied_head_is_loaded_and_a_missing_head_is_named():
    config = config_from_hf(tiny_hf_config(tie_word_embeddings=False))
    tensors = tiny_hf_tensors(config, head=True)
    model = GPTModel(config)
    assign_parameters(model, convert_gpt2_state_dict(tensors, config))
    torch.testing.assert_close(model.out_head.weight, tensors["lm_head.weight"])
    del tensors["lm_head.weight"]
    with pytest.raises(CheckpointMismatchError, match="out_head.weight"):
        assign_parameters(GPTModel(config), convert_gpt2_state_dict(tensors, config))


def test_tied_config_with_a_different_head_is_refused():
    config = config_from_hf(tiny_hf_config())
    tensors = tiny_hf_tensors(config, head=True)
    with pytest.raises(CheckpointMismatchError, match="tie_weights=False"):
        convert_gpt2_state_dict(tensors, config)
    tensors["lm_head.weight"] = tensors["wte.weight"].clone()  # same values: fine
    convert_gpt2_state_dict(tensors, config)


def test_missing_unexpected_and_misshaped_tensors_are_named():
    config = config_from_hf(tiny_hf_config())
    tensors = tiny_hf_tensors(config)
    with pytest.raises(CheckpointMismatchError, match="h.0.mlp.c_fc.bias"):
        convert_gpt2_state_dict(
            {k: t for k, t in tensors.items() if k != "h.0.mlp.c_fc.bias"}, config
        )
    with pytest.raises(CheckpointMismatchError, match="h.1.ln_1.weight"):
        convert_gpt2_state_dict({**tensors, "h.1.ln_1.weight": torch.ones(8)}, config)
    ours = convert_gpt2_state_dict(tensors, config)
    ours["pos_emb.weight"] = torch.zeros(9, 8)
    with pytest.raises(CheckpointMismatchError, match=r"pos_emb.weight.*\(9, 8\).*\(8, 8\)"):
        assign_parameters(GPTModel(config), ours)
    with pytest.raises(CheckpointMismatchError, match="extra.weight"):
        assign_parameters(GPTModel(config), {**ours, "extra.weight": torch.zeros(1)})


# --- The proof: a real transformers GPT-2, saved and loaded ----------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_hf_gpt2_loads_with_identical_logits(tmp_path, tied):
    hf_model, directory = save_random_hf_gpt2(tmp_path, tie_word_embeddings=tied, seed=1)
    assert (directory / "model.safetensors").is_file()
    model = load_gpt2(directory)
    assert not model.training and model.config.tie_weights == tied
    assert count_parameters(model) == parameter_count(model.config)
    assert count_parameters(model) == sum(p.numel() for p in hf_model.parameters())
    ids = torch.randint(0, 1000, (3, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(ids), hf_model(ids).logits
    assert ours.shape == theirs.shape == (3, 64, 1000)
    assert (ours - theirs).abs().max() <= 1e-4
    assert compare_with_hf(hf_model, model, seq_len=17) <= 1e-4
    # The hidden states agree too (HF applies ln_f to its last one; ours stops before it).
    with torch.no_grad():
        hf_hidden = hf_model(ids, output_hidden_states=True).hidden_states
        our_hidden = model(ids, return_hidden_states=True).hidden_states
    for a, b in zip(our_hidden[:-1], hf_hidden[:-1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_loading_other_dtypes_and_the_fused_attention(tmp_path):
    hf_model, directory = save_random_hf_gpt2(tmp_path, seed=2)
    fused = load_gpt2(directory, use_sdpa=True)
    assert fused.config.use_sdpa
    assert compare_with_hf(hf_model, fused) <= 1e-4
    all_fused = load_gpt2(directory, use_sdpa=True, use_fused_ops=True)
    assert isinstance(all_fused.blocks[0].norm1, torch.nn.LayerNorm)
    assert compare_with_hf(hf_model, all_fused) <= 1e-4
    half = load_gpt2(directory, dtype=torch.bfloat16)
    assert half.tok_emb.weight.dtype == torch.bfloat16
    assert torch.isfinite(half(torch.randint(0, 1000, (1, 10)))).all()


# --- Files, the hub and failure modes --------------------------------------------------------


def test_read_checkpoint_refuses_pickles_and_explains(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_hf_config()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickle files are never loaded"):
        read_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        read_checkpoint(tmp_path / "..")


def test_sharded_checkpoints_are_read(tmp_path):
    config = config_from_hf(tiny_hf_config())
    tensors = tiny_hf_tensors(config)
    names = sorted(tensors)
    save_file({k: tensors[k] for k in names[:5]}, tmp_path / "a.safetensors")
    save_file({k: tensors[k] for k in names[5:]}, tmp_path / "b.safetensors")
    weight_map = {k: "a.safetensors" if i < 5 else "b.safetensors" for i, k in enumerate(names)}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(tiny_hf_config()))
    _, read = read_checkpoint(tmp_path)
    assert read.keys() == tensors.keys()
    model = load_gpt2(tmp_path)
    torch.testing.assert_close(model.pos_emb.weight, tensors["wpe.weight"])


def test_offline_hub_request_fails_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    start = time.monotonic()
    with pytest.raises((ConnectionError, ImportError), match="LLMHELPERS_GPT2_DIR"):
        load_gpt2("openai-community/gpt2")
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory nor a hub id"):
        resolve_checkpoint("/no/such/dir")
    monkeypatch.delenv(GPT2_DIR_ENV_VAR, raising=False)
    assert find_gpt2() is None
    assert time.monotonic() - start < 10


def test_env_var_directory_is_found(monkeypatch, tmp_path):
    monkeypatch.setenv(GPT2_DIR_ENV_VAR, str(tmp_path))
    assert find_gpt2() == tmp_path


# --- Broken files: clear errors that name the file ---------------------------------------------


def write_tiny_checkpoint(directory, **config_overrides) -> dict:
    hf_config = tiny_hf_config(**config_overrides)
    (directory / "config.json").write_text(json.dumps(hf_config))
    tensors = tiny_hf_tensors(config_from_hf(hf_config))
    save_file(tensors, directory / "model.safetensors")
    return tensors


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "git-lfs pointer", "empty"])
def test_corrupted_safetensors_files_are_named(tmp_path, damage):
    write_tiny_checkpoint(tmp_path)
    load_gpt2(tmp_path)  # intact: loads
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    damaged = {
        "truncated": data[: len(data) // 2],
        "random bytes": bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).tolist()),
        "git-lfs pointer": b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707\n"
        b"size 548105171\n",
        "empty": b"",
    }[damage]
    weights.write_bytes(damaged)
    with pytest.raises(ValueError) as error:
        load_gpt2(tmp_path)
    message = str(error.value)
    assert str(weights) in message
    assert "is not a valid safetensors file (incomplete download or git-lfs pointer?)" in message
    assert GPT2_DIR_ENV_VAR in message  # how to get GPT-2
    if damage == "git-lfs pointer":
        assert "it is a git-lfs pointer" in message


def test_bad_config_json_is_named(tmp_path):
    write_tiny_checkpoint(tmp_path)
    config_path = tmp_path / "config.json"
    config_path.write_text("{'n_embd': 8,")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        load_gpt2(tmp_path)
    config_path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json must hold a JSON object.*list"):
        load_gpt2(tmp_path)
    without_vocab = {k: v for k, v in tiny_hf_config().items() if k != "vocab_size"}
    config_path.write_text(json.dumps(without_vocab))
    with pytest.raises(ValueError, match=r"config\.json.* has no 'vocab_size'"):
        load_gpt2(tmp_path)
    config_path.write_text(json.dumps(tiny_hf_config(n_embd="8")))
    with pytest.raises(ValueError, match=r"config\.json has an unusable value \(key 'n_embd'\)"):
        load_gpt2(tmp_path)
    with pytest.raises(ValueError, match=r"config\.json must hold a JSON object"):
        config_from_hf([1, 2])


def test_missing_context_length_defaults_to_1024_like_transformers():
    values = {k: v for k, v in tiny_hf_config().items() if k != "n_positions"}
    assert config_from_hf(values).context_length == 1024
    assert config_from_hf({**values, "n_ctx": 16}).context_length == 16
    assert transformers.GPT2Config().n_positions == 1024


@pytest.mark.parametrize(
    "name", ["h.7.attn.c_attn.bias", "h.0.crossattention.q_attn.bias", "h.1.attn.bias"]
)
def test_only_the_mask_buffers_of_existing_layers_are_skipped(name):
    config = config_from_hf(tiny_hf_config())  # one layer
    tensors = tiny_hf_tensors(config)
    assert {"h.0.attn.bias", "h.0.attn.masked_bias"} <= set(tensors)  # skipped silently
    convert_gpt2_state_dict(tensors, config)
    with pytest.raises(CheckpointMismatchError, match=re.escape(name)):
        convert_gpt2_state_dict({**tensors, name: torch.zeros(3)}, config)
    with pytest.raises(CheckpointMismatchError, match=re.escape(name)):
        convert_gpt2_state_dict({**tensors, f"transformer.{name}": torch.zeros(3)}, config)


def test_a_tensor_stored_with_and_without_the_prefix_is_refused():
    config = config_from_hf(tiny_hf_config())
    tensors = tiny_hf_tensors(config)
    with pytest.raises(CheckpointMismatchError, match="'wte.weight' twice"):
        convert_gpt2_state_dict(
            {**tensors, "transformer.wte.weight": tensors["wte.weight"]}, config
        )


def test_bad_dtype_and_device_are_named(tmp_path):
    write_tiny_checkpoint(tmp_path)
    with pytest.raises(TypeError, match=r"dtype .*torch\.float16.*'float16'"):
        load_gpt2(tmp_path, dtype="float16")
    with pytest.raises(TypeError, match="dtype"):
        load_gpt2(tmp_path, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"device .*'gpu'"):
        load_gpt2(tmp_path, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda'.*CUDA is not available"):
            load_gpt2(tmp_path, device="cuda")
    assert load_gpt2(tmp_path, device=torch.device("cpu")).tok_emb.weight.device.type == "cpu"


def test_connection_errors_say_what_happened(monkeypatch, tmp_path):
    assert "548 MB" in HOW_TO_GET_GPT2
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_unreachable_reason() == "HF_HUB_OFFLINE is set, so the hub was not contacted"
    assert not hub_reachable()
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def refuse(address, timeout=None):
        raise OSError("no route to host")

    monkeypatch.setattr(pretrained.socket, "create_connection", refuse)
    reason = hub_unreachable_reason(timeout_s=5.0)
    assert reason.startswith("connecting to huggingface.co failed after 0.")
    assert "no route to host" in reason
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(ConnectionError, match="failed after") as error:
        download_from_hub("openai-community/gpt2", timeout_s=5.0)
    assert "tried for" not in str(error.value)
