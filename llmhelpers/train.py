"""Training a GPT to predict the next token: the loss, the optimizer, the schedule and the loop.

The pieces, in the order a learner meets them:

* ``next_token_loss``: cross-entropy between the logits at position ``t`` and the target at
  ``t``. The targets were already shifted by the dataset (``llmhelpers.batches``); nothing
  here shifts again.
* ``make_optimizer``: AdamW, with weight decay only on the weight matrices (not on biases,
  norms or embeddings).
* ``lr_at``: linear warm-up, then cosine decay to ``min_lr``.
* ``Trainer``: the loop. ``train_step`` does one optimizer step (gradient accumulation,
  clipping), ``run`` repeats it with evaluation, samples, a progress bar, callbacks and a
  history, and stops cleanly on a user interrupt.

Every run is seeded, so on a CPU it repeats exactly, and ``Trainer.save`` /
``Trainer.from_checkpoint`` resume a run exactly where it stopped. The same code runs under
``torchrun`` with DistributedDataParallel; see ``main`` for the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llmhelpers.batches import SlidingWindowDataset
from llmhelpers.checkpoint import (
    MANIFEST,
    CheckpointError,
    check_tensor_shapes,
    load_checkpoint,
    read_manifest,
    reading,
    save_checkpoint,
    write_json_atomically,
)
from llmhelpers.checks import check_bool, check_real
from llmhelpers.generate import generate_text


# ---------------------------------------------------------------- the objective
def next_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` under ``logits``; no shifting happens here.

    ``logits``: ``(batch, seq, vocab)``; ``targets``: ``(batch, seq)`` where ``targets[b, t]``
    is the id that should follow position ``t``. Targets equal to ``ignore_index`` are skipped.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (batch, seq, vocab), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(
            f"targets must be (batch, seq) = {tuple(logits.shape[:2])} to match the logits, "
            f"got {tuple(targets.shape)}"
        )
    if targets.numel() == 0 or not bool((targets != ignore_index).any()):
        raise ValueError("no targets to predict: the loss of an empty sequence is undefined")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(
        logits.flatten(0, 1), targets.flatten().long(), ignore_index=ignore_index
    )


def perplexity(loss: float) -> float:
    """``exp(loss)``: the effective number of equally likely choices the model hesitates between."""
    return math.exp(loss)


def loss_per_character(loss_per_token: float, n_tokens: int, n_characters: int) -> float:
    """Convert a per-token loss to nats per character (to compare with character-level models)."""
    if n_tokens <= 0 or n_characters <= 0:
        raise ValueError(f"n_tokens and n_characters must be > 0, got {n_tokens}, {n_characters}")
    return loss_per_token * n_tokens / n_characters


# ---------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """How to train. ``batch_size`` is per micro-batch and per process; one optimizer step
    sees ``batch_size * grad_accum_steps * world_size`` sequences (the global batch)."""

    max_steps: int = 1200
    batch_size: int = 16
    grad_accum_steps: int = 1
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int | None = None  # None: 5% of max_steps (at least 1, at most 100)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float | None = 1.0
    train_stride: int = 1  # windows may start at any token: many more distinct samples
    eval_interval: int = 100
    eval_batches: int = 8
    sample_interval: int = 0  # 0 = no samples during training
    sample_prompt: str = "\n"
    sample_tokens: int = 60
    sample_temperature: float = 0.8
    seed: int = 1337
    device: str = "auto"
    bf16_autocast: bool = False  # bfloat16 autocast, used on CUDA only
    compile: bool = False  # torch.compile the model
    num_threads: int | None = None  # CPU threads while training (None: PyTorch's choice)
    time_limit_s: float | None = None  # stop (and finish the LR decay) after this many seconds
    progress: bool = True

    def __post_init__(self) -> None:
        # Every field is checked here, so a bad value fails now with its name, not at step 1.
        for name in ("max_steps", "batch_size", "grad_accum_steps", "train_stride",
                     "eval_interval", "eval_batches", "sample_tokens"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.warmup_steps is None:
            self.warmup_steps = min(100, max(1, round(0.05 * self.max_steps)))
        for name in ("warmup_steps", "sample_interval"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"warmup_steps must be <= max_steps ({self.max_steps}), got {self.warmup_steps}: "
                "the learning rate would never reach lr nor decay (leave warmup_steps out for "
                "5% of max_steps)"
            )
        _check_int("seed", self.seed, minimum=0, maximum=2**63 - 1)
        if self.num_threads is not None:
            _check_int("num_threads", self.num_threads, minimum=1, allow_none=True)
        for name in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "sample_temperature"):
            _check_finite(name, getattr(self, name))
        for name in ("grad_clip", "time_limit_s"):
            if getattr(self, name) is not None:
                _check_finite(name, getattr(self, name), allow_none=True)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None (off), got {self.grad_clip}")
        if self.sample_temperature < 0:
            raise ValueError(f"sample_temperature must be >= 0, got {self.sample_temperature}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be > 0 or None, got {self.time_limit_s}")
        for name in ("bf16_autocast", "compile", "progress"):
            check_bool(name, getattr(self, name))
        if not isinstance(self.sample_prompt, str) or not self.sample_prompt:
            raise TypeError(f"sample_prompt must be a non-empty str, got {self.sample_prompt!r}")
        if not isinstance(self.device, str) or not re.fullmatch(
            r"auto|cpu|cuda|cuda:\d+|mps", self.device
        ):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps; got {self.device!r}")


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None,
               allow_none: bool = False) -> None:
    """A TypeError unless ``value`` is an int (not a bool), a ValueError outside the range."""
    allowed = f"an int >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    allowed += " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value}")


def _check_finite(name: str, value: object, allow_none: bool = False) -> None:
    """A TypeError unless ``value`` is a real number, a ValueError if it is NaN or infinite."""
    suffix = " or None" if allow_none else ""
    number = check_real(name, value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number{suffix}, got {value}")


def lr_at(step: int, config: TrainConfig, progress: float | None = None) -> float:
    """Learning rate for ``step``: linear warm-up to ``lr``, then cosine decay to ``min_lr``.

    ``progress`` (0..1) overrides how far through the decay we are (used by time-limited runs).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if progress is None:
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- optimizer and device
def parameter_groups(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the parameters that get weight decay, and of those that do not.

    Decay shrinks weights towards 0, a useful pull for the big matrices; biases and norm
    gains (1-D) and embeddings (a lookup table, tied to the output head here) are left alone.
    """
    embedding_ids = {
        id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)
    }
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():  # shared (tied) tensors appear once
        if not parameter.requires_grad:
            continue
        if parameter.dim() < 2 or id(parameter) in embedding_ids:
            no_decay.append(name)
        else:
            decay.append(name)
    return decay, no_decay


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two parameter groups: with and without weight decay.

    On CPU and CUDA it uses PyTorch's fused kernel (one pass over all weights instead of a
    dozen small operations per tensor: several times faster for a small model).
    """
    decay, no_decay = parameter_groups(model)
    parameters = dict(model.named_parameters())
    groups = [
        {"params": [parameters[n] for n in decay], "weight_decay": config.weight_decay},
        {"params": [parameters[n] for n in no_decay], "weight_decay": 0.0},
    ]
    device_type = next(model.parameters()).device.type
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2),
                             fused=device_type in ("cpu", "cuda"))


def choose_device(preference: str = "auto") -> torch.device:
    """CUDA if available, then Apple's MPS, then the CPU; or exactly what ``preference`` names."""
    if preference == "cuda":  # under torchrun, each process takes the GPU of its local rank
        preference = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if preference != "auto":
        device = torch.device(preference)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={preference!r} was asked for but CUDA is not available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device={preference!r} was asked for but MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def distributed_setup() -> tuple[int, int]:
    """``(rank, world_size)``; under ``torchrun`` this joins the process group first."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---------------------------------------------------------------- batches
class BatchSchedule:
    """Which windows form the global batch of each step, as a pure function of the step.

    Every epoch visits the windows in a fresh random order (seeded by ``seed`` and the epoch),
    so a resumed run only needs the step number to continue with exactly the same batches.
    """

    def __init__(self, n_windows: int, global_batch_size: int, seed: int):
        if global_batch_size > n_windows:
            raise ValueError(
                f"the global batch ({global_batch_size} sequences) is larger than the "
                f"{n_windows} training windows; lower batch_size"
            )
        self.n_windows, self.global_batch_size, self.seed = n_windows, global_batch_size, seed
        self.steps_per_epoch = n_windows // global_batch_size
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.n_windows, generator=generator)
        start = position * self.global_batch_size
        return self._order[start : start + self.global_batch_size]


def stack_windows(dataset: SlidingWindowDataset, indices: Sequence[int]):
    """``(inputs, targets)`` of shape ``(len(indices), context_length)``."""
    pairs = [dataset[int(i)] for i in indices]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    dataset: SlidingWindowDataset,
    batch_size: int = 16,
    max_batches: int | None = None,
    autocast: contextlib.AbstractContextManager | None = None,
) -> float:
    """Mean next-token loss over a fixed set of windows (all of them if ``max_batches`` is None).

    Runs in eval mode without gradients and puts the model back in the mode it was in.
    """
    n = len(dataset)
    if max_batches is not None and max_batches * batch_size < n:
        indices = torch.linspace(0, n - 1, max_batches * batch_size).round().long().tolist()
    else:
        indices = list(range(n))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(indices), batch_size):
            inputs, targets = stack_windows(dataset, indices[start : start + batch_size])
            with autocast or contextlib.nullcontext():
                logits = model(inputs.to(device))
            loss = next_token_loss(logits, targets.to(device))
            total += float(loss) * len(inputs)
            count += len(inputs)
    finally:
        model.train(was_training)
    return total / count


# ---------------------------------------------------------------- history
@dataclass
class History:
    """Everything a run logs: per step, per evaluation, and text samples."""

    step: list[int] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)  # {"step": int, "text": str}
    train_seconds: float = 0.0  # time spent in training steps (not evaluation)
    stop_reason: str | None = None  # None, "interrupted", "stopped", "time limit"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> History:
        """The inverse of ``to_dict``; a field of the wrong kind is a ValueError."""
        history = cls(**data)
        for item in dataclasses.fields(cls):
            value = getattr(history, item.name)
            if item.name == "train_seconds":
                ok = check_real("train_seconds", value) >= 0
            elif item.name == "stop_reason":
                ok = value is None or isinstance(value, str)
            else:
                ok = isinstance(value, list)
            if not ok:
                raise ValueError(f"history field {item.name} has the wrong kind: {value!r}")
        return history

    def mean_tokens_per_second(self) -> float:
        return self.tokens_seen[-1] / self.train_seconds if self.train_seconds else 0.0


Callback = Callable[["Trainer", str], None]


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------- the trainer
def check_saved_train_config(manifest: dict, directory: str | os.PathLike) -> None:
    """A checkpoint to resume must record every training setting: one left out would quietly
    become its default, and the run would go on with another schedule."""
    saved = manifest.get("train_config")
    if saved is None:
        raise CheckpointError(f"the checkpoint in {directory} has no training settings "
                              "(train_config): it was not written by a training run")
    missing = sorted({f.name for f in dataclasses.fields(TrainConfig)} - set(saved))
    if missing:
        raise CheckpointError(f"the checkpoint at {directory} is damaged: its train_config "
                              f"lacks {missing}")


@contextlib.contextmanager
def interrupts_set(event: threading.Event) -> Iterator[None]:
    """Inside, Ctrl-C (SIGINT) and SIGTERM set ``event`` instead of ending the process (main
    thread only; elsewhere this does nothing). torchrun answers a second Ctrl-C by sending its
    workers SIGTERM, which must not cut a checkpoint save short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(number, lambda signum, frame: event.set()) for number in signals]
    try:
        yield
    finally:
        for number, handler in zip(signals, previous, strict=True):
            signal.signal(number, handler)


class Trainer:
    """Trains ``model`` on a token stream.

    Creating a trainer seeds Python's, NumPy's and PyTorch's generators with ``config.seed``
    (plus the rank); from then on the run draws from its own copy of PyTorch's random state, so
    it repeats exactly. Callbacks are called as ``callback(trainer, event)`` with event
    ``"step"``, ``"eval"``, ``"sample"`` or ``"end"`` (on rank 0 only).
    """

    def __init__(
        self,
        model: nn.Module,
        train_ids: Sequence[int] | torch.Tensor,
        val_ids: Sequence[int] | torch.Tensor | None,
        config: TrainConfig | None = None,
        tokenizer=None,
        callbacks: Sequence[Callback] = (),
        tokenizer_info: dict | None = None,
    ):
        if config is not None and not isinstance(config, TrainConfig):
            raise TypeError("config must be a TrainConfig (e.g. TrainConfig(max_steps=100)) or "
                            f"None, got {type(config).__name__}")
        self.config = config = config or TrainConfig()
        self.rank, self.world_size = distributed_setup()
        self.device = choose_device(config.device)
        seed_everything(config.seed + self.rank)
        self._rng_state = self._get_torch_rng()  # this run's own random stream (dropout)
        self._rng_active = False
        self.model = model.to(self.device)
        self.context_length = model.config.context_length
        self.train_data = SlidingWindowDataset(train_ids, self.context_length, config.train_stride)
        self.val_data = (
            None if val_ids is None
            else SlidingWindowDataset(val_ids, self.context_length, self.context_length)
        )
        vocab_size = getattr(model.config, "real_vocab_size", None)
        if vocab_size is not None:  # checked once here, so a compiled model need not check
            for name, data in (("train_ids", self.train_data), ("val_ids", self.val_data)):
                if data is not None and int(data.ids.max()) >= vocab_size:
                    raise ValueError(
                        f"{name} holds id {int(data.ids.max())}, outside the model's vocabulary: "
                        f"ids must be in [0, {vocab_size}); was the text encoded with another "
                        "tokenizer?"
                    )
        self.global_batch_size = config.batch_size * config.grad_accum_steps * self.world_size
        self.batches = BatchSchedule(len(self.train_data), self.global_batch_size, config.seed)
        self.optimizer = make_optimizer(self.model, config)
        self.tokenizer = tokenizer
        self.tokenizer_info = tokenizer_info
        self.callbacks = list(callbacks)
        self.history = History()
        self.step = 0
        self.stop_requested = False
        self.interrupt = threading.Event()  # Ctrl-C under DDP (see interrupts_stop_every_rank)
        self._elapsed = 0.0  # training seconds so far, the same on every rank
        self.checkpoint_dir: Path | None = None  # with checkpoint_interval > 0: save every N steps
        self.checkpoint_interval = 0
        self.data_info: dict | None = None  # the corpus settings, saved for --resume
        self.forward_model = self.model
        if config.compile:
            self.forward_model = torch.compile(self.forward_model)
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = nn.parallel.DistributedDataParallel(
                self.forward_model, device_ids=device_ids
            )

    # -- small helpers
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        use_bf16 = self.config.bf16_autocast and self.device.type == "cuda"
        if use_bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def micro_batches(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share of the global batch of ``step``, cut into micro-batches."""
        share = self.config.batch_size * self.config.grad_accum_steps
        mine = self.batches.indices(step)[self.rank * share : (self.rank + 1) * share]
        size = self.config.batch_size
        for start in range(0, share, size):
            inputs, targets = stack_windows(self.train_data, mine[start : start + size])
            yield inputs.to(self.device), targets.to(self.device)

    def _no_sync(self, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        # Under DDP, only the last micro-batch's backward all-reduces the gradients.
        if self.world_size > 1 and not last_micro_batch:
            return self.forward_model.no_sync()
        return contextlib.nullcontext()

    def current_lr(self) -> float:
        """The learning rate for the next step (the decay follows the clock with a time limit)."""
        progress = None
        if self.config.time_limit_s is not None:
            by_steps = (self.step - self.config.warmup_steps) / max(
                1, self.config.max_steps - self.config.warmup_steps
            )
            progress = max(by_steps, self._elapsed / self.config.time_limit_s)
        return lr_at(self.step, self.config, progress)

    def request_stop(self) -> None:
        """Ask ``run`` to stop after the current step (the stop button calls this)."""
        self.stop_requested = True

    @contextlib.contextmanager
    def interrupts_stop_every_rank(self) -> Iterator[None]:
        """Under DDP, turn Ctrl-C (SIGINT) into a stop request that every rank obeys at the
        same step, so rank 0 can save and all processes exit together.

        A KeyboardInterrupt raised at once would catch the ranks at different points: one
        would wait forever in a collective (all-reduce, barrier) that another never joins.
        torchrun passes the signal on to every process. With one process this does nothing:
        Ctrl-C raises KeyboardInterrupt as usual.
        """
        with (interrupts_set(self.interrupt) if self.world_size > 1 else contextlib.nullcontext()):
            yield

    def _get_torch_rng(self) -> list[torch.Tensor]:
        states = [torch.get_rng_state()]
        if self.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.device))
        return states

    def _set_torch_rng(self, states: list[torch.Tensor]) -> None:
        torch.set_rng_state(states[0])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(states[1], self.device)

    @contextlib.contextmanager
    def own_random_stream(self) -> Iterator[None]:
        """Run with this trainer's random state (used by dropout), then put the caller's back.

        So a run repeats exactly whatever else drew random numbers between calls to ``run``.
        """
        if self._rng_active:
            yield
            return
        outside = self._get_torch_rng()
        self._set_torch_rng(self._rng_state)
        self._rng_active = True
        try:
            yield
        finally:
            self._rng_state = self._get_torch_rng()
            self._set_torch_rng(outside)
            self._rng_active = False

    @contextlib.contextmanager
    def cpu_threads(self) -> Iterator[None]:
        """Use ``config.num_threads`` CPU threads inside, and the caller's number after."""
        before = torch.get_num_threads()
        if self.config.num_threads is not None:
            torch.set_num_threads(self.config.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _emit(self, event: str) -> None:
        if self.is_main:
            for callback in self.callbacks:
                callback(self, event)

    # -- one optimizer step
    def train_step(self) -> tuple[float, float]:
        """One optimizer step at the current learning rate; returns ``(loss, grad_norm)``."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.current_lr()
        accum = self.config.grad_accum_steps
        loss_sum = torch.zeros((), device=self.device)
        for i, (inputs, targets) in enumerate(self.micro_batches(self.step)):
            with self._no_sync(last_micro_batch=i == accum - 1), self.autocast():
                logits = self.forward_model(inputs)
                loss = next_token_loss(logits, targets) / accum  # k small batches = 1 big one
            loss.backward()
            loss_sum += loss.detach()
        if self.world_size > 1:  # report the loss of the whole global batch
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        loss_value = float(loss_sum)
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDivergedError(
                f"the training loss became {loss_value} at step {self.step}: try a lower learning "
                f"rate (lr={self.config.lr}), a longer warm-up, or gradient clipping "
                f"(grad_clip={self.config.grad_clip}), and check the data for bad ids"
            )
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm

    # -- evaluation and samples
    def evaluate(self, max_batches: int | None = None) -> float:
        """Validation loss on ``eval_batches`` fixed batches (``max_batches`` overrides) of
        ``batch_size * world_size`` windows, so a torchrun job evaluates what one process would."""
        if self.val_data is None:
            raise ValueError("this trainer has no validation data (val_ids=None)")
        batches = self.config.eval_batches if max_batches is None else max_batches
        size = self.config.batch_size * self.world_size
        return evaluate_loss(self.model, self.val_data, size, batches, self.autocast())

    def sample(self, prompt: str | None = None, max_new_tokens: int | None = None) -> str:
        """Text from the model (needs a tokenizer); seeded, so it does not disturb training."""
        if self.tokenizer is None:
            raise ValueError("sampling needs a tokenizer: pass tokenizer= to the Trainer")
        return generate_text(
            self.model, self.tokenizer, self.config.sample_prompt if prompt is None else prompt,
            max_new_tokens or self.config.sample_tokens, self.config.sample_temperature,
            seed=self.config.seed,
        )

    # -- the loop
    def run(self, steps: int | None = None) -> History:
        """Train ``steps`` more steps (default: up to ``max_steps``); returns the history.

        Ctrl-C (or the stop button) ends the run cleanly after the current step: the model and
        history so far are kept. A NaN/inf loss raises ``TrainingDivergedError``.
        """
        if isinstance(steps, bool) or not isinstance(steps, int | None) or (steps or 0) < 0:
            raise ValueError(f"steps must be an int >= 0 or None (up to max_steps), got {steps!r}")
        cfg, history = self.config, self.history
        end = cfg.max_steps if steps is None else min(self.step + steps, cfg.max_steps)
        self.stop_requested, history.stop_reason = False, None
        show = cfg.progress and self.is_main
        # A calm bar (a redraw every 2 s at most): every redraw is a message to the notebook.
        bar = tqdm(total=end - self.step, desc="training", disable=not show, mininterval=2.0)
        with self.own_random_stream(), self.cpu_threads(), self.interrupts_stop_every_rank():
            try:
                while self.step < end and not self._should_stop():
                    started = time.perf_counter()
                    loss, grad_norm = self.train_step()
                    self.step += 1
                    self._log_step(loss, grad_norm, time.perf_counter() - started)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                    self._emit("step")
                    if self.step % cfg.eval_interval == 0 or self.step == cfg.max_steps:
                        self._evaluate_and_log()
                    if cfg.sample_interval and self.step % cfg.sample_interval == 0:
                        self._sample_and_log()
                    if self.checkpoint_interval and self.step % self.checkpoint_interval == 0:
                        self.save(self.checkpoint_dir)
                stopped_early = history.stop_reason in ("time limit", "stopped")
                if stopped_early and self.step and self.step not in history.eval_step[-1:]:
                    self._evaluate_and_log()  # so the reported val loss is of the final model
            except KeyboardInterrupt:
                self.optimizer.zero_grad(set_to_none=True)
                history.stop_reason = "interrupted"
            finally:
                bar.close()
        self._emit("end")
        return history

    def _evaluate_and_log(self) -> None:
        if self.is_main and self.val_data is not None:
            val_loss = self.evaluate()  # first, so an interrupt here leaves the history whole
            self.history.eval_step.append(self.step)
            self.history.val_loss.append(val_loss)
            self._emit("eval")

    def _sample_and_log(self) -> None:
        if self.is_main and self.tokenizer is not None:
            text = self.sample()
            self.history.samples.append({"step": self.step, "text": text})
            self._emit("sample")

    def _log_step(self, loss: float, grad_norm: float, seconds: float) -> None:
        history = self.history
        tokens = self.global_batch_size * self.context_length
        history.step.append(self.step)
        history.tokens_seen.append((history.tokens_seen or [0])[-1] + tokens)
        history.train_loss.append(loss)
        history.lr.append(self.optimizer.param_groups[0]["lr"])
        history.grad_norm.append(grad_norm)
        history.tokens_per_s.append(tokens / seconds)
        history.train_seconds += seconds

    def _should_stop(self) -> bool:
        requested, interrupted = self.stop_requested, self.interrupt.is_set()
        self._elapsed = self.history.train_seconds
        if self.world_size > 1:
            # Every rank must agree to stop (or the others would wait forever) and use the same
            # elapsed time for a time-based learning rate (or their weights would drift apart).
            shared = torch.tensor([float(requested), float(interrupted), self._elapsed],
                                  device=self.device)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            requested, interrupted = bool(shared[0]), bool(shared[1])
            self._elapsed = float(shared[2])
            if interrupted:
                self.interrupt.set()
        limit = self.config.time_limit_s
        timed_out = limit is not None and self._elapsed >= limit
        stop = requested or interrupted or timed_out
        if stop and self.history.stop_reason is None:
            self.history.stop_reason = (
                "interrupted" if interrupted else "stopped" if requested else "time limit"
            )
        return stop

    # -- checkpoints
    def save(self, directory: str | os.PathLike) -> Path | None:
        """Write an exact-resume checkpoint and ``history.json`` (rank 0 writes, others wait)."""
        path = None
        if self.is_main:
            with self.own_random_stream():  # the checkpoint stores this run's random state
                path = save_checkpoint(
                    directory, self.model, self.optimizer, step=self.step,
                    history=self.history.to_dict(), tokenizer=self.tokenizer_info,
                    train_config=dataclasses.asdict(self.config),
                    extra={"world_size": self.world_size,
                           **({"data": self.data_info} if self.data_info else {})},
                )
            write_json_atomically(path / "history.json", self.history.to_dict())
        if self.world_size > 1:
            dist.barrier()
        return path

    @classmethod
    def from_checkpoint(
        cls,
        directory: str | os.PathLike,
        train_ids: Sequence[int] | torch.Tensor,
        val_ids: Sequence[int] | torch.Tensor | None,
        tokenizer=None,
        callbacks: Sequence[Callback] = (),
        **config_changes,
    ) -> Trainer:
        """Rebuild the trainer saved in ``directory`` and restore model, optimizer, RNG and step.

        ``config_changes`` may change e.g. ``max_steps`` or ``device``; the model config is
        the saved one.
        """
        from llmhelpers.model import GPTConfig, GPTModel

        manifest = read_manifest(directory)
        check_saved_train_config(manifest, directory)
        with reading(directory, "train_config"):
            config = TrainConfig(**{**manifest["train_config"], **config_changes})
        with reading(directory, "model_config"):
            model_config = GPTConfig.from_dict(manifest["model_config"])
        check_tensor_shapes(directory, manifest, model_config)  # before allocating the model
        trainer = cls(
            GPTModel(model_config), train_ids, val_ids, config, tokenizer, callbacks,
            manifest["tokenizer"],
        )
        with trainer.own_random_stream():  # the saved state becomes this run's stream
            loaded = load_checkpoint(directory, trainer.model, trainer.optimizer, restore_rng=True)
        trainer.step = loaded.step
        with reading(directory, "history"):
            trainer.history = History.from_dict(loaded.history or {})
        return trainer


# ---------------------------------------------------------------- speed: tokens/s and MFU
def matmul_peak_flops(
    size: int = 1024, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
    repeats: int = 5,
) -> float:
    """The best FLOP/s of ``size x size`` matrix multiplies here: the ceiling for training."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b  # warm-up
    n_per_timing = max(1, int(2e9 // (2 * size**3)))  # about 2 GFLOP per timing
    best = math.inf
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(n_per_timing):
            a @ b
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - started) / n_per_timing)
    return 2 * size**3 / best


def model_flops_utilization(tokens_per_second: float, flops_per_token: float, peak: float) -> float:
    """The fraction of the matmul peak that training achieves (MFU). ``flops_per_token`` from
    ``llmhelpers.model.training_flops_per_token``."""
    return tokens_per_second * flops_per_token / peak


# ---------------------------------------------------------------- tokenizers and data
def tokenizer_identity(tokenizer, name: str, **settings) -> dict:
    """What a checkpoint records about its tokenizer: a name to rebuild it and a fingerprint."""
    probe = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    fingerprint = hashlib.sha256(json.dumps(list(tokenizer.encode(probe))).encode()).hexdigest()
    return {"name": name, "settings": settings, "n_vocab": tokenizer.n_vocab,
            "fingerprint": fingerprint[:16]}


def tokenizer_from_identity(identity: dict | None):
    """Rebuild the tokenizer a checkpoint names, and check it is the same one."""
    from llmhelpers import tokenizer as tokenizer_module

    if identity is None:
        raise ValueError("the checkpoint does not name a tokenizer")
    builders = {
        "shakespeare-bpe": lambda s: tokenizer_module.shakespeare_bpe(**s),
        "gpt2": lambda s: tokenizer_module.gpt2_tokenizer(),
    }
    if not isinstance(identity, dict) or identity.get("name") not in builders:
        name = identity.get("name") if isinstance(identity, dict) else identity
        raise ValueError(f"unknown tokenizer name {name!r}; known: {sorted(builders)}")
    tokenizer = builders[identity["name"]](identity.get("settings") or {})
    rebuilt = tokenizer_identity(tokenizer, identity["name"], **(identity.get("settings") or {}))
    if rebuilt["fingerprint"] != identity.get("fingerprint"):
        raise ValueError(
            f"the tokenizer {identity['name']!r} built here encodes text differently from the "
            "one the checkpoint was trained with"
        )
    return tokenizer


@dataclass
class TokenizedCorpus:
    """A corpus split 90/10 by characters, each part encoded to a tensor of ids."""

    train_ids: torch.Tensor
    val_ids: torch.Tensor
    n_train_chars: int
    n_val_chars: int

    @property
    def val_chars_per_token(self) -> float:
        return self.n_val_chars / len(self.val_ids)


def tokenize_corpus(tokenizer, text: str, train_fraction: float = 0.9) -> TokenizedCorpus:
    """Split ``text`` (first 90% train, the rest validation) and encode both parts.

    Special-token strings in the text are encoded as plain text (``encode_ordinary``).
    """
    from llmhelpers.data import train_val_split

    train_text, val_text = train_val_split(text, train_fraction)
    encode = getattr(tokenizer, "encode_ordinary", tokenizer.encode)
    return TokenizedCorpus(
        train_ids=torch.tensor(encode(train_text), dtype=torch.long),
        val_ids=torch.tensor(encode(val_text), dtype=torch.long),
        n_train_chars=len(train_text),
        n_val_chars=len(val_text),
    )


# ---------------------------------------------------------------- the default run
DEFAULT_VOCAB_SIZE = 512
TEXT_CORPORA = ("tiny-shakespeare",)
"""Datasets in ``llmhelpers.data`` that are text to train on (the others are tokenizer files)."""


# The model is GPTConfig.cpu_default. Small batches and many steps win (batch 8 < 16 < 32 in
# loss after the same time). One CPU thread: this model's matrix products are too small to gain
# from more, and several threads slow to a crawl as soon as another program competes for the
# cores. To use more cores, run one process per core with torchrun (see ``main``).
# A 100-step warm-up steadies the start (about 0.02 nats/char better than 20 steps, on two seeds).
DEFAULT_TRAINING = {"max_steps": 2000, "batch_size": 8, "lr": 5e-3, "min_lr": 5e-4,
                    "eval_interval": 100, "eval_batches": 16, "num_threads": 1}
# (warmup_steps is left to TrainConfig: 5% of max_steps, so 100 here, fewer for short runs)


def default_model_config(vocab_size: int):
    """The notebook-4 model: ``GPTConfig.cpu_default(vocab_size)`` (4 blocks of width 64)."""
    from llmhelpers.model import GPTConfig

    return GPTConfig.cpu_default(vocab_size)


def default_train_config(**changes) -> TrainConfig:
    """The notebook-4 training run (``DEFAULT_TRAINING``): a minute or two on a 2-core CPU."""
    return TrainConfig(**{**DEFAULT_TRAINING, **changes})


def default_trainer(callbacks: Sequence[Callback] = (), **train_changes) -> Trainer:
    """A seeded trainer for the default model on tiny-shakespeare with the default tokenizer."""
    from llmhelpers.data import load_text
    from llmhelpers.model import GPTModel
    from llmhelpers.tokenizer import shakespeare_bpe

    tokenizer = shakespeare_bpe(DEFAULT_VOCAB_SIZE)
    corpus = tokenize_corpus(tokenizer, load_text("tiny-shakespeare"))
    config = default_train_config(**train_changes)
    seed_everything(config.seed)
    model = GPTModel(default_model_config(tokenizer.n_vocab))
    info = tokenizer_identity(tokenizer, "shakespeare-bpe", vocab_size=DEFAULT_VOCAB_SIZE)
    return Trainer(model, corpus.train_ids, corpus.val_ids, config, tokenizer, callbacks, info)


def _default_cache_path(trainer: Trainer, root: str | os.PathLike | None = None) -> Path:
    from llmhelpers.data import cache_dir

    root = Path(root) if root is not None else cache_dir() / "checkpoints"
    # Only what changes the trained weights: not logging, evaluation, samples or threads.
    ignored = {"progress", "eval_interval", "eval_batches", "sample_interval", "sample_prompt",
               "sample_tokens", "sample_temperature", "device", "num_threads", "compile"}
    run = {k: v for k, v in dataclasses.asdict(trainer.config).items() if k not in ignored}
    key = json.dumps([trainer.model.config.to_dict(), run, trainer.tokenizer_info], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return root / f"shakespeare-default-{digest}"


def cache_default_model(trainer: Trainer, root: str | os.PathLike | None = None) -> Path | None:
    """Store a finished default run where ``pretrained_shakespeare_model`` looks for it.

    The directory name is a hash of the model config, training config and tokenizer, so a
    changed configuration never picks up an old model. ``root`` defaults to the data cache.
    """
    if trainer.step < trainer.config.max_steps:
        return None  # stopped early: not the default model
    return trainer.save(_default_cache_path(trainer, root))


def pretrained_shakespeare_model(progress: bool = True, root: str | os.PathLike | None = None):
    """The notebook-4 default model, trained on tiny-shakespeare, in eval mode.

    Loaded from the cache when a finished run with the same configuration exists; otherwise
    trained now (deterministically, a minute or two) and cached for next time. Its tokenizer
    is ``llmhelpers.tokenizer.shakespeare_bpe()``.
    """
    trainer = default_trainer(progress=progress)
    path = _default_cache_path(trainer, root)
    if (path / "checkpoint.json").exists():
        try:
            load_checkpoint(path, trainer.model)
            return trainer.model.eval()
        except (ValueError, OSError):
            pass  # a damaged or outdated cache: train again
    trainer.run()
    cache_default_model(trainer, root)
    return trainer.model.eval()


# ---------------------------------------------------------------- command line
DATA_FIELDS = ("corpus", "text_file", "tokenizer", "vocab_size")
MODEL_FIELDS = ("context_length", "d_model", "n_heads", "n_layers", "dropout")
# Training settings that do not change the weights a run produces (so changing them on resume
# keeps the continuation exact).
_HARMLESS_TRAIN_FIELDS = {"progress", "eval_interval", "eval_batches", "sample_interval",
                          "sample_prompt", "sample_tokens", "sample_temperature", "device",
                          "num_threads", "compile"}


def _build_parser() -> argparse.ArgumentParser:
    from llmhelpers.model import GPTConfig

    parser = argparse.ArgumentParser(
        prog="python -m llmhelpers.train",
        description="Train a GPT on a text corpus; writes checkpoints and history.json to --out. "
        "Runs unchanged under torchrun --nproc_per_node=N (DistributedDataParallel).",
    )
    parser.add_argument("--config", help="a JSON file with 'data', 'model' and 'train' sections; "
                        "flags given on the command line override it")
    parser.add_argument("--out", required=True, help="output directory (checkpoint, history)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the checkpoint in --out (its corpus, tokenizer and model)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run even if --out already holds a checkpoint")
    data = parser.add_argument_group("data")
    data.add_argument("--corpus", help="a text dataset from llmhelpers.data: "
                      + ", ".join(TEXT_CORPORA) + f" (default {TEXT_CORPORA[0]})")
    data.add_argument("--text-file", help="train on this UTF-8 text file instead")
    data.add_argument("--tokenizer", choices=["shakespeare-bpe", "gpt2"],
                      help="default shakespeare-bpe (trained on the corpus, cached)")
    data.add_argument("--vocab-size", type=int, help="for shakespeare-bpe (default 512)")
    model = parser.add_argument_group("model (default: the notebook-4 model, cpu_default)")
    model.add_argument("--gpt2-size", choices=["124M", "355M", "774M", "1558M"],
                       help="GPT-2's shape and 50,257-id vocabulary (needs --tokenizer gpt2)")
    cpu, run = GPTConfig.cpu_default(vocab_size=2), default_train_config()  # for the help
    model_help = {"context_length": f"tokens the model sees at once (default {cpu.context_length})",
                  "d_model": f"width of every hidden vector (default {cpu.d_model})",
                  "n_heads": f"attention heads; must divide --d-model (default {cpu.n_heads})",
                  "n_layers": f"transformer blocks (default {cpu.n_layers})"}
    for name, text in model_help.items():
        model.add_argument("--" + name.replace("_", "-"), type=int, help=text)
    model.add_argument("--dropout", type=float, help=f"in [0, 1) (default {cpu.dropout})")
    train = parser.add_argument_group("training (default: the notebook-4 run, DEFAULT_TRAINING)")
    train.add_argument("--steps", type=int, dest="max_steps",
                       help="optimizer steps; the learning-rate schedule ends here "
                       f"(default {run.max_steps})")
    int_help = {"batch_size": f"sequences per micro-batch and process (default {run.batch_size})",
                "grad_accum_steps": "micro-batches per optimizer step "
                                    f"(default {run.grad_accum_steps})",
                "warmup_steps": "linear learning-rate warm-up "
                                "(default 5%% of --steps, at most 100)",
                "eval_interval": f"evaluate every N steps (default {run.eval_interval})",
                "eval_batches": f"validation batches per evaluation (default {run.eval_batches})",
                "sample_interval": "print a sample every N steps (default 0: never)",
                "seed": f"for weights, batches and sampling (default {run.seed})",
                "num_threads": f"CPU threads per process (default {run.num_threads})"}
    for name, text in int_help.items():
        train.add_argument("--" + name.replace("_", "-"), type=int, help=text)
    float_help = {"lr": f"peak learning rate (default {run.lr})",
                  "min_lr": f"learning rate at the end of the cosine decay (default {run.min_lr})",
                  "weight_decay": "AdamW weight decay on weight matrices "
                                  f"(default {run.weight_decay})",
                  "grad_clip": f"clip the gradient norm to this (default {run.grad_clip})",
                  "time_limit_s": "stop after this many seconds of training, the schedule "
                  "fitted to it"}
    for name, text in float_help.items():
        train.add_argument("--" + name.replace("_", "-"), type=float, help=text)
    train.add_argument("--device", help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, "
                       "cuda:N or mps")
    train.add_argument("--bf16-autocast", action="store_true", default=None,
                       help="bfloat16 autocast (CUDA only)")
    train.add_argument("--compile", action="store_true", default=None,
                       help="torch.compile the model")
    train.add_argument("--no-progress", action="store_false", dest="progress", default=None,
                       help="no progress bar")
    train.add_argument("--stop-at", type=int, metavar="STEP",
                       help="stop at this step (the schedule still runs to --steps); "
                       "continue later with --resume")
    train.add_argument("--checkpoint-interval", type=int, default=0,
                       help="also save every N steps (default: only at the end)")
    return parser


def _settings_from(args: argparse.Namespace) -> dict[str, dict]:
    """The explicitly given settings (config file, then flags), by section."""
    settings: dict[str, dict] = {"data": {}, "model": {}, "train": {}}
    if args.config:
        try:
            loaded = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except OSError as error:
            raise ValueError(f"--config {args.config} cannot be read: {error.strerror}") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"--config {args.config} is not valid JSON: {error}") from error
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {args.config} must hold a JSON object with 'data', "
                             f"'model' and 'train' sections, got {type(loaded).__name__}")
        unknown = sorted(set(loaded) - set(settings))
        if unknown:
            raise ValueError(f"--config {args.config}: unknown sections {unknown}; "
                             "allowed: 'data', 'model', 'train'")
        for section in settings:
            given = loaded.get(section, {})
            if not isinstance(given, dict):
                raise ValueError(f"--config {args.config}: section {section!r} must be a JSON "
                                 f"object, got {type(given).__name__}")
            settings[section].update(given)
        from llmhelpers.model import GPTConfig

        allowed = {"data": list(DATA_FIELDS),
                   "model": ["gpt2_size", *(f.name for f in dataclasses.fields(GPTConfig))],
                   "train": [f.name for f in dataclasses.fields(TrainConfig)]}
        for section, names in allowed.items():
            unknown = sorted(set(settings[section]) - set(names))
            if unknown:
                raise ValueError(f"--config {args.config}: unknown {section!r} settings "
                                 f"{unknown}; allowed: {names} (with underscores)")
    flags = {k: v for k, v in vars(args).items() if v is not None}
    settings["data"].update({k: flags[k] for k in DATA_FIELDS if k in flags})
    settings["model"].update({k: flags[k] for k in ("gpt2_size", *MODEL_FIELDS) if k in flags})
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings["train"].update({k: v for k, v in flags.items() if k in train_fields})
    return settings


def _normalised_data(data: dict) -> dict:
    """Corpus and tokenizer settings with defaults filled in and unused ones set to None."""
    data = {"corpus": "tiny-shakespeare", "text_file": None, "tokenizer": "shakespeare-bpe",
            "vocab_size": DEFAULT_VOCAB_SIZE, **data}
    for name in ("corpus", "text_file", "tokenizer"):
        if data[name] is not None and not isinstance(data[name], str):
            raise TypeError(f"{name} must be a string, got {type(data[name]).__name__} "
                            f"{data[name]!r}")
    if data["text_file"]:
        data["text_file"] = str(Path(data["text_file"]).resolve())
        data["corpus"] = None
    elif data["corpus"] not in TEXT_CORPORA:
        raise ValueError(f"--corpus must be one of {list(TEXT_CORPORA)} (or use --text-file), "
                         f"got {data['corpus']!r}")
    if data["tokenizer"] == "gpt2":
        data["vocab_size"] = None
    return data


def _build_tokenizer(data: dict):
    from llmhelpers import tokenizer as tokenizer_module

    if data["tokenizer"] == "gpt2":
        tokenizer, settings = tokenizer_module.gpt2_tokenizer(), {}
    elif data["tokenizer"] == "shakespeare-bpe":
        tokenizer = tokenizer_module.shakespeare_bpe(data["vocab_size"])
        settings = {"vocab_size": data["vocab_size"]}
    else:
        raise ValueError(
            f"tokenizer must be 'shakespeare-bpe' or 'gpt2', got {data['tokenizer']!r}"
        )
    return tokenizer, tokenizer_identity(tokenizer, data["tokenizer"], **settings)


def _resume_data(manifest: dict, given: dict, out: Path) -> dict:
    """The checkpoint's corpus/tokenizer settings; a conflicting given one is an error."""
    saved = (manifest.get("extra") or {}).get("data")
    if saved is None:  # an older checkpoint: only the tokenizer was recorded
        identity = manifest.get("tokenizer") or {}
        if not identity.get("name"):
            raise CheckpointError(f"the checkpoint in {out} records no tokenizer or corpus")
        saved = _normalised_data({"tokenizer": identity["name"], **identity.get("settings", {}),
                                  **{k: given[k] for k in ("corpus", "text_file") if k in given}})
    given_full = _normalised_data(given)
    conflicts = [
        f"{name}: checkpoint {saved.get(name)!r}, given {given_full[name]!r}"
        for name in DATA_FIELDS
        if name in given and given_full[name] != saved.get(name)
    ]
    if "corpus" in given and saved.get("text_file") and "text_file" not in given:
        conflicts.append(f"text_file: checkpoint {saved['text_file']!r}, given None "
                         f"(--corpus {given['corpus']!r})")
    if conflicts:
        raise ValueError("--resume: these settings differ from the checkpoint in "
                         f"{out} (leave them out to use the checkpoint's): " + "; ".join(conflicts))
    return saved


def _check_resume_model(manifest: dict, given: dict, out: Path) -> None:
    from llmhelpers.model import GPTConfig

    saved = manifest["model_config"]
    given = dict(given)
    if "gpt2_size" in given:
        size = given.pop("gpt2_size")
        gpt2 = GPTConfig.gpt2(size).to_dict()
        given = {**{k: gpt2[k] for k in MODEL_FIELDS if k != "dropout"}, **given}
    differing = [f"{name}: checkpoint {saved.get(name)!r}, given {value!r}"
                 for name, value in given.items() if saved.get(name) != value]
    if differing:
        raise ValueError("--resume cannot change the model; these differ from the checkpoint in "
                         f"{out}: " + "; ".join(differing))


def _resume_notices(manifest: dict, given: dict, world_size: int = 1) -> list[str]:
    saved = manifest.get("train_config") or {}
    notices = []
    saved_world_size = (manifest.get("extra") or {}).get("world_size", 1)
    if saved_world_size != world_size:
        def global_batch(settings: dict, processes: int) -> int:
            return settings["batch_size"] * settings["grad_accum_steps"] * processes

        notices.append(
            f"note: the checkpoint was trained with {saved_world_size} process(es), this run "
            f"uses {world_size}: the global batch changes from "
            f"{global_batch(saved, saved_world_size)} to "
            f"{global_batch({**saved, **given}, world_size)} sequences per step "
            "(the continuation is then not exactly an uninterrupted run)"
        )
    for name, value in given.items():
        if name in saved and saved[name] != value:
            exactness = ("" if name in _HARMLESS_TRAIN_FIELDS
                         else " (the continuation is then not exactly an uninterrupted run)")
            notices.append(f"note: {name}={value!r} overrides the checkpoint's "
                           f"{saved[name]!r}{exactness}")
    return notices


def _check_output_dir(out: Path) -> None:
    """Fail before training, not after it, when ``--out`` cannot hold a checkpoint."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; it must be a directory (new or existing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--out {out} cannot be created: {error.strerror}") from error
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} is not writable")


def _read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"--text-file {path} cannot be read: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"--text-file {path} is not UTF-8 text (byte {error.start}: "
                         f"{error.reason})") from error


def _make_trainer(args: argparse.Namespace) -> Trainer:
    """Everything before training: settings, checks, corpus, tokenizer, model, trainer."""
    from llmhelpers.data import load_text
    from llmhelpers.model import GPTConfig, GPTModel

    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    if args.stop_at is not None and args.stop_at < 0:
        raise ValueError(f"--stop-at must be >= 0, got {args.stop_at}")
    if args.checkpoint_interval < 0:
        raise ValueError(f"--checkpoint-interval must be >= 0, got {args.checkpoint_interval}")
    settings = _settings_from(args)
    out = Path(args.out)
    manifest = None
    if args.resume:
        manifest = read_manifest(out)  # CheckpointError when missing or damaged
        check_saved_train_config(manifest, out)
        data = _resume_data(manifest, settings["data"], out)
        with reading(out, "data settings (extra.data)"):
            data = _normalised_data(data)
        _check_resume_model(manifest, settings["model"], out)
        with reading(out, "train_config"):
            saved_config = TrainConfig(**manifest["train_config"])
        resumed = TrainConfig(**{**manifest["train_config"], **settings["train"]})  # validate
        if resumed.max_steps < manifest["step"]:
            raise ValueError(f"--steps {resumed.max_steps} is below the checkpoint's step "
                             f"{manifest['step']} in {out}: nothing to train (--steps is the "
                             "total, not the number of steps more; the checkpoint's run had "
                             f"--steps {saved_config.max_steps})")
    else:
        if (out / MANIFEST).exists() and not args.overwrite:
            raise ValueError(f"--out {out} already holds a training run (checkpoint.json); "
                             "pass --resume to continue it or --overwrite to replace it")
        data = _normalised_data(settings["data"])
        config = default_train_config(**settings["train"])
        if "gpt2_size" in settings["model"] and data["tokenizer"] != "gpt2":
            raise ValueError(
                "--gpt2-size builds GPT-2's 50,257-id output layer: add --tokenizer gpt2, or "
                "give --d-model, --n-heads and --n-layers for that shape with the "
                f"{data['tokenizer']} tokenizer"
            )
    _check_output_dir(out)

    tokenizer, info = _build_tokenizer(data)
    if manifest is not None and manifest.get("tokenizer"):
        saved_info = manifest["tokenizer"]
        for name in ("fingerprint", "n_vocab"):
            if saved_info.get(name) != info[name]:
                raise CheckpointError(
                    f"--resume: the tokenizer {info['name']!r} rebuilt here does not match the "
                    f"checkpoint's ({name}: checkpoint {saved_info.get(name)!r}, rebuilt "
                    f"{info[name]!r}): it would encode the corpus differently"
                )
    if data["text_file"]:
        text = _read_text_file(Path(data["text_file"]))
    else:
        text = load_text(data["corpus"])
    corpus = tokenize_corpus(tokenizer, text)

    if manifest is not None:
        trainer = Trainer.from_checkpoint(
            out, corpus.train_ids, corpus.val_ids, tokenizer, **settings["train"]
        )
        with reading(out, "train_config"):
            notices = _resume_notices(manifest, settings["train"], trainer.world_size)
        for notice in notices if trainer.is_main else ():
            print(notice, file=sys.stderr)
    else:
        model_settings = dict(settings["model"])
        if "gpt2_size" in model_settings:
            size = model_settings.pop("gpt2_size")
            model_config = GPTConfig.gpt2(
                size, use_sdpa=True, use_fused_ops=True, **model_settings
            )
        else:
            model_config = GPTConfig.cpu_default(tokenizer.n_vocab, **model_settings)
        for ids in (corpus.train_ids, corpus.val_ids):  # too little text fails before a model
            SlidingWindowDataset(ids, model_config.context_length, stride=1)  # is allocated
        seed_everything(config.seed)
        model = GPTModel(model_config)
        trainer = Trainer(model, corpus.train_ids, corpus.val_ids, config, tokenizer, (), info)
    trainer.data_info = data
    trainer.checkpoint_dir, trainer.checkpoint_interval = out, args.checkpoint_interval
    return trainer


def main(argv: Sequence[str] | None = None) -> Trainer:
    """Train from flags (or a JSON config); see ``python -m llmhelpers.train --help``.

    Bad settings end with one ``error:`` line and exit status 2; Ctrl-C saves the model so far
    (continue it with ``--resume``) and exits with status 130.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    # Under torchrun, Ctrl-C only sets a flag, from before the ranks connect until the
    # checkpoint is written; all ranks then stop at the same step (see Trainer._should_stop).
    # A KeyboardInterrupt in one rank would leave the others waiting for it forever.
    interrupt = threading.Event()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    with interrupts_set(interrupt) if distributed else contextlib.nullcontext():
        try:
            trainer = _make_trainer(args)
        except (ValueError, TypeError, OSError) as error:  # CheckpointError is a ValueError
            parser.error(str(error))
        except KeyboardInterrupt:
            print("interrupted before training started", file=sys.stderr)
            raise SystemExit(130) from None
        trainer.interrupt = interrupt  # already set: the run stops at its first step
        return _train_and_save(trainer, args)


def _train_and_save(trainer: Trainer, args: argparse.Namespace) -> Trainer:
    """The command line after setup: train, save, report, leave the process group."""
    out = Path(args.out)
    steps = None if args.stop_at is None else max(0, args.stop_at - trainer.step)
    with trainer.interrupts_stop_every_rank():  # under torchrun, a Ctrl-C while saving waits
        history = trainer.run(steps)
        try:
            try:
                trainer.save(out)
            except OSError as error:  # the disk filled up, the directory went away, ...
                rescue = Path(tempfile.mkdtemp(prefix="llmhelpers-rescue-"))
                trainer.save(rescue)
                print(f"error: could not save to --out {out} ({error}); the model is saved in "
                      f"{rescue} instead (move it, then continue with --resume)", file=sys.stderr)
                raise SystemExit(1) from None
        except KeyboardInterrupt:
            print(f"interrupted while saving: {out} keeps its previous checkpoint",
                  file=sys.stderr)
            raise SystemExit(130) from None
    if trainer.is_main:
        if history.eval_step:
            val = f"val loss {history.val_loss[-1]:.4f} (at step {history.eval_step[-1]})"
        else:
            val = "no val loss yet"
        train = f"train loss {history.train_loss[-1]:.4f}" if history.train_loss else "no steps"
        print(f"step {trainer.step}: {train}, {val}, "
              f"{history.mean_tokens_per_second():.0f} tokens/s; checkpoint in {out}")
    if dist.is_initialized():
        dist.barrier()  # nobody tears down while another rank still talks
        # DDP holds the process group; free it now, while the interpreter is whole, or gloo's
        # threads may be destroyed during shutdown and abort the process.
        trainer.forward_model = trainer.model
        gc.collect()
        dist.destroy_process_group()
    if history.stop_reason == "interrupted":
        if trainer.is_main:
            print(f"interrupted at step {trainer.step}: saved; continue with --resume",
                  file=sys.stderr)
        raise SystemExit(130)
    return trainer


if __name__ == "__main__":
    main()
