"""BERT-style masking of event positions: pure functions with explicit generators.

A position is *chosen* with probability ``mask_prob`` (never PAD or CLS; EOS is
maskable, so "the sequence ends here" is learned and a sequence that stops early
becomes surprising), with at least ``min_masked`` chosen per sequence.  Of the
chosen positions, ``mask_replace_prob`` get the MASK token, ``random_replace_prob``
a random real event and the rest keep their event.  All attribute fields and the
time gap of a chosen position are hidden (MASK) whatever happens to its event,
otherwise the model would read the event off its attributes.  Labels hold the
original ids at chosen positions and ``-100`` elsewhere.  The collator draws fresh
masks for every batch from a generator derived from ``(seed, epoch, batch, rank)``,
so a resumed run masks exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .config import MaskingConfig
from .data.encoded import CLS_ID, EOS_ID, EVENT_FIELD, MASK_ID, N_SPECIAL, PAD_ID, UNK_ID
from .model import IGNORE_INDEX


def derive_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from a tuple of integers (stable across runs and platforms)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def maskable(event_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that may be masked: real positions that are neither PAD nor CLS, shape (B, L) bool."""
    return attention_mask & (event_ids != PAD_ID) & (event_ids != CLS_ID)


def choose_positions(
    event_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask_prob: float,
    min_masked: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Choose positions to predict.

    Parameters
    ----------
    event_ids : LongTensor, shape (B, L)
    attention_mask : BoolTensor, shape (B, L)
        True at real (non-pad) positions.
    mask_prob : float
        Probability that a maskable position is chosen.
    min_masked : int
        Each sequence gets at least ``min(min_masked, n_maskable)`` chosen positions.
    generator : torch.Generator
        CPU generator; the only source of randomness.

    Returns
    -------
    BoolTensor, shape (B, L)
    """
    ok = maskable(event_ids, attention_mask)  # (B, L)
    u = torch.rand(event_ids.shape, generator=generator)  # (B, L)
    chosen = ok & (u < mask_prob)
    k = min(int(min_masked), event_ids.shape[1])
    if k > 0:
        # the k maskable positions with the smallest draws are always chosen; when at least
        # k positions fall below mask_prob these are among them, so the Bernoulli rate is kept
        score = torch.where(ok, u, torch.full_like(u, 2.0))  # (B, L)
        low, idx = torch.topk(score, k, dim=1, largest=False)  # (B, k)
        forced = torch.zeros_like(chosen).scatter_(1, idx, low <= 1.0)  # (B, L)
        chosen |= forced
    return chosen


def add_end_slots(
    inputs: dict[str, torch.Tensor],
    attention_mask: torch.Tensor,
    counts: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Append ``counts[b]`` masked slots after the EOS of each row that has one.

    Without them, the last attended position of a window is always its EOS, so the
    model would "predict" a masked EOS from the padding mask alone and a sequence
    that stops too early could never surprise it.  With a random number of masked
    slots after EOS in training (and a fixed number when scoring) the model has to
    judge from the events whether the sequence ends at a position.

    Parameters
    ----------
    inputs : dict of str to LongTensor, shape (B, L)
    attention_mask : BoolTensor, shape (B, L)
    counts : LongTensor, shape (B,)
        Slots per row (ignored for rows without EOS).

    Returns
    -------
    inputs, attention_mask : widened to (B, L + max(counts)) with MASK in every field at the slots
    slots : BoolTensor, shape (B, L + max(counts))
        True at the added slots (they carry no label).
    """
    events = inputs[EVENT_FIELD]
    B, L = events.shape
    has_eos = (events == EOS_ID).any(dim=1)  # (B,)
    counts = torch.where(has_eos, counts.to(events.device), torch.zeros_like(counts, device=events.device))
    extra = int(counts.max()) if B else 0
    if extra == 0:
        return inputs, attention_mask, torch.zeros_like(attention_mask)
    lengths = attention_mask.sum(dim=1)  # (B,) real tokens, EOS last
    col = torch.arange(L + extra, device=events.device).unsqueeze(0)  # (1, L + extra)
    slots = (col >= lengths[:, None]) & (col < (lengths + counts)[:, None])  # (B, L + extra)
    widened = {}
    for name, ids in inputs.items():
        wide = torch.nn.functional.pad(ids, (0, extra), value=PAD_ID)  # (B, L + extra)
        widened[name] = wide.masked_fill(slots, MASK_ID)
    mask = torch.nn.functional.pad(attention_mask, (0, extra), value=False) | slots
    return widened, mask, slots


def hide_positions(inputs: dict[str, torch.Tensor], positions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Copy of ``inputs`` with every field set to MASK at ``positions`` ((B, L) bool)."""
    return {name: ids.masked_fill(positions, MASK_ID) for name, ids in inputs.items()}


def apply_masking(
    inputs: dict[str, torch.Tensor],
    chosen: torch.Tensor,
    cfg: MaskingConfig,
    event_vocab_size: int,
    generator: torch.Generator,
    predict_fields: Sequence[str] = (),
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Corrupt the chosen positions and build the labels.

    Parameters
    ----------
    inputs : dict of str to LongTensor, shape (B, L)
        Token ids per field; ``'event'`` required.
    chosen : BoolTensor, shape (B, L)
        Positions to predict (from :func:`choose_positions`).
    cfg : MaskingConfig
        ``mask_replace_prob`` / ``random_replace_prob`` split of the chosen positions.
    event_vocab_size : int
        Size of the event vocabulary (random replacements are drawn from ``[N_SPECIAL, size)``).
    generator : torch.Generator
    predict_fields : sequence of str
        Attribute fields that also get labels (where their original id is a real token or UNK).

    Returns
    -------
    masked : dict of str to LongTensor, shape (B, L)
    labels : dict of str to LongTensor, shape (B, L)
        Original ids at chosen positions, ``-100`` elsewhere; ``'event'`` plus ``predict_fields``.
    """
    events = inputs[EVENT_FIELD]
    v = torch.rand(events.shape, generator=generator)  # (B, L)
    to_mask = chosen & (v < cfg.mask_replace_prob)
    to_random = chosen & ~to_mask & (v < cfg.mask_replace_prob + cfg.random_replace_prob)
    if event_vocab_size > N_SPECIAL:
        random_ids = torch.randint(N_SPECIAL, event_vocab_size, events.shape, generator=generator)
    else:  # no real event to draw: fall back to MASK
        random_ids = torch.full_like(events, MASK_ID)
    masked = hide_positions({k: t for k, t in inputs.items() if k != EVENT_FIELD}, chosen)
    new_events = torch.where(to_random, random_ids.to(events.dtype), events)
    masked = {EVENT_FIELD: new_events.masked_fill(to_mask, MASK_ID)} | masked
    labels = {EVENT_FIELD: events.masked_fill(~chosen, IGNORE_INDEX)}
    for name in predict_fields:
        if name == EVENT_FIELD:
            continue
        orig = inputs[name]
        real = (orig >= N_SPECIAL) | (orig == UNK_ID)
        labels[name] = orig.masked_fill(~(chosen & real), IGNORE_INDEX)
    return masked, labels


@dataclass
class MaskedBatch:
    """One training batch: corrupted inputs, padding mask and labels (all (B, L))."""

    inputs: dict[str, torch.Tensor]
    attention_mask: torch.Tensor
    labels: dict[str, torch.Tensor]

    @property
    def n_tokens(self) -> int:
        """Real (non-pad) tokens in the batch."""
        return int(self.attention_mask.sum())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MaskedBatch:
        """The batch on ``device``."""
        return MaskedBatch(
            inputs={k: t.to(device, non_blocking=non_blocking) for k, t in self.inputs.items()},
            attention_mask=self.attention_mask.to(device, non_blocking=non_blocking),
            labels={k: t.to(device, non_blocking=non_blocking) for k, t in self.labels.items()},
        )


class MaskingCollator:
    """Masks padded batches with a fresh, reproducible mask per batch.

    Parameters
    ----------
    cfg : MaskingConfig
    event_vocab_size : int
        Size of the event vocabulary (specials included).
    predict_fields : sequence of str
        Attribute fields that also get labels.
    seed : int
        Base seed; the mask of a batch depends only on ``(seed, *key)``.
    end_slots : int
        Up to this many masked slots after EOS per window (uniform 0..end_slots), see
        :func:`add_end_slots`.
    """

    def __init__(
        self,
        cfg: MaskingConfig,
        event_vocab_size: int,
        predict_fields: Sequence[str] = (),
        seed: int = 0,
        end_slots: int = 0,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.end_slots = int(end_slots)
        self.event_vocab_size = int(event_vocab_size)
        self.predict_fields = list(predict_fields)
        self.seed = int(seed)

    def __call__(
        self, inputs: dict[str, torch.Tensor], attention_mask: torch.Tensor, key: Sequence[int]
    ) -> MaskedBatch:
        """Mask one batch; ``key`` (e.g. ``(epoch, batch_index)``) selects the random stream."""
        gen = derive_generator(self.seed, *key)
        chosen = choose_positions(
            inputs[EVENT_FIELD], attention_mask, self.cfg.mask_prob, self.cfg.min_masked, gen
        )
        masked, labels = apply_masking(
            inputs, chosen, self.cfg, self.event_vocab_size, gen, self.predict_fields
        )
        if self.end_slots:
            counts = torch.randint(0, self.end_slots + 1, (attention_mask.shape[0],), generator=gen)
            masked, attention_mask, slots = add_end_slots(masked, attention_mask, counts)
            extra = slots.shape[1] - next(iter(labels.values())).shape[1]
            labels = {
                k: torch.nn.functional.pad(v, (0, extra), value=IGNORE_INDEX) for k, v in labels.items()
            }
        return MaskedBatch(masked, attention_mask, labels)


def pass_positions(
    attention_mask: torch.Tensor, event_ids: torch.Tensor, passes: int, j: int
) -> torch.Tensor:
    """Deterministic masks for surprise scoring: maskable positions ``p`` with ``p % passes == j``.

    Over ``j = 0 .. passes - 1`` every maskable position is chosen exactly once.
    Returns a BoolTensor of shape (B, L).
    """
    L = event_ids.shape[1]
    pos = torch.arange(L, device=event_ids.device).unsqueeze(0)  # (1, L)
    return maskable(event_ids, attention_mask) & (pos % passes == j)


__all__ = [
    "MaskedBatch",
    "MaskingCollator",
    "add_end_slots",
    "apply_masking",
    "choose_positions",
    "derive_generator",
    "hide_positions",
    "maskable",
    "pass_positions",
]
