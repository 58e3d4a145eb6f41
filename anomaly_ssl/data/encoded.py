"""Encoded sequences: the contract between the data layer and the model.

Sequences are stored ragged, CSR style: one flat ``int32`` array of token ids
per field (``event`` first, then attribute fields, then ``gap``) and an
``offsets`` array so that sequence ``i`` is ``fields[name][offsets[i]:offsets[i+1]]``.
Every field shares the special ids below, so a position is PAD (or CLS, EOS) in
all fields at once.  Token ids of real values start at :data:`N_SPECIAL`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PAD_ID = 0
MASK_ID = 1
UNK_ID = 2
CLS_ID = 3
EOS_ID = 4
#: number of special ids; real tokens are >= N_SPECIAL
N_SPECIAL = 5
SPECIAL_TOKENS = ("[PAD]", "[MASK]", "[UNK]", "[CLS]", "[EOS]")

#: the field every model predicts
EVENT_FIELD = "event"
#: the log-bucketed time gap before each event (present when timestamps are known)
GAP_FIELD = "gap"


@dataclass
class EncodedSequences:
    """Token ids of many sequences, ragged (CSR) layout.

    Attributes
    ----------
    sequence_ids : ndarray of str, shape (n,)
        Id of each sequence.
    offsets : ndarray of int64, shape (n + 1,)
        Sequence ``i`` spans ``offsets[i]:offsets[i + 1]`` of every field.
    fields : dict of str to ndarray of int32, shape (total_events,)
        Token ids per field; ``'event'`` is always present and first.
    timestamps : ndarray of float64, shape (total_events,), optional
        Event times in unix seconds (for explanations), when known.
    """

    sequence_ids: np.ndarray
    offsets: np.ndarray
    fields: dict[str, np.ndarray]
    timestamps: np.ndarray | None = None
    _lengths: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.sequence_ids = np.asarray(self.sequence_ids, dtype=object)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        if EVENT_FIELD not in self.fields:
            raise ValueError("EncodedSequences needs an 'event' field")
        if len(self.offsets) != len(self.sequence_ids) + 1:
            raise ValueError("offsets must have one more entry than sequence_ids")
        total = int(self.offsets[-1]) if len(self.offsets) else 0
        for name, arr in self.fields.items():
            if arr.shape != (total,):
                raise ValueError(f"field {name!r} has shape {arr.shape}, expected ({total},)")
        # event first, order otherwise kept
        self.fields = {EVENT_FIELD: self.fields[EVENT_FIELD]} | {
            k: v for k, v in self.fields.items() if k != EVENT_FIELD
        }

    def __len__(self) -> int:
        return len(self.sequence_ids)

    @property
    def field_names(self) -> list[str]:
        """Field names, ``'event'`` first."""
        return list(self.fields)

    @property
    def lengths(self) -> np.ndarray:
        """Number of events per sequence, shape (n,)."""
        if self._lengths is None:
            self._lengths = np.diff(self.offsets)
        return self._lengths

    def sequence(self, i: int) -> dict[str, np.ndarray]:
        """Token ids of sequence ``i`` per field (views, not copies)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return {name: arr[a:b] for name, arr in self.fields.items()}

    def subset(self, indices: Sequence[int] | np.ndarray) -> EncodedSequences:
        """A new object holding only the sequences at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = _ragged_gather(self.offsets, idx, lengths)
        return EncodedSequences(
            sequence_ids=self.sequence_ids[idx],
            offsets=offsets,
            fields={k: v[gather] for k, v in self.fields.items()},
            timestamps=None if self.timestamps is None else self.timestamps[gather],
        )

    @staticmethod
    def concat(parts: Sequence[EncodedSequences]) -> EncodedSequences:
        """Concatenate several encoded sets with the same fields."""
        if not parts:
            raise ValueError("nothing to concatenate")
        names = parts[0].field_names
        offsets = [np.zeros(1, dtype=np.int64)]
        base = 0
        for p in parts:
            if p.field_names != names:
                raise ValueError("cannot concatenate encodings with different fields")
            offsets.append(p.offsets[1:] + base)
            base += int(p.offsets[-1])
        has_ts = all(p.timestamps is not None for p in parts)
        return EncodedSequences(
            sequence_ids=np.concatenate([p.sequence_ids for p in parts]),
            offsets=np.concatenate(offsets),
            fields={n: np.concatenate([p.fields[n] for p in parts]) for n in names},
            timestamps=np.concatenate([p.timestamps for p in parts]) if has_ts else None,  # type: ignore[misc]
        )


def _ragged_gather(offsets: np.ndarray, idx: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat positions of the events of sequences ``idx`` (vectorised)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = offsets[idx]
    # position within each sequence: arange(total) minus the running start of its block
    block_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total) - block_start)
