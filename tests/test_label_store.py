"""Label store and query log: append-only, idempotent, crash-safe, corrupt files named by line."""

from __future__ import annotations

import logging
import pathlib

import polars as pl
import pytest

from active_learning.al_errors import LabelStoreError, QueryLogError
from active_learning.label_store import LabelRecord, LabelStore
from active_learning.query_log import QueryLog, QueryRecord


def _rec(seq: str, label: int, task: int, ann: int, **kw) -> dict:
    return {
        "sequence_id": seq,
        "label": label,
        "anomaly_type": "scraping_bot" if label else None,
        "source": f"label-studio:7:{task}",
        "annotators": ["ann@example.org"],
        "annotation_ids": [ann],
        "model_version": "m1",
        **kw,
    }


@pytest.fixture
def store(tmp_path) -> LabelStore:
    return LabelStore.for_run(tmp_path / "RUN")


def test_append_and_read_back(store):
    assert store.append([_rec("s1", 1, 10, 100), _rec("s2", 0, 11, 101)]) == 2
    assert store.path.name == "labels.jsonl" and store.path.parent.name == "labels"
    cur = store.current_labels()
    assert cur.columns == ["sequence_id", "label", "anomaly_type"]
    assert cur.rows() == [("s1", 1, "scraping_bot"), ("s2", 0, None)]
    rec = store.records()[0]
    assert rec.source == "label-studio:7:10" and rec.annotation_ids == ["100"] and rec.received_at


def test_append_only_keeps_existing_bytes(store):
    store.append([_rec("s1", 1, 10, 100)])
    before = store.path.read_bytes()
    store.append([_rec("s2", 0, 11, 101)])
    after = store.path.read_bytes()
    assert after.startswith(before) and len(after) > len(before)


def test_append_is_idempotent(store):
    batch = [_rec("s1", 1, 10, 100), _rec("s2", 0, 11, 101)]
    assert store.append(batch) == 2
    before = store.path.read_bytes()
    assert store.append(batch) == 0
    assert store.append([batch[1], batch[1]]) == 0
    assert store.path.read_bytes() == before
    assert store.append([_rec("s3", 0, 12, 102), _rec("s3", 0, 12, 102)]) == 1  # repeat inside a batch


def test_relabel_overrides_and_history_is_kept(store):
    store.append([_rec("s1", 1, 10, 100), _rec("s2", 0, 11, 101)])
    store.append([_rec("s1", 0, 10, 200)])  # a second annotator's answer on the same task
    cur = store.current_labels()
    assert cur.filter(pl.col("sequence_id") == "s1")["label"].to_list() == [0]
    assert store.events().height == 3
    assert store.counts() == {"events": 3, "sequences": 2, "normal": 2, "anomaly": 0, "by_type": {}}


def test_edit_of_the_same_annotation_needs_a_revision(store, caplog):
    store.append([_rec("s1", 1, 10, 100)])
    with caplog.at_level(logging.WARNING):
        assert store.append([_rec("s1", 0, 10, 100)]) == 0
    assert "new revision" in caplog.text
    assert store.append([_rec("s1", 0, 10, 100, revision="2024-05-01T10:00:00Z")]) == 1
    assert store.current_labels()["label"].to_list() == [0]


def test_counts_by_type(store):
    store.append([_rec("a", 1, 1, 1), _rec("b", 1, 2, 2, anomaly_type="card_testing"), _rec("c", 0, 3, 3)])
    store.append([{"sequence_id": "d", "label": 1}])
    assert store.counts() == {
        "events": 4, "sequences": 4, "normal": 1, "anomaly": 3,
        "by_type": {"card_testing": 1, "scraping_bot": 1, "unspecified": 1},
    }  # fmt: skip


def test_failure_mid_write_keeps_existing_labels(store, monkeypatch):
    store.append([_rec("s1", 1, 10, 100)])
    before = store.path.read_bytes()
    real_write_bytes = pathlib.Path.write_bytes

    def torn_write(self, data):  # the process dies half-way through writing the new file
        real_write_bytes(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_bytes", torn_write)
    with pytest.raises(OSError, match="disk full"):
        store.append([_rec("s2", 0, 11, 101), _rec("s3", 1, 12, 102)])
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert store.current_labels()["sequence_id"].to_list() == ["s1"]
    assert [p.name for p in store.path.parent.iterdir() if p.suffix == ".tmp"] == []


def test_crash_before_rename_leaves_old_file_and_stray_temp_is_ignored(store, monkeypatch):
    store.append([_rec("s1", 1, 10, 100)])
    before = store.path.read_bytes()
    import anomaly_ssl.io

    def killed(*_args):
        raise KeyboardInterrupt  # the process is killed between fsync and rename

    monkeypatch.setattr(anomaly_ssl.io.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        store.append([_rec("s2", 0, 11, 101)])
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    # a temp file left by a hard kill (no cleanup ran) is never read
    (store.path.parent / ".labels.jsonl.abc123.tmp").write_bytes(b'{"sequence_id": "s9", "lab')
    assert store.current_labels()["sequence_id"].to_list() == ["s1"]
    assert store.append([_rec("s2", 0, 11, 101)]) == 1


def test_corrupt_store_names_file_and_line(store):
    store.append([_rec("s1", 1, 10, 100)])
    with open(store.path, "ab") as fh:
        fh.write(b'{"sequence_id": "s2", "label": 1\n')
    with pytest.raises(LabelStoreError, match=r"labels\.jsonl:2: not a valid JSON line"):
        store.current_labels()
    with pytest.raises(LabelStoreError, match=r"labels\.jsonl:2"):
        store.append([_rec("s3", 0, 12, 102)])


def test_bad_record_in_store_names_line(store):
    store.path.parent.mkdir(parents=True)
    store.path.write_text('{"sequence_id": "s1", "label": 1}\n{"sequence_id": "s2", "label": 3}\n')
    with pytest.raises(LabelStoreError, match=r"labels\.jsonl:2: label must be 0 \(normal\) or 1"):
        store.current_labels()


def test_store_without_final_newline_is_refused_for_append(store):
    store.path.parent.mkdir(parents=True)
    store.path.write_text('{"sequence_id": "s1", "label": 1}')
    assert store.current_labels().height == 1
    with pytest.raises(LabelStoreError, match=r"labels\.jsonl:1: the last line has no newline"):
        store.append([_rec("s2", 0, 11, 101)])


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"sequence_id": "s", "label": 2}, "label must be 0"),
        ({"sequence_id": "s", "label": True}, "label must be 0"),
        ({"label": 1}, "missing 'sequence_id'"),
        ({"sequence_id": "s", "label": 1, "lable": 1}, r"record 0 .*unknown field\(s\) \['lable'\]"),
        ({"sequence_id": "s", "label": 1, "annotators": "bob"}, "annotators must be a list"),
    ],
)
def test_invalid_records_are_rejected(store, record, match):
    with pytest.raises(LabelStoreError, match=match):
        store.append([record])
    assert not store.path.exists()


def test_normal_label_drops_anomaly_type(store):
    store.append([LabelRecord(sequence_id="s1", label=0, anomaly_type="other")])
    assert store.current_labels()["anomaly_type"].to_list() == [None]


def test_empty_store():
    store = LabelStore("/nonexistent/dir/labels.jsonl")
    assert store.current_labels().height == 0
    assert store.counts()["events"] == 0


# ------------------------------------------------------------------ query log


@pytest.fixture
def qlog(tmp_path) -> QueryLog:
    return QueryLog.for_run(tmp_path / "RUN")


def _q(seq: str, rank: int, **kw) -> QueryRecord:
    return QueryRecord(sequence_id=seq, strategy="diverse", rank=rank, utility=-0.1 * rank, score=2.0,
                       round=0, model_version="m1", project="7", **kw)  # fmt: skip


def test_query_log_never_sends_twice(qlog):
    assert qlog.append([_q("a", 0), _q("b", 1)]) == 2
    assert qlog.already_sent(["a", "x", "b"]).tolist() == [True, False, True]
    with pytest.raises(QueryLogError, match=r"already sent.*'b'.*already_sent"):
        qlog.append([_q("c", 0), _q("b", 1)])
    assert qlog.sent_ids() == {"a", "b"}  # the rejected batch left nothing behind
    with pytest.raises(QueryLogError, match="twice in one batch"):
        qlog.append([_q("d", 0), _q("d", 1)])


def test_query_log_frame_and_task_ids(qlog):
    qlog.append([_q("a", 0), _q("b", 1, task_id=55)])
    assert qlog.without_task() == ["a"]
    assert qlog.attach_tasks({"a": 56}, project="7") == 1
    assert qlog.attach_tasks({"a": 56}, project="7") == 0  # idempotent
    frame = qlog.frame()
    assert frame["sequence_id"].to_list() == ["a", "b"]
    assert frame["task_id"].to_list() == ["56", "55"]
    assert frame["strategy"].to_list() == ["diverse", "diverse"]
    assert frame["rank"].to_list() == [0, 1] and frame["sent_at"].null_count() == 0
    assert qlog.without_task() == []
    with pytest.raises(QueryLogError, match="never logged as queried"):
        qlog.attach_tasks({"zz": 1})


def test_query_log_failure_mid_write_keeps_log(qlog, monkeypatch):
    qlog.append([_q("a", 0)])
    before = qlog.path.read_bytes()
    monkeypatch.setattr(pathlib.Path, "write_bytes", lambda self, data: (_ for _ in ()).throw(OSError("io")))
    with pytest.raises(OSError, match="io"):
        qlog.append([_q("b", 0)])
    monkeypatch.undo()
    assert qlog.path.read_bytes() == before and qlog.sent_ids() == {"a"}


def test_query_log_corrupt_line_is_named(qlog):
    qlog.append([_q("a", 0)])
    with open(qlog.path, "ab") as fh:
        fh.write(b'{"foo": 1}\n')
    with pytest.raises(QueryLogError, match=r"queries\.jsonl:2"):
        qlog.already_sent(["a"])
