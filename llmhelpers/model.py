"""The GPT model: a configuration, its parts, the whole model and how big it is.

Shapes use ``batch`` for the number of sequences, ``seq`` for their length in tokens,
``d_model`` for the width of every hidden vector and ``vocab`` for the output layer's width.

The parts, in the order data flows through them::

    ids (batch, seq)
      -> tok_emb(ids) + pos_emb(0..seq-1)        (batch, seq, d_model)
      -> dropout
      -> n_layers x TransformerBlock:             (batch, seq, d_model)
             x = x + dropout(attn(norm1(x)))
             x = x + dropout(ff(norm2(x)))
      -> final_norm
      -> out_head                                 (batch, seq, vocab)

Parameter names match GPT-2's one for one (see ``llmhelpers.pretrained`` for the table).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import Tensor, nn

from llmhelpers.attention import MultiHeadAttention
from llmhelpers.checks import check_positive_int, check_real

GPT2_VOCAB_SIZE = 50_257
"""Ids GPT-2's tokenizer can produce; the largest, 50256, is ``<|endoftext|>``."""
GPT2_PADDED_VOCAB_SIZE = 50_304
"""GPT-2's vocabulary rounded up to a multiple of 64, which matrix-multiply kernels prefer."""
GPT2_SIZES: dict[str, tuple[int, int, int]] = {
    # name: (d_model, n_heads, n_layers)
    "124M": (768, 12, 12),
    "355M": (1024, 16, 24),
    "774M": (1280, 20, 36),
    "1558M": (1600, 25, 48),
}


ID_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
"""Integer dtypes ``GPTModel`` accepts for token ids (converted to ``torch.long`` inside)."""


@dataclass(frozen=True)
class GPTConfig:
    """Everything needed to build a ``GPTModel``; validated when created.

    ``d_ff`` (the feed-forward width) left as None means ``4 * d_model``, GPT-2's choice; read
    the resolved value from ``ff_dim``. ``valid_vocab_size`` is the number of ids the tokenizer
    can really produce; None means ``vocab_size``, and ``real_vocab_size`` gives the resolved
    value. When the output layer is padded wider (GPT-2's 50,257 ids in a 50,304-wide layer),
    the extra ids are never sampled. (Both stay None rather than being filled in, so
    ``dataclasses.replace(config, d_model=...)`` does not keep a stale width.)

    Two switches change speed, never the maths: ``use_sdpa`` computes attention with PyTorch's
    fused kernel, and ``use_fused_ops`` swaps our written-out ``LayerNorm`` and ``GELU`` for
    PyTorch's one-kernel ``nn.LayerNorm`` and ``nn.GELU(approximate="tanh")`` (same parameter
    names, so checkpoints load either way; the tests check that both give the same logits).
    """

    vocab_size: int
    context_length: int
    d_model: int
    n_heads: int
    n_layers: int
    dropout: float = 0.0
    qkv_bias: bool = False
    tie_weights: bool = False
    d_ff: int | None = None
    layer_norm_eps: float = 1e-5
    valid_vocab_size: int | None = None
    use_sdpa: bool = False
    use_fused_ops: bool = False

    def __post_init__(self) -> None:
        # NumPy numbers are accepted and stored as plain int/float (so to_dict() stays JSON-ready).
        for name in ("vocab_size", "context_length", "d_model", "n_heads", "n_layers"):
            self._set(name, check_positive_int(name, getattr(self, name)))
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) so "
                "every head gets the same width d_model // n_heads"
            )
        self._set("dropout", check_real("dropout", self.dropout))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("qkv_bias", "tie_weights", "use_sdpa", "use_fused_ops"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.d_ff is not None:
            self._set("d_ff", check_positive_int("d_ff", self.d_ff))
        self._set("layer_norm_eps", check_real("layer_norm_eps", self.layer_norm_eps))
        if not (math.isfinite(self.layer_norm_eps) and self.layer_norm_eps > 0):
            raise ValueError(
                f"layer_norm_eps must be a finite number > 0, got {self.layer_norm_eps}"
            )
        if self.valid_vocab_size is not None:
            self._set(
                "valid_vocab_size", check_positive_int("valid_vocab_size", self.valid_vocab_size)
            )
            if self.valid_vocab_size > self.vocab_size:
                raise ValueError(
                    f"valid_vocab_size ({self.valid_vocab_size}) must be <= vocab_size "
                    f"({self.vocab_size}): it counts the real ids inside the output layer"
                )

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)  # the dataclass is frozen

    @property
    def ff_dim(self) -> int:
        """Width of the feed-forward network's hidden layer: ``d_ff`` or ``4 * d_model``."""
        return 4 * self.d_model if self.d_ff is None else self.d_ff

    @property
    def real_vocab_size(self) -> int:
        """Ids the tokenizer can produce: ``valid_vocab_size`` or ``vocab_size``."""
        return self.vocab_size if self.valid_vocab_size is None else self.valid_vocab_size

    @property
    def head_dim(self) -> int:
        """Width of one attention head: ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        """Plain dictionary (JSON-ready); ``GPTConfig.from_dict`` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        """Build a config from ``to_dict()``'s output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def gpt2(
        cls,
        size: str = "124M",
        *,
        padded_vocab: bool = False,
        dropout: float = 0.0,
        context_length: int = 1024,
        use_sdpa: bool = False,
        use_fused_ops: bool = False,
    ) -> GPTConfig:
        """The four GPT-2 sizes ("124M", "355M", "774M", "1558M"): biased q/k/v, tied head.

        ``padded_vocab=True`` widens the output layer to 50,304 while keeping
        ``valid_vocab_size=50,257``. GPT-2 was trained with dropout 0.1; the default here is 0
        because the usual reason to build this config is to load the trained weights.
        ``use_sdpa`` and ``use_fused_ops`` choose the fused kernels (same results, faster).
        """
        if size not in GPT2_SIZES:
            raise ValueError(f"size must be one of {list(GPT2_SIZES)}, got {size!r}")
        d_model, n_heads, n_layers = GPT2_SIZES[size]
        return cls(
            vocab_size=GPT2_PADDED_VOCAB_SIZE if padded_vocab else GPT2_VOCAB_SIZE,
            context_length=context_length,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            dropout=dropout,
            qkv_bias=True,
            tie_weights=True,
            valid_vocab_size=GPT2_VOCAB_SIZE,
            use_sdpa=use_sdpa,
            use_fused_ops=use_fused_ops,
        )

    @classmethod
    def cpu_default(
        cls,
        vocab_size: int,
        *,
        context_length: int = 64,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 4,
        dropout: float = 0.0,
        use_sdpa: bool = True,
        use_fused_ops: bool = True,
    ) -> GPTConfig:
        """The small GPT that notebooks 4 and 5 train on a laptop CPU: 4 blocks of width 64
        with 4 heads, a 64-token context, a tied output head and no dropout.

        The sizes give the best validation loss per CPU-second in a one-to-two-minute run on a
        2-core CPU: with so little compute a small model that takes many steps beats a wider
        one (measured: d_model 64 < 96 < 128 < 192 in loss after the same time), and dropout
        only slows a run that sees each window about once. It uses PyTorch's fused kernels
        (``use_sdpa``, ``use_fused_ops``: same results, faster); asking the model for attention
        weights switches attention to the explicit path automatically.
        """
        return cls(
            vocab_size=vocab_size,
            context_length=context_length,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            dropout=dropout,
            qkv_bias=False,
            tie_weights=True,
            use_sdpa=use_sdpa,
            use_fused_ops=use_fused_ops,
        )


class LayerNorm(nn.Module):
    """Normalise each vector to mean 0 and variance 1, then scale and shift (learned).

    ``(..., d_model) -> (..., d_model)``. Same as ``nn.LayerNorm(d_model, eps)``: the variance
    is the biased one (divide by ``d_model``) and ``eps`` keeps the division finite.
    """

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))  # scale, starts as identity
        self.bias = nn.Parameter(torch.zeros(d_model))  # shift

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class GELU(nn.Module):
    """GPT-2's GELU, the tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    The exact GELU is ``x * Phi(x)`` (``Phi`` the standard normal CDF); this formula stays within
    5e-4 of it. A smooth version of ReLU: close to ``x`` for large ``x``, close to 0 for very
    negative ``x``, slightly negative in between (minimum about -0.17 at ``x`` about -0.75,
    the one point where its slope is 0), and differentiable everywhere.
    """

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def make_layer_norm(d_model: int, eps: float = 1e-5, fused: bool = False) -> nn.Module:
    """Our ``LayerNorm``, or with ``fused=True`` PyTorch's ``nn.LayerNorm``: the same maths and
    parameter names (``weight``, ``bias``) in one kernel instead of six small ones."""
    return nn.LayerNorm(d_model, eps=eps) if fused else LayerNorm(d_model, eps)


def make_gelu(fused: bool = False) -> nn.Module:
    """Our ``GELU``, or with ``fused=True`` PyTorch's ``nn.GELU(approximate="tanh")``, the same
    formula in one kernel."""
    return nn.GELU(approximate="tanh") if fused else GELU()


class FeedForward(nn.Module):
    """Per-position MLP: widen to ``d_ff``, GELU, project back. ``(b, s, d) -> (b, s, d)``.

    ``fused=True`` uses PyTorch's GELU kernel (see ``make_gelu``)."""

    def __init__(self, d_model: int, d_ff: int, fused: bool = False):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff)
        self.act = make_gelu(fused)
        self.fc_out = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class TransformerBlock(nn.Module):
    """One pre-LayerNorm transformer block: ``(batch, seq, d_model) -> (batch, seq, d_model)``.

    ``x = x + dropout(attn(norm1(x)))`` then ``x = x + dropout(ff(norm2(x)))``. Each sub-layer
    only adds a correction to the running "residual stream" ``x``; the additions give gradients
    a direct path to every layer. ``residual=False`` removes them (only for the notebook's
    experiment showing why they matter): ``x = dropout(attn(norm1(x)))`` and so on.
    """

    def __init__(self, config: GPTConfig, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.norm1 = make_layer_norm(config.d_model, config.layer_norm_eps, config.use_fused_ops)
        self.attn = MultiHeadAttention(
            config.d_model,
            config.n_heads,
            config.context_length,
            dropout=config.dropout,
            qkv_bias=config.qkv_bias,
            use_sdpa=config.use_sdpa,
        )
        self.norm2 = make_layer_norm(config.d_model, config.layer_norm_eps, config.use_fused_ops)
        self.ff = FeedForward(config.d_model, config.ff_dim, fused=config.use_fused_ops)
        self.drop_resid = nn.Dropout(config.dropout)

    def forward(
        self, x: Tensor, return_weights: bool = False, padding_mask: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``x`` ``(batch, seq, d_model)`` -> same shape (and the attention weights
        ``(batch, n_heads, seq, seq)`` if ``return_weights``)."""
        attn_out = self.attn(
            self.norm1(x), return_weights=return_weights, padding_mask=padding_mask
        )
        weights = None
        if return_weights:
            attn_out, weights = attn_out
        attn_out = self.drop_resid(attn_out)
        x = x + attn_out if self.residual else attn_out
        ff_out = self.drop_resid(self.ff(self.norm2(x)))
        x = x + ff_out if self.residual else ff_out
        return (x, weights) if return_weights else x


@dataclass
class GPTOutput:
    """What ``GPTModel.forward`` returns when asked for more than the logits.

    ``hidden_states``: ``n_layers + 1`` tensors ``(batch, seq, d_model)``: the embeddings, then
    the output of each block (before the final norm). ``attentions``: ``n_layers`` tensors
    ``(batch, n_heads, seq, seq)``.
    """

    logits: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


class GPTModel(nn.Module):
    """A GPT: embeddings, ``n_layers`` transformer blocks, final norm, output head.

    ``forward(ids)``: ``(batch, seq)`` integer ids -> logits ``(batch, seq, vocab_size)``, where
    ``logits[:, t]`` scores every candidate for the token after position ``t``.
    With ``config.tie_weights`` the output head reuses the token embedding matrix (one tensor,
    counted and stored once). Weights start as GPT-2's did: normal with std 0.02, biases 0, and
    the two projections that write into the residual stream scaled down by ``sqrt(2 n_layers)``
    so the stream's variance does not grow with depth. Seed with ``torch.manual_seed`` first.
    """

    def __init__(self, config: GPTConfig, *, residual: bool = True):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        self.drop_emb = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config, residual=residual) for _ in range(config.n_layers)
        )
        self.final_norm = make_layer_norm(
            config.d_model, config.layer_norm_eps, config.use_fused_ops
        )
        self.out_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_weights:
            self.out_head.weight = self.tok_emb.weight

    def reset_parameters(self) -> None:
        """GPT-2's initialisation (see the class docstring)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual_proj = name.endswith(("attn.out_proj", "ff.fc_out"))
                nn.init.normal_(module.weight, std=residual_std if is_residual_proj else 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, (LayerNorm, nn.LayerNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def context_length(self) -> int:
        return self.config.context_length

    @property
    def valid_vocab_size(self) -> int:
        """Ids the tokenizer can produce; logits beyond them are padding, never to be sampled."""
        return self.config.real_vocab_size

    def check_ids(self, ids: Tensor, *, check_length: bool = True) -> None:
        """Raise a clear error unless ``ids`` is a ``(batch, seq)`` integer tensor of valid ids
        with ``1 <= seq <= context_length`` (the length is not checked with
        ``check_length=False``, for callers that keep only the last ``context_length`` ids).

        Valid ids are ``0 <= id < valid_vocab_size``: with a padded output layer the ids beyond
        the tokenizer's vocabulary are padding, never real input. Allowed dtypes: ``ID_DTYPES``.
        """
        if not isinstance(ids, Tensor):
            raise TypeError(
                f"ids must be a torch.Tensor of shape (batch, seq), got {type(ids).__name__}"
            )
        if ids.dtype not in ID_DTYPES:
            allowed = ", ".join(str(dtype) for dtype in ID_DTYPES)
            raise TypeError(f"ids must be an integer tensor ({allowed}), got {ids.dtype}")
        if ids.dim() != 2:
            raise ValueError(
                f"ids must have shape (batch, seq), got {tuple(ids.shape)}; "
                "for one sequence use ids.unsqueeze(0)"
            )
        seq_len = ids.shape[1]
        if seq_len < 1 or ids.shape[0] < 1:
            raise ValueError(f"ids must contain at least one token, got shape {tuple(ids.shape)}")
        if check_length and seq_len > self.config.context_length:
            raise ValueError(
                f"sequence length {seq_len} exceeds context_length={self.config.context_length}; "
                "keep only the last context_length tokens, e.g. ids[:, -context_length:]"
            )
        if torch.compiler.is_compiling():
            # Reading the ids' values would split a compiled graph in two; the Trainer checks
            # its whole token stream once instead (and an eager model checks on every call).
            return
        low, high = int(ids.min()), int(ids.max())
        valid = self.config.real_vocab_size
        if low < 0 or high >= valid:
            bad = low if low < 0 else high
            if valid == self.config.vocab_size:
                allowed = f"[0, vocab_size={valid})"
            else:
                allowed = (
                    f"[0, valid_vocab_size={valid}); ids {valid}..{self.config.vocab_size - 1} "
                    "only pad the output layer"
                )
            raise ValueError(f"token id {bad} is outside the vocabulary: ids must be in {allowed}")

    def forward(
        self,
        ids: Tensor,
        *,
        return_hidden_states: bool = False,
        return_attention: bool = False,
        padding_mask: Tensor | None = None,
    ) -> Tensor | GPTOutput:
        """``ids`` ``(batch, seq)`` -> logits ``(batch, seq, vocab_size)``.

        With ``return_hidden_states`` or ``return_attention``, a ``GPTOutput`` holding the
        logits and what was asked for. ``padding_mask`` ``(batch, seq)``, ``True`` for real
        tokens, stops every position from attending to padding. ``ids`` may be any dtype in
        ``ID_DTYPES``; they are converted to ``torch.long``.
        """
        self.check_ids(ids)
        ids = ids.long()
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop_emb(self.tok_emb(ids) + self.pos_emb(positions))
        hidden_states, attentions = [x], []
        for block in self.blocks:
            if return_attention:
                x, weights = block(x, return_weights=True, padding_mask=padding_mask)
                attentions.append(weights)
            else:
                x = block(x, padding_mask=padding_mask)
            if return_hidden_states:
                hidden_states.append(x)
        logits = self.out_head(self.final_norm(x))
        if not (return_hidden_states or return_attention):
            return logits
        return GPTOutput(
            logits=logits,
            hidden_states=tuple(hidden_states) if return_hidden_states else None,
            attentions=tuple(attentions) if return_attention else None,
        )

    def next_token_logits(self, ids: Tensor) -> Tensor:
        """Scores for the token after each sequence: ``(batch, seq)`` -> ``(batch, vocab_size)``.

        Sees only the last ``context_length`` ids (so any prompt length works) and sets the
        logits of padding ids (``>= valid_vocab_size``) to ``-inf`` so they are never chosen.
        """
        self.check_ids(ids, check_length=False)
        logits = self(ids[:, -self.config.context_length :])[:, -1, :]
        return mask_padded_logits(logits, self.config.real_vocab_size)


def mask_padded_logits(logits: Tensor, valid_vocab_size: int) -> Tensor:
    """Copy of ``logits`` ``(..., vocab)`` with ids ``>= valid_vocab_size`` set to ``-inf``.

    After this, softmax gives the padding ids probability exactly 0 and argmax never picks them.
    """
    width = logits.shape[-1]
    check_positive_int("valid_vocab_size", valid_vocab_size)
    if valid_vocab_size > width:
        raise ValueError(
            f"valid_vocab_size ({valid_vocab_size}) must be <= the logits' width ({width})"
        )
    if valid_vocab_size == width:
        return logits
    masked = logits.clone()
    masked[..., valid_vocab_size:] = float("-inf")
    return masked


@torch.no_grad()
def greedy_continue(model: GPTModel, ids: Tensor, n_new_tokens: int) -> Tensor:
    """Append ``n_new_tokens`` ids, each the model's single most likely next token.

    ``ids`` ``(batch, seq)`` -> ``(batch, seq + n_new_tokens)`` as ``torch.long``; a 1-D prompt
    is an error (use ``ids.unsqueeze(0)``), like everywhere else in ``GPTModel``. The prompt
    may be longer than the context: the model sees the last ``context_length`` ids. Runs in
    eval mode (no dropout) and restores the model's mode afterwards. The full sampler lives in
    ``llmhelpers.generate``.
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"model must be a GPTModel, got {type(model).__name__}")
    if isinstance(n_new_tokens, bool) or not isinstance(n_new_tokens, int) or n_new_tokens < 0:
        raise ValueError(f"n_new_tokens must be an int >= 0, got {n_new_tokens!r}")
    model.check_ids(ids, check_length=False)
    ids = ids.long()
    was_training = model.training
    model.eval()
    try:
        for _ in range(n_new_tokens):
            next_id = model.next_token_logits(ids).argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
    finally:
        model.train(was_training)
    return ids


# ---------------------------------------------------------------------------------------------
# Looking inside: shapes along one forward pass, gradients per layer.
# ---------------------------------------------------------------------------------------------


def trace_shapes(model: GPTModel, ids: Tensor, expand_blocks: int = 1) -> list[tuple[str, tuple]]:
    """``(module name, output shape)`` for every module, in the order they run on ``ids``.

    The insides of the first ``expand_blocks`` blocks are listed; later blocks appear as one
    line each. Attention weights are not requested, so attention shows one output shape.
    """
    trace: list[tuple[str, tuple]] = []
    handles = []
    for name, module in model.named_modules():
        parts = name.split(".")
        inside_later_block = (
            len(parts) > 2 and parts[0] == "blocks" and int(parts[1]) >= expand_blocks
        )
        if not name or inside_later_block or name == "blocks":
            continue
        if isinstance(module, nn.Dropout):
            continue

        def record(mod, inputs, output, name=name):
            trace.append((name, tuple(output.shape)))

        handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return trace


def block_gradient_norms(model: GPTModel, ids: Tensor, targets: Tensor) -> list[float]:
    """Gradient size reaching each block after one backward pass of the next-token loss.

    ``ids`` and ``targets`` ``(batch, seq)``. Returns, per block, the L2 norm of the gradient
    over all of that block's parameters. Leaves the gradients in the model.
    """
    model.zero_grad(set_to_none=True)
    logits = model(ids)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    return [
        torch.sqrt(sum((p.grad.float() ** 2).sum() for p in block.parameters())).item()
        for block in model.blocks
    ]


# ---------------------------------------------------------------------------------------------
# How big is it? Parameter counts, memory and FLOPs from the config alone.
# ---------------------------------------------------------------------------------------------

COMPONENTS = (
    "token embedding",
    "position embedding",
    "attention",
    "feed-forward",
    "layer norms",
    "output head",
)


def parameter_breakdown(config: GPTConfig) -> dict[str, int]:
    """Parameters per component, by formula (``d`` = d_model, ``V`` = vocab_size, ``L`` = n_layers).

    * token embedding ``V d``; position embedding ``context_length d``;
    * attention, per layer: q, k, v ``3 (d d + d?)`` (bias only with ``qkv_bias``) and the output
      projection ``d d + d``;
    * feed-forward, per layer: ``d d_ff + d_ff`` then ``d_ff d + d``;
    * layer norms: two per layer and one final, ``2 d`` each (scale and shift);
    * output head ``V d`` (no bias), or 0 when tied to the token embedding (shared tensor).
    """
    d, d_ff, n_layers = config.d_model, config.ff_dim, config.n_layers
    qkv = 3 * (d * d + (d if config.qkv_bias else 0))
    return {
        "token embedding": config.vocab_size * d,
        "position embedding": config.context_length * d,
        "attention": n_layers * (qkv + d * d + d),
        "feed-forward": n_layers * (d * d_ff + d_ff + d_ff * d + d),
        "layer norms": (2 * n_layers + 1) * 2 * d,
        "output head": 0 if config.tie_weights else config.vocab_size * d,
    }


def parameter_count(config: GPTConfig) -> int:
    """Total parameters by formula (a tied head is counted once, with the embedding)."""
    return sum(parameter_breakdown(config).values())


def count_parameters(model: nn.Module) -> int:
    """Direct count: elements of every distinct parameter tensor (shared ones once)."""
    return sum(p.numel() for p in model.parameters())


def _dtype_bytes(dtype: torch.dtype) -> int:
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    if dtype == torch.bool or dtype.is_complex:
        raise ValueError(
            "dtype must be a floating-point or integer torch.dtype (e.g. torch.float32, "
            f"torch.bfloat16, torch.int8) to store weights, got {dtype}"
        )
    return dtype.itemsize


def _check_seq_len(config: GPTConfig, seq_len: int | None) -> int:
    if seq_len is None:
        return config.context_length
    seq_len = check_positive_int("seq_len", seq_len)
    if seq_len > config.context_length:
        raise ValueError(
            f"seq_len must be <= context_length={config.context_length} (the model never "
            f"attends to more tokens), got {seq_len}"
        )
    return seq_len


def weights_memory_bytes(config: GPTConfig, dtype: torch.dtype = torch.float32) -> int:
    """Bytes to hold the weights: parameters x bytes per element of ``dtype``."""
    return parameter_count(config) * _dtype_bytes(dtype)


def training_memory_bytes(config: GPTConfig) -> int:
    """Bytes for float32 training state, activations excluded: weights, gradients and AdamW's
    two moment estimates, i.e. 4 tensors of 4 bytes per parameter."""
    return parameter_count(config) * 4 * 4


def forward_flops_per_token(config: GPTConfig, seq_len: int | None = None) -> int:
    """Floating-point operations of one forward pass, per token.

    Counts 2 FLOPs (a multiply and an add) per multiply-accumulate in every matrix product:
    the layers' linear maps (``2 x`` their weights), the output head (``2 V d``, even when its
    weights are tied) and attention itself, where each token's query meets ``seq_len`` keys
    and ``seq_len`` values: ``2 x 2 x seq_len x d`` per layer. The explicit attention path
    computes the full score matrix and masks it afterwards, so no discount for the causal mask
    (fused kernels, ``use_sdpa``, may skip part of the masked half). Norms, GELU, softmax and biases
    (a few operations per element, not per weight) are left out. ``seq_len`` (at most the
    context length) defaults to the context length.
    """
    seq_len = _check_seq_len(config, seq_len)
    d, d_ff = config.d_model, config.ff_dim
    weights_per_layer = 4 * d * d + 2 * d * d_ff  # q, k, v, out projection; ff in and out
    matmul_weights = config.n_layers * weights_per_layer + config.vocab_size * d
    attention = config.n_layers * 2 * 2 * seq_len * d
    return 2 * matmul_weights + attention


def training_flops_per_token(config: GPTConfig, seq_len: int | None = None) -> int:
    """Forward plus backward, per token: 3 x forward (the backward pass multiplies by each
    weight matrix twice: once for the input's gradient, once for the weight's)."""
    return 3 * forward_flops_per_token(config, seq_len)


def kv_cache_bytes(
    config: GPTConfig,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 1,
    seq_len: int | None = None,
) -> int:
    """Bytes to cache keys and values while generating: 2 x n_layers x seq x d_model per sequence.

    ``seq_len`` (at most the context length) defaults to the full context length.
    """
    seq_len = _check_seq_len(config, seq_len)
    batch_size = check_positive_int("batch_size", batch_size)
    return 2 * config.n_layers * seq_len * config.d_model * batch_size * _dtype_bytes(dtype)


def size_report(config: GPTConfig, dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """All the size figures for one config, as numbers (see ``format_size_report``).

    ``parameters`` counts the config as it is; the two ``head tied``/``head untied`` entries
    count it with the output head sharing the token embedding and with a separate head.
    """
    tied = dataclasses.replace(config, tie_weights=True)
    untied = dataclasses.replace(config, tie_weights=False)
    return {
        "parameters": parameter_count(config),
        "parameters, head tied": parameter_count(tied),
        "parameters, head untied": parameter_count(untied),
        "weights memory (bytes)": weights_memory_bytes(config, dtype),
        "training memory, fp32 + AdamW (bytes)": training_memory_bytes(config),
        "forward FLOPs/token": forward_flops_per_token(config),
        "training FLOPs/token": training_flops_per_token(config),
        "KV cache, full context (bytes)": kv_cache_bytes(config, dtype),
    }


def human_count(n: float) -> str:
    """``124439808 -> '124.4 M'``, ``1557611200 -> '1.56 B'`` (two decimals below 10)."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.2f} {unit}" if abs(value) < 10 else f"{value:.1f} {unit}"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    """``497759232 -> '474.7 MiB'`` (powers of 1024)."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def format_size_report(report: dict[str, int]) -> dict[str, str]:
    """Human-readable strings for ``size_report``'s numbers, under labels without the unit:
    ``"weights memory (bytes)": 497759232`` becomes ``"weights memory": "474.7 MiB"``."""
    readable = {}
    for name, value in report.items():
        if name.endswith(" (bytes)"):
            readable[name.removesuffix(" (bytes)")] = human_bytes(value)
        else:
            readable[name] = human_count(value)
    return readable
