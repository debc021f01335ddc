"""Tokenizers: the behaviour of section 3 of issue 2, checked against tiktoken's GPT-2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmhelpers.data import load_text, train_val_split
from llmhelpers.tokenizer import (
    DEFAULT_VOCAB_SIZE,
    ENDOFTEXT,
    GPT2_SPLIT_PATTERN,
    UNKNOWN,
    BPETokenizer,
    CharTokenizer,
    TrainingCorpus,
    WordTokenizer,
    bpe_encode_piece,
    bpe_encode_piece_simple,
    encode_corpus,
    gpt2_byte_to_char,
    gpt2_tokenizer,
    learn_merges_incremental,
    learn_merges_naive,
    merge_pair,
    shakespeare_bpe,
)

PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def corpus() -> str:
    return load_text("tiny-shakespeare")


@pytest.fixture(scope="module")
def small_bpe(corpus: str) -> BPETokenizer:
    """A small tokenizer trained once for the module: 400 ids on the first 200k characters."""
    return BPETokenizer.train(corpus[:200_000], 400)


@pytest.fixture(scope="module")
def gpt2_ours() -> BPETokenizer:
    return BPETokenizer.from_gpt2()


@pytest.fixture(scope="module")
def gpt2_ref():
    return gpt2_tokenizer()


# ---- GPT-2's ids: special tokens and whitespace (ours from GPT-2's files, and tiktoken) ----

SPECIAL_CASES = [
    ("notes <|endoftext|> more", [17815, 220, 50256, 517],
     [17815, 1279, 91, 437, 1659, 5239, 91, 29, 517]),
    ("The end.<|endoftext|> A new start", [464, 886, 13, 50256, 317, 649, 923],
     [464, 886, 29847, 91, 437, 1659, 5239, 91, 29, 317, 649, 923]),
]

WHITESPACE_CASES = [
    ("first line\n\nsecond\tline  \n", [11085, 1627, 198, 198, 12227, 197, 1370, 220, 220, 198]),
    ("a\n\nb", [64, 198, 198, 65]),
    ("a\n\n", [64, 628]),
    ("x   y", [87, 220, 220, 331]),
]


@pytest.mark.parametrize("which", ["ours", "tiktoken"])
@pytest.mark.parametrize(("text", "allowed_ids", "plain_ids"), SPECIAL_CASES)
def test_special_token_in_text_is_a_decision(which, text, allowed_ids, plain_ids, request):
    tokenizer = request.getfixturevalue("gpt2_ours" if which == "ours" else "gpt2_ref")
    with pytest.raises(ValueError, match=r"<\|endoftext\|>"):
        tokenizer.encode(text)
    assert tokenizer.encode(text, allowed_special={ENDOFTEXT}) == allowed_ids
    assert tokenizer.encode(text, allowed_special="all") == allowed_ids
    assert tokenizer.encode(text, disallowed_special=()) == plain_ids
    assert tokenizer.decode(plain_ids) == text
    assert tokenizer.decode(allowed_ids) == text


def test_special_token_arguments_are_checked(gpt2_ours, gpt2_ref):
    text = "a <|endoftext|> b"
    # tiktoken fails on a bare string for allowed_special (and reads one for
    # disallowed_special as a set of characters); ours says what to pass instead
    with pytest.raises(TypeError):
        gpt2_ref.encode(text, allowed_special=ENDOFTEXT)
    for name in ("allowed_special", "disallowed_special"):
        with pytest.raises(TypeError, match=name + r".*\{'<\|endoftext\|>'\}"):
            gpt2_ours.encode(text, **{name: ENDOFTEXT})
        with pytest.raises(TypeError, match=name):
            gpt2_ours.encode(text, **{name: None})
        with pytest.raises(TypeError, match=name):
            gpt2_ours.encode(text, **{name: [7]})
    with pytest.raises(ValueError, match=r"disallowed_special names unknown special tokens "
                                         r"\['<\|nope\|>'\]"):
        gpt2_ours.encode("a <|nope|> b", disallowed_special={"<|nope|>"})
    assert gpt2_ours.encode(text, allowed_special=[ENDOFTEXT]) == gpt2_ref.encode(
        text, allowed_special={ENDOFTEXT})


def test_special_token_errors_are_clear(gpt2_ours, small_bpe):
    with pytest.raises(ValueError, match="allowed_special.*<|nope|>"):
        gpt2_ours.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(TypeError, match="text must be a str"):
        gpt2_ours.encode(b"bytes")
    eot = small_bpe.special_tokens[ENDOFTEXT]
    assert eot == small_bpe.vocab_size == 400 and small_bpe.n_vocab == 401
    assert small_bpe.encode("a<|endoftext|>", allowed_special="all")[-1] == eot
    assert small_bpe.id_to_bytes(eot) == b"<|endoftext|>"


@pytest.mark.parametrize("which", ["ours", "tiktoken"])
def test_encode_corpus_makes_the_special_token_policy_explicit(which, request):
    tokenizer = request.getfixturevalue("gpt2_ours" if which == "ours" else "gpt2_ref")
    for text, allowed_ids, plain_ids in SPECIAL_CASES:
        assert encode_corpus(tokenizer, text, special_tokens="as_text") == plain_ids
        assert encode_corpus(tokenizer, text, special_tokens="as_special") == allowed_ids
    with pytest.raises(ValueError, match="special_tokens must be 'as_text' or 'as_special'"):
        encode_corpus(tokenizer, "x", special_tokens="allowed")
    with pytest.raises(TypeError, match="special_tokens"):
        encode_corpus(tokenizer, "x")  # no default: the caller must decide
    with pytest.raises(TypeError, match="text must be a str"):
        encode_corpus(tokenizer, None, special_tokens="as_text")


def test_encode_corpus_with_our_own_tokenizer(small_bpe):
    text = "To be.<|endoftext|>Or not."
    as_text = encode_corpus(small_bpe, text, special_tokens="as_text")
    as_special = encode_corpus(small_bpe, text, special_tokens="as_special")
    assert 400 not in as_text and as_special.count(400) == 1
    assert small_bpe.decode(as_text) == small_bpe.decode(as_special) == text
    assert as_text == small_bpe.to_tiktoken().encode(text, disallowed_special=())
    with pytest.raises(TypeError, match="tokenizer must be a BPETokenizer or a tiktoken"):
        encode_corpus(CharTokenizer.from_text(text), text, special_tokens="as_text")


@pytest.mark.parametrize("which", ["ours", "tiktoken"])
@pytest.mark.parametrize(("text", "ids"), WHITESPACE_CASES)
def test_whitespace_survives_exactly(which, text, ids, request):
    tokenizer = request.getfixturevalue("gpt2_ours" if which == "ours" else "gpt2_ref")
    assert tokenizer.encode(text) == ids
    assert tokenizer.decode(ids) == text


VARIED_TEXTS = [
    "Hello, world! It's a test, isn't it? We'll see.",
    "def add(a, b):\n    return a + b  # sum\n\n\nprint(add(2, 3))\n",
    "3.14159 and 1,000,000 or 2024-01-01 at 23:59; 0x1F 1e-9 42nd",
    "Party 🎉 with 👋🏽 and 👨‍👩‍👧 family, ☕️ please",
    "Привет, мир! 你好，世界。 مرحبا بالعالم नमस्ते दुनिया 안녕하세요",
    "tabs\t\tand  spaces   \n\n\n   trailing   ",
    "\u00a0non-breaking\u2003em space\u3000ideographic\r\nwindows\rline",
    "'s 're 've 'm 'll 'd 'S ''' ``quotes'' \"double\"",
]


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_from_gpt2_matches_tiktoken_on_varied_text(gpt2_ours, gpt2_ref, text):
    ids = gpt2_ref.encode(text)
    assert gpt2_ours.encode(text) == ids
    assert gpt2_ours.decode(ids) == text


# Characters where GPT-2's pre-split regex is subtle: contractions, kinds of whitespace,
# letters/digits of other scripts, combining marks, emoji with modifiers and joiners.
TRICKY_TEXT = st.text(alphabet=st.sampled_from(
    list(" \n\t\r\u00a0\u3000'sdlmtvreSD019\u0663abc\u00e9\u4e2d,.!-_")
    + ["\U0001f600", "\U0001f44b", "\U0001f3fd", "\u200d", "\u0301"]), max_size=60)


@PROPERTY
@given(text=st.one_of(st.text(max_size=60), TRICKY_TEXT))
def test_from_gpt2_matches_tiktoken_on_any_unicode(gpt2_ours, gpt2_ref, text):
    assert gpt2_ours.encode(text, disallowed_special=()) == gpt2_ref.encode(
        text, disallowed_special=())


def test_from_gpt2_matches_tiktoken_on_the_corpus(gpt2_ours, gpt2_ref, corpus):
    text = corpus[-100_000:]
    assert gpt2_ours.encode(text) == gpt2_ref.encode(text)


def test_from_gpt2_table_is_gpt2s(gpt2_ours, gpt2_ref):
    assert gpt2_ours.ranks == gpt2_ref._mergeable_ranks
    assert gpt2_ours.n_vocab == gpt2_ref.n_vocab == 50257
    assert gpt2_ours.special_tokens == {ENDOFTEXT: 50256}
    assert gpt2_ours.ranks[b" "] == 220 and gpt2_ours.ranks[b"!"] == 0  # bytes are not ids
    assert gpt2_byte_to_char()[ord(" ")] == "\u0120" and gpt2_byte_to_char()[10] == "\u010a"


# ---- the fast chunk encoder: same ids as the simple one, without its O(n²) ----


@st.composite
def rank_tables(draw) -> dict[bytes, int]:
    """Any table holding all 256 bytes plus some tokens over b"abc", ranks in any order."""
    tokens = draw(st.lists(st.text(alphabet="abc", min_size=2, max_size=5), unique=True,
                           max_size=30))
    table = [bytes([b]) for b in range(256)] + [token.encode() for token in tokens]
    ranks = draw(st.permutations(range(len(table))))
    return dict(zip(table, ranks))


@PROPERTY
@given(ranks=rank_tables(), piece=st.text(alphabet="abc", max_size=80).map(str.encode))
def test_fast_chunk_encoder_equals_simple_on_random_tables(ranks, piece):
    assert bpe_encode_piece(piece, ranks) == bpe_encode_piece_simple(piece, ranks)


@PROPERTY
@given(text=st.one_of(st.text(max_size=60), TRICKY_TEXT))
def test_fast_chunk_encoder_equals_simple_with_gpt2s_table(gpt2_ours, text):
    piece = text.encode("utf-8", errors="replace")
    assert bpe_encode_piece(piece, gpt2_ours.ranks) == bpe_encode_piece_simple(
        piece, gpt2_ours.ranks)


class CountingRanks(dict):
    """A rank table that counts how often a joined pair is looked up."""

    lookups = 0

    def get(self, key, default=None):
        self.lookups += 1
        return super().get(key, default)


def test_fast_chunk_encoder_does_a_bounded_number_of_lookups():
    # tokens "ab", "abab", "abababab", ...: a 2048-byte chunk takes 2047 joins
    ranks = CountingRanks({bytes([b]): b for b in range(256)})
    for k in range(11):
        ranks[b"ab" * 2**k] = 256 + k
    piece = b"ab" * 1024
    fast_ranks, simple_ranks = CountingRanks(ranks), CountingRanks(ranks)
    assert bpe_encode_piece(piece + b"a", fast_ranks) == [266, 97]
    assert bpe_encode_piece_simple(piece + b"a", simple_ranks) == [266, 97]
    # at most one lookup per initial pair and two per join, against ~n²/4 for the rescans
    assert fast_ranks.lookups <= 3 * len(piece)
    assert simple_ranks.lookups > 100 * len(piece)


@pytest.mark.parametrize("text", [
    "the" * 7000,  # 21,000 letters: one pre-split chunk
    "a" * 20_000,
    "".join(np.random.default_rng(0).choice(list("abcdefghijklmnopqrstuvwxyz"), 20_000)),
])
def test_one_long_chunk_matches_tiktoken(gpt2_ours, gpt2_ref, small_bpe, text):
    assert len(gpt2_ours.pre_split(text)) == 1
    assert gpt2_ours.encode(text) == gpt2_ref.encode(text)
    assert small_bpe.encode(text) == small_bpe.to_tiktoken().encode(text)


# ---- training: merge order, tie rule, incremental == naive ----


def test_merge_order_example():
    tokenizer = BPETokenizer.train("zzzyzzzyzx", 256 + 3)
    assert list(tokenizer.merges.items()) == [((122, 122), 256), ((256, 122), 257),
                                              ((257, 121), 258)]
    assert tokenizer.encode("zzzyzzzyzx") == [258, 258, 122, 120]
    assert tokenizer.training_log.merge_counts == [4, 2, 2]
    assert tokenizer.training_log.n_tokens == [8, 6, 4]
    assert [tokenizer.merge_steps("zzzyzzzyzx", k) for k in range(4)] == [
        [bytes([b]) for b in b"zzzyzzzyzx"],
        [b"zz", b"z", b"y", b"zz", b"z", b"y", b"z", b"x"],
        [b"zzz", b"y", b"zzz", b"y", b"z", b"x"],
        [b"zzzy", b"zzzy", b"z", b"x"],
    ]


def test_merges_apply_left_to_right_without_overlap():
    assert merge_pair([122, 122, 122], (122, 122), 256) == [256, 122]
    assert merge_pair([122, 122, 122, 122], (122, 122), 256) == [256, 256]
    assert BPETokenizer.train("zzzyzzzyzx", 257).encode("zzz") == [256, 122]


def reference_merges(text: str, n_merges: int) -> list[tuple[int, int]]:
    """An independent minbpe-style trainer over every chunk of the text, duplicates included:
    recount into a fresh dict each step, take the first maximal pair whose bytes are new."""
    import regex

    chunks = [list(c.encode("utf-8")) for c in regex.findall(GPT2_SPLIT_PATTERN, text)]
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    for new_id in range(256, 256 + n_merges):
        stats: dict[tuple[int, int], int] = {}
        for ids in chunks:
            for pair in zip(ids, ids[1:]):
                if vocab[pair[0]] + vocab[pair[1]] not in vocab.values():
                    stats[pair] = stats.get(pair, 0) + 1
        if not stats:
            break
        pair = max(stats, key=stats.get)
        merges.append(pair)
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        chunks = [merge_pair(ids, pair, new_id) for ids in chunks]
    return merges


@pytest.mark.filterwarnings("ignore:the text only allowed")
@pytest.mark.parametrize("text", [
    "zzzyzzzyzx", "aaaaaaaaaa", "abababab abab ab", "the cat sat on the mat, the end",
    "aaabdaaabac", "xyxyxy yxyx xy yx", "hello hello hello world world",
])
def test_trainers_agree_with_reference_on_small_texts(text):
    n = 12
    fast = BPETokenizer.train(text, 256 + n, special_tokens=())
    naive = BPETokenizer.train_naive(text, 256 + n, special_tokens=())
    reference = reference_merges(text, n)
    assert list(fast.merges) == list(naive.merges) == reference
    assert fast.training_log == naive.training_log


@pytest.mark.filterwarnings("ignore:the text only allowed")
@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet="ab xy\n.", min_size=1, max_size=60))  # "" is refused
def test_incremental_equals_naive_on_tie_heavy_texts(text):
    fast = BPETokenizer.train(text, 256 + 10, special_tokens=())
    naive = BPETokenizer.train_naive(text, 256 + 10, special_tokens=())
    assert fast.merges == naive.merges
    assert list(fast.merges) == reference_merges(text, 10)
    assert fast.training_log == naive.training_log


def every_pair_once(alphabet: str) -> str:
    """A text in which every ordered pair of letters occurs exactly once (a de Bruijn
    sequence, built greedily: append the last letter not yet used after the current one)."""
    text, used = alphabet[0], set()
    while (following := next((c for c in reversed(alphabet) if (text[-1], c) not in used),
                             None)) is not None:
        used.add((text[-1], following))
        text += following
    return text


@pytest.mark.parametrize("text", [
    "ab" * 20_000,  # one chunk of 40,000 letters
    every_pair_once("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),  # 2,704 tied pairs
])
@pytest.mark.filterwarnings("ignore:the text only allowed")
def test_incremental_equals_naive_on_one_long_chunk(text):
    # Ties used to cost one scan of the chunk per tied pair, per merge: on the second text
    # (every pair occurs once, so all of them tie) that took half a minute for 60 merges.
    assert len(BPETokenizer().pre_split(text)) == 1
    fast = BPETokenizer.train(text, 256 + 60, special_tokens=())
    naive = BPETokenizer.train_naive(text, 256 + 60, special_tokens=())
    assert list(fast.merges.items()) == list(naive.merges.items())
    assert fast.training_log == naive.training_log
    assert fast.encode(text) == fast.to_tiktoken().encode(text)


def test_incremental_equals_naive_on_whole_corpus(corpus):
    fast = BPETokenizer.train(corpus, 400)
    naive = BPETokenizer.train_naive(corpus, 400)
    assert list(fast.merges.items()) == list(naive.merges.items())
    assert fast.training_log == naive.training_log
    assert len(fast.merges) == 144
    assert fast.vocab[256] == b" t"  # the most frequent pair in Shakespeare


@pytest.mark.parametrize("learn", [learn_merges_naive, learn_merges_incremental])
def test_a_pair_that_rebuilds_an_existing_token_is_never_chosen(learn):
    # Chunks already segmented as [z, zz] and [zz, z]: both pairs join to b"zzz". The first
    # (tie, first occurrence) becomes token 257; the second would duplicate it and is skipped.
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"zz"}
    corpus = TrainingCorpus(words=[[122, 256], [256, 122]], freqs=[1, 1], vocab=vocab)
    learned = []
    learn(corpus, 5, lambda pair, new_id, count, n_replaced: learned.append((pair, new_id)))
    assert learned == [((122, 256), 257)]
    assert corpus.words == [[257], [256, 122]]


def test_training_log_gives_chars_per_token(small_bpe, corpus):
    log = small_bpe.training_log
    text = corpus[:200_000]
    assert log.n_chars == len(text) and log.n_bytes == len(text.encode("utf-8"))
    assert len(log.n_tokens) == len(log.merge_counts) == 400 - 256
    assert all(a > b for a, b in zip([log.n_bytes, *log.n_tokens], log.n_tokens))
    sizes, cpt = log.chars_per_token()
    assert sizes[0] == 256 and sizes[-1] == 400 and cpt[0] == 1.0  # ASCII text: 1 byte a char
    # encoding the text afterwards gives the same length as training ended with (the encoder
    # could in principle join a few more pairs, see the module docstring; here it does not)
    assert log.n_tokens[-1] == len(small_bpe.encode(text))


@pytest.mark.parametrize("bad", [255, 0, -1])
def test_vocab_size_too_small_is_rejected(bad):
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("hello", bad)


@pytest.mark.parametrize("bad", [300.0, "512", None, True])
def test_vocab_size_not_int_is_rejected(bad):
    with pytest.raises(TypeError, match="vocab_size"):
        BPETokenizer.train("hello", bad)


def test_training_stops_early_when_pairs_run_out():
    with pytest.warns(UserWarning, match="only allowed 2 merges"):
        tokenizer = BPETokenizer.train("abc", 300)
    assert tokenizer.vocab_size == 258 and tokenizer.special_tokens == {ENDOFTEXT: 258}


# ---- round trips and agreement with to_tiktoken() ----


@PROPERTY
@given(text=st.one_of(st.text(max_size=200), TRICKY_TEXT))
def test_round_trip_any_unicode(small_bpe, text):
    ids = small_bpe.encode(text, disallowed_special=())
    assert small_bpe.decode(ids) == text
    assert ids == small_bpe.to_tiktoken().encode(text, disallowed_special=())


def test_to_tiktoken_matches_on_validation_text(small_bpe, corpus):
    validation = train_val_split(corpus)[1]
    encoding = small_bpe.to_tiktoken()
    assert encoding.encode(validation) == small_bpe.encode(validation)
    assert encoding.n_vocab == small_bpe.n_vocab == 401
    assert encoding.encode("<|endoftext|>", allowed_special="all") == [400]


def test_decode_of_unknown_id_names_the_id(small_bpe, gpt2_ours):
    with pytest.raises(ValueError, match="token id 401 does not exist"):
        small_bpe.decode([72, 401])
    with pytest.raises(ValueError, match="token id -1 does not exist"):
        small_bpe.decode([-1])
    with pytest.raises(ValueError, match="token id 50257 does not exist"):
        gpt2_ours.decode([50257])
    with pytest.raises(TypeError, match="integers"):
        small_bpe.decode(["a"])
    with pytest.raises(TypeError, match="integers"):
        small_bpe.decode([72.0])
    assert small_bpe.decode(np.array([72, 105])) == "Hi"  # numpy ints are fine


@pytest.mark.parametrize("make", [
    lambda: BPETokenizer(),
    lambda: CharTokenizer.from_text("abc"),
    lambda: WordTokenizer.from_text("a b c"),
])
def test_decode_rejects_what_is_not_a_sequence_of_ids(make):
    tokenizer = make()
    for bad in (5, None, "ab", b"ab", 1.7):
        with pytest.raises(TypeError, match="ids must be a sequence of token ids"):
            tokenizer.decode(bad)
    for bad in ([1.7], [1.0], [np.float64(1.0)], [None], [True]):
        with pytest.raises(TypeError, match="token ids must be integers"):
            tokenizer.decode(bad)
    with pytest.raises(ValueError, match="token id -1 does not exist"):
        tokenizer.decode([1, -1])
    with pytest.raises(ValueError, match=r"ids must be one-dimensional, got shape \(1, 2\)"):
        tokenizer.decode(np.array([[1, 2]]))
    assert tokenizer.decode(np.array([1, 2])) == tokenizer.decode([1, 2])


def test_text_must_be_a_str_everywhere(small_bpe):
    for call in (
        lambda: small_bpe.merge_steps(None, 0),
        lambda: small_bpe.pre_split(None),
        lambda: small_bpe.encode_ordinary(None),
        lambda: BPETokenizer.train(None, 300),
        lambda: CharTokenizer.from_text(None),
        lambda: CharTokenizer.from_text("ab").encode(None),
        lambda: WordTokenizer.from_text(None),
        lambda: WordTokenizer.from_text("ab").encode(None),
    ):
        with pytest.raises(TypeError, match="text must be a str, got NoneType"):
            call()


def test_training_arguments_are_checked_before_the_corpus_pass(monkeypatch):
    with pytest.raises(ValueError, match="text must not be empty"):
        BPETokenizer.train("", 300)

    def no_corpus_pass(*args, **kwargs):
        raise AssertionError("the corpus was read before the arguments were checked")

    monkeypatch.setattr(TrainingCorpus, "from_text", no_corpus_pass)
    with pytest.raises(ValueError, match=r"special_tokens must be distinct, \['<\|a\|>'\]"):
        BPETokenizer.train("some text", 300, special_tokens=("<|a|>", "<|b|>", "<|a|>"))
    with pytest.raises(ValueError, match="special_tokens must be non-empty strings"):
        BPETokenizer.train("some text", 300, special_tokens=("",))
    with pytest.raises(ValueError, match="special_tokens must be non-empty strings"):
        BPETokenizer.train("some text", 300, special_tokens=(5,))
    with pytest.raises(TypeError, match="special_tokens must be a sequence"):
        BPETokenizer.train("some text", 300, special_tokens=ENDOFTEXT)
    with pytest.raises(ValueError, match="pattern is not a valid regex"):
        BPETokenizer.train("some text", 300, pattern="(")


def test_lone_surrogates_become_replacement_characters_like_tiktoken(small_bpe, gpt2_ours,
                                                                     gpt2_ref):
    for text, shown in [("a\ud800b", "a\ufffdb"), ("\udfff", "\ufffd"), ("x \ud83d", "x \ufffd")]:
        assert gpt2_ours.encode(text) == gpt2_ref.encode(text)
        assert small_bpe.encode(text) == small_bpe.to_tiktoken().encode(text)
        assert small_bpe.decode(small_bpe.encode(text)) == shown


def test_decode_tokens_and_partial_utf8(small_bpe):
    ids = small_bpe.encode("é!")
    assert b"".join(small_bpe.decode_tokens(ids)) == "é!".encode()
    assert small_bpe.decode(small_bpe.encode("é")[:1]) == "\ufffd"  # half a character


# ---- save / load ----


def test_save_load_round_trip(small_bpe, tmp_path, corpus):
    path = small_bpe.save(tmp_path / "tok.json")
    loaded = BPETokenizer.load(path)
    assert loaded.merges == small_bpe.merges and loaded.ranks == small_bpe.ranks
    assert loaded.special_tokens == small_bpe.special_tokens
    assert loaded.pattern == small_bpe.pattern and loaded.name == small_bpe.name
    assert loaded.training_log == small_bpe.training_log
    text = corpus[-5_000:]
    assert loaded.encode(text) == small_bpe.encode(text)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "llmhelpers-bpe" and data["version"] == 1
    assert data["merges"][0] == [32, 116, 256, " t"]
    assert len(path.read_text().splitlines()) > len(data["merges"])  # one merge per line


def test_save_load_keeps_gpt2_byte_ids(gpt2_ours, gpt2_ref, tmp_path):
    loaded = BPETokenizer.load(gpt2_ours.save(tmp_path / "gpt2.json"))
    text = VARIED_TEXTS[4] + VARIED_TEXTS[3]
    assert loaded.encode(text) == gpt2_ref.encode(text)
    assert loaded.merges == gpt2_ours.merges


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d.update(format="pickle"), "format"),
    (lambda d: d["merges"][0].__setitem__(3, "xx"), "shown as 'xx'"),
    (lambda d: d["merges"][1].__setitem__(2, 256), "already used"),
    (lambda d: d["merges"][0].__setitem__(0, 9999), "not defined"),
    (lambda d: d["merges"][1].__setitem__(2, 9999), "must increase"),
    (lambda d: d["byte_ids"].__setitem__(0, 1), "256 distinct"),
    (lambda d: d.update(pattern="(unclosed"), "pattern"),
    (lambda d: d.update(special_tokens={ENDOFTEXT: 5}), "already used"),
])
def test_load_rejects_bad_files(small_bpe, tmp_path, change, message):
    data = json.loads(small_bpe.save(tmp_path / "tok.json").read_text())
    change(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(tmp_path / "bad.json")


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(byte_ids=[[b] for b in range(256)]), "byte_ids"),
    (lambda d: d.update(byte_ids=list(range(255))), "256 distinct"),
    (lambda d: d["training"].update(n_chars="x"), "n_chars"),
    (lambda d: d["training"].update(n_bytes=0), "n_bytes"),
    (lambda d: d["training"].update(merge_counts=[1.5] * 144), "merge_counts"),
    (lambda d: d["training"]["n_tokens"].pop(), "one entry per merge"),
    (lambda d: d["training"].pop("n_tokens"), "keys"),
    (lambda d: d.update(training=[1, 2]), "training"),
    (lambda d: d.update(version=True), "version True"),
    (lambda d: d.update(version="1"), "version '1'"),
    (lambda d: d.update(version=1.0), "version 1.0"),
    (lambda d: d.update(pattern=""), "pattern must not be empty"),
    (lambda d: d.update(pattern="."), r"pattern '\.' does not match every character"),
    (lambda d: d.update(pattern=r"(\w+)|\W"), "capturing groups"),
    (lambda d: d.update(pattern=5), "'pattern' must be a str"),
    (lambda d: d.update(name=None), "'name' must be a str"),
    (lambda d: d.pop("merges"), "missing"),
    (lambda d: d.update(extra=1), "unknown keys"),
    (lambda d: d["merges"][0].__setitem__(2, 256.0), "ids must be ints"),
    (lambda d: d["merges"][0].__setitem__(1, [116]), "ids must be ints"),
    (lambda d: d["merges"].__setitem__(0, "32 116"), "bad merge entry"),
    (lambda d: d.update(special_tokens={ENDOFTEXT: "400"}), "ids must be ints"),
    (lambda d: d.update(special_tokens={ENDOFTEXT: 2**40}), "ids must be ints"),
    (lambda d: d.update(special_tokens={"": 400}), "non-empty strings"),
    (lambda d: d.update(special_tokens=[ENDOFTEXT]), "'special_tokens' must be a dict"),
])
def test_load_raises_value_error_for_any_malformed_content(small_bpe, tmp_path, change, message):
    data = json.loads(small_bpe.save(tmp_path / "tok.json").read_text())
    change(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(tmp_path / "bad.json")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 600) | st.floats(allow_nan=False)
    | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3),
                                                                       children, max_size=3),
    max_leaves=6,
)


def json_paths(value, path=()):
    """Every place in a JSON value, as a tuple of keys/indices."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, child in items:
        yield from json_paths(child, (*path, key))


@pytest.fixture(scope="module")
def tiny_saved() -> dict:
    return BPETokenizer.train("zzzyzzzyzx the cat", 256 + 4).to_json()


@PROPERTY
@given(data=st.data(), replacement=JSON_VALUES)
def test_from_json_raises_only_value_error_for_any_damage(tiny_saved, data, replacement):
    damaged = json.loads(json.dumps(tiny_saved))
    path = data.draw(st.sampled_from(list(json_paths(damaged))[1:]))
    parent = damaged
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = replacement
    try:
        loaded = BPETokenizer.from_json(damaged)
    except ValueError:
        return
    # the damage was harmless (e.g. a new name): the tokenizer must still work
    assert loaded.decode(loaded.encode("zzz the", disallowed_special=())) == "zzz the"


def test_a_pattern_that_skips_characters_is_refused():
    with pytest.raises(ValueError, match=r"pattern '\.' does not match every character"):
        BPETokenizer(pattern=".")  # "." skips line breaks: caught when built
    with pytest.raises(ValueError, match="pattern must not be empty"):
        BPETokenizer(pattern="")
    with pytest.raises(ValueError, match="pattern must not be empty"):
        BPETokenizer.train("abc abc", 258, pattern="")
    # a pattern that passes the check when built but skips a rarer character: caught when
    # the text has one, instead of losing it
    skips_nul = BPETokenizer(pattern=r"[^\x00]")
    assert skips_nul.decode(skips_nul.encode("a b\n")) == "a b\n"
    with pytest.raises(ValueError, match=r"pattern .* skips '\\x00' at position 1"):
        skips_nul.encode("a\x00b")
    with pytest.raises(ValueError, match="pattern"):
        skips_nul.merge_steps("a\x00b", 0)
    with pytest.raises(ValueError, match="pattern"):
        BPETokenizer.train("ab\x00ab", 257, pattern=r"[^\x00]+")


def test_load_rejects_non_json(tmp_path):
    (tmp_path / "x.json").write_bytes(b"\x80\x03}q\x00.")  # a pickle, never unpickled
    with pytest.raises(ValueError):
        BPETokenizer.load(tmp_path / "x.json")


# ---- the project's default tokenizer ----


def test_shakespeare_bpe_is_trained_on_the_train_split_and_cached(corpus, tmp_path):
    import shutil

    from llmhelpers.data import fetch

    shutil.copy(fetch("tiny-shakespeare"), tmp_path)  # a private cache holding the corpus
    tokenizer = shakespeare_bpe(cache=tmp_path)
    assert tokenizer.vocab_size == DEFAULT_VOCAB_SIZE == 512
    assert tokenizer.n_vocab == 513 and tokenizer.special_tokens == {ENDOFTEXT: 512}
    retrained = BPETokenizer.train(train_val_split(corpus)[0], DEFAULT_VOCAB_SIZE)
    assert list(tokenizer.merges.items()) == list(retrained.merges.items())
    assert tokenizer.training_log == retrained.training_log

    [cached] = tmp_path.glob(f"bpe-tiny-shakespeare-v*-{DEFAULT_VOCAB_SIZE}-*.json")
    assert BPETokenizer.load(cached).merges == tokenizer.merges
    cached.write_text("{damaged")
    assert shakespeare_bpe(cache=tmp_path).merges == tokenizer.merges  # retrained
    assert BPETokenizer.load(cached).merges == tokenizer.merges  # and rewritten

    # valid JSON with wrong types inside (this used to raise TypeError, so it was not retrained)
    data = json.loads(cached.read_text())
    data["byte_ids"] = [[b] for b in range(256)]
    cached.write_text(json.dumps(data))
    assert shakespeare_bpe(cache=tmp_path).merges == tokenizer.merges
    assert BPETokenizer.load(cached).merges == tokenizer.merges


# ---- teaching tokenizers ----


def test_char_tokenizer(corpus):
    tokenizer = CharTokenizer.from_text(corpus)
    assert tokenizer.n_vocab == 65
    assert tokenizer.encode("\n !") == [0, 1, 2]  # ids follow the sorted characters
    text = corpus[:1000]
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(text)) == len(text)
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\) at position 3"):
        tokenizer.encode("cafés")
    with pytest.raises(ValueError, match="token id 65"):
        tokenizer.decode([65])


def test_word_tokenizer(corpus):
    assert WordTokenizer.tokenize("O'er the hills, don't stop!\n") == [
        "O'er", "the", "hills", ",", "don't", "stop", "!"]
    tokenizer = WordTokenizer.from_text("the cat sat. The cat ran, the end", max_vocab=4)
    assert tokenizer.words == [UNKNOWN, "the", "cat", "sat"]  # most frequent, then first seen
    assert tokenizer.encode("the dog sat.") == [1, 0, 3, 0]
    assert tokenizer.decode([1, 2, 3]) == "the cat sat"
    assert tokenizer.unknown_words("the dog sat.") == ["dog", "."]
    assert tokenizer.unknown_rate("the dog sat.") == 0.5

    train, validation = train_val_split(corpus)
    full = WordTokenizer.from_text(train)
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    assert full.decode(full.encode(text)) == text.replace("\n", " ")  # line breaks are lost
    assert 0.04 < full.unknown_rate(validation) < 0.06  # 1 token in 20 was never seen
    assert 0.2 < WordTokenizer.from_text(train, max_vocab=1000).unknown_rate(validation) < 0.25
    with pytest.raises(ValueError, match="max_vocab"):
        WordTokenizer.from_text(train, max_vocab=1)
