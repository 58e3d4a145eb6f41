"""Per-sequence explanations: the most surprising events, nearest normal examples.

Everything here is vectorised over a batch except the final assembly of the
small per-sequence lists (a handful of entries per sequence).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import numpy as np
import polars as pl

from .data.encoded import EVENT_FIELD

#: how the end of a sequence is shown among its events
END_EVENT = "(end of sequence)"

TOP_EVENT_DTYPE = pl.List(
    pl.Struct(
        {
            "pos": pl.Int32,
            "time": pl.Utf8,
            "event": pl.Utf8,
            "surprise": pl.Float32,
            "expected": pl.Utf8,
            "attrs": pl.Utf8,
        }
    )
)
NEIGHBOR_DTYPE = pl.List(pl.Struct({"sequence_id": pl.Utf8, "distance": pl.Float32, "summary": pl.Utf8}))


def summarize_events(events: list[str], max_groups: int = 25) -> str:
    """Compact rendering of a sequence: runs collapsed, e.g. ``search → view ×3 → add_to_cart``."""
    groups: list[str] = []
    i = 0
    while i < len(events):
        j = i
        while j + 1 < len(events) and events[j + 1] == events[i]:
            j += 1
        run = j - i + 1
        groups.append(f"{events[i]} ×{run}" if run > 1 else str(events[i]))
        i = j + 1
    if len(groups) > max_groups:
        head, tail = groups[: max_groups - 3], groups[-2:]
        groups = [*head, f"… {len(groups) - len(head) - len(tail)} more …", *tail]
    return " → ".join(groups)


def _iso(ts: float | None) -> str | None:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return None
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _gather(column: pl.Series, seg: np.ndarray, pos: np.ndarray) -> list[Any]:
    """``column[seg[i]][min(pos[i], len - 1)]`` for every i (None for a missing list)."""
    lengths = column.list.len().fill_null(0).to_numpy().astype(np.int64)
    if len(seg) == 0:
        return []
    if (lengths == 0).any():  # null or empty lists explode to a null row: go row by row
        rows = column.to_list()
        return [
            None if not rows[s] else rows[s][min(p, len(rows[s]) - 1)]
            for s, p in zip(seg.tolist(), pos.tolist())
        ]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    index = starts[seg] + np.minimum(pos, lengths[seg] - 1)
    return column.explode().gather(index).to_list()


def _iso_column(values: list[Any]) -> list[str | None]:
    """:func:`_iso` of many timestamps (unix seconds), vectorised."""
    secs = pl.Series(values, dtype=pl.Float64, nan_to_null=True)
    micros = (secs * 1_000_000).round().cast(pl.Int64)
    return pl.from_epoch(micros, time_unit="us").dt.strftime("%Y-%m-%d %H:%M:%S").to_list()


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    return value


def top_surprising(
    per_event: np.ndarray, offsets: np.ndarray, eos_nll: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` most surprising positions of every sequence (EOS = position ``length``).

    Returns
    -------
    seq, pos, value : ndarrays, shape (m,)
        Sequence index, position and surprise of each selected entry, grouped by
        sequence, most surprising first.
    """
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    seg = np.concatenate([np.repeat(np.arange(n), lengths), np.arange(n)])
    pos = np.concatenate([np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths), lengths])
    val = np.concatenate([per_event.astype(np.float64), eos_nll.astype(np.float64)])
    ok = ~np.isnan(val)
    seg, pos, val = seg[ok], pos[ok], val[ok]
    order = np.lexsort((-val, seg))
    seg, pos, val = seg[order], pos[order], val[order]
    starts = np.searchsorted(seg, np.arange(n))
    rank = np.arange(len(seg)) - starts[seg]
    take = rank < k
    return seg[take], pos[take], val[take]


def explanation_columns(
    table: pl.DataFrame,
    per_event: np.ndarray,
    offsets: np.ndarray,
    eos_nll: np.ndarray,
    expected: np.ndarray,
    decode_event: Any,
    attr_columns: list[str],
    topk: int,
) -> tuple[pl.Series, pl.Series]:
    """Build the ``top_events`` and ``events`` columns for a batch.

    Parameters
    ----------
    table : polars.DataFrame
        The batch's sequences table (``event``, ``ts`` and attribute list columns).
    per_event, offsets, eos_nll, expected
        From :class:`~anomaly_ssl.embed.SurpriseResult` (aligned with ``table``).
    decode_event : callable
        Maps an array of event ids to their names.
    attr_columns : list of str
        Attribute columns shown with each event.
    topk : int
        Events per sequence.
    """
    seg, pos, val = top_surprising(per_event, offsets, eos_nll, topk)
    exp_ids = np.where(
        pos < np.diff(offsets)[seg], expected[np.minimum(offsets[seg] + pos, len(expected) - 1)], -1
    )
    names = decode_event(np.maximum(exp_ids, 0))
    # only the chosen positions are pulled out of the list columns (gathered from the
    # flattened columns), and the output is built column by column: converting whole
    # list columns, or building a list of dicts per row, costs polars ~10x more
    lengths = table["event"].list.len().to_numpy().astype(np.int64)
    at_end = pos >= lengths[seg]
    col_event = _gather(table["event"], seg, pos)
    col_event = [END_EVENT if e else str(v) for v, e in zip(col_event, at_end.tolist())]
    col_time: list[str | None]
    if "ts" in table.columns:
        col_time = _iso_column(_gather(table["ts"], seg, pos))
    else:
        col_time = [None] * len(seg)
    attrs = {c: _gather(table[c], seg, pos) for c in attr_columns if c in table.columns}
    col_attrs: list[str] = []
    for i, end in enumerate(at_end.tolist()):
        if end or not attrs:
            col_attrs.append("{}")
            continue
        col_attrs.append(json.dumps({c: _plain(vals[i]) for c, vals in attrs.items() if vals[i] is not None}))
    events = table["event"].to_list()
    flat = pl.DataFrame(
        {
            "pos": pl.Series(pos, dtype=pl.Int32),
            "time": pl.Series(col_time, dtype=pl.Utf8),
            "event": pl.Series(col_event, dtype=pl.Utf8),
            "surprise": pl.Series(val, dtype=pl.Float32),
            "expected": pl.Series(
                [None if e < 0 else str(nm) for e, nm in zip(exp_ids.tolist(), names)], dtype=pl.Utf8
            ),
            "attrs": pl.Series(col_attrs, dtype=pl.Utf8),
        }
    )
    top = _group_lists(flat, seg, len(table), "top_events", TOP_EVENT_DTYPE)
    cache: dict[tuple[str, ...], str] = {}  # logs repeat the same sequences many times
    summaries = []
    for e in events:
        key = tuple(e)
        text = cache.get(key)
        if text is None:
            text = cache[key] = summarize_events(e)
        summaries.append(text)
    return top, pl.Series("events", summaries, dtype=pl.Utf8)


def _group_lists(flat: pl.DataFrame, seg: np.ndarray, n: int, name: str, dtype: pl.DataType) -> pl.Series:
    """Rows of ``flat`` gathered into one list of structs per segment ``0..n-1`` (``seg`` sorted)."""
    counts = np.bincount(seg, minlength=n) if len(seg) else np.zeros(n, dtype=np.int64)
    structs = flat.select(pl.struct(flat.columns).alias(name)).to_series()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    # a list column from offsets: pad every row to the longest, then drop the padding
    width = int(counts.max()) if n else 0
    if width == 0:
        return pl.Series(name, [[] for _ in range(n)], dtype=dtype)
    idx = offsets[:-1, None] + np.arange(width)[None, :]  # (n, width)
    valid = np.arange(width)[None, :] < counts[:, None]
    take = np.where(valid, idx, 0).reshape(-1)
    padded = structs.gather(take)
    keep = pl.Series(valid.reshape(-1))
    lists = (
        pl.DataFrame({"row": np.repeat(np.arange(n), width), name: padded, "keep": keep})
        .group_by("row", maintain_order=True)
        .agg(pl.col(name).filter(pl.col("keep")))
    )
    return lists[name].cast(dtype).alias(name)


def neighbor_column(
    distances: np.ndarray,
    rows: np.ndarray,
    train_ids: list[str] | pl.Series,
    train_summaries: list[str] | pl.Series,
) -> pl.Series:
    """The ``neighbors`` column: nearest normal training sequences with distances."""
    n = len(rows)
    ok = rows >= 0  # (n, k)
    seg = np.broadcast_to(np.arange(n)[:, None], rows.shape)[ok]
    picked = rows[ok].astype(np.int64)
    ids = pl.Series(train_ids, dtype=pl.Utf8)
    summaries = pl.Series(train_summaries, dtype=pl.Utf8)
    flat = pl.DataFrame(
        {
            "sequence_id": ids.gather(picked),
            "distance": pl.Series(distances[ok], dtype=pl.Float32),
            "summary": summaries.gather(picked),
        }
    )
    return _group_lists(flat, seg, n, "neighbors", NEIGHBOR_DTYPE)


def event_names(vocab: Any) -> Any:
    """A vectorised ``ids -> names`` function for the event field of ``vocab``."""

    def decode(ids: np.ndarray) -> list[str]:
        return list(vocab.decode(EVENT_FIELD, np.asarray(ids)))

    return decode
