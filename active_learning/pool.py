"""The pool: which sequences are labelled, queried, ignored, or still available.

Each pool row (one scored sequence, identified by its position and optionally a
sequence id) is in exactly one state: *available* (may be queried),
*queried* (sent to annotators, no answer yet), *ignored* (skipped or marked
unsure by an annotator) or *labelled* (0 normal / 1 anomaly).  Following
small-text's update protocol, :meth:`Pool.update` checks that indices and
labels agree in count, hold no duplicates and lie inside the pool, and raises
:class:`PoolUpdateError` naming the problem otherwise.  The pool is in-memory
state; the label store and the query log are the durable record it is rebuilt
from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .al_errors import PoolUpdateError

logger = logging.getLogger(__name__)

AVAILABLE, QUERIED, IGNORED, LABELED = 0, 1, 2, 3
_STATE_NAMES = {AVAILABLE: "available", QUERIED: "queried", IGNORED: "ignored", LABELED: "labelled"}


class Pool:
    """State of every row of the pool.

    Parameters
    ----------
    size : int, optional
        Number of rows; may be omitted when ``sequence_ids`` is given.
    sequence_ids : sequence of str, optional
        One unique id per row, for :meth:`rows_of` (id → row) look-ups.
    """

    def __init__(self, size: int | None = None, sequence_ids: Sequence[Any] | np.ndarray | None = None):
        if sequence_ids is not None:
            ids = np.asarray([str(s) for s in sequence_ids], dtype=object)
            if size is not None and size != len(ids):
                raise PoolUpdateError(f"Pool size {size} != {len(ids)} sequence_ids")
            size = len(ids)
            self._row_of = {s: i for i, s in enumerate(ids)}
            if len(self._row_of) != len(ids):
                raise PoolUpdateError("Pool sequence_ids must be unique")
            self.sequence_ids: np.ndarray | None = ids
        else:
            if size is None or size < 0:
                raise PoolUpdateError("Pool needs size >= 0 or sequence_ids")
            self.sequence_ids = None
            self._row_of = {}
        self._state = np.full(size, AVAILABLE, dtype=np.int8)  # (n,)
        self._labels = np.full(size, -1, dtype=np.int8)  # (n,) -1 = no label

    # ------------------------------------------------------------------ views
    @property
    def size(self) -> int:
        """Number of rows in the pool."""
        return len(self._state)

    def __len__(self) -> int:
        return self.size

    @property
    def indices_unlabeled(self) -> np.ndarray:
        """Rows that may be queried (available: not labelled, queried or ignored), int64, sorted."""
        return np.flatnonzero(self._state == AVAILABLE)

    @property
    def indices_labeled(self) -> np.ndarray:
        """Labelled rows, int64, sorted; aligned with :attr:`y`."""
        return np.flatnonzero(self._state == LABELED)

    @property
    def indices_queried(self) -> np.ndarray:
        """Rows sent to annotators and still awaiting an answer, int64, sorted."""
        return np.flatnonzero(self._state == QUERIED)

    @property
    def indices_ignored(self) -> np.ndarray:
        """Rows annotators skipped or were unsure about, int64, sorted."""
        return np.flatnonzero(self._state == IGNORED)

    @property
    def y(self) -> np.ndarray:
        """Labels of :attr:`indices_labeled` (0 normal / 1 anomaly), int64, shape (n_labeled,)."""
        return self._labels[self._state == LABELED].astype(np.int64)

    @property
    def labels(self) -> np.ndarray:
        """Label of every row, -1 where unlabelled, int64, shape (n_pool,)."""
        return self._labels.astype(np.int64)

    def counts(self) -> dict[str, int]:
        """Rows per state plus labelled normal/anomaly counts."""
        out = {name: int((self._state == code).sum()) for code, name in _STATE_NAMES.items()}
        out["normal"] = int(((self._state == LABELED) & (self._labels == 0)).sum())
        out["anomaly"] = int(((self._state == LABELED) & (self._labels == 1)).sum())
        return out

    def rows_of(self, sequence_ids: Sequence[Any]) -> np.ndarray:
        """Pool rows of ``sequence_ids`` (int64); :class:`PoolUpdateError` for unknown ids."""
        if self.sequence_ids is None:
            raise PoolUpdateError("this Pool was built without sequence_ids; pass row indices instead")
        rows, unknown = [], []
        for s in sequence_ids:
            row = self._row_of.get(str(s))
            if row is None:
                unknown.append(s)
            else:
                rows.append(row)
        if unknown:
            raise PoolUpdateError(
                f"{len(unknown)} sequence id(s) are not in the pool (first: {unknown[0]!r}); "
                "were they scored in a different run?"
            )
        return np.asarray(rows, dtype=np.int64)

    def contains(self, sequence_ids: Sequence[Any]) -> np.ndarray:
        """Boolean mask, shape (len(sequence_ids),): which ids are rows of this pool."""
        return np.asarray([str(s) in self._row_of for s in sequence_ids], dtype=bool)

    # ---------------------------------------------------------------- updates
    def update(self, indices: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> None:
        """Record labels for pool rows (re-labelling a row overrides its label).

        Parameters
        ----------
        indices : ndarray of int, shape (k,)
            Row indices relative to the pool; unique, in ``[0, size)``.
        labels : ndarray of int, shape (k,)
            0 (normal) or 1 (anomaly), aligned with ``indices``.

        Raises
        ------
        PoolUpdateError
            Count mismatch, duplicate or out-of-range indices, or labels other than 0/1.
        """
        idx = self._check_indices(indices, "update")
        lab = np.asarray(labels).reshape(-1)
        if len(lab) != len(idx):
            raise PoolUpdateError(
                f"update got {len(idx)} indices but {len(lab)} labels; pass one label per index"
            )
        bad = ~np.isin(lab, (0, 1))
        if bad.any():
            raise PoolUpdateError(
                f"update: labels must be 0 (normal) or 1 (anomaly); got {lab[bad].tolist()[0]!r} "
                f"for row {int(idx[bad][0])}"
            )
        relabelled = int((self._state[idx] == LABELED).sum())
        if relabelled:
            logger.info("update: %d row(s) re-labelled; the new labels override", relabelled)
        self._state[idx] = LABELED
        self._labels[idx] = lab.astype(np.int8)

    def mark_queried(self, indices: Sequence[int] | np.ndarray) -> None:
        """Move available rows to *queried* (sent to annotators)."""
        idx = self._check_indices(indices, "mark_queried")
        self._require_state(idx, (AVAILABLE,), "mark_queried")
        self._state[idx] = QUERIED

    def ignore(self, indices: Sequence[int] | np.ndarray) -> None:
        """Move available or queried rows to *ignored* (skipped / unsure); they are not re-queried."""
        idx = self._check_indices(indices, "ignore")
        self._require_state(idx, (AVAILABLE, QUERIED, IGNORED), "ignore")
        self._state[idx] = IGNORED

    def release(self, indices: Sequence[int] | np.ndarray) -> None:
        """Make queried or ignored rows available again (e.g. their task was deleted)."""
        idx = self._check_indices(indices, "release")
        self._require_state(idx, (AVAILABLE, QUERIED, IGNORED), "release")
        self._state[idx] = AVAILABLE

    # ---------------------------------------------------------------- helpers
    def _check_indices(self, indices: Sequence[int] | np.ndarray, op: str) -> np.ndarray:
        idx = np.asarray(indices).reshape(-1)
        if idx.size == 0:
            return idx.astype(np.int64)
        if idx.dtype.kind not in "iu":
            raise PoolUpdateError(f"{op}: indices must be integers (pool rows), got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        out = (idx < 0) | (idx >= self.size)
        if out.any():
            raise PoolUpdateError(
                f"{op}: index {int(idx[out][0])} is out of range for a pool of {self.size} rows"
            )
        values, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            raise PoolUpdateError(
                f"{op}: duplicate index {int(values[counts > 1][0])}; pass each row once"
            )
        return idx

    def _require_state(self, idx: np.ndarray, allowed: tuple[int, ...], op: str) -> None:
        bad = ~np.isin(self._state[idx], allowed)
        if bad.any():
            row = int(idx[bad][0])
            raise PoolUpdateError(
                f"{op}: row {row} is {_STATE_NAMES[int(self._state[row])]}; "
                f"{op} accepts only {', '.join(_STATE_NAMES[a] for a in allowed)} rows"
            )

    def __repr__(self) -> str:
        c = self.counts()
        return (
            f"Pool(size={self.size}, labelled={c['labelled']}, queried={c['queried']}, "
            f"ignored={c['ignored']}, available={c['available']})"
        )
