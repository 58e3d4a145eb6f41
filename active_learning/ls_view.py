"""The annotator's view of one scored session, as self-contained HTML.

:func:`render_task_html` draws what a Label Studio task shows: a header with the
session, its time span and the model's verdict, the event table with the most
surprising events highlighted (long sessions are cut to their start, the context
of each surprising event and their end), the detectors' standardised
contributions and the most similar normal sessions.  Inline styles only, every
value from the data HTML-escaped; pure string building, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

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
