"""Headless tests of the attention explorer: set controls from code, check what it shows."""

from __future__ import annotations

import numpy as np
import pytest

from llmhelpers.attention_demo import AttentionOnlyModel
from llmhelpers.plots.attention import token_labels
from llmhelpers.widgets.attention import AttentionExplorer, weights_table_html


class ByteTokenizer:
    """One token per UTF-8 byte: enough to drive the widget without a trained tokenizer."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def id_to_bytes(self, token_id: int) -> bytes:  # as our BPETokenizer has
        return bytes([token_id])


class DecodeOnlyTokenizer:
    """A tokenizer that can only decode whole id lists (no per-token bytes)."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class TiktokenLike(DecodeOnlyTokenizer):
    """Per-token bytes the way ``tiktoken.Encoding`` exposes them."""

    def decode_single_token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id])


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


def test_partial_utf8_tokens_show_their_bytes_not_replacement_characters(explorer):
    explorer.text.value = "é\t→ a"  # é: 2 bytes, →: 3 bytes, each byte its own token here
    assert explorer.tokens == ["<c3>", "<a9>", "→", "<e2>", "<86>", "<92>", "·", "a"]
    assert "\ufffd" not in explorer.html
    assert "&lt;c3&gt;" in explorer.html  # shown, escaped, in the table


def test_token_labels_work_with_each_kind_of_tokenizer():
    ids = list("é a".encode())
    assert token_labels(ByteTokenizer(), ids) == ["<c3>", "<a9>", "·", "a"]
    assert token_labels(TiktokenLike(), ids) == ["<c3>", "<a9>", "·", "a"]
    # Without per-token bytes the best we can do is decode each id on its own.
    assert token_labels(DecodeOnlyTokenizer(), ids) == ["\ufffd", "\ufffd", "·", "a"]


def test_summary_counts_one_token_in_the_singular(explorer):
    explorer.text.value = "a"
    assert explorer.summary.startswith("1 token · ")
    explorer.text.value = "ab"
    assert explorer.summary.startswith("2 tokens · ")


# ---------------------------------------------------------------- the static figures before it


def _arrow_colours(ax) -> list[tuple[float, ...]]:
    return [tuple(a.arrow_patch.get_edgecolor()[:3]) for a in ax.texts
            if getattr(a, "arrow_patch", None) is not None]


def test_context_vector_figure_keeps_one_colour_per_token():
    import matplotlib.pyplot as plt

    from llmhelpers.plots.attention import plot_context_vector

    values = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.5]])  # token 0 repeated
    weights = np.array([0.2, 0.3, 0.4, 0.1])
    figure = plot_context_vector(values, weights, ["a", "b", "a", "c"], "a")
    left, right = figure.axes
    # Left: one arrow per distinct token, then the context; right: one step per distinct token.
    assert _arrow_colours(left)[:-1] == _arrow_colours(right)
    assert len(set(_arrow_colours(right))) == 3
    legend = [t.get_text() for t in right.get_legend().get_texts()]
    assert legend == ["0.60 × a ×2", "0.30 × b", "0.10 × c", "context vector"]
    plt.close(figure)


def test_dropout_figure_colour_scale_reaches_the_rescaled_weights():
    import matplotlib.pyplot as plt

    from llmhelpers.plots.attention import plot_dropout

    kept = np.array([[1.0, 0.0], [0.4, 0.6]])
    dropped = np.array([[2.0, 0.0], [0.0, 1.2]])  # p = 0.5: survivors doubled
    figure = plot_dropout(kept, dropped, ["x", "y"], p=0.5)
    for ax in figure.axes[:2]:  # the two heatmaps (then come their colour bars)
        assert ax.images[0].get_clim() == (0.0, 2.0)
    plt.close(figure)


def test_head_grid_labels_only_the_outer_panels_in_a_readable_size():
    import matplotlib.pyplot as plt

    from llmhelpers.plots.attention import plot_head_grid

    labels = [f"t{i}" for i in range(20)]
    weights = np.tril(np.ones((2, 4, 20, 20))) / np.arange(1, 21)[:, None]
    figure = plot_head_grid(weights, labels, "grid")
    axes = np.array(figure.axes).reshape(2, 4)
    for (layer, head), ax in np.ndenumerate(axes):
        x_shown = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        y_shown = [t for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
        assert bool(x_shown) == (layer == 1) and bool(y_shown) == (head == 0)
        assert all(t.get_fontsize() >= 9 for t in x_shown + y_shown)
    assert [t.get_text() for t in axes[1, 0].get_xticklabels()] == labels
    plt.close(figure)
