"""Label Studio JSON mapping: scored sequences -> tasks, exports -> resolved labels.

Pure functions on plain JSON-like data, no network and no SDK: :func:`build_task`
turns one scored, explained sequence into a task (the HTML view of
:mod:`active_learning.ls_view`, with the session's most surprising events
highlighted, plus a ``choices`` prediction carrying the model version and
score); :func:`render_label_config` fills the labeling view
``configs/labeling.xml`` with the anomaly taxonomy; :func:`pseudonymize`
replaces entity ids by a keyed hash before they leave the machine;
:func:`parse_export` reads Label Studio's JSON export into
:class:`AnnotationRecord` rows, and :func:`resolve_labels` turns them into one
label per sequence by majority over annotators (``unsure`` abstains, ties are
reported, never guessed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import quoteattr

from .errors import TaskMappingError
from .ls_view import render_task_html

log = logging.getLogger(__name__)

#: names in the labeling config (the export contract; keep in sync with configs/labeling.xml)
LABEL_FROM = "label"
TYPE_FROM = "anomaly_type"
NOTE_FROM = "note"
TO_NAME = "sequence"
#: the annotator's verdicts; ``unsure`` abstains in :func:`resolve_labels`
CHOICES = ("anomaly", "normal", "unsure")
_TAXONOMY_MARKER = "{{taxonomy_choices}}"
#: the template shipped with the project (``configs/`` at the repository root)
LABEL_CONFIG_TEMPLATE = Path(__file__).resolve().parent.parent / "configs" / "labeling.xml"


# ------------------------------------------------------------------ pseudonyms


def pseudonymize(entity_id: Any, key: str | bytes, length: int = 12) -> str:
    """Keyed pseudonym of an id: the first ``length`` hex digits of HMAC-SHA256(key, id).

    The same key always gives the same pseudonym (so re-queried sequences match);
    without the key the id cannot be recovered or re-computed.  The caller keeps
    the mapping back to real ids locally.
    """
    if not key:
        raise TaskMappingError(
            "pseudonymisation key is empty; pass a secret key (e.g. from the run directory) "
            "or disable pseudonymisation with query.pseudonymize=false"
        )
    if not 4 <= length <= 64:
        raise TaskMappingError(f"pseudonym length must be in [4, 64], got {length}")
    raw_key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    digest = hmac.new(raw_key, str(entity_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:length]


def pseudonymize_sequence_id(sequence_id: str, key: str | bytes, entity_id: Any = None) -> str:
    """Pseudonymise the entity part of a sequence id, keeping the session number.

    Ids of the form ``f"{entity}:{k}"`` (see :mod:`anomaly_ssl.data.sessionize`)
    become ``f"{pseudonymize(entity)}:{k}"``; any other id (an explicit session
    value) is pseudonymised whole.
    """
    seq = str(sequence_id)
    if entity_id is not None and seq.startswith(f"{entity_id}:"):
        return f"{pseudonymize(entity_id, key)}:{seq[len(str(entity_id)) + 1 :]}"
    head, sep, tail = seq.rpartition(":")
    if sep and head and tail.isdigit():
        return f"{pseudonymize(head, key)}:{tail}"
    return pseudonymize(seq, key)


# ----------------------------------------------------------------------- tasks


def _require(record: Mapping[str, Any], name: str) -> Any:
    if name not in record or record[name] is None:
        seq = record.get("sequence_id", "?")
        raise TaskMappingError(
            f"record for sequence {seq!r} lacks {name!r}; build records with sequence_id, "
            "score, threshold, is_anomaly, events, top_surprising, neighbors, detector_contributions"
        )
    return record[name]


def prediction_score(score: float, threshold: float) -> float:
    """The prediction's ``score`` in [0, 1]: ``logistic(score - threshold)``.

    Label Studio shows a prediction score as a percentage and sorts the Data
    Manager by it; this is 0.5 at the threshold and monotone in the anomaly
    score, so sorting by it ranks tasks by anomaly score.
    """
    z = float(score) - float(threshold)
    z = max(-60.0, min(60.0, z))
    return round(1.0 / (1.0 + math.exp(-z)), 6)


def task_key(sequence_id: str, run_id: str | None = None) -> str:
    """The stable key that makes re-imports idempotent: ``RUN/SEQUENCE`` or just the sequence id."""
    return f"{run_id}/{sequence_id}" if run_id else str(sequence_id)


def build_task(
    record: Mapping[str, Any],
    model_version: str,
    pseudonymize_key: str | bytes | None = None,
    *,
    run_id: str | None = None,
    max_rows: int = 120,
) -> dict[str, Any]:
    """Turn one scored sequence into a Label Studio task with a prediction.

    Parameters
    ----------
    record : mapping
        ``sequence_id``, ``entity_id``, ``score`` (float, higher = more anomalous),
        ``threshold``, ``is_anomaly``, ``events`` (list of dicts with ``pos``,
        ``time`` (ISO string or None), ``gap`` (human string), ``event`` and
        attribute fields), ``top_surprising`` (dicts with ``pos`` and ``surprise``,
        optionally ``expected``), ``neighbors`` (dicts with ``sequence_id``,
        ``distance``, ``summary``) and ``detector_contributions`` (name -> value).
    model_version : str
        Stored on the prediction; the Data Manager can filter and sort by it.
    pseudonymize_key : str or bytes, optional
        When given, entity ids (also inside sequence ids, also of neighbours)
        are replaced by :func:`pseudonymize` before the task is built.
    run_id : str, optional
        Prefix of ``data.task_key`` (see :func:`task_key`).
    max_rows : int
        Longer sessions show their start, the context of each surprising event
        and their end, with "more events" separator rows in between.

    Returns
    -------
    dict
        ``{"data": {...}, "meta": {"task_key": ...}, "predictions": [{"model_version",
        "score", "result": [choices]}]}``; ``data`` holds ``task_key``, the (pseudonymised)
        ``sequence_id`` and ``entity``, the raw ``score`` and ``threshold``, ``model_says``,
        ``n_events``, ``model_version`` and the view ``html``; the prediction's score is
        :func:`prediction_score`.
    """
    seq_id = str(_require(record, "sequence_id"))
    score = float(_require(record, "score"))
    threshold = float(_require(record, "threshold"))
    entity = record.get("entity_id")
    is_anomaly = bool(record.get("is_anomaly", score >= threshold))
    neighbors = [dict(n) for n in record.get("neighbors") or []]
    if pseudonymize_key is not None:
        shown_seq = pseudonymize_sequence_id(seq_id, pseudonymize_key, entity)
        shown_entity = pseudonymize(entity, pseudonymize_key) if entity is not None else None
        for n in neighbors:
            n["sequence_id"] = pseudonymize_sequence_id(str(n.get("sequence_id", "")), pseudonymize_key)
    else:
        shown_seq, shown_entity = seq_id, (str(entity) if entity is not None else None)
    events = list(record.get("events") or [])
    html = render_task_html(
        sequence_id=shown_seq,
        entity=shown_entity,
        score=score,
        threshold=threshold,
        is_anomaly=is_anomaly,
        events=events,
        top_surprising=list(record.get("top_surprising") or []),
        neighbors=neighbors,
        contributions=dict(record.get("detector_contributions") or {}),
        max_rows=max_rows,
    )
    key = task_key(shown_seq, run_id)
    verdict = "anomaly" if is_anomaly else "normal"
    return {
        "data": {
            "task_key": key,
            "sequence_id": shown_seq,
            "entity": shown_entity or "",
            "score": round(score, 4),
            "threshold": round(threshold, 4),
            "model_says": verdict,
            "n_events": len(events),
            "model_version": model_version,
            "html": html,
        },
        "meta": {"task_key": key},
        "predictions": [
            {
                "model_version": model_version,
                "score": prediction_score(score, threshold),
                "result": [
                    {
                        "from_name": LABEL_FROM,
                        "to_name": TO_NAME,
                        "type": "choices",
                        "value": {"choices": [verdict]},
                    }
                ],
            }
        ],
    }


def render_label_config(taxonomy: Sequence[str], template_path: str | Path | None = None) -> str:
    """The labeling config XML: ``configs/labeling.xml`` with one ``<Choice>`` per anomaly type."""
    names = [str(t).strip() for t in taxonomy]
    if not names or any(not n for n in names):
        raise TaskMappingError(
            f"label_studio.taxonomy must be a non-empty list of non-empty names, got {list(taxonomy)!r}"
        )
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise TaskMappingError(f"label_studio.taxonomy lists {dupes} more than once")
    path = Path(template_path) if template_path is not None else LABEL_CONFIG_TEMPLATE
    try:
        template = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskMappingError(f"cannot read the labeling config template {path}: {exc}") from exc
    if _TAXONOMY_MARKER not in template:
        raise TaskMappingError(f"labeling config template {path} lacks the marker {_TAXONOMY_MARKER}")
    choices = "\n        ".join(f"<Choice value={quoteattr(n)}/>" for n in names)
    return template.replace(_TAXONOMY_MARKER, choices)


# --------------------------------------------------------------------- exports


def annotation_result(
    choice: str, anomaly_type: str | None = None, note: str | None = None
) -> list[dict[str, Any]]:
    """The ``result`` of an annotation as the labeling view produces it (for API annotators).

    ``choice`` is one of :data:`CHOICES`; ``anomaly_type`` only goes with ``anomaly``.
    :func:`parse_export` reads it back unchanged.
    """
    if choice not in CHOICES:
        raise TaskMappingError(f"annotation choice must be one of {CHOICES}, got {choice!r}")
    if anomaly_type is not None and choice != "anomaly":
        raise TaskMappingError(f"an anomaly type ({anomaly_type!r}) needs choice 'anomaly', got {choice!r}")
    result: list[dict[str, Any]] = [
        {"from_name": LABEL_FROM, "to_name": TO_NAME, "type": "choices", "value": {"choices": [choice]}}
    ]
    if anomaly_type is not None:
        result.append(
            {
                "from_name": TYPE_FROM,
                "to_name": TO_NAME,
                "type": "choices",
                "value": {"choices": [anomaly_type]},
            }
        )
    if note:
        result.append(
            {"from_name": NOTE_FROM, "to_name": TO_NAME, "type": "textarea", "value": {"text": [note]}}
        )
    return result


@dataclass(frozen=True)
class AnnotationRecord:
    """One annotator's verdict on one task, as read from a Label Studio export."""

    task_id: int
    annotation_id: int
    sequence_id: str | None
    task_key: str | None
    annotator: str
    choice: str
    anomaly_type: str | None
    note: str | None
    created_at: str | None
    updated_at: str | None
    lead_time: float | None
    was_cancelled: bool = False
    #: the verdict was the model's pre-filled prediction, submitted unchanged
    from_prediction: bool = False

    @property
    def label(self) -> int | None:
        """1 for anomaly, 0 for normal, None for unsure."""
        return {"anomaly": 1, "normal": 0}.get(self.choice)

    @property
    def group_key(self) -> str:
        """The id labels are resolved on: sequence id, else task key, else ``task-<id>``."""
        return self.sequence_id or self.task_key or f"task-{self.task_id}"


def _choice_item(result: Iterable[Mapping[str, Any]], from_name: str) -> Mapping[str, Any] | None:
    for item in result:
        if item.get("from_name") == from_name and (item.get("value") or {}).get("choices"):
            return item
    return None


def _first_choice(result: Iterable[Mapping[str, Any]], from_name: str) -> str | None:
    item = _choice_item(result, from_name)
    return None if item is None else str(item["value"]["choices"][0])


def _note(result: Iterable[Mapping[str, Any]]) -> str | None:
    for item in result:
        if item.get("from_name") == NOTE_FROM:
            text = (item.get("value") or {}).get("text") or []
            if isinstance(text, str):
                text = [text]
            joined = "\n".join(str(t) for t in text).strip()
            return joined or None
    return None


def _annotator(completed_by: Any, names: Mapping[int, str] | None) -> str:
    if isinstance(completed_by, Mapping):
        return str(completed_by.get("email") or completed_by.get("username") or completed_by.get("id"))
    if names and completed_by in names:
        return names[completed_by]
    return f"user:{completed_by}"


def parse_export(
    export: str | bytes | Sequence[Mapping[str, Any]],
    annotators: Mapping[int, str] | None = None,
    *,
    include_cancelled: bool = False,
) -> list[AnnotationRecord]:
    """Read a Label Studio JSON export into annotation records.

    Skipped (``was_cancelled``) annotations are dropped unless ``include_cancelled``;
    annotations without an anomaly/normal/unsure choice (empty or unknown) are
    always dropped.  Both are counted in a log line.  ``annotators`` maps user
    ids to names (e-mails) for the ``annotator`` field.
    """
    if isinstance(export, (str, bytes)):
        try:
            export = json.loads(export)
        except json.JSONDecodeError as exc:
            raise TaskMappingError(f"Label Studio export is not valid JSON: {exc}") from exc
    if not isinstance(export, list):
        raise TaskMappingError(f"a Label Studio JSON export is a list of tasks, got {type(export).__name__}")
    records: list[AnnotationRecord] = []
    dropped = Counter()
    for task in export:
        data = task.get("data") or {}
        for ann in task.get("annotations") or []:
            result = ann.get("result") or []
            cancelled = bool(ann.get("was_cancelled"))
            choice = _first_choice(result, LABEL_FROM)
            if cancelled and not include_cancelled:
                dropped["skipped"] += 1
                continue
            if choice not in CHOICES and not cancelled:
                dropped["empty" if choice is None else "unknown choice"] += 1
                continue
            anomaly_type = _first_choice(result, TYPE_FROM) if choice == "anomaly" else None
            records.append(
                AnnotationRecord(
                    task_id=int(task["id"]),
                    annotation_id=int(ann["id"]),
                    sequence_id=data.get("sequence_id"),
                    task_key=data.get("task_key"),
                    annotator=_annotator(ann.get("completed_by"), annotators),
                    choice=choice or "",
                    anomaly_type=anomaly_type,
                    note=_note(result),
                    created_at=ann.get("created_at"),
                    updated_at=ann.get("updated_at"),
                    lead_time=ann.get("lead_time"),
                    was_cancelled=cancelled,
                    from_prediction=(_choice_item(result, LABEL_FROM) or {}).get("origin") == "prediction",
                )
            )
    if dropped:
        log.info("ignored annotations: %s", ", ".join(f"{n} {k}" for k, n in sorted(dropped.items())))
    return records


# ------------------------------------------------------------------ resolution


class ResolvedLabel(NamedTuple):
    """A sequence's label agreed by majority: ``label`` (0/1) and ``anomaly_type`` first."""

    label: int
    anomaly_type: str | None
    votes: dict[str, int]
    annotators: tuple[str, ...]
    annotation_ids: tuple[int, ...]
    task_ids: tuple[int, ...]
    notes: tuple[str, ...]


class UnresolvedLabel(NamedTuple):
    """A sequence whose votes tie (``reason='tie'``) or are all ``unsure`` (``'only_unsure'``)."""

    sequence_id: str
    reason: str
    votes: dict[str, int]
    annotators: tuple[str, ...]
    task_ids: tuple[int, ...]


def _latest_per_annotator(records: Iterable[AnnotationRecord]) -> list[AnnotationRecord]:
    latest: dict[str, AnnotationRecord] = {}
    for rec in records:
        order = (rec.updated_at or rec.created_at or "", rec.annotation_id)
        prev = latest.get(rec.annotator)
        if prev is None or order > (prev.updated_at or prev.created_at or "", prev.annotation_id):
            latest[rec.annotator] = rec
    return sorted(latest.values(), key=lambda r: (r.created_at or "", r.annotation_id))


def resolve_labels(
    records: Iterable[AnnotationRecord],
) -> tuple[dict[str, ResolvedLabel], list[UnresolvedLabel]]:
    """One label per sequence by majority over annotators.

    Each annotator counts once per sequence (their latest annotation); ``unsure``
    abstains; cancelled records are ignored.  ``anomaly > normal`` votes gives
    label 1 with the most frequent anomaly type among the anomaly votes (ties
    broken by the earliest vote); ``normal > anomaly`` gives 0.  Equal counts are
    returned in ``unresolved`` (``tie``, or ``only_unsure`` when nobody decided),
    sorted by sequence id, so callers can re-queue them.
    """
    groups: dict[str, list[AnnotationRecord]] = {}
    for rec in records:
        if not rec.was_cancelled and rec.choice in CHOICES:
            groups.setdefault(rec.group_key, []).append(rec)
    resolved: dict[str, ResolvedLabel] = {}
    unresolved: list[UnresolvedLabel] = []
    for seq in sorted(groups):
        votes_list = _latest_per_annotator(groups[seq])
        votes = {c: sum(r.choice == c for r in votes_list) for c in CHOICES}
        annotators = tuple(r.annotator for r in votes_list)
        task_ids = tuple(sorted({r.task_id for r in votes_list}))
        if votes["anomaly"] == votes["normal"]:
            reason = "only_unsure" if votes["anomaly"] == 0 else "tie"
            unresolved.append(UnresolvedLabel(seq, reason, votes, annotators, task_ids))
            continue
        label = int(votes["anomaly"] > votes["normal"])
        anomaly_type = None
        if label == 1:
            types = [r.anomaly_type for r in votes_list if r.choice == "anomaly" and r.anomaly_type]
            if types:
                counts = Counter(types)
                top = max(counts.values())
                anomaly_type = next(t for t in types if counts[t] == top)
        resolved[seq] = ResolvedLabel(
            label=label,
            anomaly_type=anomaly_type,
            votes=votes,
            annotators=annotators,
            annotation_ids=tuple(r.annotation_id for r in votes_list),
            task_ids=task_ids,
            notes=tuple(r.note for r in votes_list if r.note),
        )
    return resolved, unresolved
