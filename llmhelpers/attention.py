"""Self-attention, built up one piece at a time, ending in efficient multi-head causal attention.

The pieces, in the order the notebook builds them:

1. :func:`attention_scores`: how well each query matches each key (dot products).
2. :func:`attention_weights`: the scores turned into a probability distribution per query
   (softmax), with positions that must not be seen masked out.
3. :func:`context_vectors`: each query's output, the weighted sum of the values.
4. :func:`scaled_dot_product_attention`: the three steps together, scaled by ``1/sqrt(d_k)``,
   with an optional mask and attention dropout.
5. :func:`causal_mask`: which keys each query may see when predicting the next token.
6. :class:`SelfAttention`: one head with trainable query/key/value projections;
   :class:`CausalSelfAttention` adds the causal mask and dropout.
7. :class:`MultiHeadAttention`: many heads computed at once (one projection, split into heads,
   one batched matmul, merge, output projection), optionally through PyTorch's fused kernel.

Mask convention everywhere: a boolean tensor where ``True`` means "this query may attend to
this key", the same convention as ``torch.nn.functional.scaled_dot_product_attention``.
A padding mask ``(batch, seq)`` uses ``True`` for a real token, ``False`` for padding.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmhelpers.checks import check_bool, check_positive_int, check_probability

__all__ = [
    "attention_scores",
    "attention_weights",
    "context_vectors",
    "causal_mask",
    "scaled_dot_product_attention",
    "SelfAttention",
    "CausalSelfAttention",
    "MultiHeadAttention",
    "check_attention_sizes",
    "check_bool",
    "check_positive_int",
    "check_probability",
    "trace_shapes",
]


def _check_sequence_tensor(name: str, tensor: object, last: str) -> None:
    """``tensor`` must be a tensor of shape ``(..., seq, last)`` with ``last >= 1``."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 2:
        raise ValueError(
            f"{name} must have shape (..., seq, {last}) (at least 2 dimensions), "
            f"got {tuple(tensor.shape)}"
        )
    if tensor.shape[-1] < 1:
        raise ValueError(
            f"{last} (the last dimension of {name}) must be >= 1, got shape {tuple(tensor.shape)}"
        )


def _check_mask(mask: object, scores_shape: torch.Size) -> None:
    """``mask`` must be a bool tensor broadcastable to ``scores_shape`` without enlarging it."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        found = f"dtype {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool tensor (True = attend), got {found}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != scores_shape:
        raise ValueError(
            f"mask must be broadcastable to the scores' shape (..., seq_q, seq_k) = "
            f"{tuple(scores_shape)}, got {tuple(mask.shape)}"
        )


def attention_scores(queries: Tensor, keys: Tensor) -> Tensor:
    """Dot product of every query with every key.

    ``queries`` ``(..., seq_q, d_k)`` and ``keys`` ``(..., seq_k, d_k)`` give scores
    ``(..., seq_q, seq_k)``: entry ``[i, j]`` says how much query ``i`` matches key ``j``.
    """
    _check_sequence_tensor("queries", queries, "d_k")
    _check_sequence_tensor("keys", keys, "d_k")
    if queries.shape[-1] != keys.shape[-1]:
        raise ValueError(
            f"queries and keys need the same last dimension d_k, got {queries.shape[-1]} "
            f"and {keys.shape[-1]}"
        )
    return queries @ keys.transpose(-2, -1)


def attention_weights(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax over the keys, ignoring masked positions: ``(..., seq_q, seq_k)`` -> same shape.

    ``mask`` is boolean and broadcastable to ``scores``; ``True`` keeps a position. Masked
    positions get weight exactly 0 (their score is replaced by ``-inf`` before the softmax).
    A row with every position masked has nothing to attend to: its weights are all 0 instead
    of the ``NaN`` a plain softmax of ``-inf`` would give, and no ``NaN`` reaches the gradient.
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)
    _check_mask(mask, scores.shape)
    # -inf, not a "large negative" constant: it is exact in every dtype (a constant like -1e9
    # overflows float16 and can be larger than real scores).
    scores = scores.masked_fill(~mask, float("-inf"))
    empty_rows = ~mask.any(dim=-1, keepdim=True)
    # Give empty rows finite scores so softmax (and its backward pass) stays NaN-free,
    # then zero their weights.
    scores = scores.masked_fill(empty_rows, 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(empty_rows, 0.0)


def context_vectors(weights: Tensor, values: Tensor) -> Tensor:
    """Weighted sum of the values for every query.

    ``weights`` ``(..., seq_q, seq_k)`` and ``values`` ``(..., seq_k, d_v)`` give
    ``(..., seq_q, d_v)``: row ``i`` is ``sum_j weights[i, j] * values[j]``.
    """
    _check_sequence_tensor("values", values, "d_v")
    if weights.shape[-1] != values.shape[-2]:
        raise ValueError(
            f"weights (..., seq_q, seq_k) and values (..., seq_k, d_v) need the same seq_k, "
            f"got {weights.shape[-1]} and {values.shape[-2]}"
        )
    return weights @ values


def causal_mask(seq_len: int, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``(seq_len, seq_len)`` mask, ``True`` on and below the diagonal.

    Query ``i`` may attend to key ``j`` only when ``j <= i``: a token never sees the future.
    """
    seq_len = check_positive_int("seq_len", seq_len)
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Attention from scratch: ``softmax(q @ k^T * scale) @ v``, returning ``(context, weights)``.

    Shapes: ``queries`` ``(..., seq_q, d_k)``, ``keys`` ``(..., seq_k, d_k)``, ``values``
    ``(..., seq_k, d_v)`` -> ``context`` ``(..., seq_q, d_v)`` and ``weights``
    ``(..., seq_q, seq_k)``. ``scale`` defaults to ``1/sqrt(d_k)``, which keeps the scores'
    spread independent of ``d_k`` so the softmax does not saturate; a given ``scale`` must be a
    finite number > 0. ``mask`` (bool, broadcastable to ``(..., seq_q, seq_k)``) and
    ``is_causal`` may be combined. ``dropout_p`` zeroes that fraction of the weights (rescaling
    the rest), so pass 0 outside training; the returned weights are the ones applied.

    The context equals ``torch.nn.functional.scaled_dot_product_attention(queries, keys,
    values, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale)`` (up to
    rounding; with dropout both are random, with different draws), with these differences:

    * the mask argument is called ``mask``, not ``attn_mask``, and must be boolean with
      ``True`` = may attend (PyTorch's uses the same boolean convention but also accepts an
      additive float mask);
    * it returns ``(context, weights)``, not only the context: the weights are what we plot;
    * a query whose keys are all masked gets zero weights and a zero context vector by
      construction, never ``NaN`` (PyTorch's result for such rows has varied between versions
      and kernels; older versions give ``NaN``);
    * ``mask`` and ``is_causal=True`` may be given together (PyTorch refuses that).
    """
    _check_sequence_tensor("queries", queries, "d_k")
    _check_sequence_tensor("keys", keys, "d_k")
    _check_sequence_tensor("values", values, "d_v")
    if keys.shape[-2] != values.shape[-2]:
        raise ValueError(
            f"keys (..., seq_k, d_k) and values (..., seq_k, d_v) need the same seq_k, "
            f"got {keys.shape[-2]} and {values.shape[-2]}"
        )
    check_bool("is_causal", is_causal)
    dropout_p = check_probability("dropout_p", dropout_p)
    if scale is None:
        scale = 1.0 / math.sqrt(queries.shape[-1])
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a finite number > 0 or None, got {type(scale).__name__}")
    elif not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    scores = attention_scores(queries, keys) * scale
    if mask is not None:
        _check_mask(mask, scores.shape)
    if is_causal:
        seq_q, seq_k = scores.shape[-2:]
        causal = torch.ones(seq_q, seq_k, dtype=torch.bool, device=scores.device).tril()
        mask = causal if mask is None else mask & causal
    weights = attention_weights(scores, mask)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    return context_vectors(weights, values), weights


def check_attention_sizes(
    d_model: int, n_heads: int = 1, context_length: int | None = None, dropout: float = 0.0
) -> None:
    """Raise a TypeError or ValueError naming the parameter if a multi-head attention
    configuration is invalid. Sizes may be any integers (Python or NumPy), ``dropout`` any
    real number in ``[0, 1)``; bools are refused."""
    d_model = check_positive_int("d_model", d_model)
    n_heads = check_positive_int("n_heads", n_heads)
    if context_length is not None:
        check_positive_int("context_length", context_length)
    if d_model % n_heads != 0:
        raise ValueError(
            f"d_model must be divisible by n_heads, got d_model={d_model}, n_heads={n_heads}"
        )
    check_probability("dropout", dropout)


class SelfAttention(nn.Module):
    """One attention head with trainable query, key and value projections.

    ``(batch, seq, d_in)`` -> ``(batch, seq, d_out)``. Every token attends to every token
    (no mask); see :class:`CausalSelfAttention` for the version a language model needs.
    """

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        d_in = check_positive_int("d_in", d_in)
        d_out = check_positive_int("d_out", d_out)
        check_bool("qkv_bias", qkv_bias)
        self.d_in, self.d_out = d_in, d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def _mask(self, seq_len: int) -> Tensor | None:
        return None

    def _dropout_p(self) -> float:
        return 0.0

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``x`` ``(batch, seq, d_in)`` -> context ``(batch, seq, d_out)``
        (and weights ``(batch, seq, seq)`` if ``return_weights``)."""
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"x must have shape (batch, seq, {self.d_in}), got {tuple(x.shape)}")
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        context, weights = scaled_dot_product_attention(
            queries, keys, values, mask=self._mask(x.shape[1]), dropout_p=self._dropout_p()
        )
        return (context, weights) if return_weights else context


class CausalSelfAttention(SelfAttention):
    """One head of causal self-attention with attention dropout.

    ``(batch, seq, d_in)`` -> ``(batch, seq, d_out)``, with ``seq <= context_length``. The mask
    is built once for ``context_length`` and cut to the actual sequence length; dropout acts on
    the attention weights in training mode only.
    """

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float = 0.0,
        qkv_bias: bool = False,
    ):
        super().__init__(d_in, d_out, qkv_bias=qkv_bias)
        self.context_length = check_positive_int("context_length", context_length)
        self.dropout = check_probability("dropout", dropout)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def _mask(self, seq_len: int) -> Tensor:
        if seq_len > self.context_length:
            raise ValueError(
                f"sequence length {seq_len} exceeds context_length={self.context_length}"
            )
        return self.mask[:seq_len, :seq_len]

    def _dropout_p(self) -> float:
        return self.dropout if self.training else 0.0


class MultiHeadAttention(nn.Module):
    """Multi-head causal self-attention, all heads at once, GPT-2 style.

    ``(batch, seq, d_model)`` -> ``(batch, seq, d_model)``, with ``n_heads`` heads of
    ``head_dim = d_model // n_heads`` each. Steps: project to queries/keys/values
    ``(batch, seq, d_model)``; split into heads ``(batch, n_heads, seq, head_dim)``; attend
    with one batched matmul; merge heads back to ``(batch, seq, d_model)``; output projection.

    ``use_sdpa=True`` computes the attention with PyTorch's fused
    ``scaled_dot_product_attention`` (same results, faster); asking for the weights always
    takes the explicit path, since the fused kernel never materialises them.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        context_length: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        use_sdpa: bool = False,
    ):
        super().__init__()
        check_attention_sizes(d_model, n_heads, context_length, dropout)
        check_bool("qkv_bias", qkv_bias)
        check_bool("use_sdpa", use_sdpa)
        d_model, n_heads = int(d_model), int(n_heads)
        context_length = int(context_length)
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.context_length = context_length
        self.dropout = float(dropout)
        self.use_sdpa = use_sdpa
        self.W_query = nn.Linear(d_model, d_model, bias=qkv_bias)
        self.W_key = nn.Linear(d_model, d_model, bias=qkv_bias)
        self.W_value = nn.Linear(d_model, d_model, bias=qkv_bias)
        self.out_proj = nn.Linear(d_model, d_model)
        # Built once for the longest sequence, cut to the actual length in forward. Not
        # persistent: it is derived from context_length, so it stays out of the state_dict.
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def split_heads(self, t: Tensor) -> Tensor:
        """``(batch, seq, d_model)`` -> ``(batch, n_heads, seq, head_dim)``."""
        batch, seq, _ = t.shape
        return t.view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, t: Tensor) -> Tensor:
        """``(batch, n_heads, seq, head_dim)`` -> ``(batch, seq, d_model)``."""
        batch, _, seq, _ = t.shape
        return t.transpose(1, 2).contiguous().view(batch, seq, self.d_model)

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values per head, each ``(batch, n_heads, seq, head_dim)``."""
        self._check_input(x)
        return (
            self.split_heads(self.W_query(x)),
            self.split_heads(self.W_key(x)),
            self.split_heads(self.W_value(x)),
        )

    def build_mask(
        self, seq_len: int, padding_mask: Tensor | None = None, batch_size: int | None = None
    ) -> Tensor:
        """Causal mask cut to ``seq_len``, combined with an optional padding mask.

        Returns bool ``(seq, seq)`` or, with ``padding_mask`` ``(batch, seq)``,
        ``(batch, 1, seq, seq)`` (broadcast over heads); ``True`` = may attend. With
        ``batch_size`` given, the padding mask's batch dimension must equal it.
        """
        if seq_len > self.context_length:
            raise ValueError(
                f"sequence length {seq_len} exceeds context_length={self.context_length}"
            )
        mask = self.mask[:seq_len, :seq_len]
        if padding_mask is None:
            return mask
        if not isinstance(padding_mask, Tensor) or padding_mask.dtype != torch.bool:
            found = (padding_mask.dtype if isinstance(padding_mask, Tensor)
                     else type(padding_mask).__name__)
            raise TypeError(
                f"padding_mask must be a bool tensor (True = real token), got {found}"
            )
        if batch_size is None:
            expected = f"(batch, {seq_len})"
        else:
            expected = f"(batch, seq) = ({batch_size}, {seq_len})"
        if (
            padding_mask.dim() != 2
            or padding_mask.shape[1] != seq_len
            or (batch_size is not None and padding_mask.shape[0] != batch_size)
        ):
            raise ValueError(
                f"padding_mask must have shape {expected}, got {tuple(padding_mask.shape)}"
            )
        # Padding hides keys: no query may attend to a padded position.
        return mask & padding_mask[:, None, None, :]

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have shape (batch, seq, d_model={self.d_model}), got {tuple(x.shape)}"
            )
        if x.shape[1] > self.context_length:
            raise ValueError(
                f"sequence length {x.shape[1]} exceeds context_length={self.context_length}"
            )

    def forward(
        self, x: Tensor, return_weights: bool = False, padding_mask: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``x`` ``(batch, seq, d_model)`` -> ``(batch, seq, d_model)``.

        With ``return_weights`` also the attention weights ``(batch, n_heads, seq, seq)``
        (after dropout, i.e. the weights actually applied). ``padding_mask`` ``(batch, seq)``,
        ``True`` for real tokens, hides padded keys; a query left with nothing to attend to gets
        zero weights and a zero context vector (so its output is ``out_proj.bias``).
        """
        queries, keys, values = self.project_qkv(x)
        batch_size, seq_len = x.shape[:2]
        dropout_p = self.dropout if self.training else 0.0
        # Checked here, for both paths: a padding mask with the wrong batch size would
        # otherwise broadcast silently (or fail inside PyTorch's kernel).
        mask = self.build_mask(seq_len, padding_mask, batch_size=batch_size)

        if self.use_sdpa and not return_weights:
            if padding_mask is None:
                context = F.scaled_dot_product_attention(
                    queries, keys, values, dropout_p=dropout_p, is_causal=True
                )
            else:
                empty_rows = ~mask.any(dim=-1, keepdim=True)
                # Let empty rows attend everywhere so the kernel stays finite, then zero them.
                context = F.scaled_dot_product_attention(
                    queries, keys, values, attn_mask=mask | empty_rows, dropout_p=dropout_p
                ).masked_fill(empty_rows, 0.0)
            weights = None
        else:
            context, weights = scaled_dot_product_attention(
                queries, keys, values, mask=mask, dropout_p=dropout_p
            )

        out = self.out_proj(self.merge_heads(context))
        return (out, weights) if return_weights else out

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, head_dim={self.head_dim}, "
            f"context_length={self.context_length}, dropout={self.dropout}, "
            f"use_sdpa={self.use_sdpa}"
        )


@torch.no_grad()
def trace_shapes(mha: MultiHeadAttention, x: Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Run ``mha`` on ``x`` step by step (no dropout) and return ``(step, shape)`` for every
    intermediate tensor, from the input ``(batch, seq, d_model)`` to the output."""
    steps: list[tuple[str, Tensor]] = [("input x", x)]
    queries = mha.W_query(x)
    steps.append(("queries = W_query(x)", queries))
    q, k, v = mha.project_qkv(x)
    steps.append(("split into heads", q))
    scores = attention_scores(q, k) / math.sqrt(mha.head_dim)
    steps.append(("scores = q @ k^T / sqrt(head_dim)", scores))
    weights = attention_weights(scores, mha.build_mask(x.shape[1]))
    steps.append(("weights = softmax(masked scores)", weights))
    context = context_vectors(weights, v)
    steps.append(("context = weights @ v", context))
    merged = mha.merge_heads(context)
    steps.append(("merge heads", merged))
    steps.append(("output = out_proj(merged)", mha.out_proj(merged)))
    return [(name, tuple(t.shape)) for name, t in steps]
