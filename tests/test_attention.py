"""Tests for llmhelpers.attention: each piece against PyTorch's reference implementations."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmhelpers import attention
from llmhelpers.attention import (
    CausalSelfAttention,
    MultiHeadAttention,
    SelfAttention,
    attention_scores,
    attention_weights,
    causal_mask,
    context_vectors,
    scaled_dot_product_attention,
)


def make_mha(seed: int = 0, **kwargs) -> MultiHeadAttention:
    torch.manual_seed(seed)
    config = dict(d_model=16, n_heads=4, context_length=8, dropout=0.0, qkv_bias=True)
    config.update(kwargs)
    return MultiHeadAttention(**config)


# ---------------------------------------------------------------- the step-by-step pieces


def test_scores_are_pairwise_dot_products():
    queries = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    keys = torch.tensor([[3.0, 4.0], [1.0, -1.0], [0.5, 0.5]])
    scores = attention_scores(queries, keys)
    assert scores.shape == (2, 3)
    expected = torch.tensor([[3.0, 1.0, 0.5], [8.0, -2.0, 1.0]])
    torch.testing.assert_close(scores, expected, rtol=0, atol=0)


def test_scores_need_matching_key_dimension():
    with pytest.raises(ValueError, match="d_k"):
        attention_scores(torch.zeros(2, 3), torch.zeros(2, 4))


def test_softmax_of_one_two_three():
    weights = attention_weights(torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(
        weights, torch.tensor([0.0900, 0.2447, 0.6652]), rtol=0, atol=1e-4
    )


def test_context_vector_is_weighted_sum_of_values():
    weights = torch.tensor([[0.25, 0.75]])
    values = torch.tensor([[4.0, 0.0], [0.0, 8.0]])
    torch.testing.assert_close(context_vectors(weights, values), torch.tensor([[1.0, 6.0]]))


def test_causal_mask_is_lower_triangle():
    mask = causal_mask(4)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, True],
    ]
    with pytest.raises(ValueError, match="seq_len"):
        causal_mask(0)


def test_self_attention_matches_the_formula():
    torch.manual_seed(0)
    layer = SelfAttention(d_in=5, d_out=3)
    x = torch.randn(2, 4, 5)
    out, weights = layer(x, return_weights=True)
    q, k, v = layer.W_query(x), layer.W_key(x), layer.W_value(x)
    expected_weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(3), dim=-1)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(out, expected_weights @ v)
    assert out.shape == (2, 4, 3) and weights.shape == (2, 4, 4)
    assert (weights[:, 0, 1:] > 0).all()  # no mask: the first token sees the future


def test_causal_self_attention_hides_the_future_and_rejects_long_inputs():
    torch.manual_seed(0)
    layer = CausalSelfAttention(d_in=5, d_out=3, context_length=6).eval()
    _, weights = layer(torch.randn(2, 4, 5), return_weights=True)
    assert torch.equal(weights.triu(1), torch.zeros_like(weights))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4))
    with pytest.raises(ValueError, match="context_length"):
        layer(torch.randn(1, 7, 5))


def test_multi_head_equals_independent_heads_concatenated():
    """The efficient module computes exactly what n separate heads plus a projection would."""
    mha = make_mha(qkv_bias=False).eval()
    heads = []
    for h in range(mha.n_heads):
        rows = slice(h * mha.head_dim, (h + 1) * mha.head_dim)
        head = CausalSelfAttention(mha.d_model, mha.head_dim, mha.context_length).eval()
        with torch.no_grad():
            head.W_query.weight.copy_(mha.W_query.weight[rows])
            head.W_key.weight.copy_(mha.W_key.weight[rows])
            head.W_value.weight.copy_(mha.W_value.weight[rows])
        heads.append(head)
    x = torch.randn(3, 7, mha.d_model)
    expected = mha.out_proj(torch.cat([head(x) for head in heads], dim=-1))
    torch.testing.assert_close(mha(x), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- equal to the reference


@pytest.mark.parametrize("use_scale", [False, True])
def test_sdpa_matches_torch_causal(use_scale):
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 2, 4, 7, 8).unbind(0)
    scale = 0.3 if use_scale else None
    ours, _ = scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_sdpa_matches_torch_with_explicit_mask():
    torch.manual_seed(2)
    q = torch.randn(2, 3, 5, 8)
    k, v = torch.randn(2, 2, 3, 6, 8).unbind(0)
    mask = torch.rand(2, 1, 5, 6) > 0.4
    mask[..., 0] = True  # every query keeps at least one key
    ours, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert torch.equal(weights == 0, ~mask.expand_as(weights))


@pytest.mark.parametrize("with_padding", [False, True])
def test_fast_path_matches_explicit_path(with_padding):
    explicit = make_mha().eval()
    fast = make_mha(use_sdpa=True).eval()
    fast.load_state_dict(explicit.state_dict())
    x = torch.randn(3, 8, 16)
    padding = None
    if with_padding:
        padding = torch.ones(3, 8, dtype=torch.bool)
        padding[1, :3] = False  # left padding: the first queries see nothing
        padding[2, 5:] = False  # right padding
    torch.testing.assert_close(
        fast(x, padding_mask=padding), explicit(x, padding_mask=padding), rtol=0, atol=1e-6
    )


PADDING_3x8 = torch.tensor([[True] * 8, [False] * 3 + [True] * 5, [True] * 5 + [False] * 3])


@pytest.mark.parametrize("with_padding", [False, True])
def test_fast_path_matches_explicit_path_in_bfloat16(with_padding):
    explicit = make_mha().to(torch.bfloat16).eval()
    fast = make_mha(use_sdpa=True).to(torch.bfloat16).eval()
    fast.load_state_dict(explicit.state_dict())
    x = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    padding = PADDING_3x8 if with_padding else None
    out_fast, out_explicit = fast(x, padding_mask=padding), explicit(x, padding_mask=padding)
    assert out_fast.dtype == out_explicit.dtype == torch.bfloat16
    # bfloat16 keeps 8 significant bits (relative step 2**-8 = 0.004); the two paths round in
    # different places, so they agree to a few of those steps on outputs of size ~1.
    torch.testing.assert_close(out_fast, out_explicit, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("with_padding", [False, True])
def test_gradients_agree_between_paths(with_padding):
    """Backward through the fused kernel equals backward through our explicit code, for the
    input and for every parameter (float64, so the tolerance can be tight)."""
    explicit = make_mha().double().train()  # dropout=0: training mode, deterministic
    fast = make_mha(use_sdpa=True).double().train()
    fast.load_state_dict(explicit.state_dict())
    x = torch.randn(3, 8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    target = torch.randn(3, 8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    padding = PADDING_3x8 if with_padding else None
    grads = []
    for module in (explicit, fast):
        inp = x.clone().requires_grad_(True)
        loss = ((module(inp, padding_mask=padding) - target) ** 2).sum()
        loss.backward()
        grads.append({"x": inp.grad, **{n: p.grad for n, p in module.named_parameters()}})
    assert set(grads[0]) == set(grads[1]) and len(grads[0]) == 1 + 8  # x + 4 weights + 4 biases
    for name in grads[0]:
        assert torch.count_nonzero(grads[0][name]) > 0, name
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-10,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_fast_path_returns_weights_through_explicit_path():
    fast = make_mha(use_sdpa=True).eval()
    out, weights = fast(torch.randn(2, 5, 16), return_weights=True)
    assert out.shape == (2, 5, 16) and weights.shape == (2, 4, 5, 5)


def test_matches_torch_multihead_attention():
    ours = make_mha(qkv_bias=True).eval()
    ref = nn.MultiheadAttention(16, 4, bias=True, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(
            torch.cat([ours.W_query.weight, ours.W_key.weight, ours.W_value.weight])
        )
        ref.in_proj_bias.copy_(torch.cat([ours.W_query.bias, ours.W_key.bias, ours.W_value.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(3, 8, 16)
    future = ~causal_mask(8)  # PyTorch's convention: True = masked out
    ref_out, ref_weights = ref(
        x, x, x, attn_mask=future, need_weights=True, average_attn_weights=False
    )
    out, weights = ours(x, return_weights=True)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(weights, ref_weights, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- causality and the mask


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_no_position_depends_on_later_positions(use_sdpa):
    mha = make_mha(use_sdpa=use_sdpa).eval()
    x = torch.randn(2, 8, 16)
    out = mha(x)
    for t in range(7):
        perturbed = x.clone()
        perturbed[:, t + 1 :] += 10 * torch.randn_like(perturbed[:, t + 1 :])
        changed = mha(perturbed)
        torch.testing.assert_close(changed[:, : t + 1], out[:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(changed[:, t + 1 :], out[:, t + 1 :])


def test_gradient_of_early_output_ignores_later_inputs():
    mha = make_mha().eval()
    x = torch.randn(1, 6, 16, requires_grad=True)
    mha(x)[0, 2].sum().backward()
    assert torch.count_nonzero(x.grad[0, 3:]) == 0
    assert torch.count_nonzero(x.grad[0, :3]) > 0


def test_rows_sum_to_one_and_future_is_exactly_zero():
    _, weights = make_mha().eval()(torch.randn(2, 8, 16), return_weights=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 8), rtol=0, atol=1e-6)
    above = torch.ones(8, 8, dtype=torch.bool).triu(1)
    assert torch.all(weights[..., above] == 0)
    assert torch.all(weights[..., ~above] > 0)


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_short_input_equals_prefix_of_long_input(use_sdpa):
    mha = make_mha(context_length=6, use_sdpa=use_sdpa).eval()
    long = torch.randn(2, 6, 16)
    short_out = mha(long[:, :3])
    assert short_out.shape == (2, 3, 16)
    torch.testing.assert_close(short_out, mha(long)[:, :3], rtol=0, atol=1e-6)


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_too_long_input_names_context_length(use_sdpa):
    mha = make_mha(context_length=6, use_sdpa=use_sdpa)
    with pytest.raises(ValueError, match="context_length"):
        mha(torch.randn(1, 7, 16))


def test_mask_buffer_stays_out_of_the_state_dict():
    mha = make_mha(qkv_bias=False)
    assert sorted(mha.state_dict()) == [
        "W_key.weight", "W_query.weight", "W_value.weight", "out_proj.bias", "out_proj.weight",
    ]
    assert mha.mask.shape == (8, 8)


# ---------------------------------------------------------------- fully masked rows


def test_fully_masked_row_gives_zero_weights_and_leaves_other_rows_alone():
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, -1.0, 0.0]])
    mask = torch.tensor([[True, True, True], [False, False, False]])
    weights = attention_weights(scores, mask)
    torch.testing.assert_close(weights[0], torch.tensor([0.0900, 0.2447, 0.6652]), atol=1e-4,
                               rtol=0)
    assert torch.equal(weights[1], torch.zeros(3))


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_fully_masked_rows_are_nan_free_in_output_gradient_and_loss(use_sdpa):
    mha = make_mha(use_sdpa=use_sdpa).train()
    x = torch.randn(2, 5, 16, requires_grad=True)
    padding = torch.tensor([[False, False, True, True, True], [True] * 5])
    out = mha(x, padding_mask=padding)
    assert torch.isfinite(out).all()
    # The first two queries of sample 0 see only padding: zero context, so output = bias.
    torch.testing.assert_close(out[0, :2], mha.out_proj.bias.expand(2, 16).detach())
    loss = F.cross_entropy(out.reshape(-1, 16), torch.arange(10) % 16)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mha.parameters())
    if not use_sdpa:
        _, weights = mha.eval()(x, return_weights=True, padding_mask=padding)
        assert torch.equal(weights[0, :, :2], torch.zeros(4, 2, 5))
        assert torch.equal(weights[0, :, 2:, :2], torch.zeros(4, 3, 2))


# ---------------------------------------------------------------- dropout


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_dropout_only_in_training(use_sdpa):
    mha = make_mha(dropout=0.5, use_sdpa=use_sdpa)
    x = torch.randn(2, 8, 16)
    mha.eval()
    torch.manual_seed(1)
    first = mha(x)
    torch.manual_seed(2)
    assert torch.equal(first, mha(x))
    mha.train()
    torch.manual_seed(1)
    a = mha(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, mha(x))


def test_dropout_zeroes_and_rescales_weights_in_training():
    mha = make_mha(dropout=0.5).train()
    torch.manual_seed(0)
    _, weights = mha(torch.randn(4, 8, 16), return_weights=True)
    lower = causal_mask(8)
    kept = weights[..., lower]
    assert (kept == 0).float().mean().item() == pytest.approx(0.5, abs=0.08)
    assert weights.sum(-1).max() > 1.0  # survivors are scaled by 1 / (1 - p)


def test_fast_path_passes_zero_dropout_when_not_training(monkeypatch):
    seen = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs.get("dropout_p"))
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    mha = make_mha(dropout=0.3, use_sdpa=True)
    x = torch.randn(1, 4, 16)
    mha.eval()(x)
    mha.train()(x)
    assert seen == [0.0, 0.3]


# ---------------------------------------------------------------- precision and gradients


def test_mask_fill_is_not_a_large_finite_constant():
    # Real scores far below -1e9: a "big negative" fill would beat them and leak weight.
    scores = torch.tensor([[-1e30, -2e30, 0.0]])
    mask = torch.tensor([[True, True, False]])
    weights = attention_weights(scores, mask)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 0.0, 0.0]]))
    # In float16 a constant like -1e9 cannot even be represented.
    half = attention_weights(torch.randn(3, 3, dtype=torch.float16), causal_mask(3))
    assert half[0, 1:].eq(0).all() and torch.isfinite(half).all()


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_bfloat16_forward_is_finite(use_sdpa):
    mha = make_mha(use_sdpa=use_sdpa).to(torch.bfloat16).eval()
    x = 20 * torch.randn(2, 8, 16, dtype=torch.bfloat16)
    padding = torch.ones(2, 8, dtype=torch.bool)
    padding[0, :2] = False
    for mask in (None, padding):
        out = mha(x, padding_mask=mask)
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_gradcheck_float64():
    mha = make_mha(d_model=4, n_heads=2, context_length=4).double().eval()
    x = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    padding = torch.tensor([[False, True, True]])
    assert torch.autograd.gradcheck(lambda inp: mha(inp), (x,))
    assert torch.autograd.gradcheck(lambda inp: mha(inp, padding_mask=padding), (x,))


def test_gradcheck_float64_fast_path():
    mha = make_mha(d_model=4, n_heads=2, context_length=4, use_sdpa=True).double().eval()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    padding = torch.tensor([[False, True, True], [True, True, False]])
    assert torch.autograd.gradcheck(lambda inp: mha(inp), (x,))
    assert torch.autograd.gradcheck(lambda inp: mha(inp, padding_mask=padding), (x,))


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(d_model=10, n_heads=4), "d_model must be divisible by n_heads"),
        (dict(d_model=0), "d_model"),
        (dict(n_heads=0), "n_heads"),
        (dict(context_length=0), "context_length"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
    ],
)
def test_invalid_configuration_names_the_parameter(kwargs, name):
    config = dict(d_model=16, n_heads=4, context_length=8)
    config.update(kwargs)
    with pytest.raises(ValueError, match=name):
        MultiHeadAttention(**config)


def test_wrong_input_width_and_padding_dtype_are_clear_errors():
    mha = make_mha()
    with pytest.raises(ValueError, match="d_model"):
        mha(torch.randn(1, 4, 15))
    with pytest.raises(TypeError, match="padding_mask"):
        mha(torch.randn(1, 4, 16), padding_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="dropout"):
        CausalSelfAttention(4, 4, context_length=4, dropout=1.5)


def test_trace_shapes_follows_every_step():
    mha = make_mha()
    shapes = dict(attention.trace_shapes(mha, torch.randn(2, 5, 16)))
    assert shapes == {
        "input x": (2, 5, 16),
        "queries = W_query(x)": (2, 5, 16),
        "split into heads": (2, 4, 5, 4),
        "scores = q @ k^T / sqrt(head_dim)": (2, 4, 5, 5),
        "weights = softmax(masked scores)": (2, 4, 5, 5),
        "context = weights @ v": (2, 4, 5, 4),
        "merge heads": (2, 5, 16),
        "output = out_proj(merged)": (2, 5, 16),
    }


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_padding_mask_batch_size_must_match_the_input(use_sdpa):
    mha = make_mha(use_sdpa=use_sdpa).eval()
    expected = "padding_mask must have shape (batch, seq) = (1, 5), got (3, 5)"
    with pytest.raises(ValueError, match=re.escape(expected)):
        mha(torch.randn(1, 5, 16), padding_mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=re.escape("= (3, 5), got (1, 5)")):
        mha(torch.randn(3, 5, 16), padding_mask=torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=re.escape("= (2, 5), got (2, 4)")):
        mha(torch.randn(2, 5, 16), padding_mask=torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("seq_len", [2.5, True, "3", None])
def test_causal_mask_length_must_be_an_integer(seq_len):
    with pytest.raises(TypeError, match="seq_len must be a positive integer"):
        causal_mask(seq_len)


def test_causal_mask_accepts_numpy_integers():
    assert torch.equal(causal_mask(np.int64(3)), causal_mask(3))


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "v_shape", "name"),
    [
        ((5,), (5, 4), (5, 4), "queries must have shape (..., seq, d_k)"),
        ((5, 4), (4,), (5, 4), "keys must have shape (..., seq, d_k)"),
        ((5, 4), (5, 4), (4,), "values must have shape (..., seq, d_v)"),
        ((5, 0), (5, 0), (5, 4), "d_k (the last dimension of queries) must be >= 1"),
        ((5, 4), (5, 4), (6, 4), "need the same seq_k, got 5 and 6"),
    ],
)
def test_sdpa_rejects_badly_shaped_tensors(q_shape, k_shape, v_shape, name):
    q, k, v = torch.zeros(q_shape), torch.zeros(k_shape), torch.zeros(v_shape)
    with pytest.raises(ValueError, match=re.escape(name)):
        scaled_dot_product_attention(q, k, v)


def test_sdpa_rejects_a_mask_of_the_wrong_shape():
    q = torch.randn(2, 3, 5, 8)
    with pytest.raises(ValueError, match=re.escape(
        "mask must be broadcastable to the scores' shape (..., seq_q, seq_k) = (2, 3, 5, 5), "
        "got (4, 4)"
    )):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(4, 4, dtype=torch.bool))
    # Broadcasting that would enlarge the result is refused too.
    with pytest.raises(ValueError, match="mask must be broadcastable"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(4, 1, 1, 5, 5, dtype=torch.bool),
                                     is_causal=True)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(5, 5))
    # Broadcastable masks keep working.
    out, _ = scaled_dot_product_attention(q, q, q, mask=torch.ones(3, 1, 5, dtype=torch.bool))
    assert out.shape == (2, 3, 5, 8)
    with pytest.raises(ValueError, match="mask must be broadcastable"):
        attention_weights(torch.zeros(2, 5, 5), torch.ones(5, 4, dtype=torch.bool))


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf"), 0.0, -0.5])
def test_sdpa_scale_must_be_finite_and_positive(scale):
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        scaled_dot_product_attention(q, q, q, scale=scale)


def test_sdpa_argument_types_are_checked():
    q = torch.randn(1, 4, 8)
    with pytest.raises(TypeError, match="scale"):
        scaled_dot_product_attention(q, q, q, scale=True)
    with pytest.raises(TypeError, match="is_causal"):
        scaled_dot_product_attention(q, q, q, is_causal=1)
    with pytest.raises(TypeError, match="dropout_p"):
        scaled_dot_product_attention(q, q, q, dropout_p="0.1")
    with pytest.raises(ValueError, match="dropout_p"):
        scaled_dot_product_attention(q, q, q, dropout_p=float("nan"))
    # A NumPy scale is a real number like any other.
    ours, _ = scaled_dot_product_attention(q, q, q, scale=np.float64(0.3))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, q, q, scale=0.3),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls", [SelfAttention, CausalSelfAttention])
def test_single_head_errors_name_d_in_and_d_out(cls):
    extra = {"context_length": 4} if cls is CausalSelfAttention else {}
    with pytest.raises(ValueError, match="d_in must be a positive integer, got 0"):
        cls(0, 4, **extra)
    with pytest.raises(ValueError, match="d_out must be a positive integer, got -1"):
        cls(4, -1, **extra)
    with pytest.raises(TypeError, match="d_out must be a positive integer, got float"):
        cls(4, 2.0, **extra)
    with pytest.raises(TypeError, match="d_in"):
        cls(True, 4, **extra)
    with pytest.raises(TypeError, match="qkv_bias must be a bool"):
        cls(4, 4, qkv_bias=1, **extra)


def test_causal_single_head_errors_name_their_parameter():
    with pytest.raises(ValueError, match="context_length must be a positive integer"):
        CausalSelfAttention(4, 4, context_length=0)
    with pytest.raises(TypeError, match="context_length"):
        CausalSelfAttention(4, 4, context_length=4.0)
    with pytest.raises(TypeError, match="dropout"):
        CausalSelfAttention(4, 4, context_length=4, dropout=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(use_sdpa=1), "use_sdpa must be a bool"),
        (dict(use_sdpa="yes"), "use_sdpa must be a bool"),
        (dict(qkv_bias=0), "qkv_bias must be a bool"),
        (dict(d_model=16.0), "d_model must be a positive integer, got float"),
        (dict(n_heads="4"), "n_heads must be a positive integer, got str"),
        (dict(context_length=True), "context_length must be a positive integer, got bool"),
        (dict(dropout="0.1"), "dropout must be a real number in [0, 1)"),
        (dict(dropout=False), "dropout must be a real number in [0, 1)"),
    ],
)
def test_wrong_argument_types_name_the_parameter(kwargs, message):
    config = dict(d_model=16, n_heads=4, context_length=8)
    config.update(kwargs)
    with pytest.raises(TypeError, match=re.escape(message)):
        MultiHeadAttention(**config)


def test_numpy_sizes_and_dropout_are_accepted():
    torch.manual_seed(0)
    ours = MultiHeadAttention(np.int64(16), np.int32(4), np.int64(8), dropout=np.float64(0.25))
    assert (ours.d_model, ours.n_heads, ours.head_dim, ours.context_length) == (16, 4, 4, 8)
    assert all(type(v) is int for v in (ours.d_model, ours.n_heads, ours.context_length))
    assert type(ours.dropout) is float and ours.dropout == 0.25
    torch.manual_seed(0)
    plain = MultiHeadAttention(16, 4, 8, dropout=0.25)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(ours.eval()(x), plain.eval()(x), rtol=0, atol=0)
    head = CausalSelfAttention(np.int64(5), np.int16(3), np.int64(6), dropout=np.float32(0.5))
    assert (head.d_in, head.d_out, head.context_length, head.dropout) == (5, 3, 6, 0.5)
