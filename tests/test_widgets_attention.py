"""Headless tests of the attention explorer: set controls from code, check what it shows."""

from __future__ import annotations

import numpy as np
import pytest

from llmhelpers.attention_demo import AttentionOnlyModel
from llmhelpers.widgets.attention import AttentionExplorer, weights_table_html


class ByteTokenizer:
    """One token per UTF-8 byte: enough to drive the widget without a trained tokenizer."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


@pytest.fixture
def explorer() -> AttentionExplorer:
    model = AttentionOnlyModel(vocab_size=256, d_model=16, n_heads=2, n_layers=2,
                               context_length=12, seed=0)
    return AttentionExplorer(model, ByteTokenizer(), text="to be or")


def test_shows_one_row_per_token_summing_to_one(explorer):
    assert explorer.tokens == ["t", "o", "·", "b", "e", "·", "o", "r"]
    assert explorer.weights.shape == (8, 8)
    np.testing.assert_allclose(explorer.weights.sum(-1), np.ones(8), atol=1e-6)
    assert np.all(np.triu(explorer.weights, 1) == 0)
    assert explorer.html.count("<tr>") == 9  # header + one row per token
    assert "8 tokens" in explorer.summary and "causal" in explorer.summary


def test_typing_a_new_sentence_updates_the_tokens(explorer):
    explorer.text.value = "hi"
    assert explorer.tokens == ["h", "i"]
    assert explorer.weights.shape == (2, 2)
    assert explorer.weights[0].tolist() == [1.0, 0.0]


def test_lifting_the_causal_mask_lets_tokens_see_the_future(explorer):
    explorer.causal.value = False
    assert np.all(explorer.weights[np.triu_indices(8, k=1)] > 0)
    assert "no mask" in explorer.summary
    explorer.causal.value = True
    assert np.all(np.triu(explorer.weights, 1) == 0)


def test_temperature_sharpens_and_flattens(explorer):
    explorer.causal.value = False
    normal = explorer.weights.max(-1).mean()
    explorer.temperature.value = 0.1
    sharp = explorer.weights.max(-1).mean()
    explorer.temperature.value = 10.0
    flat = explorer.weights
    assert sharp > normal + 0.1
    assert np.abs(flat - 1 / 8).max() < 0.05  # nearly uniform over the 8 keys
    assert "temperature 10.00" in explorer.summary


def test_head_and_layer_pick_different_patterns(explorer):
    first = explorer.weights.copy()
    explorer.head.value = 1
    second_head = explorer.weights.copy()
    explorer.layer.value = 1
    assert not np.allclose(first, second_head)
    assert not np.allclose(second_head, explorer.weights)
    assert "layer 1, head 1" in explorer.summary


def test_long_text_is_cut_and_empty_text_explained(explorer):
    explorer.text.value = "x" * 30
    assert len(explorer.tokens) == 12 and "cut to the first 12" in explorer.summary
    explorer.text.value = ""
    assert explorer.tokens == [] and "no tokens" in explorer.html


def test_table_html_shades_by_weight():
    table = weights_table_html(np.array([[1.0, 0.0], [0.5, 0.5]]), ["a", "<b>"])
    assert "rgb(0,0,255)" in table and "rgb(255,255,255)" in table
    assert "&lt;b&gt;" in table  # labels are escaped
