"""Summaries of a data file as the pipeline will see it (``anomaly-ssl inspect``).

:func:`inspect_data` reads a file with the data settings, fits a throw-away
vocabulary and returns plain numbers (entities, sequences, events, length
distribution, vocabulary size per field, most frequent events, dropped rows,
time range); :func:`format_summary` renders them for a terminal.  Use it to
check a config against a new file before pretraining.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..config import Config, DataConfig, VocabConfig
from .readers import load_sequences
from .vocab import Vocabulary

#: length quantiles reported
LENGTH_QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


def inspect_data(path: str | Path, cfg: Config | DataConfig, top_k: int = 10) -> dict[str, Any]:
    """Read ``path`` with ``cfg`` and summarise it.

    Parameters
    ----------
    path : str or Path
        Any file :func:`~anomaly_ssl.data.readers.load_sequences` reads.
    cfg : Config or DataConfig
        The root config (its ``data`` and ``vocab`` sections are used), or just
        the data section (default vocabulary settings).
    top_k : int
        Number of most frequent events to list.

    Returns
    -------
    dict
        JSON-ready: ``path``, ``format``, ``container``, ``rows_read``,
        ``rows_dropped``, ``entities``, ``sequences``, ``events``, ``length``
        (min/p50/p90/p99/max/mean), ``vocab_sizes``, ``vocab_kinds``,
        ``top_events`` (event, count, share), ``time_range`` (or None),
        ``time_unit``.
    """
    data_cfg, vocab_cfg = (cfg.data, cfg.vocab) if isinstance(cfg, Config) else (cfg, VocabConfig())
    load = load_sequences(path, data_cfg)
    table, report = load.table, load.report
    lengths = table["event"].list.len().to_numpy()
    vocab = Vocabulary.fit(table, data_cfg, vocab_cfg)
    events = table["event"].explode(empty_as_null=False, keep_nulls=False)
    counts = events.value_counts(sort=True, name="count").head(top_k)
    n_events = int(lengths.sum())
    top = [
        {"event": value, "count": int(count), "share": round(count / n_events, 6)}
        for value, count in counts.rows()
    ]
    return {
        "path": str(path),
        "format": report.format,
        "container": report.container,
        "rows_read": report.rows_read,
        "rows_dropped": dict(report.rows_dropped),
        "entities": report.n_entities,
        "sequences": report.n_sequences,
        "events": n_events,
        "length": _length_stats(lengths),
        "vocab_sizes": vocab.sizes(),
        "vocab_kinds": {name: fv.kind for name, fv in vocab.fields.items()},
        "top_events": top,
        "time_range": _time_range(table),
        "time_unit": report.time_unit,
    }


def _length_stats(lengths: np.ndarray) -> dict[str, float]:
    stats: dict[str, float] = {"min": int(lengths.min())}
    stats |= {k: round(float(np.quantile(lengths, q)), 1) for k, q in LENGTH_QUANTILES.items()}
    stats |= {"max": int(lengths.max()), "mean": round(float(lengths.mean()), 2)}
    return stats


def _time_range(table: pl.DataFrame) -> dict[str, Any] | None:
    if table["ts"].null_count() == table.height:
        return None
    ts = table["ts"].explode(empty_as_null=False, keep_nulls=False).drop_nulls()
    lo, hi = float(ts.min()), float(ts.max())  # type: ignore[arg-type]
    return {"start": _iso(lo), "end": _iso(hi), "span_seconds": hi - lo}


def _iso(seconds: float) -> str:
    try:
        return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.6g} s"


def format_summary(summary: dict[str, Any]) -> str:
    """Render an :func:`inspect_data` result as readable text."""
    length = summary["length"]
    lines = [
        f"{summary['path']}  ({summary['format']}, {summary['container']})",
        f"  rows read     {summary['rows_read']:,}",
    ]
    for reason, n in summary["rows_dropped"].items():
        lines.append(f"  dropped       {n:,} ({reason})")
    lines += [
        f"  entities      {summary['entities']:,}",
        f"  sequences     {summary['sequences']:,}",
        f"  events        {summary['events']:,}",
        "  length        min {min}  p50 {p50:g}  p90 {p90:g}  p99 {p99:g}  max {max}  mean {mean:g}".format(
            **length
        ),
    ]
    time_range = summary["time_range"]
    if time_range:
        days = time_range["span_seconds"] / 86400
        lines.append(
            f"  time          {time_range['start']} .. {time_range['end']} ({days:.1f} days, "
            f"read as {summary['time_unit']})"
        )
    else:
        lines.append("  time          (none)")
    vocab = ", ".join(f"{k} {v} ({summary['vocab_kinds'][k]})" for k, v in summary["vocab_sizes"].items())
    lines.append(f"  vocabulary    {vocab}  [sizes include 5 special ids]")
    lines.append("  top events")
    width = max((len(str(e["event"])) for e in summary["top_events"]), default=5)
    for e in summary["top_events"]:
        lines.append(f"    {e['event']!s:<{width}}  {e['count']:>10,}  {100 * e['share']:5.1f}%")
    return "\n".join(lines)
