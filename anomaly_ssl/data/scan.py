"""Lazy scanning of one planned input file, with polars errors turned into DataErrors.

:class:`ReadPlan` says how a file is read (container, logical format,
delimiter, header, column names); :func:`scan` opens it as a polars
``LazyFrame`` with a row index, :func:`collect` runs a lazy query, and every
polars or OS failure on the way goes through :func:`polars_error`, which names
the file and says how to fix it: the first invalid UTF-8 byte with its offset
and line, a line with too many fields, or a JSON key whose type changes
(:class:`JsonTypeClashError`, which the readers answer by re-reading with full
type inference).  How the plan is decided lives in :mod:`.sniff`.
"""

from __future__ import annotations

import codecs
import gzip
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..config import DataConfig
from ..errors import DataError
from . import sequences as sq
from .sessionize import ROW_COL

_LINE_SEP = "\x1f"  # a separator that never occurs in token lines: one column per line


@dataclass
class ReadPlan:
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


class JsonTypeClashError(DataError):
    """A JSON key changed type after the inference window; the reader retries with full inference."""


def scan(plan: ReadPlan, cfg: DataConfig) -> pl.LazyFrame:
    """Open the planned file lazily, all text columns as strings, with the row index ``ROW_COL``."""
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
        raise polars_error(exc, plan) from None


def schema_of(lazy: pl.LazyFrame, plan: ReadPlan) -> pl.Schema:
    """The schema of a scan of the planned file; read errors become :class:`DataError`."""
    try:
        return lazy.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise polars_error(exc, plan) from None


def scan_columns(plan: ReadPlan, cfg: DataConfig) -> list[str]:
    """The column names of the planned file (without the row index)."""
    return [c for c in schema_of(scan(plan, cfg), plan).names() if c != ROW_COL]


def collect(lazy: pl.LazyFrame, plan: ReadPlan, engine: str = "streaming") -> pl.DataFrame:
    """Run a lazy query on the planned file; polars errors become :class:`DataError`."""
    try:
        return lazy.collect(engine=engine)  # type: ignore[arg-type]
    except pl.exceptions.PolarsError as exc:
        raise polars_error(exc, plan) from None


def polars_error(exc: BaseException, plan: ReadPlan) -> DataError:
    """The :class:`DataError` that explains a polars/OS failure on the planned file.

    Invalid UTF-8 is located (byte offset and line); a JSON read failure while
    types were inferred from a window is a :class:`JsonTypeClashError` (retry
    with ``plan.json_infer_rows = None``).
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "utf-8" in text.lower() or "utf8" in text.lower():
        found = _find_invalid_utf8(plan.path, plan.compressed)
        if found is not None:
            return utf8_error(plan.path, *found)
    if "more fields" in text:
        return DataError(
            f"{plan.path}: a line has more fields than the header/first line (delimiter "
            f"{plan.delimiter!r}); check data.delimiter and quoting"
        )
    if plan.container == "jsonl":
        if plan.json_infer_rows is not None:
            return JsonTypeClashError(f"{plan.path}: {first}")
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


def utf8_error(path: Path, offset: int, line: int, bad: int) -> DataError:
    """The error for byte ``bad`` at ``offset`` (1-based ``line``) that is not valid UTF-8."""
    return DataError(
        f"{path}: not valid UTF-8 text: byte 0x{bad:02x} at byte offset {offset} (line {line}); "
        "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
    )
