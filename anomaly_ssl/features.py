"""Per-sequence features computed with a trained model: embeddings, surprise, counts.

Identical sequences (same tokens in every field) are computed once and the
results broadcast back: real pools repeat themselves (HDFS has ~1,500 distinct
sequences in 11,500 blocks; bot farms and brushing rings replay one script), so
this saves most of the model's work without changing any result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .config import Config
from .data.encoded import EncodedSequences, _ragged_gather
from .detectors.counts import event_count_matrix
from .embed import SurpriseResult, aggregate_surprise, embed_sequences, event_surprise
from .model import EventTransformer

log = logging.getLogger(__name__)


@dataclass
class SequenceFeatures:
    """Everything the detectors and explanations need about a batch of sequences.

    Attributes
    ----------
    encoded : EncodedSequences
        The sequences (n of them).
    embeddings : ndarray of float32, shape (n, d)
        Sequence embeddings from the encoder.
    surprise : SurpriseResult
        Per-event masked surprise (NLL of the true event) and end-of-sequence surprise.
    surprise_score : ndarray of float64, shape (n,)
        The per-sequence aggregate used by the ``surprise`` detector.
    counts : ndarray of float32, shape (n, V) or None
        Log event-count vectors (only when a ``...@counts`` detector needs them).
    n_unique : int
        Distinct sequences actually run through the model.
    first, inverse : ndarray of int64, optional
        One row per distinct sequence (shape (n_unique,)) and each row's distinct
        sequence (shape (n,)), so per-sequence work can be done once per distinct one.
    """

    encoded: EncodedSequences
    embeddings: np.ndarray
    surprise: SurpriseResult
    surprise_score: np.ndarray
    counts: np.ndarray | None
    n_unique: int
    first: np.ndarray | None = None
    inverse: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.encoded)

    def subset(self, indices: np.ndarray) -> SequenceFeatures:
        """The features of the sequences at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        enc = self.encoded.subset(idx)
        gather = _ragged_gather(self.surprise.offsets, idx, self.encoded.lengths[idx])
        sur = SurpriseResult(
            self.surprise.per_event[gather],
            enc.offsets.copy(),
            self.surprise.eos_nll[idx],
            self.surprise.expected[gather],
        )
        return SequenceFeatures(
            enc,
            self.embeddings[idx],
            sur,
            self.surprise_score[idx],
            None if self.counts is None else self.counts[idx],
            self.n_unique,
        )


def unique_sequences(encoded: EncodedSequences) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first copy of each distinct sequence, and each sequence's copy.

    Returns
    -------
    first : ndarray of int64, shape (u,)
        Sequence index of each distinct sequence's first occurrence (ascending).
    inverse : ndarray of int64, shape (n,)
        For every sequence, its position in ``first``.
    """
    n = len(encoded)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    stacked = np.ascontiguousarray(np.stack(list(encoded.fields.values()), axis=1))  # (total, F)
    rows = stacked.view(np.dtype((np.void, stacked.dtype.itemsize * stacked.shape[1]))).ravel()
    off = encoded.offsets
    seen: dict[bytes, int] = {}
    first: list[int] = []
    inverse = np.empty(n, dtype=np.int64)
    for i in range(n):
        key = rows[off[i] : off[i + 1]].tobytes()
        pos = seen.get(key)
        if pos is None:
            pos = seen[key] = len(first)
            first.append(i)
        inverse[i] = pos
    return np.asarray(first, dtype=np.int64), inverse


def compute_features(
    model: EventTransformer,
    encoded: EncodedSequences,
    cfg: Config,
    device: torch.device | str | None = None,
    n_events: int | None = None,
    need_counts: bool = False,
) -> SequenceFeatures:
    """Run the model over ``encoded`` (distinct sequences once) and collect features.

    Parameters
    ----------
    model : EventTransformer
    encoded : EncodedSequences
    cfg : Config
        Window, batch and surprise settings come from ``cfg.window`` and ``cfg.detect``.
    device : torch.device or str, optional
    n_events : int, optional
        Size of the event vocabulary (needed with ``need_counts``).
    need_counts : bool
        Also build log event-count vectors.

    Returns
    -------
    SequenceFeatures
    """
    first, inverse = unique_sequences(encoded)
    uniq = encoded.subset(first) if len(first) < len(encoded) else encoded
    det = cfg.detect
    emb_u = embed_sequences(model, uniq, cfg.window, det.batch_size, device)
    sur_u = event_surprise(model, uniq, cfg.window, det.surprise_passes, det.batch_size, device)
    if len(first) < len(encoded):
        gather = _ragged_gather(uniq.offsets, inverse, encoded.lengths)
        surprise = SurpriseResult(
            sur_u.per_event[gather], encoded.offsets.copy(), sur_u.eos_nll[inverse], sur_u.expected[gather]
        )
        embeddings = emb_u[inverse]
    else:
        surprise, embeddings = sur_u, emb_u
    score = aggregate_surprise(
        surprise.per_event, surprise.offsets, surprise.eos_nll, det.surprise_aggregate, det.surprise_topk
    )
    counts = None
    if need_counts:
        if n_events is None:
            raise ValueError("n_events is required when need_counts=True")
        counts = event_count_matrix(encoded, n_events, log=True)
    log.debug("features: %d sequences, %d distinct", len(encoded), len(first))
    return SequenceFeatures(encoded, embeddings, surprise, score, counts, len(first), first, inverse)
