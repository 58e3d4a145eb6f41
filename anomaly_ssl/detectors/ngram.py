"""Rare event transitions: an n-gram detector on encoded sequences.

Fitted on training sequences, it estimates the probability of each event given
the ``n - 1`` events before it, ``p(e | ctx) = (c(ctx, e) + alpha) / (c(ctx) +
alpha * V)`` (add-alpha smoothing, ``V`` = distinct events seen + 1), with
begin/end markers so that a sequence that starts or stops unusually is
surprising too.  A sequence's score aggregates the surprisals ``-log p`` of its
transitions (by default the largest: its rarest transition).  Unlike the matrix
detectors its input ``X`` is an :class:`~anomaly_ssl.data.encoded.EncodedSequences`
(only the ``event`` field is used; PAD/MASK/CLS/EOS ids are skipped, UNK kept).
Training scores are leave-one-out: each sequence's own n-grams are removed from
the counts it is scored with, so they are calibrated like scores of new data.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..data.encoded import CLS_ID, EOS_ID, EVENT_FIELD, MASK_ID, PAD_ID, EncodedSequences
from ..errors import ConfigError, DataError
from .base import BaseDetector

_SKIP = np.array([PAD_ID, MASK_ID, CLS_ID, EOS_ID])
_BOS_SYM, _EOS_SYM = 0, 1  # symbols: 0 = begin, 1 = end, token id t -> t + 2


class NGramDetector(BaseDetector):
    """Transition-rarity detector on :class:`EncodedSequences`.

    Parameters
    ----------
    n : int
        n-gram order (2 = transitions between consecutive events).
    alpha : float
        Add-alpha smoothing of the transition counts.
    aggregate : {'max', 'topk', 'mean'}
        Per-sequence score: the largest surprisal, the mean of the ``topk``
        largest, or the mean over all transitions.
    topk : int
        Number of transitions averaged by ``aggregate='topk'``.
    contamination, threshold, threshold_quantile, threshold_z
        See :class:`~anomaly_ssl.detectors.base.BaseDetector`.
    """

    def __init__(
        self,
        n: int = 2,
        alpha: float = 0.1,
        aggregate: Literal["max", "topk", "mean"] = "max",
        topk: int = 3,
        contamination: float = 0.03,
        threshold: str = "contamination",
        threshold_quantile: float = 0.99,
        threshold_z: float = 3.5,
    ) -> None:
        super().__init__(contamination, threshold, threshold_quantile, threshold_z)
        self.n = n
        self.alpha = alpha
        self.aggregate = aggregate
        self.topk = topk

    def _check_params(self) -> None:
        if not 1 <= self.n <= 6:
            raise ConfigError(f"NGramDetector: n must be in [1, 6], got {self.n}")
        if self.alpha <= 0:
            raise ConfigError(f"NGramDetector: alpha must be > 0, got {self.alpha}")
        if self.aggregate not in ("max", "topk", "mean"):
            raise ConfigError(f"NGramDetector: aggregate must be max, topk or mean, got {self.aggregate!r}")
        if self.topk < 1:
            raise ConfigError(f"NGramDetector: topk must be >= 1, got {self.topk}")

    def _validate(self, X: Any, fitting: bool) -> EncodedSequences:
        if not isinstance(X, EncodedSequences):
            raise DataError(
                f"NGramDetector takes an EncodedSequences (from the data layer), got {type(X).__name__}"
            )
        if len(X) == 0:
            raise DataError("NGramDetector got no sequences; pass at least one")
        return X

    # ------------------------------------------------------------- n-grams
    def _ngram_keys(self, X: EncodedSequences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n-gram keys (int64 (m,)), their sequence (int64 (m,)) and n-grams per sequence (n_seq,)."""
        ids = np.asarray(X.fields[EVENT_FIELD], dtype=np.int64)
        row = np.repeat(np.arange(len(X), dtype=np.int64), X.lengths)
        keep = ~np.isin(ids, _SKIP)
        ids, row = ids[keep], row[keep]
        sym = np.where(ids <= self.max_id_, ids + 2, self.base_ - 1)  # unseen ids share one symbol
        lengths = np.bincount(row, minlength=len(X))  # events kept per sequence
        n = self.n
        padded_len = lengths + n  # n - 1 begin markers, the events, one end marker
        starts = np.zeros(len(X) + 1, dtype=np.int64)
        np.cumsum(padded_len, out=starts[1:])
        padded = np.full(int(starts[-1]), _BOS_SYM, dtype=np.int64)
        padded[starts[1:] - 1] = _EOS_SYM
        within = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        padded[starts[row] + (n - 1) + within] = sym
        per_seq = lengths + 1  # n-grams per sequence
        seq = np.repeat(np.arange(len(X), dtype=np.int64), per_seq)
        offset = np.arange(len(seq)) - np.repeat(np.cumsum(per_seq) - per_seq, per_seq)
        first = np.repeat(starts[:-1], per_seq) + offset  # padded position of each n-gram's first token
        keys = np.zeros(len(seq), dtype=np.int64)
        for j in range(n):
            keys = keys * self.base_ + padded[first + j]
        return keys, seq, per_seq

    def _fit(self, X: EncodedSequences) -> np.ndarray:
        ids = np.asarray(X.fields[EVENT_FIELD], dtype=np.int64)
        ids = ids[~np.isin(ids, _SKIP)]
        self.max_id_ = int(ids.max()) if ids.size else 0
        self.base_ = self.max_id_ + 4  # symbols 0..max_id+2, plus one for unseen ids
        if float(self.base_) ** self.n >= 2.0**62:
            raise ConfigError(f"NGramDetector: n={self.n} is too large for {self.base_} symbols; lower n")
        keys, seq, per_seq = self._ngram_keys(X)
        self.ngram_keys_, self.ngram_counts_ = np.unique(keys, return_counts=True)
        self.context_keys_, self.context_counts_ = np.unique(keys // self.base_, return_counts=True)
        self.n_symbols_ = len(np.unique(keys % self.base_)) + 1
        # leave-one-out: remove each sequence's own occurrences from the counts it is scored with
        own = _own_counts(keys, seq)
        own_ctx = _own_counts(keys // self.base_, seq)
        return self._aggregate(self._surprisal(keys, own, own_ctx), seq, per_seq)

    def _score(self, X: EncodedSequences) -> np.ndarray:
        keys, seq, per_seq = self._ngram_keys(X)
        zero = np.zeros(len(keys), dtype=np.int64)
        return self._aggregate(self._surprisal(keys, zero, zero), seq, per_seq)

    def _surprisal(self, keys: np.ndarray, own: np.ndarray, own_ctx: np.ndarray) -> np.ndarray:
        c = _lookup(self.ngram_keys_, self.ngram_counts_, keys) - own
        c_ctx = _lookup(self.context_keys_, self.context_counts_, keys // self.base_) - own_ctx
        p = (c + self.alpha) / (c_ctx + self.alpha * self.n_symbols_)
        return -np.log(p)

    def _aggregate(self, values: np.ndarray, seq: np.ndarray, per_seq: np.ndarray) -> np.ndarray:
        starts = np.concatenate([[0], np.cumsum(per_seq)[:-1]])
        if self.aggregate == "max":
            return np.maximum.reduceat(values, starts)
        if self.aggregate == "mean":
            return np.bincount(seq, weights=values, minlength=len(per_seq)) / per_seq
        order = np.lexsort((-values, seq))  # per sequence, largest first
        rank = np.arange(len(values)) - np.repeat(starts, per_seq)
        top = rank < self.topk
        sums = np.bincount(seq[order][top], weights=values[order][top], minlength=len(per_seq))
        return sums / np.minimum(per_seq, self.topk)

    # ------------------------------------------------------------------ state
    def _get_state_arrays(self) -> tuple[dict, dict]:
        arrays = {
            "ngram_keys": self.ngram_keys_,
            "ngram_counts": self.ngram_counts_,
            "context_keys": self.context_keys_,
            "context_counts": self.context_counts_,
        }
        return arrays, {"max_id": self.max_id_, "base": self.base_, "n_symbols": self.n_symbols_}

    def _set_state_arrays(self, arrays: dict, meta: dict) -> None:
        self.ngram_keys_ = np.asarray(arrays["ngram_keys"], dtype=np.int64)
        self.ngram_counts_ = np.asarray(arrays["ngram_counts"], dtype=np.int64)
        self.context_keys_ = np.asarray(arrays["context_keys"], dtype=np.int64)
        self.context_counts_ = np.asarray(arrays["context_counts"], dtype=np.int64)
        self.max_id_, self.base_ = int(meta["max_id"]), int(meta["base"])
        self.n_symbols_ = int(meta["n_symbols"])


def _lookup(table_keys: np.ndarray, table_counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Count of each key in a sorted (keys, counts) table, 0 when absent; int64 (m,)."""
    pos = np.minimum(np.searchsorted(table_keys, keys), len(table_keys) - 1)
    return np.where(table_keys[pos] == keys, table_counts[pos], 0)


def _own_counts(keys: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """How often each position's key occurs in its own sequence; int64 (m,)."""
    distinct, key_index = np.unique(keys, return_inverse=True)
    pair = seq * len(distinct) + key_index.ravel()  # one int64 per (sequence, key)
    _, inverse, counts = np.unique(pair, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()]
