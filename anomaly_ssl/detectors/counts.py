"""Event-count vectors of encoded sequences (for PyOD and kNN detectors on counts).

A sequence becomes the vector of how often each event id occurs in it,
optionally ``log1p``-scaled.  Columns follow :func:`event_count_columns`: UNK
first (unknown events are informative), then every real event id; the other
special ids (PAD, MASK, CLS, EOS) are not counted.
"""

from __future__ import annotations

import numpy as np

from ..data.encoded import EVENT_FIELD, N_SPECIAL, UNK_ID, EncodedSequences
from ..errors import DataError


def event_count_columns(n_events: int) -> np.ndarray:
    """Event id of each count column: ``[UNK_ID, N_SPECIAL, ..., n_events - 1]`` (int64)."""
    if n_events < N_SPECIAL:
        raise DataError(
            f"n_events={n_events} is smaller than the {N_SPECIAL} special ids; pass the event "
            "vocabulary size (specials included)"
        )
    return np.concatenate([[UNK_ID], np.arange(N_SPECIAL, n_events)]).astype(np.int64)


def event_count_matrix(encoded: EncodedSequences, n_events: int, log: bool = True) -> np.ndarray:
    """Count each event id per sequence.

    Parameters
    ----------
    encoded : EncodedSequences
        Sequences; only the ``event`` field is used.
    n_events : int
        Size of the event vocabulary, specials included (ids are in ``[0, n_events)``).
    log : bool
        Return ``log1p(counts)`` (tames long sequences dominating distances).

    Returns
    -------
    ndarray of float32, shape (n_sequences, n_events - N_SPECIAL + 1)
        Column ``j`` counts event id ``event_count_columns(n_events)[j]``.
    """
    columns = event_count_columns(n_events)
    ids = np.asarray(encoded.fields[EVENT_FIELD], dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= n_events):
        bad = int(ids.max()) if ids.max() >= n_events else int(ids.min())
        raise DataError(
            f"event id {bad} is outside [0, {n_events}); pass the event vocabulary size as n_events"
        )
    # id -> column (or -1 for PAD/MASK/CLS/EOS)
    col_of = np.full(n_events, -1, dtype=np.int64)
    col_of[columns] = np.arange(len(columns))
    row = np.repeat(np.arange(len(encoded), dtype=np.int64), encoded.lengths)  # (total_events,)
    col = col_of[ids]
    keep = col >= 0
    flat = row[keep] * len(columns) + col[keep]
    counts = np.bincount(flat, minlength=len(encoded) * len(columns)).reshape(len(encoded), len(columns))
    out = counts.astype(np.float32)
    return np.log1p(out) if log else out
