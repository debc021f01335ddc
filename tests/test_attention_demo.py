"""Tests for llmhelpers.attention_demo: the copy task is learned, through the expected pattern."""

from __future__ import annotations

import pytest
import torch

from llmhelpers.attention_demo import (
    IGNORE_INDEX,
    AttentionOnlyModel,
    copy_task_batch,
    offset_attention,
    train_copy_task,
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
