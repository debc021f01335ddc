"""Tests for llmhelpers.attention_demo: the copy task is learned, through the expected pattern."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from llmhelpers.attention_demo import (
    IGNORE_INDEX,
    AttentionOnlyModel,
    copy_task_batch,
    layer_attention,
    mean_largest_weight,
    offset_attention,
    offset_attention_by_head,
    single_thread,
    time_attention_paths,
    train_copy_task,
    train_next_token_model,
)


def test_copy_task_targets_are_the_tokens_k_back():
    ids, targets = copy_task_batch(4, 10, 7, k_back=3, generator=torch.Generator().manual_seed(0))
    assert ids.shape == targets.shape == (4, 10)
    assert torch.all(targets[:, :3] == IGNORE_INDEX)
    assert torch.equal(targets[:, 3:], ids[:, :7])
    with pytest.raises(ValueError, match="k_back"):
        copy_task_batch(1, 10, 7, k_back=10, generator=torch.Generator())


def test_offset_attention_reads_the_right_diagonal():
    weights = torch.arange(16.0).view(4, 4)
    assert offset_attention(weights, 2).tolist() == [8.0, 13.0]


@pytest.mark.parametrize("k_back", [1, 3])
def test_trained_model_attends_k_back(k_back):
    result = train_copy_task(k_back=k_back, steps=120, seed=0)
    assert result.accuracy > 0.98
    pattern = result.weights[-1, 0]  # (seq, seq), last layer, only head
    rows = torch.arange(k_back, pattern.shape[0])
    assert torch.equal(pattern[rows].argmax(-1), rows - k_back)
    assert result.offset_weight > 0.9
    # Before training the pattern is not there: attention is spread over the prefix.
    assert offset_attention(result.snapshots[0][-1], k_back).mean() < 0.5
    assert result.losses[-1] < 0.1 * result.losses[0]


def test_training_is_repeatable_with_a_seed():
    a = train_copy_task(k_back=2, steps=5, seed=3)
    b = train_copy_task(k_back=2, steps=5, seed=3)
    assert a.losses == b.losses
    assert torch.equal(a.weights, b.weights)


def test_attention_only_model_shapes_and_errors():
    model = AttentionOnlyModel(vocab_size=11, d_model=8, n_heads=2, n_layers=2, context_length=6)
    logits, weights = model(torch.zeros(3, 5, dtype=torch.long), return_weights=True)
    assert logits.shape == (3, 5, 11)
    assert [w.shape for w in weights] == [(3, 2, 5, 5)] * 2
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="n_layers"):
        AttentionOnlyModel(vocab_size=11, n_layers=0)


def test_layer_attention_matches_forward_and_responds_to_its_knobs():
    model = AttentionOnlyModel(vocab_size=20, d_model=16, n_heads=2, n_layers=2,
                               context_length=8, seed=1).eval()
    ids = torch.tensor([3, 1, 4, 1, 5, 9])
    _, forward_weights = model(ids[None], return_weights=True)
    for layer in range(2):
        torch.testing.assert_close(layer_attention(model, ids, layer), forward_weights[layer][0])
    open_weights = layer_attention(model, ids, 1, causal=False)
    upper = torch.ones(6, 6, dtype=torch.bool).triu(1)
    assert torch.all(open_weights[:, upper] > 0)
    flat = layer_attention(model, ids, 0, causal=False, temperature=1e6)
    torch.testing.assert_close(flat, torch.full((2, 6, 6), 1 / 6))
    sharp = layer_attention(model, ids, 0, causal=False, temperature=1e-4)
    assert torch.all(sharp.max(-1).values > 0.99)
    with pytest.raises(ValueError, match="layer"):
        layer_attention(model, ids, 2)
    with pytest.raises(ValueError, match="temperature"):
        layer_attention(model, ids, 0, temperature=0)
    assert offset_attention_by_head(model, ids, 1).shape == (2, 2)


def test_next_token_training_lowers_the_loss_on_a_repeating_text():
    text_ids = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7] * 40)
    result = train_next_token_model(text_ids, vocab_size=8, steps=60, context_length=8,
                                    d_model=16, n_heads=2, batch_size=8, progress=False)
    assert sum(result.losses[-5:]) / 5 < 0.2 * result.losses[0]
    logits = result.model(text_ids[None, :8])
    assert torch.equal(logits.argmax(-1)[0], torch.tensor([1, 2, 3, 4, 5, 6, 7, 0]))
    with pytest.raises(ValueError, match="context_length"):
        train_next_token_model(text_ids[:5], vocab_size=8, context_length=8)


def test_timing_helper_checks_equality_and_reports_a_ratio():
    times = time_attention_paths(batch_size=1, seq_len=8, d_model=8, n_heads=2, repeats=2)
    assert set(times) == {"explicit", "sdpa", "speedup"}
    assert times["speedup"] == pytest.approx(times["explicit"] / times["sdpa"])


def test_single_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    train_copy_task(steps=2)
    assert torch.get_num_threads() == before


def test_mean_largest_weight_is_one_for_a_trained_copy_head():
    result = train_copy_task(k_back=2, steps=80, seed=0)
    ids = torch.randint(0, 16, (4, 16), generator=torch.Generator().manual_seed(0))
    sharpness = mean_largest_weight(result.model, ids)
    assert sharpness.shape == (1, 1) and sharpness.item() > 0.9
    untrained = AttentionOnlyModel(vocab_size=16, context_length=16, seed=0)
    assert mean_largest_weight(untrained, ids).item() < 0.5


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(vocab_size="11"), TypeError, "vocab_size must be a positive integer, got str"),
        (dict(vocab_size=0), ValueError, "vocab_size must be a positive integer, got 0"),
        (dict(vocab_size=11.0), TypeError, "vocab_size must be a positive integer, got float"),
        (dict(n_layers=1.5), TypeError, "n_layers must be a positive integer, got float"),
        (dict(n_layers=True), TypeError, "n_layers must be a positive integer, got bool"),
        (dict(d_model=0), ValueError, "d_model must be a positive integer, got 0"),
        (dict(n_heads=None), TypeError, "n_heads must be a positive integer, got NoneType"),
        (dict(d_model=30, n_heads=4), ValueError, "d_model must be divisible by n_heads"),
        (dict(context_length=16.0), TypeError, "context_length must be a positive integer"),
        (dict(seed=1.0), TypeError, "seed must be an integer or None, got float"),
        (dict(seed=True), TypeError, "seed must be an integer or None, got bool"),
    ],
)
def test_attention_only_model_arguments_are_checked_by_name(kwargs, error, message):
    config = dict(vocab_size=11)
    config.update(kwargs)
    with pytest.raises(error, match=re.escape(message)):
        AttentionOnlyModel(**config)


def test_attention_only_model_accepts_numpy_integers():
    model = AttentionOnlyModel(np.int64(11), d_model=np.int64(8), n_heads=np.int32(2),
                               n_layers=np.int64(2), context_length=np.int64(6), seed=np.int64(3))
    reference = AttentionOnlyModel(11, d_model=8, n_heads=2, n_layers=2, context_length=6, seed=3)
    assert (model.vocab_size, model.context_length, len(model.layers)) == (11, 6, 2)
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(model(ids), reference(ids), rtol=0, atol=0)
