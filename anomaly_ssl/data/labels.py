"""Ground-truth labels per sequence: reading, checking and joining them to scores.

A label file (parquet, CSV/TSV or JSON lines) has one row per sequence with
``sequence_id``, ``label`` (0 normal / 1 anomaly; ``normal``/``anomaly`` and
``false``/``true`` are accepted too) and optionally ``anomaly_type``.  Labels
are only ever used for evaluation and fine-tuning, never for pretraining.
Mistakes (missing columns, values outside {0, 1}, duplicate ids, ids that match
no sequence) raise :class:`~anomaly_ssl.errors.DataError` naming the rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from ..errors import DataError
from .readers import read_table

log = logging.getLogger(__name__)

#: text label values accepted besides 0 and 1
LABEL_WORDS = {
    "0": 0,
    "1": 1,
    "normal": 0,
    "anomaly": 1,
    "anomalous": 1,
    "false": 0,
    "true": 1,
}
LABELS_SCHEMA = {"sequence_id": pl.Utf8(), "label": pl.Int8(), "anomaly_type": pl.Utf8()}


def read_labels(
    path: str | Path,
    sequence_ids: Iterable[str] | pl.Series | None = None,
    *,
    id_col: str = "sequence_id",
    label_col: str = "label",
    type_col: str = "anomaly_type",
) -> pl.DataFrame:
    """Read and check a label file.

    Parameters
    ----------
    path : str or Path
        Parquet, CSV/TSV (delimiter sniffed) or JSON lines with a header.
    sequence_ids : iterable of str, optional
        Ids of the sequences the labels are for.  If none of the label ids
        matches, a :class:`DataError` shows examples from both sides; if some do
        not match, a warning gives their count (they are kept in the result).
    id_col, label_col, type_col : str
        Column names in the file (e.g. ``id_col='block_id'`` for HDFS).

    Returns
    -------
    polars.DataFrame
        Columns ``sequence_id`` (Utf8), ``label`` (Int8, 0/1), ``anomaly_type``
        (Utf8, null when the file has no such column or the cell is empty).
    """
    raw = read_table(path)
    missing = [c for c in (id_col, label_col) if c not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: label file has no column(s) {missing}; it has {raw.columns}. "
            f"Expected a header with {id_col},{label_col}[,{type_col}]"
        )
    ids = raw[id_col].cast(pl.Utf8)
    null_ids = ids.is_null()
    if null_ids.any():
        raise DataError(f"{path}: empty {id_col!r} in row(s) {_rows(null_ids)}")
    labels = _labels(raw[label_col], path, label_col)
    if type_col in raw.columns:
        types = raw[type_col].cast(pl.Utf8).str.strip_chars()
        types = pl.when(types.str.len_chars() > 0).then(types).otherwise(None)
        types = raw.select(types.alias("t"))["t"]
    else:
        types = pl.Series([None] * raw.height, dtype=pl.Utf8)
    out = pl.DataFrame({"sequence_id": ids, "label": labels, "anomaly_type": types}, schema=LABELS_SCHEMA)
    dup = out["sequence_id"].is_duplicated()
    if dup.any():
        first = out.filter(dup)["sequence_id"][0]
        rows = _rows(out["sequence_id"] == first)
        raise DataError(
            f"{path}: {int(dup.sum())} rows repeat a sequence id, e.g. {first!r} in rows {rows}; "
            "keep one label per sequence"
        )
    if sequence_ids is not None:
        known = (
            sequence_ids.cast(pl.Utf8)
            if isinstance(sequence_ids, pl.Series)
            else pl.Series(list(sequence_ids), dtype=pl.Utf8)
        )
        _check_matches(out["sequence_id"], known, path)
    return out


def _labels(col: pl.Series, path: str | Path, name: str) -> pl.Series:
    if col.dtype == pl.Boolean:
        values = col.cast(pl.Int8)
    elif col.dtype.is_numeric():
        values = pl.Series(
            [None if v is None or v not in (0, 1) else int(v) for v in col.to_list()], dtype=pl.Int8
        )
    else:
        text = col.cast(pl.Utf8).str.strip_chars().str.to_lowercase()
        values = text.replace_strict(LABEL_WORDS, default=None, return_dtype=pl.Int8)
    bad = values.is_null()
    if bad.any():
        examples = ", ".join(
            f"row {i + 1}: {v!r}" for i, v in zip(_indices(bad)[:5], col.filter(bad).head(5).to_list())
        )
        raise DataError(
            f"{path}: {int(bad.sum())} label(s) in column {name!r} are not 0/1 (or normal/anomaly): "
            f"{examples}"
        )
    return values


def _check_matches(label_ids: pl.Series, sequence_ids: pl.Series, path: str | Path) -> None:
    matched = label_ids.is_in(sequence_ids.implode())
    n_match = int(matched.sum())
    if n_match == 0:
        raise DataError(
            f"{path}: none of the {len(label_ids)} label ids matches a sequence id; labels have e.g. "
            f"{label_ids.head(3).to_list()}, sequences have e.g. {sequence_ids.head(3).to_list()}. "
            "Check that the labels belong to this data and the same data.* settings (session rule, id column)"
        )
    if n_match < len(label_ids):
        example = label_ids.filter(~matched).head(3).to_list()
        log.warning(
            "%s: %d of %d label ids match no sequence (e.g. %s); they are ignored",
            path,
            len(label_ids) - n_match,
            len(label_ids),
            example,
        )


def join_labels(scores_df: pl.DataFrame, labels_df: pl.DataFrame) -> pl.DataFrame:
    """Left-join labels onto scores by ``sequence_id`` (score order kept).

    Sequences without a label get a null ``label``/``anomaly_type``.  Raises
    :class:`DataError` if ``scores_df`` has no ``sequence_id`` column or no
    sequence has a label.
    """
    for name, df, cols in (
        ("scores", scores_df, ["sequence_id"]),
        ("labels", labels_df, ["sequence_id", "label"]),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(f"{name} table has no column(s) {missing}; it has {df.columns}")
    labels = labels_df.select(
        pl.col("sequence_id").cast(pl.Utf8),
        pl.col("label").cast(pl.Int8),
        (pl.col("anomaly_type") if "anomaly_type" in labels_df.columns else pl.lit(None, pl.Utf8)).alias(
            "anomaly_type"
        ),
    )
    scores = scores_df.drop([c for c in ("label", "anomaly_type") if c in scores_df.columns])
    joined = scores.with_columns(pl.col("sequence_id").cast(pl.Utf8)).join(
        labels, on="sequence_id", how="left", maintain_order="left"
    )
    n_labelled = joined.height - joined["label"].null_count()
    if n_labelled == 0 and joined.height:
        raise DataError(
            f"no scored sequence has a label: scores have e.g. {scores['sequence_id'].head(3).to_list()}, "
            f"labels e.g. {labels['sequence_id'].head(3).to_list()}"
        )
    if n_labelled < joined.height:
        log.info("%d of %d scored sequences have no label", joined.height - n_labelled, joined.height)
    return joined


def _indices(mask: pl.Series) -> list[int]:
    return mask.arg_true().to_list()


def _rows(mask: pl.Series, k: int = 5) -> str:
    idx = _indices(mask)
    shown = ", ".join(str(i + 1) for i in idx[:k])
    return shown + (" ..." if len(idx) > k else "")
