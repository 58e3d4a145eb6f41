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
the very end of a ``lines`` file.  File sniffing and typing live here; the table
layout lives in :mod:`anomaly_ssl.data.sequences`.
"""

from __future__ import annotations

import codecs
import gzip
import logging
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ..config import DataConfig
from ..errors import DataError
from . import sequences as sq
from .sessionize import ROW_COL

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
TEXT_SUFFIXES = frozenset({".csv", ".tsv", ".tab", ".txt", ".dat", ".log"})
JSON_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
DELIMITER_CANDIDATES = (",", "\t", ";", "|")
#: an HDFS-style line: ``id,tok tok tok``
_HDFS_LINE = re.compile(r"^[^,\s]+,\s*\S+(\s+\S+)*\s*$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_LINE_SEP = "\x1f"  # a separator that never occurs in token lines: one column per line


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


@dataclass
class _Plan:
    """How one file will be read (resolved from the file and the config)."""

    path: Path
    container: str  # parquet | csv | jsonl
    format: str  # events | sequences | hdfs | lines
    compressed: bool = False
    delimiter: str | None = None
    has_header: bool | None = None
    new_columns: list[str] | None = None
    #: for hdfs lines the id/tokens columns are named by the reader
    id_col: str | None = None
    tokens_col: str | None = None
    #: JSON lines: rows used to infer column types (None = all, the retry after a type clash)
    json_infer_rows: int | None = 10_000


class _JsonTypeClashError(DataError):
    """A JSON key changed type after the inference window; the reader retries with full inference."""


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
    except _JsonTypeClashError:
        plan.json_infer_rows = None
        return _load(plan, cfg)


def _load(plan: _Plan, cfg: DataConfig) -> SequenceLoad:
    report = LoadReport(
        str(plan.path), plan.format, plan.container, delimiter=plan.delimiter, has_header=plan.has_header
    )
    lazy, finish = _build(plan, cfg, report)
    # sessionising sorts and uses window functions, which polars' in-memory engine runs
    # faster and in less memory than the streaming one (measured on 10M events, see
    # bench/bench_data_load.py); row-wise sequence files stream
    engine = "in-memory" if plan.format == "events" else "streaming"
    table = finish(_collect(lazy, plan, engine))
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
        lazy, finish = _build(plan, cfg, report)
    except _JsonTypeClashError:
        plan.json_infer_rows = None
        report = LoadReport(str(plan.path), plan.format, plan.container)
        lazy, finish = _build(plan, cfg, report)
    if plan.format == "events":
        with tempfile.TemporaryDirectory(prefix="anomaly-ssl-", dir=tmp_dir) as tmp:
            part = Path(tmp) / "sequences.parquet"
            try:
                lazy.sink_parquet(part, engine="in-memory")  # faster here, same peak (see _load)
            except pl.exceptions.PolarsError as exc:
                raise _polars_error(exc, plan) from None
            for batch in pl.scan_parquet(part).collect_batches(chunk_size=batch_rows, engine="streaming"):
                yield batch
        return
    seen: set[str] = set()
    try:
        batches = lazy.collect_batches(chunk_size=batch_rows, engine="streaming")
        for batch in batches:
            yield finish(batch, seen)
    except pl.exceptions.PolarsError as exc:
        raise _polars_error(exc, plan) from None


# --------------------------------------------------------------------- file sniffing


def resolve_plan(path: str | Path, cfg: DataConfig) -> _Plan:
    """Decide container, logical format, delimiter and header for ``path``."""
    plan = _open_plan(path, cfg)
    path, container, compressed = plan.path, plan.container, plan.compressed
    if container == "parquet":
        if cfg.format == "lines":
            raise DataError(f"{path}: data.format=lines needs a text file, got parquet")
        plan.format = _format_from_columns(_scan_schema(plan, cfg), cfg, plan)
        return plan
    if container == "jsonl":
        if cfg.format == "lines":
            raise DataError(f"{path}: data.format=lines needs a text file, got JSON lines")
        plan.format = _format_from_columns(_scan_schema(plan, cfg), cfg, plan)
        return plan
    lines = _head_lines(path, compressed)
    if not lines:
        raise DataError(f"{path}: the file is empty")
    if cfg.format == "lines" or (cfg.format == "auto" and _is_token_lines(lines, cfg)):
        plan.format, plan.delimiter, plan.has_header = "lines", None, False
        return plan
    plan.delimiter = cfg.delimiter or _sniff_delimiter(lines, path)
    first = _split(lines[0], plan.delimiter)
    known = _known_columns(cfg)
    if cfg.format == "hdfs" and not {cfg.id_col, cfg.tokens_col} <= set(first):
        _hdfs_lines_plan(plan, cfg, lines)
        return plan
    no_names = not set(first) & known and not cfg.has_header and not cfg.columns
    if cfg.format == "auto" and no_names and _is_hdfs_lines(lines):
        _hdfs_lines_plan(plan, cfg, lines)
        return plan
    plan.has_header = (
        cfg.has_header if cfg.has_header is not None else _guess_header(lines, plan.delimiter, cfg)
    )
    if not plan.has_header:
        n_fields = len(first)
        if cfg.columns is not None and len(cfg.columns) != n_fields:
            raise DataError(
                f"{path}: data.columns names {len(cfg.columns)} columns {cfg.columns} but the first line "
                f"has {n_fields} fields (delimiter {plan.delimiter!r})"
            )
        plan.new_columns = list(cfg.columns) if cfg.columns else [f"column_{i + 1}" for i in range(n_fields)]
    plan.format = _format_from_columns(_scan_schema(plan, cfg), cfg, plan)
    return plan


def _open_plan(path: str | Path, cfg: DataConfig) -> _Plan:
    """Check the file exists and is not empty; pick its container."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a data file (parquet, CSV, JSON lines or text)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    container, compressed = _container(path, cfg)
    return _Plan(path, container, cfg.format, compressed)


def read_table(path: str | Path, delimiter: str | None = None) -> pl.DataFrame:
    """Read a small table with a header (parquet, CSV/TSV, JSON lines) eagerly.

    CSV columns are read as strings.  Used for side files such as labels;
    errors are :class:`DataError`.
    """
    cfg = DataConfig(format="sequences", has_header=True, delimiter=delimiter)
    plan = _open_plan(path, cfg)
    if plan.container == "csv":
        lines = _head_lines(plan.path, plan.compressed)
        if not lines:
            raise DataError(f"{plan.path}: the file is empty")
        plan.delimiter = delimiter or _sniff_delimiter(lines, plan.path)
        plan.has_header = True
    df = _collect(_scan(plan, cfg), plan).drop(ROW_COL)
    if df.height == 0:
        raise DataError(f"{plan.path}: the file has no data rows")
    return df


def _hdfs_lines_plan(plan: _Plan, cfg: DataConfig, lines: list[str]) -> None:
    if not _HDFS_LINE.match(lines[0]):
        raise DataError(
            f"{plan.path}: data.format=hdfs expects `id,tok tok tok` lines or a header with "
            f"{cfg.id_col!r} and {cfg.tokens_col!r}; the first line is {lines[0][:80]!r}"
        )
    plan.format, plan.delimiter, plan.has_header = "hdfs", ",", False
    plan.id_col, plan.tokens_col = "__hdfs_id", "__hdfs_tokens"
    plan.new_columns = [plan.id_col, plan.tokens_col]


def _container(path: Path, cfg: DataConfig) -> tuple[str, bool]:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in PARQUET_SUFFIXES:
        if compressed:
            raise DataError(f"{path}: gzipped parquet is not supported; decompress it first")
        return "parquet", False
    if suffix in JSON_SUFFIXES:
        return "jsonl", compressed
    if suffix in TEXT_SUFFIXES:
        return "csv", compressed
    if suffix and not _looks_like_name_part(suffix) and cfg.format == "auto" and not compressed:
        raise DataError(
            f"{path}: unknown file extension {suffix!r} with data.format=auto; use .parquet, .csv, .tsv, "
            ".txt, .jsonl/.ndjson (optionally .gz), or set data.format (events, sequences, hdfs, lines)"
        )
    head = _read_head_bytes(path, compressed, 64)
    if head.startswith(b"PAR1"):
        return "parquet", False
    if head.lstrip().startswith(b"{"):
        return "jsonl", compressed
    return "csv", compressed


def _looks_like_name_part(suffix: str) -> bool:
    # "hdfs_train" has no suffix; "blocks.2024" or "app.v2" are names, not extensions
    return not suffix[1:].isalpha()


def _read_head_bytes(path: Path, compressed: bool, n: int) -> bytes:
    try:
        if compressed:
            with gzip.open(path, "rb") as fh:
                return fh.read(n)
        with open(path, "rb") as fh:
            return fh.read(n)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the file ({exc})") from None


def _head_lines(path: Path, compressed: bool, n_bytes: int = 65536) -> list[str]:
    """First lines of a text file (decoded strictly as UTF-8, blank lines skipped)."""
    raw = _read_head_bytes(path, compressed, n_bytes)
    cut = raw.rfind(b"\n") + 1 if len(raw) == n_bytes and b"\n" in raw else len(raw)
    try:
        text = raw[:cut].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _utf8_error(path, exc.start, raw[: exc.start].count(b"\n") + 1, raw[exc.start]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()][:50]


def _split(line: str, delimiter: str) -> list[str]:
    return [f.strip().strip('"') for f in line.split(delimiter)]


def _sniff_delimiter(lines: list[str], path: Path) -> str:
    if path.suffixes and path.suffixes[0].lower() in {".tsv", ".tab"}:
        return "\t"
    sample = lines[:20]
    best, best_count = ",", 0
    for cand in DELIMITER_CANDIDATES:
        counts = {line.count(cand) for line in sample}
        if len(counts) == 1 and (n := counts.pop()) > best_count:
            best, best_count = cand, n
    return best


def _is_token_lines(lines: list[str], cfg: DataConfig) -> bool:
    """Auto-detection: no header, no delimiter, just space-separated tokens on each line."""
    if cfg.has_header or cfg.columns or cfg.delimiter:
        return False
    return not any(c in line for line in lines[:20] for c in DELIMITER_CANDIDATES)


def _is_hdfs_lines(lines: list[str]) -> bool:
    """Auto-detection: ``id,tok tok ...`` on every line, several tokens on some (not a 2-column CSV)."""
    sample = lines[:20]
    return all(_HDFS_LINE.match(line) for line in sample) and any(
        len(line.split(",", 1)[1].split()) > 1 for line in sample
    )


def _known_columns(cfg: DataConfig) -> set[str]:
    names = {cfg.entity_col, cfg.event_col, cfg.id_col, cfg.tokens_col, *cfg.categorical, *cfg.numeric}
    names |= {c for c in (cfg.time_col, cfg.session_col) if c}
    return names


def _guess_header(lines: list[str], delimiter: str, cfg: DataConfig) -> bool:
    first = _split(lines[0], delimiter)
    if set(first) & _known_columns(cfg):
        return True
    if cfg.columns:
        return False
    if any(_NUMBER.match(f) for f in first):
        return False
    if len(lines) > 1:
        second = _split(lines[1], delimiter)
        return any(_NUMBER.match(b) and not _NUMBER.match(a) for a, b in zip(first, second))
    return True


def _format_from_columns(columns: list[str], cfg: DataConfig, plan: _Plan) -> str:
    names = set(columns)
    if cfg.format in ("events", "sequences"):
        return cfg.format
    if cfg.format == "hdfs":
        return "hdfs"
    if {cfg.entity_col, cfg.event_col} <= names:
        return "events"
    if cfg.tokens_col in names:
        return "sequences"
    hint = " (the file has no header: set data.columns)" if plan.new_columns and not cfg.columns else ""
    raise DataError(
        f"{plan.path}: cannot tell the format: an event table needs columns {cfg.entity_col!r} "
        f"(data.entity_col) and {cfg.event_col!r} (data.event_col), a sequence table {cfg.id_col!r} "
        f"and {cfg.tokens_col!r} (data.id_col, data.tokens_col); the file has {_names(columns)}{hint}. "
        "Set the column names or data.format"
    )


def _names(columns: list[str], k: int = 20) -> str:
    shown = ", ".join(repr(c) for c in columns[:k])
    return f"columns [{shown}{', ...' if len(columns) > k else ''}]"


# --------------------------------------------------------------------------- scanning


def _scan(plan: _Plan, cfg: DataConfig) -> pl.LazyFrame:
    try:
        if plan.container == "parquet":
            return pl.scan_parquet(plan.path, row_index_name=ROW_COL)
        if plan.container == "jsonl":
            return pl.scan_ndjson(plan.path, infer_schema_length=plan.json_infer_rows, row_index_name=ROW_COL)
        if plan.format == "lines":
            return pl.scan_csv(
                plan.path,
                has_header=False,
                separator=_LINE_SEP,
                quote_char=None,
                new_columns=[sq.TOKENS],
                infer_schema=False,
                row_index_name=ROW_COL,
                empty_string_is_null=False,
            )
        return pl.scan_csv(
            plan.path,
            has_header=bool(plan.has_header),
            separator=plan.delimiter or ",",
            new_columns=plan.new_columns,
            infer_schema=False,
            null_values=cfg.null_values or None,
            row_index_name=ROW_COL,
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _polars_error(exc, plan) from None


def _scan_schema(plan: _Plan, cfg: DataConfig) -> list[str]:
    try:
        return [c for c in _scan(plan, cfg).collect_schema().names() if c != ROW_COL]
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _polars_error(exc, plan) from None


def _collect(lazy: pl.LazyFrame, plan: _Plan, engine: str = "streaming") -> pl.DataFrame:
    try:
        return lazy.collect(engine=engine)  # type: ignore[arg-type]
    except pl.exceptions.PolarsError as exc:
        raise _polars_error(exc, plan) from None


def _polars_error(exc: BaseException, plan: _Plan) -> DataError:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "utf-8" in text.lower() or "utf8" in text.lower():
        found = _find_invalid_utf8(plan.path, plan.compressed)
        if found is not None:
            return _utf8_error(plan.path, *found)
    if "more fields" in text:
        return DataError(
            f"{plan.path}: a line has more fields than the header/first line (delimiter "
            f"{plan.delimiter!r}); check data.delimiter and quoting"
        )
    if plan.container == "jsonl":
        if plan.json_infer_rows is not None:
            return _JsonTypeClashError(f"{plan.path}: {first}")
        return DataError(
            f"{plan.path}: cannot read it as JSON lines ({plan.format}): {first}; check that every "
            "line is one JSON object and that each key holds one type (mixed types?)"
        )
    return DataError(f"{plan.path}: cannot read it as {plan.container} ({plan.format}): {first}")


def _find_invalid_utf8(path: Path, compressed: bool) -> tuple[int, int, int] | None:
    """Return (byte offset, line, byte value) of the first invalid UTF-8 byte, streaming."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    opener = gzip.open if compressed else open
    consumed = newlines = 0
    with opener(path, "rb") as fh:  # type: ignore[operator]
        while chunk := fh.read(1 << 20):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = exc.object
                before = data[: exc.start]
                return (
                    consumed - len(pending) + exc.start,
                    newlines + before.count(b"\n") + 1,
                    data[exc.start],
                )
            consumed += len(chunk)
            newlines += chunk.count(b"\n")
    return None


def _utf8_error(path: Path, offset: int, line: int, bad: int) -> DataError:
    return DataError(
        f"{path}: not valid UTF-8 text: byte 0x{bad:02x} at byte offset {offset} (line {line}); "
        "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
    )


# --------------------------------------------------------------------------- building


def _build(plan: _Plan, cfg: DataConfig, report: LoadReport) -> tuple[pl.LazyFrame, Any]:
    """Validate the file and return (lazy sequences plan, finishing function for collected chunks)."""
    lazy = _scan(plan, cfg)
    schema = _safe_schema(lazy, plan)
    if plan.format == "events":
        out = _build_events(lazy, schema, plan, cfg, report)
        return out, lambda df, seen=None: df
    return _build_token_table(lazy, schema, plan, cfg, report)


def _safe_schema(lazy: pl.LazyFrame, plan: _Plan) -> pl.Schema:
    try:
        return lazy.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _polars_error(exc, plan) from None


def _require(schema: pl.Schema, wanted: dict[str, str], plan: _Plan) -> None:
    present = [c for c in schema.names() if c != ROW_COL]
    missing = [f"{col!r} ({key})" for key, col in wanted.items() if col not in schema]
    if missing:
        hint = "; the file has no header, so set data.columns" if plan.new_columns and not plan.id_col else ""
        raise DataError(
            f"{plan.path}: missing column(s) {', '.join(missing)}; the file has {_names(present)}{hint}"
        )


def _build_events(
    lazy: pl.LazyFrame, schema: pl.Schema, plan: _Plan, cfg: DataConfig, report: LoadReport
) -> pl.LazyFrame:
    wanted = {"data.entity_col": cfg.entity_col, "data.event_col": cfg.event_col}
    if cfg.time_col:
        wanted["data.time_col"] = cfg.time_col
    if cfg.session_col:
        wanted["data.session_col"] = cfg.session_col
    wanted |= {f"data.categorical[{i}]": c for i, c in enumerate(cfg.categorical)}
    wanted |= {f"data.numeric[{i}]": c for i, c in enumerate(cfg.numeric)}
    _require(schema, wanted, plan)
    for key, col in wanted.items():
        if isinstance(schema[col], (pl.List, pl.Array, pl.Struct)):
            raise DataError(f"{plan.path}: column {col!r} ({key}) holds {schema[col]} values, not scalars")

    required: list[tuple[str, str]] = [("entity_col", cfg.entity_col)]
    typed: list[pl.Expr] = [pl.col(ROW_COL), _key_expr(cfg.entity_col, schema).alias(sq.ENTITY)]
    checks: list[tuple[str, str, pl.Expr]] = []  # (message kind, column, bad-row mask)
    if cfg.time_col:
        required.append(("time_col", cfg.time_col))
        sample = _collect(
            lazy.select(pl.col(cfg.time_col)).drop_nulls().head(sq.TIME_SAMPLE_ROWS), plan
        ).to_series()
        t_expr, report.time_unit = sq.time_expr(schema[cfg.time_col], sample, cfg, str(plan.path))
        typed.append(t_expr.alias(sq.TIME))
        checks.append(("time", cfg.time_col, pl.col(cfg.time_col).is_not_null() & t_expr.is_null()))
    required.append(("event_col", cfg.event_col))
    typed.append(pl.col(cfg.event_col).cast(pl.Utf8).alias(sq.EVENT))
    if cfg.session_col:
        required.append(("session_col", cfg.session_col))
        typed.append(_key_expr(cfg.session_col, schema).alias(sq.SESSION))
    typed += [pl.col(c).cast(pl.Utf8).alias(c) for c in cfg.categorical]
    for c in cfg.numeric:
        num = _numeric_expr(c, schema[c], plan)
        typed.append(num.alias(c))
        checks.append(("numeric", c, pl.col(c).is_not_null() & num.is_null()))

    dropped = _check_rows(lazy, required, checks, plan, cfg, report)
    keep = pl.all_horizontal([pl.col(c).is_not_null() for _, c in required]) if dropped else pl.lit(True)
    frame = lazy.filter(keep).select(typed)
    return sq.events_to_sequences(
        frame,
        has_time=bool(cfg.time_col),
        has_session=bool(cfg.session_col),
        categorical=cfg.categorical,
        numeric=cfg.numeric,
        gap_seconds=cfg.session_gap_minutes * 60.0,
        max_events=cfg.max_session_events,
    )


def _key_expr(name: str, schema: pl.Schema) -> pl.Expr:
    """Entity/session keys: integers stay integers (sorting them is several times faster
    than sorting strings; ids are the same text either way), everything else becomes Utf8."""
    return pl.col(name) if schema[name].is_integer() else pl.col(name).cast(pl.Utf8)


def _numeric_expr(name: str, dtype: pl.DataType, plan: _Plan) -> pl.Expr:
    col = pl.col(name)
    if dtype.is_numeric() or dtype == pl.Boolean:
        return col.cast(pl.Float64)
    if dtype == pl.Utf8:
        return col.str.strip_chars().cast(pl.Float64, strict=False)
    raise DataError(f"{plan.path}: numeric column {name!r} has type {dtype}; it must hold numbers")


def _check_rows(
    lazy: pl.LazyFrame,
    required: list[tuple[str, str]],
    checks: list[tuple[str, str, pl.Expr]],
    plan: _Plan,
    cfg: DataConfig,
    report: LoadReport,
) -> int:
    """One streaming pass counting rows, nulls and bad values; raise or warn. Returns rows dropped."""
    exprs = [pl.len().alias("__rows")]
    ok = pl.lit(True)
    for key, col in required:
        # each dropped row is counted once, under the first required column that is null
        exprs.append((ok & pl.col(col).is_null()).sum().alias(f"null {key}"))
        ok = ok & pl.col(col).is_not_null()
    exprs += [mask.sum().alias(f"__bad{i}") for i, (_, _, mask) in enumerate(checks)]
    counts = _collect(lazy.select(exprs), plan).row(0, named=True)
    report.rows_read = int(counts["__rows"])
    if report.rows_read == 0:
        raise DataError(f"{plan.path}: the file has no data rows")
    for i, (kind, col, mask) in enumerate(checks):
        n_bad = int(counts[f"__bad{i}"])
        if n_bad:
            rows = _collect(lazy.filter(mask).select(ROW_COL, pl.col(col).cast(pl.Utf8)).head(5), plan).rows()
            where = ", ".join(f"row {r + 1}: {v!r}" for r, v in rows)
            if kind == "time":
                raise DataError(
                    f"{plan.path}: {n_bad} unparseable timestamp(s) in column {col!r} (data.time_col), "
                    f"e.g. {where}; fix the values, or set data.time_unit (s, ms, us, iso) "
                    "or data.time_format"
                )
            raise DataError(
                f"{plan.path}: column {col!r} is in data.numeric but has {n_bad} non-numeric value(s) "
                f"(mixed types), e.g. {where}; fix the values or list the column in data.categorical"
            )
    nulls = {f"null {key}": int(counts[f"null {key}"]) for key, _ in required if counts[f"null {key}"]}
    if nulls and not cfg.drop_null_rows:
        reason, n = next(iter(nulls.items()))
        col = dict(required)[reason.removeprefix("null ")]
        rows = _collect(lazy.filter(pl.col(col).is_null()).select(ROW_COL).head(5), plan)[ROW_COL]
        raise DataError(
            f"{plan.path}: {n} row(s) with a null {col!r} (data.{reason.removeprefix('null ')}), e.g. rows "
            f"{', '.join(str(r + 1) for r in rows)}; fill them or set data.drop_null_rows=true"
        )
    total = sum(nulls.values())
    if total:
        report.rows_dropped.update(nulls)
        detail = ", ".join(f"{n} with {reason}" for reason, n in nulls.items())
        log.warning("%s: dropped %d of %d rows (%s)", plan.path, total, report.rows_read, detail)
    if total == report.rows_read:
        raise DataError(
            f"{plan.path}: every row was dropped for null required values ({report.rows_dropped})"
        )
    return total


def _build_token_table(
    lazy: pl.LazyFrame, schema: pl.Schema, plan: _Plan, cfg: DataConfig, report: LoadReport
) -> tuple[pl.LazyFrame, Any]:
    attrs = [*cfg.categorical, *cfg.numeric]
    if plan.format == "lines":
        if attrs:
            raise DataError(
                f"{plan.path}: data.format=lines has no attribute columns, but data.categorical/numeric "
                f"name {attrs}; set them to [] (e.g. --set data.categorical=[] --set data.numeric=[])"
            )
        id_expr, tokens_col = pl.col(ROW_COL).cast(pl.Utf8), sq.TOKENS
        report.rows_read = int(_collect(lazy.select(pl.len()), plan).item())
        last = _collect(
            lazy.filter(pl.col(sq.TOKENS).str.strip_chars().str.len_bytes() > 0).select(
                pl.col(ROW_COL).max()
            ),
            plan,
        ).item()
        if last is None:
            raise DataError(f"{plan.path}: the file has no non-blank lines")
        if last + 1 < report.rows_read:
            report.rows_dropped["trailing blank line"] = report.rows_read - last - 1
            lazy = lazy.filter(pl.col(ROW_COL) <= last)
    else:
        id_col = plan.id_col or cfg.id_col
        tokens_col = plan.tokens_col or cfg.tokens_col
        wanted = {"data.id_col": id_col, "data.tokens_col": tokens_col}
        wanted |= {f"data.categorical/numeric {c}": c for c in attrs}
        _require(schema, wanted, plan)
        id_expr = pl.col(id_col).cast(pl.Utf8)
        _check_rows(lazy, [("id_col", id_col)], [], plan, cfg, report)
        lazy = lazy.filter(pl.col(id_col).is_not_null())
    frame = lazy.select(
        pl.col(ROW_COL), id_expr.alias(sq.SEQ_ID), pl.col(tokens_col).alias(sq.TOKENS), *attrs
    )
    out = sq.tokens_to_sequences(
        frame,
        tokens_dtype=schema[tokens_col],
        token_sep=cfg.token_sep,
        attribute_dtypes={c: schema[c] for c in attrs},
        categorical=cfg.categorical if attrs else [],
        numeric=cfg.numeric if attrs else [],
    )
    path = str(plan.path)

    def finish(df: pl.DataFrame, seen: set[str] | None = None) -> pl.DataFrame:
        if attrs:
            sq.check_attribute_lengths(df, attrs, path)
        return sq.check_sequence_rows(df, path, seen)

    return out, finish


def _fill_totals(report: LoadReport, table: pl.DataFrame) -> None:
    report.n_sequences = table.height
    report.n_entities = table["entity_id"].n_unique() if table.height else 0
    report.n_events = int(table["event"].list.len().sum()) if table.height else 0
