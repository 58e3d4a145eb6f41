"""The sequences table: one row per sequence, built from typed event or token frames.

Every reader ends in the same polars layout, one row per sequence, columns in
this order: ``sequence_id`` (Utf8, unique), ``entity_id`` (Utf8), ``event``
(List[Utf8]), ``ts`` (List[Float64] unix seconds, or null when unknown), ``gap``
(List[Float64] seconds since the previous event of the sequence, first 0.0; null
when unknown), then one List[Utf8] column per categorical attribute and one
List[Float64] per numeric attribute, named like their source columns.  This
module holds that schema, its validation, the lazy transformations from a
typed frame (internal column names below) into it, and timestamp typing.  Rows
are ordered by entity then session for event tables (integer entities
numerically, others as text) and in file order for sequence tables.  Zero-length sequences are
never produced silently: they are a :class:`~anomaly_ssl.errors.DataError`
naming the sequence ids and file rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..errors import DataError
from .sessionize import POS_COL, ROW_COL, SEQUENCE_ID, sessionize

if TYPE_CHECKING:
    from ..config import DataConfig

#: the fixed leading columns of every sequences table and their dtypes
SEQUENCES_SCHEMA: dict[str, pl.DataType] = {
    "sequence_id": pl.Utf8(),
    "entity_id": pl.Utf8(),
    "event": pl.List(pl.Utf8()),
    "ts": pl.List(pl.Float64()),
    "gap": pl.List(pl.Float64()),
}
#: output column names attributes may not use
RESERVED_COLUMNS = frozenset(SEQUENCES_SCHEMA)

# internal column names of the typed frames the readers build
ENTITY = "__entity"
EVENT = "__event"
TIME = "__time"
SESSION = "__session"
SEQ_ID = "__id"
TOKENS = "__tokens"


def sequences_schema(categorical: Sequence[str] = (), numeric: Sequence[str] = ()) -> dict[str, pl.DataType]:
    """The full column -> dtype mapping of a sequences table with these attributes."""
    schema = dict(SEQUENCES_SCHEMA)
    schema.update({c: pl.List(pl.Utf8()) for c in categorical})
    schema.update({c: pl.List(pl.Float64()) for c in numeric})
    return schema


def attribute_columns(df: pl.DataFrame) -> tuple[list[str], list[str]]:
    """Split the attribute columns of a sequences table into (categorical, numeric)."""
    cats, nums = [], []
    for name, dtype in df.schema.items():
        if name in RESERVED_COLUMNS:
            continue
        (nums if dtype == pl.List(pl.Float64) else cats).append(name)
    return cats, nums


def validate_sequences_table(
    df: pl.DataFrame,
    categorical: Sequence[str] | None = None,
    numeric: Sequence[str] | None = None,
) -> None:
    """Check that ``df`` is a well-formed sequences table; raise :class:`DataError` if not.

    Checks column order and dtypes, unique non-null ids, no zero-length
    sequence, and that every per-event column has the length of ``event``.
    Attribute columns are taken from ``df`` when not given.
    """
    if categorical is None or numeric is None:
        cats, nums = attribute_columns(df)
        categorical = cats if categorical is None else categorical
        numeric = nums if numeric is None else numeric
    expected = sequences_schema(categorical, numeric)
    if list(df.columns) != list(expected):
        raise DataError(f"sequences table columns are {df.columns}, expected {list(expected)} in this order")
    wrong = [f"{c}: {df.schema[c]} (expected {t})" for c, t in expected.items() if df.schema[c] != t]
    if wrong:
        raise DataError(f"sequences table has wrong column types: {'; '.join(wrong)}")
    ids = df["sequence_id"]
    if ids.null_count():
        raise DataError("sequences table has null sequence_id values")
    dup = ids.filter(ids.is_duplicated()).unique(maintain_order=True)
    if len(dup):
        raise DataError(f"sequence_id must be unique; repeated: {_examples(dup.to_list())}")
    lengths = df["event"].list.len()
    empty = df.filter(lengths.fill_null(0) == 0)["sequence_id"]
    if len(empty):
        raise DataError(f"zero-length sequence(s): {_examples(empty.to_list())}")
    for col in ["ts", "gap", *categorical, *numeric]:
        other = df[col].list.len()
        bad = df.filter(other.is_not_null() & (other != lengths))["sequence_id"]
        if len(bad):
            raise DataError(
                f"column {col!r} has a different length than 'event' in sequence(s) "
                f"{_examples(bad.to_list())}"
            )


def events_to_sequences(
    frame: pl.LazyFrame,
    *,
    has_time: bool,
    has_session: bool,
    categorical: Sequence[str],
    numeric: Sequence[str],
    gap_seconds: float,
    max_events: int,
) -> pl.LazyFrame:
    """Sessionise a typed event frame and aggregate it into a sequences table (lazy).

    Parameters
    ----------
    frame : polars.LazyFrame
        Events with ``__row`` (file order), ``__entity`` (Utf8 or integer), ``__event``
        (Utf8), ``__time`` (Float64 seconds, when ``has_time``), ``__session`` (Utf8 or
        integer, when ``has_session``) and the attribute columns (Utf8 / Float64) under their names.
        No nulls in the required columns.
    has_time, has_session : bool
        Whether ``__time`` / ``__session`` exist.  Without time, file order is the
        event order and ``ts``/``gap`` are null.
    categorical, numeric : sequence of str
        Attribute column names, in output order.
    gap_seconds, max_events : float, int
        Session rule (see :mod:`anomaly_ssl.data.sessionize`).
    """
    if not has_time:
        # constant time: gaps never split, ties keep file order
        frame = frame.with_columns(pl.lit(0.0, dtype=pl.Float64).alias(TIME))
    frame = sessionize(
        frame,
        entity_col=ENTITY,
        time_col=TIME,
        gap_seconds=gap_seconds,
        max_events=max_events,
        session_col=SESSION if has_session else None,
    )
    gap = pl.when(pl.col(POS_COL) == 0).then(pl.lit(0.0)).otherwise(pl.col(TIME).diff()).alias("gap")
    aggs: list[pl.Expr] = [
        pl.col(ENTITY).first().cast(pl.Utf8).alias("entity_id"),
        pl.col(EVENT).alias("event"),
    ]
    if has_time:
        aggs += [pl.col(TIME).alias("ts"), pl.col("gap")]
    aggs += [pl.col(c) for c in [*categorical, *numeric]]
    out = frame.with_columns(gap).group_by(SEQUENCE_ID, maintain_order=True).agg(aggs)
    if not has_time:
        out = out.with_columns(
            pl.lit(None, dtype=pl.List(pl.Float64)).alias("ts"),
            pl.lit(None, dtype=pl.List(pl.Float64)).alias("gap"),
        )
    return out.select(list(sequences_schema(categorical, numeric)))


def tokens_expr(dtype: pl.DataType, token_sep: str, column: str = TOKENS) -> pl.Expr:
    """Expression turning a token column (list or ``token_sep``-separated string) into List[Utf8].

    Empty tokens (from repeated or trailing separators) are dropped; a null or
    blank string becomes an empty list, so that zero-length checks see it.
    """
    col = pl.col(column)
    if isinstance(dtype, (pl.List, pl.Array)):
        return col.cast(pl.List(pl.Utf8)).fill_null(pl.lit([], dtype=pl.List(pl.Utf8)))
    text = col.cast(pl.Utf8).fill_null("")
    if token_sep.isspace():
        tokens = text.str.extract_all(r"\S+")
    else:
        tokens = text.str.split(token_sep).list.eval(
            pl.element().str.strip_chars().filter(pl.element().str.strip_chars() != "")
        )
    return tokens.cast(pl.List(pl.Utf8))


def tokens_to_sequences(
    frame: pl.LazyFrame,
    *,
    tokens_dtype: pl.DataType,
    token_sep: str,
    attribute_dtypes: dict[str, pl.DataType],
    categorical: Sequence[str],
    numeric: Sequence[str],
) -> pl.LazyFrame:
    """Turn a typed sequence frame into a sequences table plus ``__row`` (lazy).

    ``frame`` holds ``__row``, ``__id`` (Utf8) and ``__tokens`` (string or list),
    plus attribute columns (lists or separated strings, dtypes in
    ``attribute_dtypes``).  The result keeps ``__row`` as its last column so the
    caller can name file rows in errors (see :func:`check_sequence_rows`).
    """
    cols = [
        pl.col(SEQ_ID).alias("sequence_id"),
        pl.col(SEQ_ID).alias("entity_id"),
        tokens_expr(tokens_dtype, token_sep).alias("event"),
        pl.lit(None, dtype=pl.List(pl.Float64)).alias("ts"),
        pl.lit(None, dtype=pl.List(pl.Float64)).alias("gap"),
    ]
    for c in categorical:
        cols.append(tokens_expr(attribute_dtypes[c], token_sep, c).alias(c))
    for c in numeric:
        expr = tokens_expr(attribute_dtypes[c], token_sep, c)
        cols.append(expr.list.eval(pl.element().cast(pl.Float64, strict=False)).alias(c))
    return frame.select([*cols, pl.col(ROW_COL)])


def check_sequence_rows(df: pl.DataFrame, path: str, seen_ids: set[str] | None = None) -> pl.DataFrame:
    """Check zero-length sequences and duplicate ids; return ``df`` without ``__row``.

    Row numbers in messages are 1-based data rows of the file (header not counted).
    ``seen_ids`` carries ids across batches when reading in chunks (updated in place).
    """
    lengths = df["event"].list.len()
    empty = df.filter(lengths == 0)
    if empty.height:
        items = [
            f"{sid!r} (row {row + 1})" for sid, row in empty.select("sequence_id", ROW_COL).head(5).rows()
        ]
        raise DataError(
            f"{path}: {empty.height} zero-length sequence(s) (no tokens): {', '.join(items)}"
            f"{' ...' if empty.height > 5 else ''}; remove these rows or give them tokens"
        )
    ids = df["sequence_id"]
    batch_ids = ids.to_list() if seen_ids is not None else []
    dup_mask = ids.is_duplicated()
    if seen_ids:  # ids already yielded by earlier batches (set lookups: linear in the batch)
        dup_mask = dup_mask | pl.Series([i in seen_ids for i in batch_ids], dtype=pl.Boolean)
    dups = df.filter(dup_mask)
    if dups.height:
        items = [
            f"{sid!r} (row {row + 1})" for sid, row in dups.select("sequence_id", ROW_COL).head(5).rows()
        ]
        raise DataError(
            f"{path}: sequence ids must be unique; repeated: {', '.join(items)}"
            f"{' ...' if dups.height > 5 else ''}"
        )
    if seen_ids is not None:
        seen_ids.update(batch_ids)
    return df.drop(ROW_COL)


def check_attribute_lengths(df: pl.DataFrame, columns: Sequence[str], path: str) -> None:
    """Per-event attribute lists of a sequence table must match the token count."""
    lengths = df["event"].list.len()
    for c in columns:
        bad = df.filter(df[c].list.len() != lengths)
        if bad.height:
            sid, row = bad.select("sequence_id", ROW_COL).row(0)
            raise DataError(
                f"{path}: column {c!r} has a different number of values than the tokens in "
                f"{bad.height} sequence(s), e.g. {sid!r} (row {row + 1})"
            )


# ------------------------------------------------------------------------ timestamps

#: seconds per unit of numeric timestamps
UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
#: string formats tried (after ``T`` -> space) when ``data.time_format`` is unset
ISO_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M%#z",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
)
#: rows the unit / format inference looks at
TIME_SAMPLE_ROWS = 10_000


def infer_time_unit(values: np.ndarray) -> str:
    """Guess the unit of numeric unix timestamps from their magnitude (median of |values|).

    Seconds stay below 1e11 until the year 5138; ms, us and ns are 1e3, 1e6 and
    1e9 times larger for any date after 1973.
    """
    values = values[np.isfinite(values)]
    if not len(values):
        return "s"
    med = float(np.median(np.abs(values)))
    for unit, limit in (("s", 1e11), ("ms", 1e14), ("us", 1e17)):
        if med < limit:
            return unit
    return "ns"


def time_expr(dtype: pl.DataType, sample: pl.Series, cfg: DataConfig, path: str) -> tuple[pl.Expr, str]:
    """Expression converting ``cfg.time_col`` to Float64 unix seconds, and the unit used.

    Numbers are scaled by ``data.time_unit`` (``auto``: by magnitude); strings
    that are all numbers likewise, other strings are parsed with
    ``data.time_format`` or the ISO 8601 variants in :data:`ISO_FORMATS` (naive
    times are taken as UTC); datetimes are converted directly.  Values that do
    not parse become null (the reader reports them), NaN too.  ``sample`` holds
    the first non-null values of the column (for unit and format inference).
    """
    name = cfg.time_col
    assert name is not None
    col, unit = pl.col(name), cfg.time_unit
    if isinstance(dtype, pl.Datetime):
        return col.dt.epoch("us").cast(pl.Float64) / 1e6, "datetime"
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us")).dt.epoch("us").cast(pl.Float64) / 1e6, "datetime"
    if dtype.is_numeric():
        if unit == "iso":
            raise DataError(
                f"{path}: data.time_unit=iso but column {name!r} holds numbers; use s, ms, us or auto"
            )
        if unit == "auto":
            unit = infer_time_unit(sample.cast(pl.Float64).to_numpy())
        return (col.cast(pl.Float64) * UNIT_SECONDS[unit]).fill_nan(None), unit
    if dtype != pl.Utf8:
        raise DataError(f"{path}: column {name!r} (data.time_col) has type {dtype}, not timestamps")
    text = col.str.strip_chars()
    if unit in UNIT_SECONDS:
        return (text.cast(pl.Float64, strict=False) * UNIT_SECONDS[unit]).fill_nan(None), unit
    sample = sample.cast(pl.Utf8).str.strip_chars()
    if not len(sample):  # no values at all: nothing to infer, the reader reports the empty rows
        return text.cast(pl.Float64, strict=False), "s"
    if unit == "auto" and cfg.time_format is None:
        numbers = sample.cast(pl.Float64, strict=False)
        if len(sample) and numbers.null_count() == 0:
            unit = infer_time_unit(numbers.to_numpy())
            return (text.cast(pl.Float64, strict=False) * UNIT_SECONDS[unit]).fill_nan(None), unit
    if cfg.time_format is not None:
        return _parse_seconds(text, cfg.time_format), "iso"
    norm = text.str.replace(r"^(\d{4}-\d{2}-\d{2})T", "${1} ")
    sample_norm = sample.to_frame("t").select(pl.col("t").str.replace(r"^(\d{4}-\d{2}-\d{2})T", "${1} "))
    hits = {
        fmt: int(sample_norm.select(_parse_seconds(pl.col("t"), fmt).is_not_null().sum()).item())
        for fmt in ISO_FORMATS
    }
    formats = sorted((f for f in ISO_FORMATS if hits[f]), key=lambda f: -hits[f])
    if not formats:
        example = sample[0] if len(sample) else None
        raise DataError(
            f"{path}: cannot parse timestamps in column {name!r} (data.time_col), e.g. {example!r}; "
            "set data.time_format (e.g. '%d/%m/%Y %H:%M:%S') or data.time_unit (s, ms, us) for numbers"
        )
    parsed = [_parse_seconds(norm, fmt) for fmt in formats]
    return (parsed[0] if len(parsed) == 1 else pl.coalesce(parsed)), "iso"


def _parse_seconds(text: pl.Expr, fmt: str) -> pl.Expr:
    parsed = text.str.to_datetime(fmt, strict=False, time_unit="us")
    return parsed.dt.epoch("us").cast(pl.Float64) / 1e6


def _examples(values: list[object], k: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:k])
    return shown + (f" ... ({len(values)} in all)" if len(values) > k else "")
