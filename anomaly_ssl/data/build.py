"""Column and row checks of a scanned input file, and the lazy plan that turns it into sequences.

:func:`build_sequences` checks that the configured columns exist and hold
scalars, counts rows, nulls and bad values in one streaming pass (unparseable
timestamps and non-numeric values in ``data.numeric`` are errors naming the
rows; rows with a null required value are dropped, counted in the
:class:`~anomaly_ssl.data.readers.LoadReport` and logged, or are an error with
``data.drop_null_rows=false``), and returns the lazy sequences query: events
sessionised by :func:`~anomaly_ssl.data.sequences.events_to_sequences`, token
tables split by :func:`~anomaly_ssl.data.sequences.tokens_to_sequences`, plus
a function that checks each collected chunk (lengths, empty sequences,
duplicate ids).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import polars as pl

from ..config import DataConfig
from ..errors import DataError
from . import sequences as sq
from .scan import ReadPlan, collect, scan, schema_of
from .sessionize import ROW_COL
from .sniff import column_list

if TYPE_CHECKING:
    from .readers import LoadReport

log = logging.getLogger(__name__)


def build_sequences(plan: ReadPlan, cfg: DataConfig, report: LoadReport) -> tuple[pl.LazyFrame, Any]:
    """Validate the file and return (lazy sequences plan, finishing function for collected chunks)."""
    lazy = scan(plan, cfg)
    schema = schema_of(lazy, plan)
    if plan.format == "events":
        out = _build_events(lazy, schema, plan, cfg, report)
        return out, lambda df, seen=None: df
    return _build_token_table(lazy, schema, plan, cfg, report)


def _require(schema: pl.Schema, wanted: dict[str, str], plan: ReadPlan) -> None:
    present = [c for c in schema.names() if c != ROW_COL]
    missing = [f"{col!r} ({key})" for key, col in wanted.items() if col not in schema]
    if missing:
        hint = "; the file has no header, so set data.columns" if plan.new_columns and not plan.id_col else ""
        raise DataError(
            f"{plan.path}: missing column(s) {', '.join(missing)}; the file has {column_list(present)}{hint}"
        )


def _build_events(
    lazy: pl.LazyFrame, schema: pl.Schema, plan: ReadPlan, cfg: DataConfig, report: LoadReport
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
        sample = collect(
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


def _numeric_expr(name: str, dtype: pl.DataType, plan: ReadPlan) -> pl.Expr:
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
    plan: ReadPlan,
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
    counts = collect(lazy.select(exprs), plan).row(0, named=True)
    report.rows_read = int(counts["__rows"])
    if report.rows_read == 0:
        raise DataError(f"{plan.path}: the file has no data rows")
    for i, (kind, col, mask) in enumerate(checks):
        n_bad = int(counts[f"__bad{i}"])
        if n_bad:
            rows = collect(lazy.filter(mask).select(ROW_COL, pl.col(col).cast(pl.Utf8)).head(5), plan).rows()
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
        rows = collect(lazy.filter(pl.col(col).is_null()).select(ROW_COL).head(5), plan)[ROW_COL]
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
    lazy: pl.LazyFrame, schema: pl.Schema, plan: ReadPlan, cfg: DataConfig, report: LoadReport
) -> tuple[pl.LazyFrame, Any]:
    attrs = [*cfg.categorical, *cfg.numeric]
    if plan.format == "lines":
        if attrs:
            raise DataError(
                f"{plan.path}: data.format=lines has no attribute columns, but data.categorical/numeric "
                f"name {attrs}; set them to [] (e.g. --set data.categorical=[] --set data.numeric=[])"
            )
        id_expr, tokens_col = pl.col(ROW_COL).cast(pl.Utf8), sq.TOKENS
        report.rows_read = int(collect(lazy.select(pl.len()), plan).item())
        last = collect(
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
