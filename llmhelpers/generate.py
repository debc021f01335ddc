"""Turning a trained model into text: one token at a time, greedy or sampled.

Each step feeds the last ``context_length`` ids to the model, takes the logits of the last
position, turns them into a probability distribution and picks the next id. The knobs:

* ``temperature`` divides the logits before the softmax: below 1 sharpens, above 1 flattens,
  and 0 means greedy decoding (always the most likely id; so does a temperature too small
  for float32, below about 1e-38).
* ``top_k`` keeps only the ``k`` most likely ids (``None`` = off; larger than the vocabulary =
  no filtering).
* ``top_p`` (nucleus sampling) keeps the smallest set of most likely ids whose probabilities
  add up to at least ``p``; the id that crosses ``p`` is kept, so the set is never empty.

They apply in that order: temperature, then top-k, then top-p on the tempered distribution.
Sampling uses its own seeded ``torch.Generator``, so it never disturbs the global random state
(and a training run that prints samples stays reproducible).

Command line: ``python -m llmhelpers.generate CHECKPOINT_DIR --prompt "ROMEO:"``.
"""

from __future__ import annotations

import argparse
import math
import numbers
import sys
from collections.abc import Iterator, Sequence

import torch
from torch import nn

# Temperatures below float32's smallest normal number decode greedily, like 0.
FLOAT32_TINY = torch.finfo(torch.float32).tiny


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Python or NumPy numbers; a bool or a tensor is refused, so is NaN or infinity."""
    if not _is_real(temperature):
        raise TypeError(f"temperature must be a real number >= 0 (0 = greedy), "
                        f"got {type(temperature).__name__} {temperature!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), "
                         f"got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral)):
        raise TypeError(f"top_k must be an int or None (None = off), got {top_k!r}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be >= 1, or None to switch it off; got {top_k}")
    if top_p is not None and not _is_real(top_p):
        raise TypeError(f"top_p must be a real number in (0, 1] or None (None = off), "
                        f"got {type(top_p).__name__} {top_p!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:  # also refuses NaN
        raise ValueError(f"top_p must be in (0, 1], or None to switch it off; got {top_p!r}")


def next_token_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """The distribution the next id is drawn from: ``(..., vocab)`` logits -> probabilities.

    ``vocab_size`` (when the output layer is wider than the real vocabulary, e.g. padded to a
    multiple of 64) gives the padding ids probability exactly 0. ``temperature=0`` returns a
    one-hot vector on the argmax. Computed in float32; the result has no NaN or inf. Logits of
    ``-inf`` rule an id out; NaN, ``+inf`` or a row with no finite logit is an error (a broken
    model, not a distribution).
    """
    _check_sampling_args(temperature, top_k, top_p)
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1 or logits.shape[-1] < 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a tensor of shape (..., vocab), got {shape}")
    logits = logits.detach().float()
    width = logits.shape[-1]
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral):
            raise TypeError(f"vocab_size must be an int or None, got {vocab_size!r}")
        if not 1 <= vocab_size <= width:
            raise ValueError(
                f"vocab_size must be in [1, {width}] (the logits' width), got {vocab_size}"
            )
        if vocab_size < width:
            logits = logits.clone()
            logits[..., vocab_size:] = -math.inf
    if logits.isnan().any() or logits.isposinf().any() or not logits.isfinite().any(-1).all():
        raise ValueError(
            "logits must be finite (or -inf for ruled-out ids) with at least one finite value "
            "per row; got NaN, +inf or a row of -inf: the model's output is broken"
        )
    if temperature < FLOAT32_TINY:  # 0, or so small it would become 0 (and 0/0) in float32
        greedy = logits.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(logits).scatter_(-1, greedy, 1.0)

    # Subtracting the maximum first keeps every value <= 0, so even temperature=1e-6 cannot
    # overflow to inf (and inf - inf would be NaN).
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kept = torch.topk(logits, top_k, dim=-1).indices
        keep_mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, kept, True)
        logits = logits.masked_fill(~keep_mask, -math.inf)
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        keep_sorted = mass_before < top_p
        keep_sorted[..., 0] = True  # the most likely id always stays (even if p rounds to 0)
        keep_mask = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
        probs = probs.masked_fill(~keep_mask, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
) -> int:
    """Pick one id from ``(vocab,)`` logits (greedy when ``temperature == 0``)."""
    if logits.dim() != 1:
        raise ValueError(f"logits must have shape (vocab,), got {tuple(logits.shape)}")
    probs = next_token_probs(logits, temperature, top_k, top_p, vocab_size)
    if temperature < FLOAT32_TINY:
        return int(probs.argmax())
    return int(torch.multinomial(probs, 1, generator=generator))


def model_vocab_size(model: nn.Module) -> int | None:
    """The number of real token ids the model can emit (``valid_vocab_size`` when the output
    layer is padded wider than the tokenizer's vocabulary), if its config says so."""
    config = getattr(model, "config", None)
    valid = getattr(config, "valid_vocab_size", None)
    return valid if valid is not None else getattr(config, "vocab_size", None)


def model_context_length(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    context_length = getattr(config, "context_length", None)
    if context_length is None:
        raise ValueError("the model needs a config with context_length to generate")
    return int(context_length)


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _as_prompt(ids: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"ids must hold integer token ids, got a {ids.dtype} tensor")
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1:
            raise ValueError(f"ids must be a 1-D prompt or (1, seq), got {tuple(ids.shape)}")
        ids = ids.tolist()
    if isinstance(ids, str):
        raise TypeError("ids must be token ids, not text: encode the prompt with the tokenizer")
    ids = list(ids)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"ids must be integer token ids, got {type(i).__name__} {i!r}")
    if not ids:
        raise ValueError("the prompt is empty: ids needs at least one token id to start from")
    return [int(i) for i in ids]


def _check_seed_and_eos(seed: object, eos_id: object) -> None:
    for name, value in (("seed", seed), ("eos_id", eos_id)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int or None, got {type(value).__name__} {value!r}")
        if not 0 <= value < 2**63:
            raise ValueError(f"{name} must be in [0, 2**63), got {value}")


@torch.no_grad()
def last_logits(model: nn.Module, ids: Sequence[int]) -> torch.Tensor:
    """Logits ``(vocab,)`` for the token after ``ids``, seeing only the last ``context_length``."""
    window = list(ids)[-model_context_length(model) :]
    was_training = model.training
    model.eval()
    try:
        batch = torch.tensor([window], dtype=torch.long, device=_model_device(model))
        logits = model(batch)
    finally:
        model.train(was_training)
    return logits[0, -1].float().cpu()


def generate_stream(
    model: nn.Module,
    ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new ids one at a time (stops before yielding ``eos_id``).

    Each step runs in eval mode without gradients and sees only the last ``context_length``
    ids. ``seed`` makes sampling repeat; it uses a private generator.
    """
    _check_sampling_args(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral):
        raise TypeError(f"max_new_tokens must be an int, got {max_new_tokens!r}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    _check_seed_and_eos(seed, eos_id)
    context = _as_prompt(ids)
    model_context_length(model)  # fail now, not at the first next()
    vocab_size = model_vocab_size(model)
    if vocab_size is not None:
        outside = [i for i in context if not 0 <= i < vocab_size]
        if outside:
            raise ValueError(f"ids must be in [0, {vocab_size}) (the model's vocabulary), "
                             f"got {outside[0]}")
        if eos_id is not None and eos_id >= vocab_size:
            raise ValueError(f"eos_id must be in [0, {vocab_size}) (the model's vocabulary) "
                             f"or None, got {eos_id}")
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(int(seed))
    else:
        generator.seed()
    return _stream(model, context, int(max_new_tokens), temperature, top_k, top_p, eos_id,
                   generator)


def _stream(model, context, max_new_tokens, temperature, top_k, top_p, eos_id, generator):
    vocab_size = model_vocab_size(model)
    for _ in range(max_new_tokens):
        logits = last_logits(model, context)
        next_id = sample_next_token(logits, temperature, top_k, top_p, generator, vocab_size)
        if eos_id is not None and next_id == eos_id:
            return
        context.append(next_id)
        yield next_id


def generate(
    model: nn.Module,
    ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
) -> list[int]:
    """The prompt followed by up to ``max_new_tokens`` generated ids (see ``generate_stream``)."""
    prompt = _as_prompt(ids)
    stream = generate_stream(model, prompt, max_new_tokens, temperature, top_k, top_p, eos_id, seed)
    return prompt + list(stream)


def generate_text(
    model: nn.Module,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_at_eos: bool = True,
) -> str:
    """Encode ``prompt``, generate, and decode the whole text (prompt included)."""
    eos_id = _eos_id(tokenizer) if stop_at_eos else None
    ids = generate(
        model, tokenizer.encode(prompt), max_new_tokens, temperature, top_k, top_p, eos_id, seed
    )
    return tokenizer.decode(ids)


def _eos_id(tokenizer) -> int | None:
    """The id of ``<|endoftext|>`` if the tokenizer has one."""
    for attribute in ("eos_id", "eot_token"):
        value = getattr(tokenizer, attribute, None)
        if isinstance(value, int):
            return value
    try:
        ids = tokenizer.encode("<|endoftext|>", allowed_special={"<|endoftext|>"})
    except TypeError:
        return None
    return ids[0] if len(ids) == 1 else None


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m llmhelpers.generate CHECKPOINT_DIR``: print samples from a checkpoint."""
    from llmhelpers.checkpoint import load_checkpoint
    from llmhelpers.train import tokenizer_from_identity

    parser = argparse.ArgumentParser(prog="python -m llmhelpers.generate", description=main.__doc__)
    parser.add_argument("checkpoint", help="a directory written by python -m llmhelpers.train")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline); "
                        "<|endoftext|> in it becomes the end-of-text id")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=1)
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        parser.error(f"--num-samples must be >= 1, got {args.num_samples}")
    if not args.prompt:
        parser.error("--prompt must not be empty (the default is a newline)")
    if not 0 <= args.seed < 2**63 - args.num_samples:
        parser.error(f"--seed must be in [0, 2**63 - num_samples), got {args.seed}")
    try:
        _check_sampling_args(args.temperature, args.top_k, args.top_p)
        if args.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {args.max_new_tokens}")
        loaded = load_checkpoint(args.checkpoint)  # CheckpointError is a ValueError
        tokenizer = tokenizer_from_identity(loaded.tokenizer)
        prompt_ids = tokenizer.encode(args.prompt, allowed_special="all")
    except (ValueError, TypeError, OSError) as error:
        parser.error(str(error).replace("max_new_tokens", "--max-new-tokens", 1))
    try:
        for i in range(args.num_samples):
            ids = generate(
                loaded.model, prompt_ids, args.max_new_tokens, args.temperature, args.top_k,
                args.top_p, eos_id=_eos_id(tokenizer), seed=args.seed + i,
            )
            print(tokenizer.decode(ids), flush=True)
            if i + 1 < args.num_samples:
                print("-" * 40)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
