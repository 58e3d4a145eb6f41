"""Label Studio JSON mapping: tasks, pseudonyms, labeling config, export parsing, label resolution."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from active_learning.errors import TaskMappingError
from active_learning.ls_mapping import (
    LABEL_FROM,
    NOTE_FROM,
    TO_NAME,
    TYPE_FROM,
    AnnotationRecord,
    annotation_result,
    build_task,
    parse_export,
    prediction_score,
    pseudonymize,
    pseudonymize_sequence_id,
    render_label_config,
    resolve_labels,
)


def _record(n_events: int = 6, **over):
    events = [
        {
            "pos": i,
            "time": f"2026-03-02T14:03:{10 + i:02d}",
            "gap": "1s",
            "event": f"ev{i % 3}",
            "item": f"it{i}",
            "price": 9.5 + i,
        }
        for i in range(n_events)
    ]
    rec = {
        "sequence_id": "alice:3",
        "entity_id": "alice",
        "score": 4.0,
        "threshold": 2.5,
        "is_anomaly": True,
        "events": events,
        "top_surprising": [{"pos": 2, "surprise": 6.5, "expected": "ev0"}, {"pos": 4, "surprise": 3.1}],
        "neighbors": [{"sequence_id": "bob:0", "distance": 0.12, "summary": "ev0 → ev1 → ev2"}],
        "detector_contributions": {"surprise": 3.0, "knn": 1.5},
    }
    rec.update(over)
    return rec


# ------------------------------------------------------------------ pseudonyms


def test_pseudonyms_are_keyed_stable_and_short():
    a1, a2 = pseudonymize("alice", "k1"), pseudonymize("alice", "k1")
    assert a1 == a2 and len(a1) == 12 and all(c in "0123456789abcdef" for c in a1)
    assert pseudonymize("alice", "k2") != a1
    assert pseudonymize("bob", "k1") != a1
    assert pseudonymize(42, b"k1") == pseudonymize("42", "k1")


def test_pseudonym_needs_a_key():
    with pytest.raises(TaskMappingError, match="key is empty"):
        pseudonymize("alice", "")


def test_sequence_ids_keep_their_session_number():
    p = pseudonymize("alice", "k")
    assert pseudonymize_sequence_id("alice:3", "k") == f"{p}:3"
    assert pseudonymize_sequence_id("alice:3", "k", entity_id="alice") == f"{p}:3"
    # entity ids containing ':' are handled when the entity is known
    q = pseudonymize("a:b", "k")
    assert pseudonymize_sequence_id("a:b:7", "k", entity_id="a:b") == f"{q}:7"
    # an explicit session value is pseudonymised whole
    assert pseudonymize_sequence_id("blk_-1608999687919862906", "k") == pseudonymize(
        "blk_-1608999687919862906", "k"
    )


# ----------------------------------------------------------------------- tasks


def test_task_shape_with_prediction():
    task = build_task(_record(), model_version="run1@v3", run_id="run1")
    data = task["data"]
    assert data["task_key"] == "run1/alice:3" == task["meta"]["task_key"]
    assert data["sequence_id"] == "alice:3" and data["entity"] == "alice"
    assert data["score"] == 4.0 and data["threshold"] == 2.5 and data["model_says"] == "anomaly"
    assert data["n_events"] == 6
    (pred,) = task["predictions"]
    assert pred["model_version"] == "run1@v3"
    assert 0.5 < pred["score"] < 1.0
    assert pred["result"] == [
        {"from_name": LABEL_FROM, "to_name": TO_NAME, "type": "choices", "value": {"choices": ["anomaly"]}}
    ]
    normal = build_task(_record(score=1.0, is_anomaly=False), model_version="v")
    assert normal["predictions"][0]["result"][0]["value"]["choices"] == ["normal"]
    assert normal["predictions"][0]["score"] < 0.5
    assert normal["data"]["task_key"] == "alice:3"
    json.dumps(task)  # plain JSON


def test_prediction_score_is_monotone_and_centred_on_the_threshold():
    assert prediction_score(2.5, 2.5) == 0.5
    scores = [prediction_score(s, 2.5) for s in (-100.0, 0.0, 2.0, 3.0, 10.0, 1e6)]
    assert scores == sorted(scores) and scores[0] >= 0.0 and scores[-1] <= 1.0


def test_pseudonymised_task_leaks_no_entity_id():
    task = build_task(_record(), model_version="v", pseudonymize_key="secret", run_id="r")
    text = json.dumps(task)
    assert "alice" not in text and "bob" not in text
    p = pseudonymize("alice", "secret")
    assert task["data"]["sequence_id"] == f"{p}:3" and task["data"]["entity"] == p
    assert task["data"]["task_key"] == f"r/{p}:3"
    assert f"{pseudonymize('bob', 'secret')}:0" in task["data"]["html"]


def test_view_highlights_the_surprising_events_and_shows_context():
    html = build_task(_record(), model_version="v")["data"]["html"]
    rows = html.split("<tr>")
    marked = [r for r in rows if '<b style="color:#cf222e;">⚠' in r]
    assert len(marked) == 2
    assert "#1" in marked[0] and "6.50" in marked[0] and "expected ev0" in marked[0]
    assert "background:#ffd8d8" in marked[0] and "background:#ffecec" in marked[1]
    assert "threshold 2.50" in html and "4.00" in html
    assert "surprise" in html and "knn" in html and "ev0 → ev1 → ev2" in html
    assert "14:03:12" in html and "it2" in html and "11.50" in html


def test_view_escapes_html_from_the_data():
    rec = _record()
    rec["events"][0]["event"] = "<script>alert(1)</script>"
    html = build_task(rec, model_version="v")["data"]["html"]
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_long_sessions_keep_start_end_and_surprising_context():
    rec = _record(n_events=400, top_surprising=[{"pos": 250, "surprise": 9.0}])
    html = build_task(rec, model_version="v", max_rows=30)["data"]["html"]
    assert "⚠ 250" in html and ">249<" in html and ">251<" in html
    assert "more events" in html and ">399<" in html and ">0<" in html
    assert ">150<" not in html
    assert html.count("<tr>") < 60


def test_missing_required_field_is_named():
    rec = _record()
    del rec["score"]
    with pytest.raises(TaskMappingError, match="lacks 'score'"):
        build_task(rec, model_version="v")


# -------------------------------------------------------------- label config


def test_label_config_has_the_taxonomy_and_the_contract_names():
    xml = render_label_config(["card_testing", "bot & scraper", "other"])
    root = ET.fromstring(xml)
    names = {el.get("name"): el for el in root.iter() if el.get("name")}
    assert {LABEL_FROM, TYPE_FROM, NOTE_FROM, TO_NAME} <= set(names)
    assert [c.get("value") for c in names[LABEL_FROM].iter("Choice")] == ["anomaly", "normal", "unsure"]
    assert [c.get("value") for c in names[TYPE_FROM].iter("Choice")] == [
        "card_testing",
        "bot & scraper",
        "other",
    ]
    assert names[TO_NAME].get("value") == "$html"


@pytest.mark.parametrize(
    ("taxonomy", "match"), [([], "non-empty"), (["a", " "], "non-empty"), (["a", "b", "a"], "more than once")]
)
def test_label_config_rejects_bad_taxonomies(taxonomy, match):
    with pytest.raises(TaskMappingError, match=match):
        render_label_config(taxonomy)


def test_label_config_template_must_have_the_marker(tmp_path):
    bad = tmp_path / "labeling.xml"
    bad.write_text("<View/>")
    with pytest.raises(TaskMappingError, match="lacks the marker"):
        render_label_config(["a"], template_path=bad)


# --------------------------------------------------------------------- exports


def _ann(
    ann_id,
    user,
    choice=None,
    *,
    type_=None,
    note=None,
    cancelled=False,
    at="2026-01-01T10:00:00Z",
    origin="manual",
):
    result = []
    if choice is not None:
        result.append(
            {
                "from_name": LABEL_FROM,
                "to_name": TO_NAME,
                "type": "choices",
                "value": {"choices": [choice]},
                "origin": origin,
            }
        )
    if type_ is not None:
        result.append(
            {"from_name": TYPE_FROM, "to_name": TO_NAME, "type": "choices", "value": {"choices": [type_]}}
        )
    if note is not None:
        result.append(
            {
                "from_name": NOTE_FROM,
                "to_name": TO_NAME,
                "type": "textarea",
                "value": {"text": note if isinstance(note, list) else [note]},
            }
        )
    return {
        "id": ann_id,
        "completed_by": user,
        "result": result,
        "was_cancelled": cancelled,
        "created_at": at,
        "updated_at": at,
        "lead_time": 2.5,
    }


def _task(task_id, seq, *anns):
    return {"id": task_id, "data": {"sequence_id": seq, "task_key": f"r/{seq}"}, "annotations": list(anns)}


def test_parse_export_reads_choices_types_notes_and_drops_skips_and_empties():
    export = [
        _task(
            1,
            "s1",
            _ann(10, 1, "anomaly", type_="card_testing", note=["two", "lines"], origin="prediction"),
            _ann(11, 2, None, cancelled=True),
            _ann(12, 2, None),
        ),
        _task(
            2, "s2", _ann(20, {"id": 3, "email": "c@x"}, "normal", type_="card_testing"), _ann(21, 1, "maybe")
        ),
    ]
    records = parse_export(json.dumps(export), annotators={1: "a@x", 2: "b@x"})
    assert [(r.task_id, r.annotation_id, r.annotator, r.choice) for r in records] == [
        (1, 10, "a@x", "anomaly"),
        (2, 20, "c@x", "normal"),
    ]
    first, second = records
    assert first.anomaly_type == "card_testing" and first.note == "two\nlines" and first.lead_time == 2.5
    assert first.sequence_id == "s1" and first.task_key == "r/s1" and first.label == 1
    assert first.from_prediction and not second.from_prediction
    assert second.anomaly_type is None  # a type only counts with an anomaly verdict
    assert second.label == 0
    with_skips = parse_export(export, include_cancelled=True)
    assert [r.annotation_id for r in with_skips] == [10, 11, 20]
    assert with_skips[1].was_cancelled and with_skips[1].annotator == "user:2"


def test_annotation_result_round_trips_through_parse_export():
    export = [
        _task(
            1,
            "s1",
            {"id": 5, "completed_by": 2, "result": annotation_result("anomaly", "coupon_abuse", "hm")},
        ),
        _task(2, "s2", {"id": 6, "completed_by": 2, "result": annotation_result("unsure")}),
    ]
    a, b = parse_export(export)
    assert (a.choice, a.anomaly_type, a.note) == ("anomaly", "coupon_abuse", "hm")
    assert (b.choice, b.anomaly_type, b.note, b.label) == ("unsure", None, None, None)
    with pytest.raises(TaskMappingError, match="must be one of"):
        annotation_result("yes")
    with pytest.raises(TaskMappingError, match="needs choice 'anomaly'"):
        annotation_result("normal", "card_testing")


@pytest.mark.parametrize("bad", ["{not json", json.dumps({"tasks": []})])
def test_parse_export_rejects_non_exports(bad):
    with pytest.raises(TaskMappingError, match="export"):
        parse_export(bad)


# ------------------------------------------------------------------ resolution


def _rec(seq, user, choice, ann_id, *, type_=None, at="2026-01-01T10:00:00Z", cancelled=False):
    return AnnotationRecord(
        task_id=100 + int(seq[1:]),
        annotation_id=ann_id,
        sequence_id=seq,
        task_key=f"r/{seq}",
        annotator=user,
        choice=choice,
        anomaly_type=type_,
        note=None,
        created_at=at,
        updated_at=at,
        lead_time=None,
        was_cancelled=cancelled,
    )


def test_majority_ties_and_unsure_votes():
    records = [
        _rec("s1", "a", "anomaly", 1, type_="card_testing"),
        _rec("s1", "b", "anomaly", 2, type_="scraping_bot"),
        _rec("s1", "c", "normal", 3),
        _rec("s1", "d", "anomaly", 4, type_="scraping_bot"),
        _rec("s2", "a", "anomaly", 5),
        _rec("s2", "b", "normal", 6),
        _rec("s3", "a", "unsure", 7),
        _rec("s3", "b", "unsure", 8),
        _rec("s4", "a", "normal", 9),
        _rec("s4", "b", "unsure", 10),
        _rec("s5", "a", "anomaly", 11, cancelled=True),
    ]
    resolved, unresolved = resolve_labels(records)
    assert set(resolved) == {"s1", "s4"}
    label, anomaly_type = resolved["s1"][:2]
    assert (label, anomaly_type) == (1, "scraping_bot")
    assert resolved["s1"].votes == {"anomaly": 3, "normal": 1, "unsure": 0}
    assert resolved["s1"].annotators == ("a", "b", "c", "d") and resolved["s1"].task_ids == (101,)
    assert resolved["s4"][:2] == (0, None)  # unsure abstains
    assert [(u.sequence_id, u.reason) for u in unresolved] == [("s2", "tie"), ("s3", "only_unsure")]
    assert unresolved[0].votes == {"anomaly": 1, "normal": 1, "unsure": 0}


def test_each_annotator_counts_once_with_their_latest_verdict():
    records = [
        _rec("s1", "a", "anomaly", 1, at="2026-01-01T10:00:00Z"),
        _rec("s1", "a", "normal", 2, at="2026-01-02T10:00:00Z"),
        _rec("s1", "b", "anomaly", 3),
    ]
    resolved, unresolved = resolve_labels(records)
    assert resolved == {} and [u.reason for u in unresolved] == ["tie"]
    records.append(_rec("s1", "c", "normal", 4))
    resolved, _ = resolve_labels(records)
    assert resolved["s1"].label == 0 and resolved["s1"].votes["normal"] == 2


def test_anomaly_type_ties_go_to_the_earliest_vote():
    records = [
        _rec("s1", "a", "anomaly", 1, type_="coupon_abuse", at="2026-01-01T09:00:00Z"),
        _rec("s1", "b", "anomaly", 2, type_="card_testing", at="2026-01-01T08:00:00Z"),
    ]
    resolved, _ = resolve_labels(records)
    assert resolved["s1"].anomaly_type == "card_testing"


def test_resolution_of_nothing_is_empty():
    assert resolve_labels([]) == ({}, [])
