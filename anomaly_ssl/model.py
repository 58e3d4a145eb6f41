"""The masked-event Transformer: a small bidirectional encoder over event sequences.

Each position's input is the sum of the embeddings of its event token, of each
attribute field (item, category, ..., the time-gap bucket) and of its position;
attention also rotates queries and keys by position (rotary encoding), so
relative order is easy to learn.  Pre-LayerNorm blocks with fused attention
(``scaled_dot_product_attention``; an explicit softmax(QK^T)V path gives the
same numbers for benchmarks) produce one hidden vector per position.  A
BERT-style head predicts the event type (and optionally attribute fields) at
masked positions; its output matrix is the event's input embedding (weight
tying).  The CLS position, or the mean over the non-pad positions, is the
sequence embedding.  One readable file, nanoGPT style.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .config import ModelConfig
from .data.encoded import EVENT_FIELD, N_SPECIAL, UNK_ID
from .errors import ModelError

log = logging.getLogger(__name__)

#: label value of positions that are not predicted
IGNORE_INDEX = -100


def rotary_tables(max_len: int, head_dim: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the rotary angles, each of shape (max_len, head_dim // 2)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (hd/2,)
    angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (max_len, hd/2)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of ``x`` (B, L, H, hd) by the unit complex numbers ``rotation`` (L, 1, hd/2).

    After rotation, q . k depends on the two positions only through their difference.
    One complex multiplication is ~3x cheaper on the CPU than the real-valued cat/mul form.
    """
    B, L, H, hd = x.shape
    pairs = torch.view_as_complex(x.float().reshape(B, L, H, hd // 2, 2))  # (B, L, H, hd/2) complex
    return torch.view_as_real(pairs * rotation).reshape(B, L, H, hd).type_as(x)  # (B, L, H, hd)


class SelfAttention(nn.Module):
    """Multi-head bidirectional self-attention with a key padding mask (and rotary positions)."""

    def __init__(self, d_model: int, n_heads: int, fused: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.fused = fused
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, rotation: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` (B, L, d); ``key_mask`` (B, 1, 1, L) bool, True = may be attended, or None;
        ``rotation`` the (L, 1, hd/2) complex rotary factors, or None."""
        B, L, d = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).view(B, L, 3, H, d // H).unbind(2)  # 3 x (B, L, H, hd)
        if rotation is not None:
            q, k = apply_rotary(q, rotation), apply_rotary(k, rotation)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # 3 x (B, H, L, hd)
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # (B, H, L, hd)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(d // H)  # (B, H, L, L)
            if key_mask is not None:
                att = att.masked_fill(~key_mask, float("-inf"))
            y = att.softmax(dim=-1) @ v  # (B, H, L, hd)
        y = y.transpose(1, 2).reshape(B, L, d)  # (B, L, d)
        return self.proj(y)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, fused: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, fused)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, d_ff)
        self.fc_out = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        rotation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), key_mask, rotation))
        # exact (erf) GELU: on the CPU twice as fast as the tanh approximation
        x = x + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(x)))))
        return x


class EventTransformer(nn.Module):
    """Bidirectional encoder with a weight-tied masked-event head.

    Parameters
    ----------
    cfg : ModelConfig
        Architecture (size preset, dropout, pooling, predicted fields, fused attention).
    field_sizes : dict of str to int
        Vocabulary size (specials included) of every input field; ``'event'`` is
        required. Every field is embedded and summed into the position's input.
    max_len : int
        Longest window (tokens, CLS and EOS included) the model accepts.
    seed : int
        Seed of the weight initialisation (the global RNG is left untouched).

    Raises
    ------
    ConfigError
        If ``cfg`` is invalid (e.g. d_model not divisible by n_heads).
    ModelError
        If ``field_sizes`` lacks ``'event'``, the event vocabulary has no real
        token, or ``cfg.predict_fields`` names a field that is not an input.
    """

    def __init__(self, cfg: ModelConfig, field_sizes: dict[str, int], max_len: int, *, seed: int = 0) -> None:
        super().__init__()
        cfg.validate()
        _check_fields(cfg, field_sizes, max_len)
        d, n_layers, n_heads, d_ff = cfg.resolved()
        self.cfg = cfg
        self.d_model = d
        self.max_len = int(max_len)
        # event first, then the rest in the given order (matches EncodedSequences)
        self.field_sizes = {EVENT_FIELD: int(field_sizes[EVENT_FIELD])} | {
            k: int(v) for k, v in field_sizes.items() if k != EVENT_FIELD
        }
        self.predicted = [EVENT_FIELD, *[f for f in cfg.predict_fields if f != EVENT_FIELD]]
        with torch.random.fork_rng(devices=[]):  # default inits draw from the global RNG
            self.embeddings = nn.ModuleDict({k: nn.Embedding(v, d) for k, v in self.field_sizes.items()})
            self.position = nn.Embedding(self.max_len, d)
            self.drop = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList(
                Block(d, n_heads, d_ff, cfg.dropout, cfg.fused_attention) for _ in range(n_layers)
            )
            self.ln_f = nn.LayerNorm(d)
            # BERT-style transform before the tied output matrices
            self.head_dense = nn.Linear(d, d)
            self.head_ln = nn.LayerNorm(d)
            self.head_bias = nn.ParameterDict(
                {f: nn.Parameter(torch.zeros(self.field_sizes[f])) for f in self.predicted}
            )
            if cfg.bag_weight > 0:  # the composition head's own bias (weights tied to the events)
                self.bag_bias = nn.Parameter(torch.zeros(self.field_sizes[EVENT_FIELD]))
        if cfg.rotary:  # derived from the shape, so not saved with the weights
            cos, sin = rotary_tables(self.max_len, d // n_heads)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self._init_weights(seed, n_layers)

    # ------------------------------------------------------------------ set-up
    def _init_weights(self, seed: int, n_layers: int) -> None:
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
                elif isinstance(module, (nn.Linear, nn.Embedding)):
                    # GPT-2: residual output projections scaled down with depth
                    residual = name.endswith(("attn.proj", "fc_out"))
                    std = 0.02 / math.sqrt(2 * n_layers) if residual else 0.02
                    module.weight.normal_(0.0, std, generator=gen)
                    if getattr(module, "bias", None) is not None:
                        module.bias.zero_()
            for bias in self.head_bias.values():
                bias.zero_()
            if hasattr(self, "bag_bias"):
                self.bag_bias.zero_()

    def n_params(self, trainable_only: bool = True) -> int:
        """Number of parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ encoder
    def encode(self, inputs: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the final LayerNorm.

        Parameters
        ----------
        inputs : dict of str to LongTensor, shape (B, L)
            Token ids of every field the model was built with.
        attention_mask : BoolTensor, shape (B, L)
            True at real positions, False at padding.

        Returns
        -------
        Tensor, shape (B, L, d_model)
        """
        ev = inputs.get(EVENT_FIELD)
        if ev is None or ev.dim() != 2:
            raise ModelError("inputs must hold an 'event' LongTensor of shape (batch, length)")
        B, L = ev.shape
        if self.max_len < L:
            raise ModelError(f"window of {L} tokens is longer than the model's max_len {self.max_len}")
        missing = [f for f in self.field_sizes if f not in inputs]
        if missing:
            raise ModelError(
                f"inputs lack field(s) {missing}; the model was built with {list(self.field_sizes)}"
            )
        x = self.position.weight[:L].unsqueeze(0)  # (1, L, d)
        for name, emb in self.embeddings.items():
            x = x + emb(inputs[name])  # (B, L, d)
        x = self.drop(x)
        key_mask: torch.Tensor | None = attention_mask.view(B, 1, 1, L)  # (B, 1, 1, L)
        if not x.is_cuda and bool(attention_mask.all()):
            key_mask = None  # no padding: the unmasked kernel is faster (no host sync on CUDA)
        rotation = None
        if self.cfg.rotary:
            rotation = torch.complex(self.rotary_cos[:L], self.rotary_sin[:L]).unsqueeze(1)  # (L, 1, hd/2)
        for block in self.blocks:
            x = block(x, key_mask, rotation)
        return self.ln_f(x)

    def head_transform(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head's dense + GELU + LayerNorm, shared by all predicted fields: (..., d) -> (..., d)."""
        return self.head_ln(F.gelu(self.head_dense(hidden)))

    def field_logits(self, hidden: torch.Tensor, field: str = EVENT_FIELD) -> torch.Tensor:
        """Logits of ``field`` from hidden states ``(..., d)`` -> ``(..., V_field)`` (tied weights)."""
        return F.linear(self.head_transform(hidden), self.embeddings[field].weight, self.head_bias[field])

    # ------------------------------------------------------------------ training
    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        attention_mask: torch.Tensor,
        labels: dict[str, torch.Tensor] | None = None,
        *,
        reduction: str = "mean",
        return_logits: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Event logits and the masked-prediction loss.

        Parameters
        ----------
        inputs : dict of str to LongTensor, shape (B, L)
        attention_mask : BoolTensor, shape (B, L)
        labels : dict of str to LongTensor, shape (B, L), optional
            Target ids per predicted field, ``-100`` where nothing is predicted.
            Fields in ``labels`` that the model does not predict are ignored.
        reduction : {'mean', 'sequence'}
            ``'mean'``: cross-entropy averaged over labelled positions, summed over
            predicted fields (a scalar). ``'sequence'``: the same per sequence, shape (B,)
            (0 for a sequence without labelled positions).
        return_logits : bool
            Compute the full (B, L, V_event) logits; training passes False and only
            the labelled positions go through the head.

        Returns
        -------
        logits : Tensor, shape (B, L, V_event), or None
        loss : Tensor, scalar or shape (B,), or None without labels
        """
        if reduction not in ("mean", "sequence"):
            raise ValueError(f"reduction must be 'mean' or 'sequence', got {reduction!r}")
        h = self.encode(inputs, attention_mask)  # (B, L, d)
        logits = self.field_logits(h) if return_logits else None  # (B, L, V)
        if labels is None:
            return logits, None
        B = h.shape[0]
        fields = [f for f in self.predicted if f in labels]
        if EVENT_FIELD not in fields:
            raise ModelError("labels must hold an 'event' tensor")
        # only the positions labelled in some field go through the head
        sel = torch.zeros_like(attention_mask)
        for f in fields:
            sel |= labels[f] != IGNORE_INDEX
        b_idx, p_idx = sel.nonzero(as_tuple=True)  # (N,), (N,)
        t = self.head_transform(h[b_idx, p_idx])  # (N, d)
        total = h.new_zeros(B) if reduction == "sequence" else h.new_zeros(())
        for f in fields:
            target = labels[f][b_idx, p_idx]  # (N,)
            keep = target != IGNORE_INDEX
            tf, target, bf = t[keep], target[keep], b_idx[keep]
            logits_f = F.linear(tf, self.embeddings[f].weight, self.head_bias[f])  # (n_f, V_f)
            ce = F.cross_entropy(logits_f, target, reduction="none")  # (n_f,)
            if reduction == "mean":
                total = total + (ce.mean() if ce.numel() else ce.sum())
            else:
                zeros = torch.zeros(B, dtype=ce.dtype, device=ce.device)
                count = zeros.index_add(0, bf, torch.ones_like(ce))  # (B,)
                per_seq = zeros.index_add(0, bf, ce)  # (B,)
                total = total + per_seq / count.clamp(min=1)
        if self.cfg.bag_weight > 0:
            kl = self.composition_loss(h[:, 0], inputs[EVENT_FIELD], labels[EVENT_FIELD])  # (B,)
            total = total + self.cfg.bag_weight * (kl if reduction == "sequence" else kl.mean())
        return logits, total

    def composition_loss(self, cls: torch.Tensor, events: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """KL from each window's event histogram to the CLS vector's prediction of it, shape (B,).

        The histogram counts the original events (masked and replaced positions
        restored from ``labels``); specials are not counted, UNK is.  KL rather
        than cross-entropy, so windows with many different events do not get a
        larger loss (which trimming would read as "unusual").
        """
        original = torch.where(labels != IGNORE_INDEX, labels, events)  # (B, L)
        real = (original >= N_SPECIAL) | (original == UNK_ID)  # (B, L)
        V = self.field_sizes[EVENT_FIELD]
        counts = torch.zeros(original.shape[0], V, device=cls.device, dtype=cls.dtype)  # (B, V)
        counts.scatter_add_(1, original * real, real.to(cls.dtype))
        target = counts / counts.sum(1, keepdim=True).clamp(min=1.0)  # (B, V)
        logits = F.linear(self.head_transform(cls), self.embeddings[EVENT_FIELD].weight, self.bag_bias)
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, V)
        ent = torch.where(target > 0, target * target.clamp(min=1e-12).log(), torch.zeros_like(target))
        return (ent - target * logp).sum(1).to(cls.dtype)  # (B,)

    # ------------------------------------------------------------------ inference
    def embed(self, inputs: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
        """Sequence (window) embeddings, shape (B, d_model): CLS vector or mean over non-pad positions."""
        h = self.encode(inputs, attention_mask)  # (B, L, d)
        if self.cfg.pooling == "cls":
            return h[:, 0]  # (B, d)
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, d)


def _check_fields(cfg: ModelConfig, field_sizes: dict[str, int], max_len: int) -> None:
    if EVENT_FIELD not in field_sizes:
        raise ModelError(f"field_sizes must include 'event'; got {sorted(field_sizes)}")
    if int(field_sizes[EVENT_FIELD]) <= N_SPECIAL:
        raise ModelError(
            f"the event vocabulary has size {field_sizes[EVENT_FIELD]}, which leaves no real event "
            f"(ids < {N_SPECIAL} are specials); is the training data empty?"
        )
    for name, size in field_sizes.items():
        if int(size) < N_SPECIAL:
            raise ModelError(f"field {name!r} has vocabulary size {size} < {N_SPECIAL} (the special ids)")
    unknown = [f for f in cfg.predict_fields if f not in field_sizes]
    if unknown:
        raise ModelError(
            f"model.predict_fields names {unknown}, which are not input fields {list(field_sizes)}"
        )
    if int(max_len) < 2:
        raise ModelError(f"max_len must be >= 2 (CLS + one event), got {max_len}")
