"""Readers: any supported input file -> a sequences table, with a report of what was dropped.

Input containers are parquet, CSV-like text (any delimiter, sniffed when
``data.delimiter`` is unset; with or without header; ``.gz`` compressed) and JSON
lines.  Logical formats (``data.format``) are *events* (one row per event,
sessionised with :func:`~anomaly_ssl.data.sessionize.sessionize`), *sequences*
(one row per sequence, tokens as a list or a separated string), *hdfs* (a
sequence table when a header names ``id_col`` and ``tokens_col``, else
``id,tok tok tok`` lines) and *lines* (one space-separated sequence per line, ids
= 0-based line numbers).  Everything goes through polars' lazy API and the
streaming engine; bad input raises :class:`~anomaly_ssl.errors.DataError` naming
the file, column and rows, never a polars traceback.  Rows with a null in a
required column are dropped, counted in :class:`LoadReport` and logged at
WARNING (an error with ``data.drop_null_rows=false``); zero-length sequences
(empty token strings, blank lines) are always an error, except blank lines at
the very end of a ``lines`` file.  How a file is read is decided in
:mod:`~anomaly_ssl.data.sniff` and opened in :mod:`~anomaly_ssl.data.scan`;
column and row checks live in :mod:`~anomaly_ssl.data.build`; the table layout
and timestamp typing in :mod:`anomaly_ssl.data.sequences`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ..config import DataConfig
from ..errors import DataError
from .build import build_sequences
from .scan import JsonTypeClashError, ReadPlan, collect, polars_error, scan
from .sessionize import ROW_COL
from .sniff import head_lines, open_plan, resolve_plan, sniff_delimiter

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What a reader did: the format it chose, rows read and dropped, and the totals."""

    path: str
    format: str
    container: str
    rows_read: int = 0
    #: reason (``'null entity_col'`` ...) -> rows dropped for it
    rows_dropped: dict[str, int] = field(default_factory=dict)
    n_entities: int = 0
    n_sequences: int = 0
    n_events: int = 0
    delimiter: str | None = None
    has_header: bool | None = None
    #: how timestamps were read (``s``, ``ms``, ``us``, ``ns``, ``iso``, ``datetime``), None without time
    time_unit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view of the report."""
        return asdict(self)


@dataclass
class SequenceLoad:
    """The result of :func:`load_sequences`: the sequences table and the load report."""

    table: pl.DataFrame
    report: LoadReport


# ----------------------------------------------------------------------------- public


def load_sequences(path: str | Path, cfg: DataConfig) -> SequenceLoad:
    """Read a file into a sequences table (see :mod:`anomaly_ssl.data.sequences`).

    Parameters
    ----------
    path : str or Path
        Event table, sequence table, HDFS ``id,tokens`` file or token lines.
    cfg : DataConfig
        Format, column mapping and session rule.

    Returns
    -------
    SequenceLoad
        ``.table`` (one row per sequence) and ``.report`` (:class:`LoadReport`).

    Raises
    ------
    DataError
        Missing file or column, unparseable timestamps, mixed types, non-UTF-8
        text, zero-length sequences, duplicate ids, nulls with
        ``drop_null_rows=False``, or a file with no rows.
    """
    plan = resolve_plan(path, cfg)
    try:
        return _load(plan, cfg)
    except JsonTypeClashError:
        plan.json_infer_rows = None
        return _load(plan, cfg)


def _load(plan: ReadPlan, cfg: DataConfig) -> SequenceLoad:
    report = LoadReport(
        str(plan.path), plan.format, plan.container, delimiter=plan.delimiter, has_header=plan.has_header
    )
    lazy, finish = build_sequences(plan, cfg, report)
    # sessionising sorts and uses window functions, which polars' in-memory engine runs
    # faster and in less memory than the streaming one (measured on 10M events, see
    # bench/bench_data_load.py); row-wise sequence files stream
    engine = "in-memory" if plan.format == "events" else "streaming"
    table = finish(collect(lazy, plan, engine))
    _fill_totals(report, table)
    log.info(
        "%s: %d sequences, %d events, %d entities (%s, %s)",
        plan.path.name,
        report.n_sequences,
        report.n_events,
        report.n_entities,
        plan.format,
        plan.container,
    )
    return SequenceLoad(table, report)


def iter_sequence_batches(
    path: str | Path, cfg: DataConfig, batch_rows: int = 50_000, tmp_dir: str | Path | None = None
) -> Iterator[pl.DataFrame]:
    """Yield the sequences table of ``path`` in chunks of about ``batch_rows`` sequences.

    Sequence files are streamed row batch by row batch.  Event files are
    sessionised (a global sort, so the peak memory is that of
    :func:`load_sequences`) into a temporary parquet file (in ``tmp_dir``, default
    the system temp folder) whose memory is then released; it is read back in
    batches and removed at the end.
    Concatenating the batches gives exactly ``load_sequences(path, cfg).table``.
    """
    if batch_rows < 1:
        raise DataError(f"batch_rows must be >= 1, got {batch_rows}")
    plan = resolve_plan(path, cfg)
    report = LoadReport(str(plan.path), plan.format, plan.container)
    try:
        lazy, finish = build_sequences(plan, cfg, report)
    except JsonTypeClashError:
        plan.json_infer_rows = None
        report = LoadReport(str(plan.path), plan.format, plan.container)
        lazy, finish = build_sequences(plan, cfg, report)
    if plan.format == "events":
        with tempfile.TemporaryDirectory(prefix="anomaly-ssl-", dir=tmp_dir) as tmp:
            part = Path(tmp) / "sequences.parquet"
            try:
                lazy.sink_parquet(part, engine="in-memory")  # faster here, same peak (see _load)
            except pl.exceptions.PolarsError as exc:
                raise polars_error(exc, plan) from None
            for batch in pl.scan_parquet(part).collect_batches(chunk_size=batch_rows, engine="streaming"):
                yield batch
        return
    seen: set[str] = set()
    try:
        batches = lazy.collect_batches(chunk_size=batch_rows, engine="streaming")
        for batch in batches:
            yield finish(batch, seen)
    except pl.exceptions.PolarsError as exc:
        raise polars_error(exc, plan) from None


def read_table(path: str | Path, delimiter: str | None = None) -> pl.DataFrame:
    """Read a small table with a header (parquet, CSV/TSV, JSON lines) eagerly.

    CSV columns are read as strings.  Used for side files such as labels;
    errors are :class:`DataError`.
    """
    cfg = DataConfig(format="sequences", has_header=True, delimiter=delimiter)
    plan = open_plan(path, cfg)
    if plan.container == "csv":
        lines = head_lines(plan.path, plan.compressed)
        if not lines:
            raise DataError(f"{plan.path}: the file is empty")
        plan.delimiter = delimiter or sniff_delimiter(lines, plan.path)
        plan.has_header = True
    df = collect(scan(plan, cfg), plan).drop(ROW_COL)
    if df.height == 0:
        raise DataError(f"{plan.path}: the file has no data rows")
    return df


def _fill_totals(report: LoadReport, table: pl.DataFrame) -> None:
    report.n_sequences = table.height
    report.n_entities = table["entity_id"].n_unique() if table.height else 0
    report.n_events = int(table["event"].list.len().sum()) if table.height else 0
