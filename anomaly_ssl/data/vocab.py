"""Vocabulary: token ids per field, fitted on training sequences only.

One sub-vocabulary per field of a sequences table: ``event``, each categorical
attribute, each numeric attribute, and ``gap`` (the time since the previous
event, when timestamps are known).  All fields share the special ids of
:mod:`anomaly_ssl.data.encoded` (PAD 0, MASK 1, UNK 2, CLS 3, EOS 4); real values
start at 5.  Categorical fields (``event`` included) keep exact values seen at
least ``min_count`` times, ordered by training frequency then value, unless they
have more than ``hash_threshold`` distinct values: then they are hashed into
``hash_buckets`` buckets with blake2b (stable across processes and machines;
``min_count`` does not apply, unseen values land in their bucket).
Numeric fields get quantile buckets fitted on training values; gaps get fixed
log-spaced buckets up to one day.  Anything unseen or null encodes to UNK,
never an error.  Encoding is vectorised (polars ``replace_strict`` / numpy
``searchsorted``); the JSON form round-trips exactly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..config import DataConfig, VocabConfig
from ..errors import DataError
from ..io import read_json, write_json
from .encoded import EVENT_FIELD, GAP_FIELD, N_SPECIAL, SPECIAL_TOKENS, UNK_ID, EncodedSequences

#: gaps above this (one day) share the last bucket
GAP_MAX_SECONDS = 86_400.0
_FORMAT = "anomaly-ssl-vocabulary"
_VERSION = 1


def stable_hash_bucket(value: str, buckets: int) -> int:
    """Bucket of ``value`` in ``[0, buckets)``: blake2b (8 bytes, little endian) modulo ``buckets``.

    Unlike Python's ``hash()`` this is the same in every process and on every machine.
    """
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


def gap_edges(n_buckets: int) -> list[float]:
    """Bucket edges in seconds for ``n_buckets`` gap buckets.

    Bucket 0 holds gaps <= 0 (first events, simultaneous events); buckets 1 ..
    n-2 are log-spaced (evenly over ``log1p(seconds)``) up to one day; bucket
    n-1 holds longer gaps.  Returns the ``n_buckets - 1`` upper edges used with
    ``searchsorted(side='left')``.
    """
    if n_buckets <= 1:
        return []
    inner = n_buckets - 2
    top = math.log1p(GAP_MAX_SECONDS)
    edges = [0.0] + [float(np.expm1(top * j / inner)) for j in range(1, inner + 1)]
    if inner:
        edges[-1] = GAP_MAX_SECONDS  # exactly one day, not expm1's rounding of it
    return edges


@dataclass
class FieldVocab:
    """The vocabulary of one field.

    Attributes
    ----------
    name : str
        Field (and sequences-table column) name.
    kind : {'exact', 'hashed', 'numeric', 'gap'}
    tokens : list of str
        ``exact``: the value of id ``N_SPECIAL + i``.
    buckets : int
        ``hashed``: number of hash buckets.
    edges : list of float
        ``numeric``: sorted quantile edges (bucket = searchsorted right);
        ``gap``: edges from :func:`gap_edges` (searchsorted left).
    counts : list of int
        Training occurrences of id ``N_SPECIAL + i``.
    unk_count : int
        Training occurrences that became UNK (rare values, nulls).
    """

    name: str
    kind: str
    tokens: list[str] = field(default_factory=list)
    buckets: int = 0
    edges: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    unk_count: int = 0

    @property
    def n_values(self) -> int:
        """Number of real (non-special) ids."""
        if self.kind == "exact":
            return len(self.tokens)
        if self.kind == "hashed":
            return self.buckets
        return len(self.edges) + 1

    @property
    def size(self) -> int:
        """Number of ids, specials included."""
        return N_SPECIAL + self.n_values

    def encode_values(self, values: pl.Series) -> np.ndarray:
        """Ids of a flat Series of values, int32, same length; unseen/null -> UNK."""
        if self.kind in ("numeric", "gap"):
            x = values.cast(pl.Float64).fill_null(np.nan).to_numpy()
            side = "right" if self.kind == "numeric" else "left"
            ids = np.searchsorted(np.asarray(self.edges, dtype=np.float64), x, side=side) + N_SPECIAL
            ids[~np.isfinite(x)] = UNK_ID
            return ids.astype(np.int32)
        values = values.cast(pl.Utf8)
        if self.kind == "exact":
            old = pl.Series(self.tokens, dtype=pl.Utf8)
            new = pl.Series(np.arange(N_SPECIAL, self.size, dtype=np.int32))
        else:
            old = values.drop_nulls().unique()
            new = pl.Series(
                [N_SPECIAL + stable_hash_bucket(v, self.buckets) for v in old.to_list()], dtype=pl.Int32
            )
        ids = values.replace_strict(old, new, default=UNK_ID, return_dtype=pl.Int32).fill_null(UNK_ID)
        return ids.to_numpy().astype(np.int32, copy=False)

    def decode_id(self, token_id: int) -> str:
        """Human-readable text of one id."""
        if not 0 <= token_id < self.size:
            raise ValueError(f"id {token_id} is out of range for field {self.name!r} (size {self.size})")
        if token_id < N_SPECIAL:
            return SPECIAL_TOKENS[token_id]
        i = token_id - N_SPECIAL
        if self.kind == "exact":
            return self.tokens[i]
        if self.kind == "hashed":
            return f"#{i}"
        if self.kind == "numeric":
            lo = self.edges[i - 1] if i > 0 else -math.inf
            hi = self.edges[i] if i < len(self.edges) else math.inf
            return f"[{lo:.6g}, {hi:.6g})"
        if not self.edges:
            return "any gap"
        if i == 0:
            return "0s"
        if i == len(self.edges):
            return f"> {_duration(self.edges[-1])}"
        return f"({_duration(self.edges[i - 1])}, {_duration(self.edges[i])}]"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (only the entries its kind uses)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "exact":
            out["tokens"] = self.tokens
        elif self.kind == "hashed":
            out["buckets"] = self.buckets
        else:
            out["edges"] = self.edges
        out["counts"] = self.counts
        out["unk_count"] = self.unk_count
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FieldVocab:
        """Inverse of :meth:`to_dict`."""
        fv = cls(
            name=str(raw["name"]),
            kind=str(raw["kind"]),
            tokens=[str(t) for t in raw.get("tokens", [])],
            buckets=int(raw.get("buckets", 0)),
            edges=[float(e) for e in raw.get("edges", [])],
            counts=[int(c) for c in raw["counts"]],
            unk_count=int(raw.get("unk_count", 0)),
        )
        if fv.kind not in ("exact", "hashed", "numeric", "gap"):
            raise DataError(f"vocabulary field {fv.name!r} has unknown kind {fv.kind!r}")
        if len(fv.counts) != fv.n_values:
            raise DataError(f"vocabulary field {fv.name!r}: {len(fv.counts)} counts for {fv.n_values} ids")
        return fv


def _duration(seconds: float) -> str:
    for unit, scale in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= scale:
            return f"{seconds / scale:.3g}{unit}"
    return f"{seconds:.3g}s"


def _fit_categorical(name: str, values: pl.Series, cfg: VocabConfig) -> FieldVocab:
    n_null = values.null_count()
    vc = values.drop_nulls().value_counts(name="__count")
    vc = vc.rename({vc.columns[0]: "value"}).sort(["__count", "value"], descending=[True, False])
    if vc.height > cfg.hash_threshold:
        buckets = np.array([stable_hash_bucket(v, cfg.hash_buckets) for v in vc["value"].to_list()])
        counts = np.bincount(buckets, weights=vc["__count"].to_numpy(), minlength=cfg.hash_buckets)
        return FieldVocab(
            name,
            "hashed",
            buckets=cfg.hash_buckets,
            counts=counts.astype(np.int64).tolist(),
            unk_count=n_null,
        )
    kept = vc.filter(pl.col("__count") >= cfg.min_count)
    rare = int(vc["__count"].sum()) - int(kept["__count"].sum())
    return FieldVocab(
        name,
        "exact",
        tokens=kept["value"].to_list(),
        counts=[int(c) for c in kept["__count"].to_list()],
        unk_count=n_null + rare,
    )


def _fit_binned(name: str, kind: str, values: pl.Series, edges: list[float]) -> FieldVocab:
    fv = FieldVocab(name, kind, edges=edges, counts=[0] * (len(edges) + 1))
    ids = fv.encode_values(values)
    counts = np.bincount(ids, minlength=fv.size)
    fv.counts = counts[N_SPECIAL:].astype(np.int64).tolist()
    fv.unk_count = int(counts[UNK_ID])
    return fv


def _quantile_edges(values: pl.Series, n_buckets: int) -> list[float]:
    x = values.cast(pl.Float64).drop_nulls().to_numpy()
    x = x[np.isfinite(x)]
    if not len(x) or n_buckets < 2:
        return []
    qs = np.quantile(x, np.linspace(0.0, 1.0, n_buckets + 1)[1:-1])
    return [float(e) for e in np.unique(qs)]


class Vocabulary:
    """Token ids for every field of a sequences table (see the module docstring).

    Build it with :meth:`fit` on training data, then :meth:`encode` any table
    with the same columns.
    """

    def __init__(self, fields: Iterable[FieldVocab]) -> None:
        fields = list(fields)
        if not fields or fields[0].name != EVENT_FIELD:
            raise DataError("a vocabulary needs the 'event' field first")
        self.fields: dict[str, FieldVocab] = {f.name: f for f in fields}

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, table: pl.DataFrame, data_cfg: DataConfig, vocab_cfg: VocabConfig) -> Vocabulary:
        """Fit on a (training) sequences table.

        Parameters
        ----------
        table : polars.DataFrame
            Sequences table (see :mod:`anomaly_ssl.data.sequences`).
        data_cfg : DataConfig
            Which columns are categorical and numeric attributes.
        vocab_cfg : VocabConfig
            ``min_count``, hashing, bucket counts.
        """
        _require_columns(table, [EVENT_FIELD, *data_cfg.categorical, *data_cfg.numeric])
        if table.height == 0:
            raise DataError("cannot fit a vocabulary on an empty sequences table")
        fields = [_fit_categorical(EVENT_FIELD, _flatten(table, EVENT_FIELD), vocab_cfg)]
        fields += [_fit_categorical(c, _flatten(table, c), vocab_cfg) for c in data_cfg.categorical]
        for c in data_cfg.numeric:
            values = _flatten(table, c)
            fields.append(
                _fit_binned(c, "numeric", values, _quantile_edges(values, vocab_cfg.numeric_buckets))
            )
        if GAP_FIELD in table.columns and table[GAP_FIELD].null_count() < table.height:
            fields.append(
                _fit_binned(GAP_FIELD, "gap", _flatten(table, GAP_FIELD), gap_edges(vocab_cfg.gap_buckets))
            )
        return cls(fields)

    # ----------------------------------------------------------------- encoding
    def encode(self, table: pl.DataFrame) -> EncodedSequences:
        """Encode a sequences table into ragged (CSR) token ids, one int32 array per field.

        Values never seen in training (and nulls) become UNK.  A missing
        attribute column is a :class:`DataError`; a table without timestamps
        encodes ``gap`` as UNK.
        """
        _require_columns(table, ["sequence_id", *[n for n in self.fields if n != GAP_FIELD]])
        lengths = table[EVENT_FIELD].list.len().fill_null(0).to_numpy().astype(np.int64)
        if (lengths == 0).any():
            bad = table.filter(pl.Series(lengths == 0))["sequence_id"].head(5).to_list()
            raise DataError(f"cannot encode zero-length sequence(s): {bad}")
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        encoded: dict[str, np.ndarray] = {}
        for name, fv in self.fields.items():
            if name not in table.columns:  # gap without time
                encoded[name] = np.full(total, UNK_ID, dtype=np.int32)
                continue
            encoded[name] = np.ascontiguousarray(fv.encode_values(_flatten(table, name, offsets)))
        timestamps = None
        if "ts" in table.columns and table["ts"].null_count() < table.height:
            timestamps = _flatten(table, "ts", offsets).cast(pl.Float64).fill_null(np.nan).to_numpy()
        return EncodedSequences(
            sequence_ids=table["sequence_id"].to_numpy().astype(object),
            offsets=offsets,
            fields=encoded,
            timestamps=timestamps,
        )

    # -------------------------------------------------------------- inspection
    @property
    def field_names(self) -> list[str]:
        """Field names, ``'event'`` first."""
        return list(self.fields)

    def sizes(self) -> dict[str, int]:
        """Vocabulary size per field, specials included (the model's embedding sizes)."""
        return {name: fv.size for name, fv in self.fields.items()}

    def decode(self, field_name: str, ids: Iterable[int] | np.ndarray) -> list[str]:
        """Human-readable text of ``ids`` of one field (values, ``#bucket``, ranges, specials)."""
        if field_name not in self.fields:
            raise KeyError(f"no field {field_name!r}; fields are {self.field_names}")
        fv = self.fields[field_name]
        return [fv.decode_id(int(i)) for i in np.asarray(ids).ravel()]

    def event_token_counts(self) -> np.ndarray:
        """Training occurrences per event id, int64, shape (sizes()['event'],); UNK holds rare values."""
        fv = self.fields[EVENT_FIELD]
        counts = np.zeros(fv.size, dtype=np.int64)
        counts[UNK_ID] = fv.unk_count
        counts[N_SPECIAL:] = fv.counts
        return counts

    # ---------------------------------------------------------------- storage
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; :meth:`from_dict` restores an identical vocabulary."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "special_tokens": list(SPECIAL_TOKENS),
            "fields": [fv.to_dict() for fv in self.fields.values()],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_dict`; raises :class:`DataError` on a foreign or newer file."""
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise DataError("not an anomaly-ssl vocabulary (missing 'format': 'anomaly-ssl-vocabulary')")
        if int(raw.get("version", 0)) > _VERSION:
            raise DataError(f"vocabulary version {raw['version']} is newer than this anomaly-ssl supports")
        if list(raw.get("special_tokens", SPECIAL_TOKENS)) != list(SPECIAL_TOKENS):
            raise DataError("vocabulary uses different special tokens than this anomaly-ssl version")
        return cls(FieldVocab.from_dict(f) for f in raw["fields"])

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON, atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        try:
            raw = read_json(path)
        except FileNotFoundError:
            raise DataError(f"vocabulary file not found: {path}") from None
        except ValueError as exc:
            raise DataError(f"{path}: not a valid vocabulary JSON file ({exc})") from None
        return cls.from_dict(raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={fv.kind}:{fv.size}" for n, fv in self.fields.items())
        return f"Vocabulary({parts})"


def _require_columns(table: pl.DataFrame, names: list[str]) -> None:
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise DataError(f"sequences table has no column(s) {missing}; it has {table.columns}")


def _flatten(table: pl.DataFrame, column: str, offsets: np.ndarray | None = None) -> pl.Series:
    """All per-event values of a list column, in sequence order (null rows -> null values).

    With ``offsets`` (CSR of the ``event`` lengths) the result has exactly
    ``offsets[-1]`` values, null rows filled with nulls; without, null rows are skipped.
    """
    col = table[column]
    flat = col.explode(empty_as_null=False, keep_nulls=False)
    if offsets is None or col.null_count() == 0:
        return flat
    inner = col.dtype.inner if isinstance(col.dtype, pl.List) else pl.Utf8  # type: ignore[union-attr]
    full = pl.Series(column, [None] * int(offsets[-1]), dtype=inner)
    rows = np.flatnonzero(col.is_not_null().to_numpy())
    if len(rows):
        lengths = offsets[rows + 1] - offsets[rows]
        starts = np.repeat(offsets[rows] - np.cumsum(lengths) + lengths, lengths)
        full.scatter(starts + np.arange(int(lengths.sum())), flat)
    return full
