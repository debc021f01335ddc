import pytest
import torch

from llmhelpers.batches import SlidingWindowDataset, make_dataloader


def test_targets_are_inputs_shifted_by_exactly_one():
    ids = list(range(100, 130))
    dataset = SlidingWindowDataset(ids, context_length=5, stride=3)
    for i in range(len(dataset)):
        x, y = dataset[i]
        start = i * 3
        assert x.tolist() == ids[start : start + 5]
        assert y.tolist() == ids[start + 1 : start + 6]


def test_window_count_uses_every_full_window():
    # 30 ids, context 5: windows need 6 ids; starts 0,3,...,24 -> 9 windows
    assert len(SlidingWindowDataset(range(30), 5, 3)) == 9
    assert len(SlidingWindowDataset(range(6), 5, 1)) == 1
    with pytest.raises(IndexError):
        SlidingWindowDataset(range(30), 5, 3)[9]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(token_ids=range(5), context_length=5, stride=1), "context_length=5"),
        (dict(token_ids=range(50), context_length=0, stride=1), "context_length"),
        (dict(token_ids=range(50), context_length=4, stride=0), "stride"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SlidingWindowDataset(**kwargs)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", None, True])
def test_sizes_must_be_positive_ints(bad):
    for name in ("context_length", "stride"):
        kwargs = dict(token_ids=range(50), context_length=4, stride=2)
        kwargs[name] = bad
        with pytest.raises((TypeError, ValueError), match=name):
            SlidingWindowDataset(**kwargs)
    with pytest.raises((TypeError, ValueError), match="batch_size"):
        make_dataloader(range(50), 4, bad)


def test_dataloader_stride_zero_is_an_error_not_the_default():
    with pytest.raises(ValueError, match="stride"):
        make_dataloader(range(50), 4, 2, stride=0)


def test_token_ids_must_be_non_negative_integers():
    with pytest.raises(TypeError, match="token_ids"):
        SlidingWindowDataset([0.5] * 20, 4, 1)
    with pytest.raises(ValueError, match="token_ids"):
        SlidingWindowDataset([-1] * 20, 4, 1)


def test_dataloader_shapes_and_seeded_order():
    ids = torch.arange(1000)
    first = [x for x, _ in make_dataloader(ids, 16, 4, seed=7)]
    again = [x for x, _ in make_dataloader(ids, 16, 4, seed=7)]
    other = [x for x, _ in make_dataloader(ids, 16, 4, seed=8)]
    assert first[0].shape == (4, 16)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_dataloader_rejects_batch_larger_than_data():
    with pytest.raises(ValueError, match="batch_size=10"):
        make_dataloader(range(40), 8, 10)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataloader(range(40), 8, 0)
