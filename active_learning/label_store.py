"""The label store: an append-only, crash-safe JSON-lines record of every label event.

One JSON object per line in ``RUN/labels/labels.jsonl``: sequence_id, label
(0 normal / 1 anomaly), anomaly_type, note, source (``label-studio:<project>:<task>``
or ``oracle``), annotators, annotation_ids, revision, received_at, model_version.
Events are never edited or removed; a re-label is a new event and the latest
event per sequence (in file order) is its current label.

Durability: every append rewrites the whole file to a temporary file in the same
folder, fsyncs it and renames it over the old one (:mod:`anomaly_ssl.io`), copying
the existing bytes verbatim and adding the new lines.  A crash therefore leaves
either the old file or the new one, never a torn line, so any malformed line a
reader meets is real damage and is reported with its file and line number rather
than silently skipped.  The cost, O(file size) per append, is negligible here:
labels come from people, so the file stays in the kilobytes-to-megabytes range.
Concurrent writers on one machine are serialised with an advisory ``fcntl`` lock
(where available) held across read, de-duplicate and write.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from anomaly_ssl.io import atomic_write_bytes

from .al_errors import ActiveLearningError, LabelStoreError

logger = logging.getLogger(__name__)

LABELS_FILENAME = "labels.jsonl"


def utc_now() -> str:
    """The current UTC time as an ISO-8601 string (seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class AppendOnlyJsonl:
    """An append-only JSON-lines file, rewritten atomically on each append.

    Parameters
    ----------
    path : str or Path
        The file (created on the first append; its folder too).
    error_cls : type
        Error raised for corrupt content (gets file and line in its message).
    """

    def __init__(self, path: str | Path, error_cls: type[ActiveLearningError] = LabelStoreError) -> None:
        self.path = Path(path)
        self.error_cls = error_cls

    def read(self) -> list[dict[str, Any]]:
        """All objects in file order; ``[]`` when the file does not exist."""
        if not self.path.exists():
            return []
        return self._parse(self.path.read_bytes())

    def _parse(self, raw: bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for lineno, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise self.error_cls(
                    f"{self.path}:{lineno}: not a valid JSON line ({exc}); the file was edited "
                    "or damaged outside anomaly-ssl; restore it from a backup or remove that line"
                ) from exc
            if not isinstance(obj, dict):
                raise self.error_cls(
                    f"{self.path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            obj["_line"] = lineno
            out.append(obj)
        return out

    def append_with(self, select_new: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> int:
        """Under the lock: read the file, ask ``select_new(existing)`` what to add, write.

        Returns the number of objects appended.  The existing bytes are kept
        verbatim; the file is replaced atomically, so it is never half-written.
        """
        with self._locked():
            raw = self.path.read_bytes() if self.path.exists() else b""
            if raw and not raw.endswith(b"\n"):
                last_line = raw.count(b"\n") + 1
                raise self.error_cls(
                    f"{self.path}:{last_line}: the last line has no newline; the file was "
                    "edited outside anomaly-ssl; check that line and end it with a newline"
                )
            new = select_new(self._parse(raw))
            if not new:
                return 0
            payload = b"".join(
                json.dumps(obj, ensure_ascii=False, sort_keys=False).encode("utf-8") + b"\n" for obj in new
            )
            atomic_write_bytes(self.path, raw + payload)
            return len(new)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not on POSIX: single-writer use only
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass
class LabelRecord:
    """One label event.

    ``annotation_ids`` (and ``revision``, e.g. the annotation's ``updated_at``)
    identify the event with ``sequence_id`` and ``source``: appending a record
    with the same identity again is a no-op, so syncs can be repeated safely.
    An edited annotation must carry a new ``revision`` to be recorded.
    """

    sequence_id: str
    label: int
    anomaly_type: str | None = None
    note: str = ""
    source: str = "oracle"
    annotators: list[str] = field(default_factory=list)
    annotation_ids: list[str] = field(default_factory=list)
    revision: str | None = None
    received_at: str | None = None
    model_version: str | None = None

    @classmethod
    def from_mapping(cls, obj: Mapping[str, Any], where: str, strict: bool = True) -> LabelRecord:
        """Validate a mapping into a record; ``where`` names it in error messages."""
        names = {f.name for f in fields(cls)}
        extra = set(obj) - names - {"_line", "v"}
        if extra and strict:
            raise LabelStoreError(f"{where}: unknown field(s) {sorted(extra)}; valid fields: {sorted(names)}")
        for required in ("sequence_id", "label"):
            if obj.get(required) is None:
                raise LabelStoreError(f"{where}: missing {required!r}")
        label = obj["label"]
        if isinstance(label, bool) or label not in (0, 1):
            raise LabelStoreError(f"{where}: label must be 0 (normal) or 1 (anomaly), got {label!r}")
        anomaly_type = obj.get("anomaly_type")
        if anomaly_type is not None and not isinstance(anomaly_type, str):
            raise LabelStoreError(f"{where}: anomaly_type must be a string or null, got {anomaly_type!r}")
        if label == 0 and anomaly_type:
            logger.warning("%s: normal label with anomaly_type %r; the type is dropped", where, anomaly_type)
            anomaly_type = None
        for name in ("annotators", "annotation_ids"):
            if not isinstance(obj.get(name, []), list):
                raise LabelStoreError(f"{where}: {name} must be a list, got {obj[name]!r}")
        return cls(
            sequence_id=str(obj["sequence_id"]),
            label=int(label),
            anomaly_type=anomaly_type,
            note=str(obj.get("note") or ""),
            source=str(obj.get("source") or "oracle"),
            annotators=[str(a) for a in obj.get("annotators", [])],
            annotation_ids=[str(a) for a in obj.get("annotation_ids", [])],
            revision=None if obj.get("revision") is None else str(obj["revision"]),
            received_at=obj.get("received_at"),
            model_version=obj.get("model_version"),
        )

    def key(self) -> tuple[str, str, tuple[str, ...], str | None]:
        """Identity used for idempotent appends: (sequence_id, source, annotation ids, revision)."""
        return (self.sequence_id, self.source, tuple(sorted(self.annotation_ids)), self.revision)


class LabelStore:
    """Append-only label events for one run.

    Parameters
    ----------
    path : str or Path
        The JSON-lines file, conventionally ``RUN/labels/labels.jsonl``
        (see :meth:`for_run`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = AppendOnlyJsonl(self.path, LabelStoreError)

    @classmethod
    def for_run(cls, run_dir: str | Path) -> LabelStore:
        """The store of a run directory: ``RUN/labels/labels.jsonl``."""
        return cls(Path(run_dir) / "labels" / LABELS_FILENAME)

    def records(self) -> list[LabelRecord]:
        """Every stored event, in append order; :class:`LabelStoreError` names a bad line."""
        return [
            LabelRecord.from_mapping(obj, f"{self.path}:{obj['_line']}", strict=False)
            for obj in self._file.read()
        ]

    def append(self, records: Iterable[LabelRecord | Mapping[str, Any]]) -> int:
        """Add label events that are not stored yet.

        Parameters
        ----------
        records : iterable of LabelRecord or mapping
            New events; mappings are validated (unknown fields are errors).
            ``received_at`` defaults to now (UTC).

        Returns
        -------
        int
            How many were added; records whose :meth:`LabelRecord.key` is already
            stored (or repeated within ``records``) are skipped.
        """
        now = utc_now()
        incoming: list[LabelRecord] = []
        for i, rec in enumerate(records):
            if not isinstance(rec, LabelRecord):
                rec = LabelRecord.from_mapping(rec, f"record {i} passed to LabelStore.append")
            else:  # re-validate dataclass input the same way
                rec = LabelRecord.from_mapping(asdict(rec), f"record {i} passed to LabelStore.append")
            if rec.received_at is None:
                rec.received_at = now
            incoming.append(rec)

        def select_new(existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
            seen: dict[tuple, LabelRecord] = {}
            for obj in existing:
                old = LabelRecord.from_mapping(obj, f"{self.path}:{obj['_line']}", strict=False)
                seen[old.key()] = old
            new: list[dict[str, Any]] = []
            for rec in incoming:
                old = seen.get(rec.key())
                if old is not None:
                    if (old.label, old.anomaly_type) != (rec.label, rec.anomaly_type):
                        logger.warning(
                            "label for %s from %s (annotations %s) is already stored as %s/%s; "
                            "the new value %s/%s is ignored (give an edited annotation a new revision)",
                            rec.sequence_id, rec.source, rec.annotation_ids,
                            old.label, old.anomaly_type, rec.label, rec.anomaly_type,
                        )  # fmt: skip
                    continue
                seen[rec.key()] = rec
                new.append({"v": 1, **asdict(rec)})
            return new

        added = self._file.append_with(select_new)
        logger.info("label store %s: %d new label event(s), %d already stored", self.path, added,
                    len(incoming) - added)  # fmt: skip
        return added

    def current_labels(self) -> pl.DataFrame:
        """The latest label per sequence (re-labels override earlier events).

        Returns
        -------
        polars.DataFrame
            Columns ``sequence_id`` (str), ``label`` (Int8), ``anomaly_type`` (str, null
            for normal); one row per labelled sequence, in order of first labelling.
        """
        latest: dict[str, LabelRecord] = {}
        for rec in self.records():
            latest[rec.sequence_id] = rec
        return pl.DataFrame(
            {
                "sequence_id": [r.sequence_id for r in latest.values()],
                "label": [r.label for r in latest.values()],
                "anomaly_type": [r.anomaly_type for r in latest.values()],
            },
            schema={"sequence_id": pl.String, "label": pl.Int8, "anomaly_type": pl.String},
        )

    def events(self) -> pl.DataFrame:
        """Every stored event as a frame (one row per line, append order)."""
        recs = self.records()
        schema = {
            "sequence_id": pl.String, "label": pl.Int8, "anomaly_type": pl.String, "note": pl.String,
            "source": pl.String, "annotators": pl.List(pl.String), "annotation_ids": pl.List(pl.String),
            "revision": pl.String, "received_at": pl.String, "model_version": pl.String,
        }  # fmt: skip
        return pl.DataFrame([asdict(r) for r in recs], schema=schema) if recs else pl.DataFrame(schema=schema)

    def counts(self) -> dict[str, Any]:
        """``events``, ``sequences``, ``normal``, ``anomaly`` (current labels) and ``by_type``."""
        recs = self.records()
        latest = {r.sequence_id: r for r in recs}
        by_type: dict[str, int] = {}
        for r in latest.values():
            if r.label == 1:
                name = r.anomaly_type or "unspecified"
                by_type[name] = by_type.get(name, 0) + 1
        n_anomaly = sum(by_type.values())
        return {
            "events": len(recs),
            "sequences": len(latest),
            "normal": len(latest) - n_anomaly,
            "anomaly": n_anomaly,
            "by_type": dict(sorted(by_type.items())),
        }

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r})"
