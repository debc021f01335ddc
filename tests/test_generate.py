"""Decoding semantics: greedy, temperature, top-k, top-p, EOS, long prompts, valid ids."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from llmhelpers.generate import (
    generate,
    generate_stream,
    last_logits,
    next_token_probs,
    sample_next_token,
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


class NextIdModel(nn.Module):
    """A stand-in model: at every position, logit ``strength`` on ``(id + 1) % vocab``.

    Records, per call, the input shape, whether it was in training mode and whether
    gradients were on.
    """

    def __init__(self, vocab_size=10, context_length=4, strength=10.0, valid_vocab_size=None):
        super().__init__()
        self.config = SimpleNamespace(
            vocab_size=vocab_size, context_length=context_length,
            valid_vocab_size=valid_vocab_size or vocab_size,
        )
        self.strength = strength
        self.offset = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, ids):
        self.calls.append((tuple(ids.shape), self.training, torch.is_grad_enabled()))
        vocab = self.config.vocab_size
        logits = torch.zeros(*ids.shape, vocab)
        logits.scatter_(-1, ((ids + 1) % vocab).unsqueeze(-1), self.strength)
        return logits + self.offset


def tiny_gpt(context_length=4, vocab_size=32, seed=0, **kwargs):
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size, context_length=context_length, d_model=16,
                       n_heads=2, n_layers=2, **kwargs)
    return GPTModel(config)


# ---------------------------------------------------------------- temperature
def test_temperature_zero_is_greedy_argmax():
    logits = torch.tensor([0.1, 2.5, -1.0, 2.4])
    probs = next_token_probs(logits, temperature=0)
    assert probs.tolist() == [0.0, 1.0, 0.0, 0.0]
    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        assert sample_next_token(logits, temperature=0, generator=generator) == 1


@pytest.mark.parametrize("temperature, top_p", [(1e-300, None), (1.0, 1e-320), (5e-324, 1e-320)])
def test_values_that_round_to_zero_in_float32_still_give_a_distribution(temperature, top_p):
    logits = torch.tensor([0.0, 3.0, 1.0])
    probs = next_token_probs(logits, temperature=temperature, top_p=top_p)
    assert probs.tolist() == [0.0, 1.0, 0.0]  # the most likely id, no NaN
    assert generate(NextIdModel(), [1], 3, temperature=temperature, top_p=top_p, seed=0) == [
        1, 2, 3, 4]


def test_tiny_temperature_does_not_overflow():
    logits = torch.tensor([3e37, -3e38, 1e30, 2.9e37])
    probs = next_token_probs(logits, temperature=1e-6)
    assert torch.isfinite(probs).all()
    assert probs.tolist() == [1.0, 0.0, 0.0, 0.0]
    ordinary = torch.tensor([1.0, 3.0, 2.0])
    assert next_token_probs(ordinary, temperature=1e-6).tolist() == [0.0, 1.0, 0.0]
    generator = torch.Generator().manual_seed(0)
    assert sample_next_token(ordinary, temperature=1e-6, generator=generator) == 1


def test_temperature_scales_the_logits():
    logits = torch.tensor([1.0, 2.0, 4.0])
    for temperature in (0.5, 1.0, 2.0):
        expected = torch.softmax(logits / temperature, dim=-1)
        assert torch.allclose(next_token_probs(logits, temperature), expected, atol=1e-7)


@pytest.mark.parametrize("temperature", [-0.1, -1, math.nan, math.inf])
def test_bad_temperature_is_an_error(temperature):
    with pytest.raises(ValueError, match="temperature"):
        next_token_probs(torch.zeros(3), temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        generate(NextIdModel(), [1], 2, temperature=temperature)


@pytest.mark.parametrize("name", ["temperature", "top_p"])
@pytest.mark.parametrize("value", [True, torch.tensor(0.5), "0.5"])
def test_sampling_knobs_must_be_plain_numbers(name, value):
    with pytest.raises(TypeError, match=f"{name} must be a real number"):
        next_token_probs(torch.zeros(3), **{name: value})


def test_numpy_numbers_are_accepted_like_python_ones():
    import numpy as np

    assert generate(NextIdModel(), [1], np.int64(2), seed=np.int64(0)) == generate(
        NextIdModel(), [1], 2, seed=0)

    logits = torch.tensor([0.0, 1.0, 2.0])
    assert torch.equal(next_token_probs(logits, np.float32(0.5), np.int64(2), np.float64(0.9)),
                       next_token_probs(logits, 0.5, 2, 0.9))


# ---------------------------------------------------------------- top-k
def test_top_k_larger_than_vocabulary_is_no_filtering():
    logits = torch.randn(10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(next_token_probs(logits, top_k=1000), next_token_probs(logits))
    assert torch.equal(next_token_probs(logits, top_k=10), next_token_probs(logits))


def test_top_k_one_is_greedy():
    logits = torch.tensor([0.3, -0.2, 1.7, 1.6, 0.0])
    assert next_token_probs(logits, temperature=1.5, top_k=1).tolist() == [0, 0, 1, 0, 0]
    for seed in range(10):
        generator = torch.Generator().manual_seed(seed)
        assert sample_next_token(logits, top_k=1, generator=generator) == 2


def test_top_k_keeps_the_k_most_likely_renormalised():
    logits = torch.tensor([1.0, 4.0, 2.0, 3.0])
    probs = next_token_probs(logits, top_k=2)
    expected = torch.softmax(torch.tensor([4.0, 3.0]), dim=-1)
    assert probs[0] == 0 and probs[2] == 0
    assert torch.allclose(probs[[1, 3]], expected)


@pytest.mark.parametrize("top_k", [0, -3])
def test_top_k_not_positive_is_an_error(top_k):
    with pytest.raises(ValueError, match="top_k"):
        next_token_probs(torch.zeros(4), top_k=top_k)


def test_top_k_must_be_an_int():
    with pytest.raises(TypeError, match="top_k"):
        next_token_probs(torch.zeros(4), top_k=2.5)


# ---------------------------------------------------------------- top-p
PROBS = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05


def test_top_p_keeps_the_token_that_crosses_p():
    probs = next_token_probs(PROBS.log(), top_p=0.6)  # 0.5 < 0.6, 0.5 + 0.3 reaches it
    assert torch.allclose(probs, torch.tensor([0.0, 0.5, 0.0, 0.3]) / 0.8)
    probs = next_token_probs(PROBS.log(), top_p=0.81)  # needs the third token too
    assert torch.allclose(probs, torch.tensor([0.0, 0.5, 0.15, 0.3]) / 0.95)


def test_top_p_is_never_empty_and_one_means_all():
    assert next_token_probs(PROBS.log(), top_p=1e-9).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert next_token_probs(PROBS.log(), top_p=0.45).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert torch.allclose(next_token_probs(PROBS.log(), top_p=1.0), PROBS)


@pytest.mark.parametrize("top_p", [0.0, -0.5, 1.01, 2])
def test_top_p_outside_zero_one_is_an_error(top_p):
    with pytest.raises(ValueError, match="top_p"):
        next_token_probs(torch.zeros(4), top_p=top_p)


def test_top_p_applies_after_temperature():
    logits = PROBS.log()
    assert (next_token_probs(logits, top_p=0.65) > 0).sum() == 2
    hot = next_token_probs(logits, temperature=3.0, top_p=0.65)
    flattened = torch.softmax(logits / 3.0, dim=-1)
    # At temperature 3 the two most likely tokens no longer reach 0.65: a third joins.
    assert (hot > 0).sum() == 3
    assert torch.allclose(hot[[1, 2, 3]], flattened[[1, 2, 3]] / flattened[[1, 2, 3]].sum())


# ---------------------------------------------------------------- valid ids only
def test_padded_ids_get_probability_zero():
    logits = torch.zeros(80)
    logits[64:] = 50.0  # the padding columns are the most "likely"
    probs = next_token_probs(logits, vocab_size=64)
    assert probs[64:].sum() == 0 and torch.isclose(probs.sum(), torch.tensor(1.0))
    assert next_token_probs(logits, temperature=0, vocab_size=64)[64:].sum() == 0


def test_sampled_ids_are_always_real_vocabulary_ids():
    model = NextIdModel(vocab_size=80, context_length=4, strength=30.0, valid_vocab_size=64)
    # From id 63 the model's favourite is 64, a padding id: it must never come out.
    for seed in range(20):
        ids = generate(model, [63], 10, temperature=1.5, seed=seed)
        assert max(ids) < 64
    torch.manual_seed(0)
    padded = GPTModel(GPTConfig(vocab_size=80, context_length=8, d_model=16, n_heads=2,
                                n_layers=1, valid_vocab_size=64))
    with torch.no_grad():
        padded.out_head.weight[64:] *= 1000  # make the padding columns dominate
    assert last_logits(padded, [1, 2]).argmax() >= 64
    ids = generate(padded, [1, 2], 40, temperature=2.0, seed=0)
    assert max(ids) < 64
    assert max(generate(padded, [1, 2], 5, temperature=0)) < 64


# ---------------------------------------------------------------- stopping and prompts
def test_eos_stops_generation_without_appending_it():
    model = NextIdModel(vocab_size=10)
    assert generate(model, [1], 8, temperature=0, eos_id=4) == [1, 2, 3]
    assert list(generate_stream(model, [1], 8, temperature=0, eos_id=4)) == [2, 3]
    assert generate(model, [1], 8, temperature=0) == [1, 2, 3, 4, 5, 6, 7, 8, 9]


def test_long_prompt_sees_only_the_last_context_length_tokens():
    model = tiny_gpt(context_length=4)
    prompt = [3, 1, 4, 1, 5, 9]
    out = generate(model, prompt, 3, temperature=1.0, seed=7)
    assert len(out) == 9 and out[:6] == prompt
    from_last_four = generate(model, prompt[-4:], 3, temperature=1.0, seed=7)
    assert out[6:] == from_last_four[4:]
    # and the first 2 prompt tokens really are invisible: changing them changes nothing
    assert generate(model, [0, 0, 4, 1, 5, 9], 3, temperature=1.0, seed=7)[6:] == out[6:]


def test_model_never_sees_more_than_its_context():
    model = NextIdModel(context_length=4)
    generate(model, list(range(9)), 5, temperature=0)
    assert [shape for shape, _, _ in model.calls] == [(1, 4)] * 5


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(NextIdModel(), [], 3)
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_stream(NextIdModel(), torch.zeros(0, dtype=torch.long), 3)


def test_non_integer_ids_are_refused_not_truncated():
    with pytest.raises(TypeError, match="integer token ids"):
        generate(NextIdModel(), [2.7], 3)
    with pytest.raises(TypeError, match="float32 tensor"):
        generate(NextIdModel(), torch.tensor([2.7]), 3)
    with pytest.raises(TypeError, match="not text"):
        generate(NextIdModel(), "ROMEO", 3)
    with pytest.raises(TypeError, match="integer token ids"):
        generate(NextIdModel(), [True], 3)
    assert generate(NextIdModel(), torch.tensor([2], dtype=torch.int32), 1, temperature=0) == [2, 3]


@pytest.mark.parametrize(
    "changes, error, words",
    [
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"seed": "a"}, TypeError, "seed must be an int"),
        ({"seed": -1}, ValueError, r"seed must be in \[0, 2\*\*63\)"),
        ({"seed": 2**64}, ValueError, "seed must be in"),
        ({"eos_id": -1}, ValueError, "eos_id must be in"),
        ({"eos_id": "x"}, TypeError, "eos_id must be an int"),
        ({"eos_id": 10}, ValueError, r"eos_id must be in \[0, 10\) \(the model's vocabulary\)"),
        ({"ids": [1, 10]}, ValueError, r"ids must be in \[0, 10\).*got 10"),
        ({"ids": [2**70]}, ValueError, r"ids must be in \[0, 10\)"),
        ({"ids": [-1]}, ValueError, r"ids must be in \[0, 10\)"),
    ],
)
def test_seed_eos_id_and_prompt_ids_are_checked(changes, error, words):
    ids = changes.pop("ids", [1])
    with pytest.raises(error, match=words):
        generate(NextIdModel(), ids, 3, **changes)
    with pytest.raises(error, match=words):  # the stream checks when made, not at next()
        generate_stream(NextIdModel(), ids, 3, **changes)


@pytest.mark.parametrize("logits, vocab_size, error", [
    (torch.tensor(1.0), None, ValueError), (torch.zeros(4), 2.5, TypeError),
    ([0.0, 1.0], None, ValueError),
])
def test_logits_and_vocab_size_are_checked(logits, vocab_size, error):
    with pytest.raises(error, match="logits must be a tensor|vocab_size must be an int"):
        next_token_probs(logits, vocab_size=vocab_size)


@pytest.mark.parametrize(
    "logits",
    [
        torch.tensor([0.0, float("nan"), 1.0]),
        torch.tensor([0.0, float("inf"), 1.0]),
        torch.full((3,), -math.inf),
    ],
)
@pytest.mark.parametrize("temperature", [0, 1.0])
def test_broken_logits_are_an_error_not_nan(logits, temperature):
    with pytest.raises(ValueError, match="logits must be finite"):
        next_token_probs(logits, temperature)


def test_minus_infinity_rules_an_id_out():
    probs = next_token_probs(torch.tensor([0.0, -math.inf, 0.0]))
    assert probs.tolist() == [0.5, 0.0, 0.5]


def test_max_new_tokens_checked():
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(NextIdModel(), [1], -1)
    assert generate(NextIdModel(), [1, 2], 0) == [1, 2]


def test_prompt_as_tensor_of_shape_1_by_seq():
    model = NextIdModel()
    assert generate(model, torch.tensor([[1, 2]]), 2, temperature=0) == [1, 2, 3, 4]


# ---------------------------------------------------------------- modes and randomness
def test_generation_runs_in_eval_mode_without_gradients_and_restores_the_mode():
    model = NextIdModel()
    model.train()
    generate(model, [1], 3, temperature=0)
    assert all(not training and not grad for _, training, grad in model.calls)
    assert model.training
    model.eval()
    generate(model, [1], 1)
    assert not model.training


def test_seed_makes_sampling_repeat_and_leaves_the_global_rng_alone():
    model = tiny_gpt(context_length=8)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = generate(model, [1, 2, 3], 20, temperature=1.0, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate(model, [1, 2, 3], 20, temperature=1.0, seed=5) == first
    assert generate(model, [1, 2, 3], 20, temperature=1.0, seed=6) != first


def test_stream_matches_generate():
    model = tiny_gpt(context_length=8)
    stream = generate_stream(model, [5, 6], 12, temperature=0.9, top_k=10, top_p=0.9, seed=3)
    assert [5, 6, *stream] == generate(model, [5, 6], 12, 0.9, 10, 0.9, seed=3)


def test_sampling_follows_the_distribution():
    logits = torch.tensor([0.0, math.log(3.0)])  # probabilities 1/4 and 3/4
    generator = torch.Generator().manual_seed(0)
    draws = [sample_next_token(logits, generator=generator) for _ in range(4000)]
    assert abs(sum(draws) / len(draws) - 0.75) < 0.03
