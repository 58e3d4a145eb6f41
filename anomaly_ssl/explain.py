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
    events = table["event"].to_list()
    times = table["ts"].to_list() if "ts" in table.columns else [None] * len(table)
    attrs = {c: table[c].to_list() for c in attr_columns if c in table.columns}
    seg, pos, val = top_surprising(per_event, offsets, eos_nll, topk)
    exp_ids = np.where(
        pos < np.diff(offsets)[seg], expected[np.minimum(offsets[seg] + pos, len(expected) - 1)], -1
    )
    names = decode_event(np.maximum(exp_ids, 0))
    # built column by column (a per-row list of dicts costs polars ~10x more)
    col_time: list[str | None] = []
    col_event: list[str] = []
    col_attrs: list[str] = []
    for s, p in zip(seg.tolist(), pos.tolist()):
        evs = events[s]
        at_end = p >= len(evs)
        ts_list = times[s]
        col_time.append(None if ts_list is None else _iso(ts_list[min(p, len(ts_list) - 1)]))
        col_event.append(END_EVENT if at_end else str(evs[p]))
        col_attrs.append(
            "{}"
            if at_end or not attrs
            else json.dumps(
                {
                    c: _plain(vals[s][p])
                    for c, vals in attrs.items()
                    if vals[s] is not None and vals[s][p] is not None
                }
            )
        )
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
