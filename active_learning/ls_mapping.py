"""Label Studio JSON mapping: scored sequences -> tasks, exports -> resolved labels.

Pure functions on plain JSON-like data, no network and no SDK: :func:`build_task`
turns one scored, explained sequence into a task (an HTML view of the session
with its most surprising events highlighted, plus a ``choices`` prediction
carrying the model version and score); :func:`render_label_config` fills the
labeling view ``configs/labeling.xml`` with the anomaly taxonomy;
:func:`pseudonymize` replaces entity ids by a keyed hash before they leave the
machine; :func:`parse_export` reads Label Studio's JSON export into
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
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import quoteattr

from .errors import TaskMappingError

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


# ------------------------------------------------------------------- html view

_RESERVED = {"pos", "time", "gap", "event"}
_CELL = "padding:3px 8px;border-bottom:1px solid #eaeef2;vertical-align:top;"
_HEAD = "padding:4px 8px;text-align:left;background:#f6f8fa;border-bottom:2px solid #d0d7de;"
_BOX = "border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;margin:0 0 12px 0;background:#fff;"
_MUTED = "color:#57606a;"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.2f}" if value == 0 or abs(value) >= 1 else f"{value:.3g}"
    return str(value)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _shown_rows(n: int, marked: set[int], max_rows: int, context: int = 2) -> list[tuple[int, int]]:
    """Row indices to show, as ``(index, number of rows hidden just before it)``."""
    if n <= max_rows:
        return [(i, 0) for i in range(n)]
    keep = set(range(max(1, max_rows // 3))) | set(range(max(0, n - 3), n))
    for i in marked:
        keep |= set(range(max(0, i - context), min(n, i + context + 1)))
    out, prev = [], -1
    for i in sorted(keep):
        out.append((i, i - prev - 1))
        prev = i
    return out


def _header_html(
    sequence_id: str,
    entity: str | None,
    n_events: int,
    times: list[datetime | None],
    score: float,
    threshold: float,
    is_anomaly: bool,
) -> str:
    known = [t for t in times if t is not None]
    span = ""
    if known:
        first, last = known[0], known[-1]
        end = last.strftime("%H:%M:%S") if first.date() == last.date() else last.strftime("%Y-%m-%d %H:%M:%S")
        span = (
            f" · {first.strftime('%Y-%m-%d %H:%M:%S')} → {end} ({_duration((last - first).total_seconds())})"
        )
    who = f"entity <b>{escape(entity)}</b> · " if entity else ""
    colour = "#cf222e" if is_anomaly else "#1a7f37"
    verdict = "anomaly" if is_anomaly else "normal"
    side = "above" if score >= threshold else "below"
    return (
        f'<div style="{_BOX}">'
        f'<div style="font-size:17px;font-weight:600;">Session {escape(sequence_id)}</div>'
        f'<div style="{_MUTED}margin-top:2px;">{who}{n_events} events{span}</div>'
        f'<div style="margin-top:8px;">'
        f'<span style="background:{colour};color:#fff;border-radius:12px;padding:2px 10px;'
        f'font-weight:600;">model says: {verdict}</span>'
        f"&nbsp; anomaly score <b>{score:.2f}</b> is {side} the threshold {threshold:.2f}"
        f'<span style="{_MUTED}"> (higher = more unusual)</span></div></div>'
    )


def _contributions_html(contributions: Mapping[str, float]) -> str:
    if not contributions:
        return ""
    items = sorted(((str(k), float(v)) for k, v in contributions.items()), key=lambda kv: -kv[1])
    top = max(abs(v) for _, v in items) or 1.0
    rows = []
    for name, value in items:
        width = round(140 * abs(value) / top)
        colour = "#0969da" if value > 0 else "#8c959f"
        rows.append(
            f'<tr><td style="padding:1px 8px 1px 0;">{escape(name)}</td>'
            f'<td style="padding:1px 8px;"><div style="width:{width}px;height:10px;'
            f'background:{colour};border-radius:2px;"></div></td>'
            f'<td style="padding:1px 0;text-align:right;">{value:+.2f}</td></tr>'
        )
    return (
        f'<div style="{_BOX}"><div style="font-weight:600;margin-bottom:4px;">'
        f"Why it was flagged: detector scores (standardised)</div>"
        f'<table style="border-collapse:collapse;font-size:13px;">{"".join(rows)}</table></div>'
    )


def _events_html(
    events: Sequence[Mapping[str, Any]],
    top_surprising: Sequence[Mapping[str, Any]],
    times: list[datetime | None],
    max_rows: int,
) -> str:
    rank = {int(s["pos"]): (r + 1, s) for r, s in enumerate(top_surprising) if s.get("pos") is not None}
    positions = [int(e.get("pos", i)) for i, e in enumerate(events)]
    marked = {i for i, p in enumerate(positions) if p in rank}
    attrs: list[str] = []
    for e in events:
        attrs.extend(k for k in e if k not in _RESERVED and k not in attrs)
    known = [t for t in times if t is not None]
    same_day = bool(known) and known[0].date() == known[-1].date()
    head = ["#", "time", "gap", "event", *attrs, "surprise"]
    out = [
        '<table style="border-collapse:collapse;font-size:13px;width:100%;"><thead><tr>'
        + "".join(f'<th style="{_HEAD}">{escape(h)}</th>' for h in head)
        + "</tr></thead><tbody>"
    ]
    gap_row = (
        f'<tr><td colspan="{len(head)}" style="{_CELL}{_MUTED}text-align:center;'
        'font-style:italic;">⋯ {} more events ⋯</td></tr>'
    )
    shown = _shown_rows(len(events), marked, max_rows)
    for i, hidden in shown:
        if hidden:
            out.append(gap_row.format(hidden))
        e, t = events[i], times[i]
        when = _fmt(e.get("time"))
        if t is not None:
            when = t.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")
        r, info = rank.get(positions[i], (0, {}))
        style = _CELL + ("background:#ffd8d8;" if r == 1 else "background:#ffecec;" if r else "")
        num = f'<b style="color:#cf222e;">⚠ {positions[i]}</b>' if r else str(positions[i])
        event = escape(_fmt(e.get("event")))
        if r:
            event = f'<b style="color:#a40e26;">{event}</b>'
        surprise = ""
        if r:
            surprise = f"<b>#{r}</b>&nbsp;{float(info.get('surprise', float('nan'))):.2f}"
            if info.get("expected") is not None:
                expected = escape(_fmt(info["expected"]))
                surprise += f'<br><span style="{_MUTED}font-size:12px;">expected {expected}</span>'
        cells = [num, escape(when), escape(_fmt(e.get("gap"))), event]
        cells += [escape(_fmt(e.get(a))) for a in attrs] + [surprise]
        nowrap = style + "white-space:nowrap;"
        out.append(
            "<tr>"
            + "".join(f'<td style="{nowrap if j < 4 else style}">{c}</td>' for j, c in enumerate(cells))
            + "</tr>"
        )
    if shown and shown[-1][0] < len(events) - 1:
        out.append(gap_row.format(len(events) - 1 - shown[-1][0]))
    out.append("</tbody></table>")
    legend = (
        f'<div style="{_MUTED}font-size:12px;margin-top:6px;">⚠ highlighted rows: the events the model '
        "found most surprising (#1 = most); surprise = how unexpected the event was in its context "
        "(negative log-likelihood); gap = time since the previous event.</div>"
    )
    return f'<div style="{_BOX}overflow-x:auto;">{"".join(out)}{legend}</div>'


def _neighbors_html(neighbors: Sequence[Mapping[str, Any]]) -> str:
    if not neighbors:
        return ""
    rows = "".join(
        f'<tr><td style="{_CELL}white-space:nowrap;">{escape(str(n.get("sequence_id", "")))}</td>'
        f'<td style="{_CELL}">{_fmt(n.get("distance"))}</td>'
        f'<td style="{_CELL}">{escape(_fmt(n.get("summary")))}</td></tr>'
        for n in neighbors
    )
    return (
        f'<div style="{_BOX}"><div style="font-weight:600;margin-bottom:4px;">'
        "Most similar normal sessions (for comparison)</div>"
        f'<table style="border-collapse:collapse;font-size:13px;width:100%;"><thead><tr>'
        f'<th style="{_HEAD}">session</th><th style="{_HEAD}">distance</th>'
        f'<th style="{_HEAD}">what happened</th></tr></thead><tbody>{rows}</tbody></table></div>'
    )


def render_task_html(
    *,
    sequence_id: str,
    entity: str | None,
    score: float,
    threshold: float,
    is_anomaly: bool,
    events: Sequence[Mapping[str, Any]],
    top_surprising: Sequence[Mapping[str, Any]],
    neighbors: Sequence[Mapping[str, Any]],
    contributions: Mapping[str, float],
    max_rows: int = 120,
) -> str:
    """The annotator's view of one session as self-contained HTML (inline styles only).

    Every value from the data is HTML-escaped.  Sessions longer than ``max_rows``
    show their start, each surprising event with two events of context, and their end.
    """
    times = [_parse_time(e.get("time")) for e in events]
    return (
        '<div style="font-size:14px;line-height:1.4;color:#1f2328;">'
        + _header_html(sequence_id, entity, len(events), times, score, threshold, is_anomaly)
        + _events_html(events, top_surprising, times, max_rows)
        + _contributions_html(contributions)
        + _neighbors_html(neighbors)
        + "</div>"
    )


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
