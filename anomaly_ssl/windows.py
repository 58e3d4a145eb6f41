"""Cut long sequences into model windows and assemble padded batches.

A window is ``[CLS] + events[start:start + n] (+ [EOS])``: at most
``WindowConfig.max_len`` tokens, CLS and EOS included; EOS is appended only when
the window reaches the end of its sequence (and ``add_eos``).  ``mode='split'``
covers every event with overlapping windows ``stride`` apart (the last one
ending at the sequence end); ``mode='truncate'`` keeps one window with the first
events.  :class:`Windows` records the window -> (sequence, start) mapping so
scores and embeddings can be aggregated per sequence.  Batches are padded to
their longest window; :func:`bucket_batches` groups windows of similar length
(sorted within shuffled chunks) so little compute is spent on padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import WindowConfig
from .data.encoded import CLS_ID, EOS_ID, PAD_ID, EncodedSequences


@dataclass
class Windows:
    """Window layout over a set of sequences (all arrays of shape (W,)).

    Attributes
    ----------
    sequence_index : ndarray of int64
        Sequence each window belongs to.
    start : ndarray of int64
        Index (within its sequence) of the window's first event.
    n_events : ndarray of int64
        Events in the window.
    has_eos : ndarray of bool
        Whether the window ends with an EOS token.
    reaches_end : ndarray of bool
        Whether the window's last event is its sequence's last event.
    """

    sequence_index: np.ndarray
    start: np.ndarray
    n_events: np.ndarray
    has_eos: np.ndarray
    reaches_end: np.ndarray

    def __len__(self) -> int:
        return len(self.sequence_index)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per window (CLS + events + EOS), shape (W,) int64."""
        return 1 + self.n_events + self.has_eos.astype(np.int64)

    def subset(self, idx: np.ndarray) -> Windows:
        """The windows at ``idx`` (sequence indices unchanged)."""
        return Windows(
            self.sequence_index[idx],
            self.start[idx],
            self.n_events[idx],
            self.has_eos[idx],
            self.reaches_end[idx],
        )

    def for_sequences(self, mask: np.ndarray) -> np.ndarray:
        """Indices of the windows whose sequence is selected by the bool array ``mask`` (n,)."""
        return np.flatnonzero(mask[self.sequence_index])


def default_stride(max_len: int) -> int:
    """Half a window of events (at least 1)."""
    return max(1, (max_len - 2) // 2)


def make_windows(lengths: np.ndarray, cfg: WindowConfig, add_eos: bool = True) -> Windows:
    """Lay windows over sequences with ``lengths`` events each.

    Parameters
    ----------
    lengths : ndarray of int, shape (n,)
        Events per sequence.
    cfg : WindowConfig
        ``max_len`` (tokens, CLS and EOS included), ``mode`` and ``stride``.
    add_eos : bool
        Append EOS to windows that reach their sequence's end (in ``truncate``
        mode only when the whole sequence fits).

    Returns
    -------
    Windows
        Ordered by sequence, then start; every sequence has at least one window.
    """
    cfg.validate()
    T = np.asarray(lengths, dtype=np.int64)
    cap = cfg.max_len - 1  # events per window without EOS
    cap_end = cap - int(add_eos)  # events in a window that also holds EOS
    fits = cap_end >= T
    if cfg.mode == "truncate":
        n_ev = np.where(fits, T, np.minimum(T, cap))
        idx = np.arange(len(T), dtype=np.int64)
        return Windows(idx, np.zeros(len(T), np.int64), n_ev, fits & add_eos, n_ev == T)
    stride = cfg.stride if cfg.stride is not None else default_stride(cfg.max_len)
    # starts 0, s, 2s, ... while the window cannot reach the end, then one final window
    # ending at the sequence end; stride <= cap - 1 keeps consecutive windows overlapping
    n_inner = np.where(fits, 0, -(-(T - cap_end) // stride))  # ceil((T - cap_end) / stride)
    n_win = n_inner + 1
    seq = np.repeat(np.arange(len(T), dtype=np.int64), n_win)
    first = np.cumsum(n_win) - n_win  # index of each sequence's first window
    k = np.arange(len(seq), dtype=np.int64) - np.repeat(first, n_win)  # window number within its sequence
    is_last = k == n_win[seq] - 1
    start = np.where(is_last, np.where(fits[seq], 0, T[seq] - cap_end), k * stride)
    n_ev = np.where(is_last, T[seq] - start, cap)
    return Windows(seq, start, n_ev, is_last & add_eos, start + n_ev == T[seq])


def assemble(
    encoded: EncodedSequences,
    windows: Windows,
    idx: np.ndarray,
    pad_to: int | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Build a padded batch of windows.

    Parameters
    ----------
    encoded : EncodedSequences
        The sequences the windows were laid over.
    windows : Windows
    idx : ndarray of int, shape (B,)
        Windows in the batch, in batch order.
    pad_to : int, optional
        Pad to this length instead of the longest window in the batch.

    Returns
    -------
    inputs : dict of str to LongTensor, shape (B, L)
        Token ids per field of ``encoded`` (CLS, EOS and PAD in every field).
    attention_mask : BoolTensor, shape (B, L)
        True at real positions.
    """
    idx = np.asarray(idx, dtype=np.int64)
    n_ev = windows.n_events[idx]
    eos = windows.has_eos[idx]
    tok_len = 1 + n_ev + eos
    B = len(idx)
    L = int(tok_len.max()) if B else 1
    if pad_to is not None:
        L = max(L, int(pad_to))
    total = int(n_ev.sum())
    rows = np.repeat(np.arange(B), n_ev)  # (total,)
    within = np.arange(total) - np.repeat(np.cumsum(n_ev) - n_ev, n_ev)  # (total,)
    src = np.repeat(encoded.offsets[windows.sequence_index[idx]] + windows.start[idx], n_ev) + within
    cols = 1 + within
    eos_rows = np.flatnonzero(eos)
    eos_cols = 1 + n_ev[eos_rows]
    inputs: dict[str, torch.Tensor] = {}
    for name, flat in encoded.fields.items():
        out = np.full((B, L), PAD_ID, dtype=np.int64)  # (B, L)
        out[:, 0] = CLS_ID
        out[rows, cols] = flat[src]
        out[eos_rows, eos_cols] = EOS_ID
        inputs[name] = torch.from_numpy(out)
    mask = torch.from_numpy(np.arange(L)[None, :] < tok_len[:, None])  # (B, L)
    return inputs, mask


def bucket_batches(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    chunk_batches: int = 32,
) -> list[np.ndarray]:
    """Split window indices into batches of similar length.

    Parameters
    ----------
    lengths : ndarray of int, shape (W,)
        Tokens per window.
    batch_size : int
    rng : numpy Generator, optional
        With a generator: shuffle, sort by length within chunks of
        ``chunk_batches * batch_size`` windows, and shuffle the batch order
        (training). Without: sort all windows by length (inference, deterministic).
    chunk_batches : int
        Batches per sorting chunk (larger = less padding, less randomness).

    Returns
    -------
    list of ndarray of int64
        Window indices per batch; together a permutation of ``range(W)``.
    """
    W = len(lengths)
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, W, batch_size)]
    perm = rng.permutation(W)
    chunk = max(1, chunk_batches) * batch_size
    batches: list[np.ndarray] = []
    for c in range(0, W, chunk):
        part = perm[c : c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_waste(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of padded positions over all positions of ``batches`` (0 = no padding)."""
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches if len(b))
    return 1.0 - real / padded if padded else 0.0
