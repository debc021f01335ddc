"""Tests for llmhelpers.model: the config, each part against PyTorch, the model's contract,
and the size formulas against direct counts."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from llmhelpers.model import (
    GELU,
    GPT2_PADDED_VOCAB_SIZE,
    GPT2_VOCAB_SIZE,
    FeedForward,
    GPTConfig,
    GPTModel,
    GPTOutput,
    LayerNorm,
    TransformerBlock,
    block_gradient_norms,
    count_parameters,
    format_size_report,
    forward_flops_per_token,
    greedy_continue,
    human_count,
    kv_cache_bytes,
    make_gelu,
    make_layer_norm,
    mask_padded_logits,
    parameter_breakdown,
    parameter_count,
    size_report,
    trace_shapes,
    training_flops_per_token,
    training_memory_bytes,
    weights_memory_bytes,
)
from llmhelpers.train import default_model_config


def tiny_config(**overrides) -> GPTConfig:
    values = dict(vocab_size=50, context_length=12, d_model=16, n_heads=4, n_layers=2)
    values.update(overrides)
    return GPTConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(tiny_config(**overrides)).eval()


# --- GPTConfig --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, error, words",
    [
        ({"vocab_size": 0}, ValueError, "vocab_size"),
        ({"context_length": -3}, ValueError, "context_length"),
        ({"d_model": 0}, ValueError, "d_model"),
        ({"n_heads": 0}, ValueError, "n_heads"),
        ({"n_layers": 0}, ValueError, "n_layers"),
        ({"d_model": 18}, ValueError, "divisible by n_heads"),
        ({"d_model": 16.0}, TypeError, "d_model"),
        ({"n_layers": True}, TypeError, "n_layers"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"dropout": -0.1}, ValueError, "dropout"),
        ({"dropout": "0.1"}, TypeError, "dropout"),
        ({"qkv_bias": 1}, TypeError, "qkv_bias"),
        ({"tie_weights": "yes"}, TypeError, "tie_weights"),
        ({"use_fused_ops": 1}, TypeError, "use_fused_ops"),
        ({"d_ff": 0}, ValueError, "d_ff"),
        ({"layer_norm_eps": 0.0}, ValueError, "layer_norm_eps"),
        ({"valid_vocab_size": 51}, ValueError, "valid_vocab_size"),
    ],
)
def test_config_rejects_bad_values_naming_the_parameter(overrides, error, words):
    with pytest.raises(error, match=words):
        tiny_config(**overrides)


def test_config_defaults_and_round_trip():
    config = tiny_config()
    assert config.d_ff is None and config.ff_dim == 4 * 16
    assert config.valid_vocab_size is None and config.real_vocab_size == 50
    assert tiny_config(d_ff=24).ff_dim == 24
    # Nothing is filled in at construction, so replace() derives the defaults afresh.
    wider = dataclasses.replace(config, d_model=32, vocab_size=70)
    assert wider.ff_dim == 128 and wider.real_vocab_size == 70
    assert config.head_dim == 4
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig.from_dict({**config.to_dict(), "n_embd": 16})


# Published parameter counts of the four GPT-2 checkpoints (tied head, biased q/k/v).
@pytest.mark.parametrize(
    "size, n_params",
    [("124M", 124_439_808), ("355M", 354_823_168), ("774M", 774_030_080), ("1558M", 1_557_611_200)],
)
def test_gpt2_presets_have_gpt2_parameter_counts(size, n_params):
    config = GPTConfig.gpt2(size)
    assert (config.vocab_size, config.context_length) == (GPT2_VOCAB_SIZE, 1024)
    assert config.qkv_bias and config.tie_weights
    assert parameter_count(config) == n_params


def test_gpt2_padded_preset_and_unknown_size():
    config = GPTConfig.gpt2("124M", padded_vocab=True)
    assert config.vocab_size == GPT2_PADDED_VOCAB_SIZE == 50_304
    assert config.real_vocab_size == config.valid_vocab_size == GPT2_VOCAB_SIZE == 50_257
    with pytest.raises(ValueError, match="size must be one of"):
        GPTConfig.gpt2("7B")


def test_cpu_default_is_the_notebook_4_model():
    config = GPTConfig.cpu_default(vocab_size=513)
    sizes = (config.context_length, config.d_model, config.n_heads, config.n_layers)
    assert sizes == (64, 64, 4, 4) and config.dropout == 0.0
    assert config.tie_weights and not config.qkv_bias
    assert config.use_sdpa and config.use_fused_ops
    # 513*64 + 64*64 embeddings, 4 blocks of 49,792, final norm 128
    assert parameter_count(config) == 236_224
    # One default: the training module builds exactly this model.
    assert default_model_config(513) == config
    assert GPTConfig.cpu_default(513, d_model=96, n_heads=6).d_model == 96


# --- The parts against PyTorch's own ------------------------------------------------------------


def test_layernorm_matches_torch():
    torch.manual_seed(0)
    ours, ref = LayerNorm(32, eps=1e-5), nn.LayerNorm(32, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    ref.load_state_dict(ours.state_dict())  # same parameter names: weight, bias
    x = torch.randn(3, 7, 32) * 5 + 2
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
    # With the identity scale and shift every vector has mean 0 and variance 1.
    y = LayerNorm(32)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(3, 7), atol=1e-3, rtol=0)


def test_gelu_is_the_tanh_approximation():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    torch.testing.assert_close(GELU()(x), nn.GELU(approximate="tanh")(x), atol=1e-12, rtol=0)
    # ...and not the exact erf form (they differ by up to ~5e-4), nor ReLU.
    assert (GELU()(x) - F.gelu(x)).abs().max() > 1e-4
    assert GELU()(torch.tensor(-1.0)) < 0


def test_feed_forward_is_linear_gelu_linear():
    torch.manual_seed(0)
    ff = FeedForward(8, 32)
    x = torch.randn(2, 5, 8)
    expected = ff.fc_out(nn.GELU(approximate="tanh")(ff.fc_in(x)))
    torch.testing.assert_close(ff(x), expected)
    assert ff(x).shape == (2, 5, 8)
    assert ff.fc_in.weight.shape == (32, 8)


def test_block_adds_sub_layers_to_the_residual_stream():
    torch.manual_seed(0)
    block = TransformerBlock(tiny_config()).eval()
    x = torch.randn(2, 5, 16)
    expected = x + block.attn(block.norm1(x))
    expected = expected + block.ff(block.norm2(expected))
    torch.testing.assert_close(block(x), expected)
    # Zero the two projections that write into the stream: the block is the identity.
    with torch.no_grad():
        for linear in (block.attn.out_proj, block.ff.fc_out):
            linear.weight.zero_()
            linear.bias.zero_()
    torch.testing.assert_close(block(x), x)
    out, weights = block(x, return_weights=True)
    assert weights.shape == (2, 4, 5, 5)


# --- GPTModel --------------------------------------------------------------------------------


def test_logits_shape_and_state_dict_names():
    model = tiny_model()
    logits = model(torch.randint(0, 50, (3, 12)))
    assert logits.shape == (3, 12, 50) and logits.dtype == torch.float32
    names = set(model.state_dict())
    for name in [
        "tok_emb.weight",
        "pos_emb.weight",
        "blocks.1.norm1.weight",
        "blocks.1.attn.W_query.weight",
        "blocks.1.attn.out_proj.bias",
        "blocks.1.norm2.bias",
        "blocks.1.ff.fc_in.weight",
        "blocks.1.ff.fc_out.bias",
        "final_norm.weight",
        "out_head.weight",
    ]:
        assert name in names
    assert not any(name.endswith(".mask") for name in names)


def test_initial_loss_is_close_to_uniform_guessing():
    model = tiny_model(vocab_size=500, context_length=32, d_model=32)
    ids = torch.randint(0, 500, (4, 32))
    loss = F.cross_entropy(model(ids).flatten(0, 1), ids.roll(-1, dims=1).flatten())
    assert abs(loss.item() - math.log(500)) < 0.1


def test_bad_ids_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"token id 50 .*vocab_size=50"):
        model(torch.tensor([[1, 2, 50]]))
    with pytest.raises(ValueError, match=r"token id -1"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match=r"exceeds context_length=12"):
        model(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integer"):
        model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="at least one token"):
        model(torch.zeros(1, 0, dtype=torch.long))


def test_earlier_logits_never_depend_on_later_tokens():
    model = tiny_model()
    ids = torch.randint(0, 50, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 50
    torch.testing.assert_close(model(ids)[:, :7], model(changed)[:, :7])
    assert not torch.allclose(model(ids)[:, 7:], model(changed)[:, 7:])
    # A shorter input gives the same logits as the prefix of a longer one.
    torch.testing.assert_close(model(ids[:, :5]), model(ids)[:, :5], atol=1e-6, rtol=0)


def test_hidden_states_and_attention_outputs():
    model = tiny_model()
    ids = torch.randint(0, 50, (2, 9))
    out = model(ids, return_hidden_states=True, return_attention=True)
    assert isinstance(out, GPTOutput)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.hidden_states[0].shape == (2, 9, 16)
    torch.testing.assert_close(out.logits, model(ids))
    torch.testing.assert_close(model.out_head(model.final_norm(out.hidden_states[-1])), out.logits)
    weights = out.attentions[1]
    assert weights.shape == (2, 4, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 9))
    assert (weights.triu(diagonal=1) == 0).all()
    assert model(ids, return_attention=True).hidden_states is None


def test_fused_attention_path_gives_the_same_logits():
    ids = torch.randint(0, 50, (2, 12))
    explicit, fused = tiny_model(use_sdpa=False), tiny_model(use_sdpa=True)
    torch.testing.assert_close(explicit(ids), fused(ids), atol=1e-5, rtol=0)


def test_fused_layernorm_and_gelu_equal_the_written_out_ones():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 32, dtype=torch.float64) * 4 + 2
    ours, fused = make_layer_norm(32, 1e-5), make_layer_norm(32, 1e-5, fused=True)
    assert isinstance(ours, LayerNorm) and isinstance(fused, nn.LayerNorm)
    with torch.no_grad():
        ours.weight.normal_(), ours.bias.normal_()
    fused.load_state_dict(ours.state_dict())  # same parameter names
    ours, fused = ours.double(), fused.double()
    torch.testing.assert_close(ours(x), fused(x), atol=1e-12, rtol=0)
    assert isinstance(make_gelu(), GELU) and isinstance(make_gelu(fused=True), nn.GELU)
    wide = torch.linspace(-12, 12, 2001, dtype=torch.float64)
    torch.testing.assert_close(make_gelu()(wide), make_gelu(fused=True)(wide), atol=1e-12, rtol=0)


def test_fused_ops_model_gives_the_same_logits_and_gradients():
    ids = torch.randint(0, 50, (2, 12))
    targets = torch.randint(0, 50, (2, 12))
    explicit, fused = tiny_model(use_fused_ops=False), tiny_model(use_fused_ops=True)
    assert explicit.state_dict().keys() == fused.state_dict().keys()
    fused.load_state_dict(explicit.state_dict())  # checkpoints move freely between the two
    torch.testing.assert_close(explicit(ids), fused(ids), atol=1e-5, rtol=0)
    for model in (explicit, fused):
        F.cross_entropy(model(ids).flatten(0, 1), targets.flatten()).backward()
    for (name, a), (_, b) in zip(explicit.named_parameters(), fused.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)
    # Freshly built with the same seed, both start from the same weights.
    torch.testing.assert_close(tiny_model(seed=3)(ids), tiny_model(seed=3, use_fused_ops=True)(ids))


def test_dropout_only_in_training_mode():
    model = tiny_model(dropout=0.5)
    ids = torch.randint(0, 50, (2, 12))
    torch.manual_seed(1)
    a = model(ids)
    torch.manual_seed(2)
    assert torch.equal(a, model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))


def test_tied_head_shares_the_embedding_tensor():
    model = tiny_model(tie_weights=True)
    assert model.out_head.weight is model.tok_emb.weight
    untied = tiny_model(tie_weights=False)
    assert count_parameters(untied) - count_parameters(model) == 50 * 16
    # The gradient of the shared matrix collects both uses.
    ids = torch.randint(0, 50, (2, 6))
    model(ids).sum().backward()
    assert model.tok_emb.weight.grad is not None and model.tok_emb.weight.grad.abs().sum() > 0


def test_no_residual_variant_changes_the_function():
    ids = torch.randint(0, 50, (2, 8))
    torch.manual_seed(0)
    with_res = GPTModel(tiny_config()).eval()
    torch.manual_seed(0)
    without = GPTModel(tiny_config(), residual=False).eval()
    assert not torch.allclose(with_res(ids), without(ids))


# --- Padded vocabularies and greedy decoding ------------------------------------------------


def padded_model_preferring_padding() -> GPTModel:
    """vocab 64 of which 50 are real; the padding rows are made overwhelmingly likely."""
    model = tiny_model(vocab_size=64, valid_vocab_size=50, tie_weights=False)
    with torch.no_grad():
        # Every final hidden vector becomes all ones; padding rows score 16, real ones ~0.
        model.final_norm.weight.zero_()
        model.final_norm.bias.fill_(1.0)
        model.out_head.weight[50:] = 1.0
        model.out_head.weight[:50] = torch.linspace(-0.1, 0.1, 50)[:, None]
    return model


def test_mask_padded_logits():
    logits = torch.arange(6.0).repeat(2, 1)
    masked = mask_padded_logits(logits, 4)
    assert torch.equal(masked[:, :4], logits[:, :4])
    assert torch.isinf(masked[:, 4:]).all() and (masked[:, 4:] < 0).all()
    assert torch.equal(logits[:, 4:], torch.tensor([[4.0, 5.0]] * 2))  # input untouched
    assert torch.softmax(masked, -1)[:, 4:].sum() == 0
    assert mask_padded_logits(logits, 6) is logits
    with pytest.raises(ValueError, match="valid_vocab_size"):
        mask_padded_logits(logits, 7)


def test_padded_vocabulary_never_yields_padding_ids():
    model = padded_model_preferring_padding()
    ids = torch.randint(0, 50, (3, 4))
    assert (model(ids)[:, -1].argmax(-1) >= 50).all()  # unmasked, padding would win
    assert model.valid_vocab_size == 50
    next_logits = model.next_token_logits(ids)
    assert next_logits.shape == (3, 64)
    assert torch.isneginf(next_logits[:, 50:]).all()
    out = greedy_continue(model, ids, 20)  # 24 tokens: longer than the context of 12
    assert out.shape == (3, 24)
    assert torch.equal(out[:, :4], ids)
    assert out.max() < 50


def test_greedy_continue_matches_step_by_step_argmax_and_restores_mode():
    model = tiny_model(dropout=0.2).train()
    ids = torch.randint(0, 50, (2, 3))
    out = greedy_continue(model, ids, 4)
    assert model.training
    model.eval()
    expected = ids
    for _ in range(4):
        next_id = model(expected[:, -12:])[:, -1].argmax(-1, keepdim=True)
        expected = torch.cat([expected, next_id], dim=1)
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="n_new_tokens"):
        greedy_continue(model, ids, -1)


# --- Sizes: formulas against direct counts -----------------------------------------------------

SIZE_CONFIGS = [
    tiny_config(),
    tiny_config(tie_weights=True),
    tiny_config(qkv_bias=True, d_ff=24),
    tiny_config(vocab_size=64, valid_vocab_size=50, n_layers=3, d_model=24, n_heads=3),
    tiny_config(use_fused_ops=True),
]


def measured_breakdown(model: GPTModel) -> dict[str, int]:
    def numel(modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    blocks = model.blocks
    tied = model.out_head.weight is model.tok_emb.weight
    return {
        "token embedding": model.tok_emb.weight.numel(),
        "position embedding": model.pos_emb.weight.numel(),
        "attention": numel(b.attn for b in blocks),
        "feed-forward": numel(b.ff for b in blocks),
        "layer norms": numel([model.final_norm, *(n for b in blocks for n in (b.norm1, b.norm2))]),
        "output head": 0 if tied else model.out_head.weight.numel(),
    }


@pytest.mark.parametrize("config", SIZE_CONFIGS)
def test_parameter_formula_matches_direct_count(config):
    model = GPTModel(config)
    assert parameter_breakdown(config) == measured_breakdown(model)
    assert parameter_count(config) == count_parameters(model)
    assert weights_memory_bytes(config) == sum(p.numel() * 4 for p in model.parameters())
    model = model.to(torch.bfloat16)
    assert weights_memory_bytes(config, torch.bfloat16) == sum(
        p.numel() * p.element_size() for p in model.parameters()
    )
    assert training_memory_bytes(config) == 16 * count_parameters(model)


@pytest.mark.parametrize("config", SIZE_CONFIGS)
def test_flop_formulas_match_a_flop_counter(config):
    model = GPTModel(config)
    seq = config.context_length
    ids = torch.randint(0, config.real_vocab_size, (2, seq))  # padding ids are not input
    with FlopCounterMode(display=False) as counter:
        logits = model(ids)
    assert counter.get_total_flops() / (2 * seq) == forward_flops_per_token(config)
    with FlopCounterMode(display=False) as counter:
        model(ids).float().sum().backward()
    assert counter.get_total_flops() / (2 * seq) == training_flops_per_token(config)
    assert forward_flops_per_token(config, seq_len=4) < forward_flops_per_token(config)
    assert logits.shape[-1] == config.vocab_size


def test_kv_cache_formula_matches_the_keys_and_values_computed():
    config = tiny_config(n_layers=3)
    model = GPTModel(config).eval()
    cached = []
    for block in model.blocks:
        for linear in (block.attn.W_key, block.attn.W_value):
            linear.register_forward_hook(lambda mod, inp, out: cached.append(out))
    model(torch.randint(0, 50, (2, 12)))
    direct = sum(t.numel() * t.element_size() for t in cached)
    assert kv_cache_bytes(config, torch.float32, batch_size=2) == direct
    assert kv_cache_bytes(config, torch.bfloat16, batch_size=2) == direct // 2
    with pytest.raises(TypeError, match="dtype"):
        kv_cache_bytes(config, "float32")


def test_size_report_for_gpt2_small():
    report = size_report(GPTConfig.gpt2("124M"))
    assert report["parameters"] == 124_439_808
    assert report["weights memory (bytes)"] == 4 * 124_439_808
    assert report["KV cache, full context (bytes)"] == 2 * 12 * 1024 * 768 * 4


# --- Looking inside ---------------------------------------------------------------------------


def test_trace_shapes_follows_the_forward_pass():
    model = tiny_model(n_layers=3)
    trace = dict(trace_shapes(model, torch.randint(0, 50, (2, 7))))
    assert list(trace)[:2] == ["tok_emb", "pos_emb"]
    assert trace["blocks.0.ff.fc_in"] == (2, 7, 64)
    assert trace["blocks.0.attn"] == trace["blocks.2"] == (2, 7, 16)
    assert trace["out_head"] == (2, 7, 50)
    assert "blocks.1.ff.fc_in" not in trace  # later blocks are one line each
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_block_gradient_norms_and_why_residuals_matter():
    torch.manual_seed(0)
    ids = torch.randint(0, 65, (8, 32))
    targets = ids.roll(-1, dims=1)
    config = tiny_config(vocab_size=65, context_length=32, d_model=32, n_heads=4, n_layers=24)
    torch.manual_seed(0)
    model = GPTModel(config)
    norms = block_gradient_norms(model, ids, targets)
    block = model.blocks[5]
    direct = torch.sqrt(sum((p.grad**2).sum() for p in block.parameters()))
    assert norms[5] == pytest.approx(direct.item())
    torch.manual_seed(0)
    plain = GPTModel(config, residual=False)
    plain_norms = block_gradient_norms(plain, ids, targets)
    # With residuals the first block gets about as much gradient as the last; without, the
    # gradient fades by orders of magnitude on its way back to the input.
    assert norms[0] / norms[-1] > 0.5
    assert plain_norms[0] / plain_norms[-1] < 1e-4


# --- Review fixes: inputs of every kind get a clear answer -------------------------------------


def test_config_accepts_numpy_numbers_and_stores_plain_ones():
    np = pytest.importorskip("numpy")
    config = GPTConfig(
        vocab_size=np.int64(50), context_length=np.int32(12), d_model=np.int16(16),
        n_heads=np.int64(4), n_layers=np.uint8(2), dropout=np.float32(0.25),
        d_ff=np.int64(24), layer_norm_eps=np.float64(1e-6), valid_vocab_size=np.int64(40),
    )  # fmt: skip
    assert config == tiny_config(dropout=0.25, d_ff=24, layer_norm_eps=1e-6, valid_vocab_size=40)
    assert all(type(v) in (int, float, bool, type(None)) for v in config.to_dict().values())
    with pytest.raises(TypeError, match="n_layers"):
        tiny_config(n_layers=np.True_)


@pytest.mark.parametrize("eps", [math.inf, math.nan, -1e-5])
def test_layer_norm_eps_must_be_finite_and_positive(eps):
    with pytest.raises(ValueError, match="layer_norm_eps must be a finite number > 0"):
        tiny_config(layer_norm_eps=eps)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_small_integer_ids_are_accepted_as_long(dtype):
    model = tiny_model()
    ids = torch.randint(0, 50, (2, 6))
    torch.testing.assert_close(model(ids.to(dtype)), model(ids))
    out = greedy_continue(model, ids.to(dtype), 3)
    assert out.dtype == torch.long and torch.equal(out, greedy_continue(model, ids, 3))


@pytest.mark.parametrize("dtype", [torch.uint16, torch.float32, torch.bool])
def test_other_id_dtypes_are_refused_naming_ids_and_the_allowed_dtypes(dtype):
    with pytest.raises(TypeError, match=r"ids must be an integer tensor \(torch.int64, .*uint8\)"):
        tiny_model()(torch.ones(1, 3, dtype=dtype))


def test_greedy_continue_refuses_a_1d_prompt_clearly():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"ids must have shape \(batch, seq\).*unsqueeze\(0\)"):
        greedy_continue(model, torch.tensor([1, 2, 3]), 2)
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        model.next_token_logits(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="token id 50"):
        greedy_continue(model, torch.tensor([[1, 50]]), 2)


def test_padding_ids_are_not_valid_input():
    model = tiny_model(vocab_size=64, valid_vocab_size=50)
    model(torch.tensor([[0, 49]]))
    with pytest.raises(ValueError, match=r"token id 57 .*valid_vocab_size=50"):
        model(torch.tensor([[1, 57]]))
    with pytest.raises(ValueError, match=r"token id 50 .*valid_vocab_size=50"):
        greedy_continue(model, torch.tensor([[50]]), 1)


def test_size_helpers_refuse_impossible_requests():
    config = tiny_config()
    with pytest.raises(ValueError, match=r"seq_len must be <= context_length=12.*13"):
        forward_flops_per_token(config, seq_len=13)
    with pytest.raises(ValueError, match="seq_len"):
        kv_cache_bytes(config, seq_len=13)
    assert forward_flops_per_token(config, seq_len=12) == forward_flops_per_token(config)
    with pytest.raises(ValueError, match=r"dtype .*torch\.bool"):
        weights_memory_bytes(config, torch.bool)
    assert weights_memory_bytes(config, torch.int8) == parameter_count(config)


def test_size_report_counts_with_and_without_tying_and_reads_well():
    config = GPTConfig.gpt2("1558M")
    report = size_report(config)
    assert report["parameters"] == report["parameters, head tied"] == 1_557_611_200
    assert report["parameters, head untied"] == 1_557_611_200 + 50_257 * 1600
    readable = format_size_report(report)
    assert readable["parameters"] == "1.56 B"
    assert readable["weights memory"] == "5.8 GiB"  # 1,557,611,200 x 4 bytes
    assert not any("bytes" in label for label in readable)
    assert human_count(124_439_808) == "124.4 M" and human_count(999) == "999"
