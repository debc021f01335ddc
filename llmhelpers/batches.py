"""From a stream of token ids to ``(input, target)`` training batches.

A language model learns to predict token ``t + 1`` from tokens ``0..t``. We cut the token
stream into windows of ``context_length`` ids; the target of each window is the same window
shifted one position to the right. This is the one place in the project where targets are
shifted: the loss compares ``logits[:, t]`` with ``targets[:, t]`` and never shifts again.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from llmhelpers.checks import check_positive_int


class SlidingWindowDataset(Dataset):
    """Windows over a token stream: item ``i`` starts at ``i * stride``.

    Each item is ``(input, target)``, both of shape ``(context_length,)``, with
    ``target[t] == input[t + 1]`` inside the window and ``target[-1]`` the token after it.
    """

    def __init__(self, token_ids: Sequence[int] | torch.Tensor, context_length: int, stride: int):
        check_positive_int("context_length", context_length)
        check_positive_int("stride", stride)
        ids = torch.as_tensor(token_ids)
        if ids.numel() == 0:  # an empty list would otherwise become a float tensor
            ids = ids.to(torch.long)
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"token_ids must be integers, got dtype {ids.dtype}")
        self.ids = ids.to(torch.long).flatten()
        if len(self.ids) and int(self.ids.min()) < 0:
            raise ValueError(f"token_ids must be >= 0, found {int(self.ids.min())}")
        if len(self.ids) < context_length + 1:
            raise ValueError(
                f"the text has {len(self.ids)} tokens, too short for one window: "
                f"context_length={context_length} needs at least {context_length + 1} tokens "
                "(the inputs plus one target beyond them)"
            )
        self.context_length = context_length
        self.stride = stride
        self.n_windows = (len(self.ids) - context_length - 1) // stride + 1

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.n_windows <= index < self.n_windows:
            raise IndexError(f"window index {index} out of range for {self.n_windows} windows")
        start = (index % self.n_windows) * self.stride
        window = self.ids[start : start + self.context_length + 1]
        return window[:-1], window[1:]


def make_dataloader(
    token_ids: Sequence[int] | torch.Tensor,
    context_length: int,
    batch_size: int,
    stride: int | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    seed: int = 0,
) -> DataLoader:
    """A ``DataLoader`` of ``(inputs, targets)`` batches, each ``(batch_size, context_length)``.

    ``stride`` defaults to ``context_length`` (windows that touch but do not overlap).
    The order of a shuffled loader depends only on ``seed``, so runs repeat.
    """
    check_positive_int("batch_size", batch_size)
    dataset = SlidingWindowDataset(
        token_ids, context_length, context_length if stride is None else stride
    )
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {len(dataset)} windows available; "
            "lower batch_size or stride, or pass drop_last=False"
        )
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=generator
    )
