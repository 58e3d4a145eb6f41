"""Batched inference with a trained model: sequence embeddings and per-event surprise.

Sequences are cut into the same windows as in training, processed in batches of
similar length (little padding) under ``torch.inference_mode``, and the results
are mapped back to sequences: embeddings are the window embeddings averaged with
the window lengths as weights; surprise is the negative log-likelihood of the
true event when its position is masked.  Over ``passes`` deterministic passes
position ``p`` of a window is masked in pass ``p % passes`` (all its fields
hidden, as in training), so every event and every EOS is scored exactly once
per window; an event seen by several windows keeps the value of the window in
which it lies farthest from a cut edge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .config import WindowConfig
from .data.encoded import EVENT_FIELD, EncodedSequences
from .errors import ConfigError
from .masking import add_end_slots, hide_positions, maskable
from .model import EventTransformer
from .windows import Windows, assemble, bucket_batches, make_windows

log = logging.getLogger(__name__)

#: distance given to an event next to a real (not cut) window edge
_FAR = np.iinfo(np.int64).max // 4


@dataclass
class SurpriseResult:
    """Per-event masked surprise of many sequences.

    Attributes
    ----------
    per_event : ndarray of float32, shape (total_events,)
        NLL (nats) of the true event at each position, aligned with ``offsets``;
        NaN for events no window covers (``window.mode='truncate'``).
    offsets : ndarray of int64, shape (n + 1,)
        The sequences' offsets (as in :class:`EncodedSequences`).
    eos_nll : ndarray of float32, shape (n,)
        NLL of EOS after the last event ("the sequence ended here"); NaN when
        the model has no EOS or the end was truncated away.
    expected : ndarray of int32, shape (total_events,)
        The model's most likely event id at each masked position (-1 where not scored),
        for explanations ("expected X, saw Y").
    """

    per_event: np.ndarray
    offsets: np.ndarray
    eos_nll: np.ndarray
    expected: np.ndarray

    def aggregate(self, how: str = "topk", k: int = 3) -> np.ndarray:
        """Per-sequence score, see :func:`aggregate_surprise`."""
        return aggregate_surprise(self.per_event, self.offsets, self.eos_nll, how, k)


def _prepare(model: EventTransformer, encoded: EncodedSequences, window_cfg: WindowConfig) -> Windows:
    slots = model.cfg.eos_slots if model.cfg.add_eos else 0
    if window_cfg.max_len + slots > model.max_len:
        raise ConfigError(
            f"window.max_len={window_cfg.max_len} (+{slots} end slots) exceeds the model's max_len "
            f"{model.max_len}; use window.max_len <= {model.max_len - slots}"
        )
    missing = [f for f in model.field_sizes if f not in encoded.fields]
    if missing:
        raise ConfigError(f"the encoded data lacks field(s) {missing} the model was trained with")
    return make_windows(encoded.lengths, window_cfg, model.cfg.add_eos)


def _model_device(model: torch.nn.Module, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def _inputs(
    encoded: EncodedSequences,
    windows: Windows,
    idx: np.ndarray,
    model: EventTransformer,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    inputs, mask = assemble(encoded, windows, idx)
    inputs = {k: v.to(device) for k, v in inputs.items() if k in model.field_sizes}
    return inputs, mask.to(device)


def embed_sequences(
    model: EventTransformer,
    encoded: EncodedSequences,
    window_cfg: WindowConfig,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Sequence embeddings.

    Parameters
    ----------
    model : EventTransformer
    encoded : EncodedSequences
        Encoded with the model's vocabulary.
    window_cfg : WindowConfig
    batch_size : int
        Windows per forward pass.
    device : torch.device or str, optional
        Default: the model's device (the model is moved there).

    Returns
    -------
    ndarray of float32, shape (n, d_model)
        Window embeddings averaged per sequence, weighted by window length (tokens).
    """
    windows = _prepare(model, encoded, window_cfg)
    dev = _model_device(model, device)
    was_training = model.training
    model.to(dev).eval()
    out = np.zeros((len(windows), model.d_model), dtype=np.float32)
    try:
        with torch.inference_mode():
            for idx in bucket_batches(windows.lengths, batch_size):
                inputs, mask = _inputs(encoded, windows, idx, model, dev)
                out[idx] = model.embed(inputs, mask).float().cpu().numpy()
    finally:
        model.train(was_training)
    if len(windows) == len(encoded):  # one window per sequence, in sequence order
        return out
    w = windows.lengths.astype(np.float64)[:, None]  # (W, 1)
    first = np.flatnonzero(np.r_[True, windows.sequence_index[1:] != windows.sequence_index[:-1]])
    sums = np.add.reduceat(out * w, first, axis=0)  # (n, d)
    return (sums / np.add.reduceat(w, first, axis=0)).astype(np.float32)


def event_surprise(
    model: EventTransformer,
    encoded: EncodedSequences,
    window_cfg: WindowConfig,
    passes: int = 5,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> SurpriseResult:
    """Masked-event surprise of every event (and of each sequence's end).

    Parameters
    ----------
    model : EventTransformer
    encoded : EncodedSequences
    window_cfg : WindowConfig
    passes : int
        Deterministic masking passes; pass ``j`` masks window positions ``p`` with
        ``p % passes == j`` (more passes = more context per prediction, more compute).
        About ``1 / masking.mask_prob`` (5-7) matches what the model saw in training;
        1 or 2 hide so much context that every event looks surprising.
    batch_size : int
        Windows per forward pass (each is repeated ``passes`` times).
    device : torch.device or str, optional

    Returns
    -------
    SurpriseResult
    """
    if passes < 1:
        raise ConfigError(f"passes must be >= 1, got {passes}")
    windows = _prepare(model, encoded, window_cfg)
    dev = _model_device(model, device)
    was_training = model.training
    model.to(dev).eval()
    rec_flat, rec_dist, rec_nll, rec_top = [], [], [], []
    eos_nll = np.full(len(encoded), np.nan, dtype=np.float32)
    per_batch = max(1, batch_size // passes)
    try:
        with torch.inference_mode():
            for idx in bucket_batches(windows.lengths, per_batch):
                inputs, mask = _inputs(encoded, windows, idx, model, dev)
                # masked end slots after EOS, as in training: the model must judge from the
                # events, not from the padding, whether the sequence may end here
                slots_n = torch.full((len(idx),), model.cfg.eos_slots, device=dev)
                inputs, mask, slots = add_end_slots(inputs, mask, slots_n)
                B, L = mask.shape
                # every pass of the batch in one forward: rows j*B .. (j+1)*B-1 are pass j
                big = {k: v.repeat(passes, 1) for k, v in inputs.items()}  # (P*B, L)
                big_mask = mask.repeat(passes, 1)  # (P*B, L)
                which = torch.arange(passes, device=dev).repeat_interleave(B)  # (P*B,)
                col = torch.arange(L, device=dev).unsqueeze(0)  # (1, L)
                # row r masks the positions of pass r // B (as pass_positions does per pass)
                pos = maskable(big[EVENT_FIELD], big_mask) & (col % passes == which[:, None])  # (P*B, L)
                pos &= ~slots.repeat(passes, 1)  # the slots themselves are never scored
                target = big[EVENT_FIELD][pos]  # (N,)
                h = model.encode(hide_positions(big, pos), big_mask)  # (P*B, L, d)
                logp = torch.log_softmax(model.field_logits(h[pos]).float(), dim=-1)  # (N, V)
                nll = -logp.gather(1, target.unsqueeze(1)).squeeze(1)  # (N,)
                top = logp.argmax(-1)  # (N,)
                rows, cols = (t.cpu().numpy() for t in pos.nonzero(as_tuple=True))
                records = (rec_flat, rec_dist, rec_nll, rec_top)
                nll_np, top_np = nll.cpu().numpy(), top.cpu().numpy()
                _collect(windows, idx[rows % B], cols, nll_np, top_np, encoded.offsets, eos_nll, records)
    finally:
        model.train(was_training)
    total = int(encoded.offsets[-1])
    per_event = np.full(total, np.nan, dtype=np.float32)
    expected = np.full(total, -1, dtype=np.int32)
    if rec_flat:
        flat = np.concatenate(rec_flat)
        dist = np.concatenate(rec_dist)
        order = np.lexsort((-dist, flat))  # by event, farthest from a cut edge first
        flat = flat[order]
        first = np.r_[True, flat[1:] != flat[:-1]]
        keep = order[first]
        per_event[flat[first]] = np.concatenate(rec_nll)[keep]
        expected[flat[first]] = np.concatenate(rec_top)[keep]
    return SurpriseResult(per_event, encoded.offsets.copy(), eos_nll, expected)


def _collect(
    windows: Windows,
    w: np.ndarray,
    cols: np.ndarray,
    nll: np.ndarray,
    top: np.ndarray,
    offsets: np.ndarray,
    eos_nll: np.ndarray,
    records: tuple[list, list, list, list],
) -> None:
    """Map scored (window, column) positions to flat events or to their sequence's EOS."""
    rec_flat, rec_dist, rec_nll, rec_top = records
    j = cols - 1  # event index within the window (column 0 is CLS)
    n = windows.n_events[w]
    is_event = j < n
    seq = windows.sequence_index[w]
    eos = ~is_event
    eos_nll[seq[eos]] = nll[eos]
    w, j, n, seq = w[is_event], j[is_event], n[is_event], seq[is_event]
    start = windows.start[w]
    left = np.where(start > 0, j, _FAR)
    right = np.where(windows.reaches_end[w], _FAR, n - 1 - j)
    rec_flat.append(offsets[seq] + start + j)
    rec_dist.append(np.minimum(left, right))
    rec_nll.append(nll[is_event].astype(np.float32))
    rec_top.append(top[is_event].astype(np.int32))


def aggregate_surprise(
    per_event: np.ndarray,
    offsets: np.ndarray,
    eos_nll: np.ndarray | None = None,
    how: str = "topk",
    k: int = 3,
) -> np.ndarray:
    """Per-sequence surprise from per-event values (higher = more anomalous).

    Parameters
    ----------
    per_event : ndarray of float, shape (total_events,)
        NaN values are ignored.
    offsets : ndarray of int64, shape (n + 1,)
    eos_nll : ndarray of float, shape (n,), optional
        Counted as one more value of its sequence (NaN ignored).
    how : {'mean', 'max', 'topk'}
        ``topk`` = mean of the ``k`` largest values.
    k : int

    Returns
    -------
    ndarray of float64, shape (n,)
        0 for a sequence without any value.
    """
    if how not in ("mean", "max", "topk"):
        raise ConfigError(f"surprise aggregation must be mean, max or topk, got {how!r}")
    if how == "topk" and k < 1:
        raise ConfigError(f"surprise top-k needs k >= 1, got {k}")
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    seg = np.repeat(np.arange(n), lengths)
    vals = np.asarray(per_event, dtype=np.float64)
    if eos_nll is not None:
        seg = np.concatenate([seg, np.arange(n)])
        vals = np.concatenate([vals, np.asarray(eos_nll, dtype=np.float64)])
    ok = ~np.isnan(vals)
    seg, vals = seg[ok], vals[ok]
    out = np.zeros(n, dtype=np.float64)
    if how == "mean":
        cnt = np.bincount(seg, minlength=n)
        np.divide(np.bincount(seg, vals, minlength=n), cnt, out=out, where=cnt > 0)
        return out
    order = np.lexsort((-vals, seg))  # by sequence, largest first
    seg, vals = seg[order], vals[order]
    starts = np.searchsorted(seg, np.arange(n))
    rank = np.arange(len(seg)) - starts[seg]
    take = rank < (1 if how == "max" else k)
    cnt = np.bincount(seg[take], minlength=n)
    np.divide(np.bincount(seg[take], vals[take], minlength=n), cnt, out=out, where=cnt > 0)
    return out
