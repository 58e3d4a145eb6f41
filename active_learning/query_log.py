"""The query log: an append-only record of which sequences went to annotators, when and why.

Lives beside the label store in ``RUN/labels/queries.jsonl`` and shares its
crash-safe writer (:class:`~active_learning.label_store.AppendOnlyJsonl`: the
whole file is rewritten to a temporary file, fsynced and renamed, existing
bytes copied verbatim).  Two kinds of line: ``queried`` (sequence id, strategy,
utility, anomaly score, rank in its batch, round, model version, project,
optional task id, time) and ``task`` (the Label Studio task id created for a
queried sequence, when it is known only after sending).  A sequence is never
logged as queried twice: :meth:`QueryLog.already_sent` lets the loop filter a
batch, and :meth:`QueryLog.append` refuses repeats.  Log a batch *before*
creating its tasks and attach task ids afterwards; after a crash,
:meth:`QueryLog.without_task` lists what may or may not have reached the server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .al_errors import QueryLogError
from .label_store import AppendOnlyJsonl, utc_now

logger = logging.getLogger(__name__)

QUERIES_FILENAME = "queries.jsonl"

_SCHEMA = {
    "sequence_id": pl.String,
    "project": pl.String,
    "task_id": pl.String,
    "strategy": pl.String,
    "utility": pl.Float64,
    "score": pl.Float64,
    "rank": pl.Int64,
    "round": pl.Int64,
    "model_version": pl.String,
    "sent_at": pl.String,
}


@dataclass
class QueryRecord:
    """Why and when one sequence was sent to annotators.

    ``utility`` is the strategy's ``last_scores_`` value for the row, ``score``
    its anomaly score, ``rank`` its 0-based position in the batch.
    """

    sequence_id: str
    strategy: str
    rank: int
    utility: float | None = None
    score: float | None = None
    round: int | None = None
    model_version: str | None = None
    project: str | None = None
    task_id: str | None = None
    sent_at: str | None = None


class QueryLog:
    """Append-only log of queried sequences for one run.

    Parameters
    ----------
    path : str or Path
        The JSON-lines file, conventionally ``RUN/labels/queries.jsonl`` (see :meth:`for_run`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = AppendOnlyJsonl(self.path, QueryLogError)

    @classmethod
    def for_run(cls, run_dir: str | Path) -> QueryLog:
        """The query log of a run directory: ``RUN/labels/queries.jsonl``."""
        return cls(Path(run_dir) / "labels" / QUERIES_FILENAME)

    # ------------------------------------------------------------------ reads
    def _lines(self) -> list[dict[str, Any]]:
        lines = self._file.read()
        for obj in lines:
            if obj.get("event") not in ("queried", "task") or "sequence_id" not in obj:
                raise QueryLogError(
                    f"{self.path}:{obj['_line']}: expected an object with 'event' (queried/task) "
                    "and 'sequence_id'; the file was edited outside anomaly-ssl"
                )
        return lines

    def sent_ids(self) -> set[str]:
        """Sequence ids that were ever queried."""
        return {str(o["sequence_id"]) for o in self._lines() if o["event"] == "queried"}

    def already_sent(self, sequence_ids: Sequence[Any]) -> np.ndarray:
        """Boolean mask, shape (len(sequence_ids),): which ids were already sent to annotators."""
        sent = self.sent_ids()
        return np.asarray([str(s) in sent for s in sequence_ids], dtype=bool)

    def frame(self) -> pl.DataFrame:
        """One row per queried sequence, with its latest attached task id; log order."""
        rows: dict[str, dict[str, Any]] = {}
        for obj in self._lines():
            sid = str(obj["sequence_id"])
            if obj["event"] == "queried":
                rows[sid] = {k: obj.get(k) for k in _SCHEMA}
            elif sid in rows:
                rows[sid]["task_id"] = obj.get("task_id")
        return pl.DataFrame(list(rows.values()), schema=_SCHEMA) if rows else pl.DataFrame(schema=_SCHEMA)

    def without_task(self) -> list[str]:
        """Queried sequence ids that have no task id yet (to reconcile after a crash)."""
        return self.frame().filter(pl.col("task_id").is_null())["sequence_id"].to_list()

    # ----------------------------------------------------------------- writes
    def append(self, records: Iterable[QueryRecord | Mapping[str, Any]]) -> int:
        """Log a batch of queried sequences.

        Returns
        -------
        int
            Number of records logged.

        Raises
        ------
        QueryLogError
            A sequence is repeated in ``records`` or was already sent (filter the
            batch with :meth:`already_sent` first); a record is malformed.
        """
        now = utc_now()
        batch = [self._as_record(r, i, now) for i, r in enumerate(records)]
        ids = [r.sequence_id for r in batch]
        if len(set(ids)) != len(ids):
            dup = next(s for s in ids if ids.count(s) > 1)
            raise QueryLogError(f"QueryLog.append: sequence {dup!r} appears twice in one batch")

        def select_new(existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
            sent = {str(o.get("sequence_id")) for o in existing if o.get("event") == "queried"}
            again = [s for s in ids if s in sent]
            if again:
                raise QueryLogError(
                    f"{self.path}: {len(again)} sequence(s) were already sent to annotators "
                    f"(first: {again[0]!r}); filter the batch with QueryLog.already_sent before logging"
                )
            return [{"event": "queried", **asdict(r)} for r in batch]

        added = self._file.append_with(select_new)
        logger.info("query log %s: %d sequence(s) logged as sent", self.path, added)
        return added

    def attach_tasks(self, task_ids: Mapping[Any, Any], project: str | None = None) -> int:
        """Record the task id created for each queried sequence (``{sequence_id: task_id}``).

        Already attached (same id) pairs are skipped; returns how many were added.
        Raises :class:`QueryLogError` for a sequence that was never logged as queried.
        """
        pairs = {str(k): str(v) for k, v in task_ids.items()}

        def select_new(existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
            queried = {str(o["sequence_id"]) for o in existing if o.get("event") == "queried"}
            current: dict[str, str | None] = {}
            for o in existing:
                if o.get("event") in ("queried", "task"):  # the latest line wins
                    current[str(o["sequence_id"])] = o.get("task_id")
            unknown = [s for s in pairs if s not in queried]
            if unknown:
                raise QueryLogError(
                    f"{self.path}: cannot attach a task to {unknown[0]!r}: it was never logged as "
                    "queried; log the batch with QueryLog.append first"
                )
            now = utc_now()
            return [
                {"event": "task", "sequence_id": s, "task_id": t, "project": project, "at": now}
                for s, t in pairs.items()
                if current.get(s) != t
            ]

        return self._file.append_with(select_new)

    def _as_record(self, rec: QueryRecord | Mapping[str, Any], i: int, now: str) -> QueryRecord:
        if isinstance(rec, QueryRecord):
            rec = asdict(rec)
        known = set(QueryRecord.__dataclass_fields__)
        extra = set(rec) - known
        if extra:
            raise QueryLogError(f"query record {i}: unknown field(s) {sorted(extra)}; valid: {sorted(known)}")
        try:
            out = QueryRecord(**rec)
        except TypeError as exc:
            raise QueryLogError(f"query record {i}: {exc}") from exc
        out.sequence_id = str(out.sequence_id)
        out.task_id = None if out.task_id is None else str(out.task_id)
        for name in ("utility", "score"):
            value = getattr(out, name)
            if value is not None:
                value = float(value)
                setattr(out, name, value if math.isfinite(value) else None)
        out.rank = int(out.rank)
        out.round = None if out.round is None else int(out.round)
        out.sent_at = out.sent_at or now
        return out

    def __repr__(self) -> str:
        return f"QueryLog({str(self.path)!r})"
