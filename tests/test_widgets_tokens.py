"""The notebook-1 widgets, driven from code: set a control, check what is displayed."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from llmhelpers.plots import tokens as token_plots  # noqa: E402
from llmhelpers.tokenizer import BPETokenizer, CharTokenizer, WordTokenizer, gpt2_tokenizer  # noqa: E402
from llmhelpers.widgets.tokens import MergeStepper, TokenizerPlayground  # noqa: E402


@pytest.fixture(scope="module")
def small_bpe() -> BPETokenizer:
    return BPETokenizer.train("zzzyzzzyzx", 259)


@pytest.fixture(scope="module")
def playground() -> TokenizerPlayground:
    tokenizers = {
        "GPT-2": gpt2_tokenizer(),
        "characters": CharTokenizer.from_text("to be or not"),
        "words": WordTokenizer.from_text("to be or not"),
    }
    return TokenizerPlayground(tokenizers, text="notes <|endoftext|> more")


def test_playground_shows_gpt2_ids_and_counts(playground):
    playground.choice.value = "GPT-2"
    playground.text_box.value = "notes <|endoftext|> more"
    # in the playground a special-token string is plain text
    assert playground.ids == [17815, 1279, 91, 437, 1659, 5239, 91, 29, 517]
    assert playground.summary == "24 characters → 9 tokens (2.67 chars/token)"
    assert "17815" in playground.output.value and "·more" in playground.output.value


def test_playground_follows_text_and_tokenizer_changes(playground):
    playground.choice.value = "words"
    playground.text_box.value = "to be or not to die"
    assert playground.pieces == ["to", "be", "or", "not", "to", "<|unk|>"]
    playground.choice.value = "characters"
    assert "cannot encode" in playground.summary and "'d'" in playground.summary
    assert playground.ids == []
    playground.text_box.value = "to be"
    assert playground.pieces == ["t", "o", " ", "b", "e"]


def test_playground_needs_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizers"):
        TokenizerPlayground({})


def test_merge_stepper_replays_the_merges(small_bpe):
    stepper = MergeStepper(small_bpe, "zzzyzzzyzx")
    assert stepper.pieces == list("zzzyzzzyzx")
    stepper.slider.value = 1
    assert stepper.pieces == ["zz", "z", "y", "zz", "z", "y", "z", "x"]
    assert "'z' + 'z' → 'zz' (id 256)" in stepper.summary
    stepper.slider.value = 3
    assert stepper.pieces == ["zzzy", "zzzy", "z", "x"]
    assert stepper.summary.startswith("3 merges: 4 tokens")
    assert "zzzy" in stepper.output.value


def test_merge_stepper_rejects_a_bad_limit(small_bpe):
    with pytest.raises(ValueError, match="max_merges"):
        MergeStepper(small_bpe, "z", max_merges=4)


def test_chips_make_whitespace_visible_and_escape_html():
    html = token_plots.chips_html([(1, "a <b>"), (2, "\n")])
    assert "a·&lt;b&gt;" in html and "↵" in html


def test_partial_utf8_tokens_show_as_hex():
    assert token_plots.piece_text("é".encode()[:1]) == "<c3>"


def test_static_figures_are_titled_and_labelled():
    figure = token_plots.plot_compression_curve([256, 257, 258], [1.0, 1.2, 1.3], chosen=257)
    axes = figure.axes[0]
    assert axes.get_title() and axes.get_xlabel() and axes.get_ylabel()
    figure = token_plots.plot_sliding_windows(list("abcdefghij"), context_length=4, stride=2)
    assert "context_length=4" in figure.axes[0].get_title()
    figure = token_plots.plot_token_chips({"row": [(0, "🙂"), (1, " x")]}, title="chips")
    assert figure.axes[0].get_title() == "chips"
