"""The active-learning loop end to end: score, query, annotate, sync, fine-tune, re-score.

Integration tests (``@pytest.mark.labelstudio``) run against the session's real
Label Studio server (``tests/ls_fixtures.py``) with the simulated annotator of
:mod:`active_learning.oracle` answering from the simulator's ground truth; each
test uses a project of its own (deleted afterwards) and a private copy of the
tiny pretrained run.  The unit tests at the end cover the task records built
from a scored row and need no server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from run_fixtures import TinyRun

from active_learning.al_errors import PoolExhaustedError
from active_learning.errors import ActiveLearningError, LabelStudioTimeoutError
from active_learning.finetune import finetune_run, load_rescorer, rounds_path
from active_learning.label_store import LabelRecord, LabelStore
from active_learning.loop import (
    PSEUDONYM_KEY_ENV,
    _fmt_gap,
    _task_records,
    fetch_sequences,
    query_labels,
    sync_labels,
)
from active_learning.ls_mapping import annotation_result, build_task
from active_learning.ls_server import free_port
from active_learning.oracle import answer_pending, truth_from_labels
from active_learning.query_log import QueryLog
from anomaly_ssl.cli import cli
from anomaly_ssl.config import Config
from anomaly_ssl.config_loader import load_config
from anomaly_ssl.errors import DataError
from anomaly_ssl.evaluate import evaluate_scores
from anomaly_ssl.pipeline import load_run, read_scores_meta, score_file
from anomaly_ssl.run import RunDir

KEY_ENV = "LABEL_STUDIO_API_KEY"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def scored_template(tiny_run: TinyRun, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """The tiny run scored once on its own data (latest scores + embeddings); copy before use."""
    dest = tmp_path_factory.mktemp("al-loop") / "run"
    shutil.copytree(tiny_run.run, dest)
    score_file(load_run(dest), tiny_run.events, dest / "scores" / "events.parquet")
    return TinyRun(tiny_run.shop, tiny_run.events, tiny_run.labels, dest)


@pytest.fixture
def scored_run(scored_template: TinyRun, tmp_path: Path) -> TinyRun:
    """A private copy of the scored tiny run (no labels, nothing queried yet)."""
    dest = tmp_path / "run"
    shutil.copytree(scored_template.run, dest)
    return TinyRun(scored_template.shop, scored_template.events, scored_template.labels, dest)


@pytest.fixture
def ls(label_studio_server, monkeypatch):
    """The session's server with its key in ``$LABEL_STUDIO_API_KEY`` (as the CLI reads it)."""
    monkeypatch.setenv(KEY_ENV, label_studio_server.api_key)
    monkeypatch.setenv("ANOMALY_SSL_NO_PROGRESS", "1")
    monkeypatch.delenv(PSEUDONYM_KEY_ENV, raising=False)
    return label_studio_server


@pytest.fixture
def title(label_studio_server) -> Iterator[str]:
    """A fresh project title; every project of that title is deleted afterwards."""
    name = f"al-{uuid.uuid4().hex[:10]}"
    yield name
    client = label_studio_server.client()
    with contextlib.suppress(ActiveLearningError):
        while (project_id := client.find_project(name)) is not None:
            client.delete_project(project_id)


def _cfg(run: Path, url: str, project: str, *overrides: str) -> Config:
    base = RunDir(run).read_config_dict()
    return load_config(
        None, [f"label_studio.url={url}", f"label_studio.project={project}", *overrides], base=base
    )


def _truth(tiny: TinyRun, cfg: Config) -> dict[str, tuple[int, str | None]]:
    return truth_from_labels(tiny.labels, cfg.label_studio.taxonomy)


def _stored(run: Path) -> dict[str, tuple[int, str | None]]:
    labels = LabelStore.for_run(run).current_labels()
    return {s: (int(y), t) for s, y, t in labels.iter_rows()}


def _one_line_error(result) -> str:
    """The CLI's error output, asserting it is one ``error:`` line without a traceback."""
    err = result.stderr.strip()
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


# ------------------------------------------------------------------ 1. the whole loop


@pytest.mark.labelstudio
def test_full_loop_through_the_cli(tiny_run_copy: TinyRun, ls, title):
    run, events = tiny_run_copy.run, tiny_run_copy.events
    runner = CliRunner()
    ls_args = ["--url", ls.url, "--project", title]
    result = runner.invoke(cli, ["-q", "score", "--run", str(run), "--data", str(events)])
    assert result.exit_code == 0, result.output
    assert RunDir(run).latest_scores_path.exists()

    # query-labels as a real process: key from the environment, one summary line
    env = {**os.environ, KEY_ENV: ls.api_key, "ANOMALY_SSL_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "anomaly_ssl", "-q", "query-labels", "--run", str(run)]
    proc = subprocess.run(
        [*cmd, "--n", "30", "--strategy", "diverse", *ls_args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"sent 30 sequences (diverse, round 1) to project {title!r}"), proc.stdout
    assert ls.api_key not in proc.stdout + proc.stderr
    queried = QueryLog.for_run(run).frame()
    assert queried.height == 30 and queried["task_id"].null_count() == 0

    client = ls.client()
    project_id = client.find_project(title)
    cfg = _cfg(run, ls.url, title)
    truth = _truth(tiny_run_copy, cfg)
    assert answer_pending(run, client, project_id, truth) == 30
    assert answer_pending(run, client, project_id, truth) == 0  # nothing left unanswered

    result = runner.invoke(cli, ["-q", "sync-labels", "--run", str(run), *ls_args])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["added"] == 30 and counts["already_stored"] == 0
    assert counts["resolved_anomaly"] + counts["resolved_normal"] == 30
    assert counts["ties"] == counts["foreign"] == counts["cancelled_or_skipped"] == 0
    stored = _stored(run)
    assert set(stored) == set(queried["sequence_id"].to_list())
    assert all(stored[s][0] == truth[s][0] for s in stored)
    assert 0 < counts["resolved_anomaly"] < 30  # both classes, so the head can be trained

    result = runner.invoke(cli, ["-q", "sync-labels", "--run", str(run), *ls_args])
    again = json.loads(result.stdout)
    assert (again["added"], again["already_stored"]) == (0, 30)
    assert len(LabelStore.for_run(run).records()) == 30

    result = runner.invoke(cli, ["-q", "finetune", "--run", str(run)])
    assert result.exit_code == 0, result.output
    tuned = json.loads(result.stdout)
    assert tuned["round"] == 1 and tuned["n_labels"] == 30
    assert tuned["model_version"].startswith("head-r1-")
    head_meta = json.loads((run / "head.json").read_text())

    result = runner.invoke(cli, ["-q", "score", "--run", str(run), "--data", str(events)])
    assert result.exit_code == 0, result.output
    latest = RunDir(run).latest_scores_path
    scores = pl.read_parquet(latest)
    assert scores["head_proba"].null_count() == 0
    assert scores["head_proba"].is_between(0, 1).all()
    assert (scores["model_version"] == head_meta["model_version"]).all()
    assert scores["model_version"][0].startswith("head-")
    meta = read_scores_meta(latest)
    assert meta["threshold"] == pytest.approx(head_meta["threshold"])
    assert meta["model_version"] == head_meta["model_version"]
    assert meta["unsup_model_version"].startswith("unsup")
    assert (scores["threshold"] == head_meta["threshold"]).all()
    assert (scores["is_anomaly"] == (scores["score"] > head_meta["threshold"]).cast(pl.Int8)).all()
    rounds = [json.loads(line) for line in rounds_path(RunDir(run)).read_text().splitlines()]
    assert len(rounds) == 1
    assert rounds[0]["round"] == 1 and rounds[0]["n_labels"] == 30 and rounds[0]["strategy"] == "diverse"


# ------------------------------------------------------------------ 2. labels help


@pytest.mark.labelstudio
def test_finetuning_beats_the_unsupervised_score_on_held_out_sequences(
    scored_run: TinyRun, ls, title, monkeypatch
):
    """Two rounds of 30 diverse labels from the simulated annotator, a head after each round.

    Evaluated on every sequence that was never sent to annotators, against the
    simulator's ground truth: the blended score must rank anomalies clearly
    better than the unsupervised score (seen here: PR-AUC 0.24 -> 0.29 with the
    blend weight 0.75 that ``auto`` picks on these labels; 0.31 with the head alone).
    """
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "fixed-key-for-a-deterministic-label-order")
    run = scored_run.run
    cfg = _cfg(run, ls.url, title)
    client = ls.client()
    truth = _truth(scored_run, cfg)
    loaded = load_run(run)
    for round_no in (1, 2):
        result = query_labels(run, cfg, client, n=30, strategy="diverse")
        assert result.counts["head"] == (round_no == 2)  # the 2nd round asks where the head is unsure
        assert answer_pending(run, client, result.project_id, truth) == 30
        assert sync_labels(run, cfg, client).added == 30
        tuned = finetune_run(run, cfg)
        assert (tuned.round, tuned.n_labels) == (round_no, 30 * round_no)
        score_file(loaded, scored_run.events, run / "scores" / "events.parquet", load_rescorer(loaded.run))

    labelled = set(LabelStore.for_run(run).current_labels()["sequence_id"].to_list())
    assert labelled == set(QueryLog.for_run(run).frame()["sequence_id"].to_list())
    truth_frame = pl.read_parquet(scored_run.labels).select("sequence_id", "label")
    held_out = (
        pl.read_parquet(RunDir(run).latest_scores_path)
        .join(truth_frame, on="sequence_id")
        .filter(~pl.col("sequence_id").is_in(sorted(labelled)))
    )
    y = held_out["label"].to_numpy()
    assert len(y) == 800 - 60 and y.sum() >= 20
    pr_unsup = evaluate_scores(held_out["unsup_score"].to_numpy(), y)["pr_auc"]
    pr_tuned = evaluate_scores(held_out["score"].to_numpy(), y)["pr_auc"]
    assert pr_tuned > 1.15 * pr_unsup, (pr_unsup, pr_tuned)


# ------------------------------------------------------------------ 3. never twice


def _small_pool(run: Path, rows: int, tmp_path: Path) -> tuple[Path, Path]:
    """The first ``rows`` rows of the latest scores (metadata kept) and their embeddings."""
    latest = RunDir(run).latest_scores_path
    scores, emb = tmp_path / "small.parquet", tmp_path / "small.npy"
    pq.write_table(pq.read_table(latest).slice(0, rows), scores)
    np.save(emb, np.load(RunDir(run).scores_dir / "latest_embeddings.npy")[:rows])
    return scores, emb


@pytest.mark.labelstudio
def test_never_sends_a_sequence_twice(scored_run: TinyRun, ls, title, tmp_path):
    run = scored_run.run
    cfg = _cfg(run, ls.url, title)
    client = ls.client()
    scores_path, emb_path = _small_pool(run, 12, tmp_path)
    pool = pl.read_parquet(scores_path).sort("score", descending=True)["sequence_id"].to_list()
    # the two most anomalous are labelled already (never queried): topk must skip them
    LabelStore.for_run(run).append([LabelRecord(pool[0], 1), LabelRecord(pool[1], 0)])

    def query(n: int):
        return query_labels(
            run, cfg, client, n=n, strategy="topk", scores_path=scores_path, embeddings_path=emb_path
        )

    first, second = query(4), query(4)
    assert first.sequence_ids == pool[2:6] and second.sequence_ids == pool[6:10]
    assert (first.round, second.round) == (1, 2)
    last = query(10)  # only two are left
    assert last.sequence_ids == pool[10:12] and last.counts == {**last.counts, "new": 2, "resent": 0}
    sent = first.sequence_ids + second.sequence_ids + last.sequence_ids
    assert len(set(sent)) == 10 and not {pool[0], pool[1]} & set(sent)
    with pytest.raises(PoolExhaustedError, match=r"all 12 scored sequences are already labelled or sent"):
        query(1)
    tasks = client.existing_tasks(first.project_id)
    assert len(tasks) == 10 and all(len(v) == 1 for v in tasks.values())

    result = CliRunner().invoke(
        cli,
        ["query-labels", "--run", str(run), "--scores", str(scores_path), "--embeddings", str(emb_path),
         "--url", ls.url, "--project", title],
    )  # fmt: skip
    assert "already labelled or sent to annotators" in _one_line_error(result)
    assert QueryLog.for_run(run).frame().height == 10


# ------------------------------------------------------------------ 4. pseudonyms


def _entity(sequence_id: str) -> str:
    return sequence_id.rpartition(":")[0]


@pytest.mark.labelstudio
def test_entity_ids_never_reach_label_studio(scored_run: TinyRun, ls, title):
    run = scored_run.run
    cfg = _cfg(run, ls.url, title)
    assert cfg.query.pseudonymize  # the default
    client = ls.client()
    result = query_labels(run, cfg, client, n=30, strategy="diverse")
    key_file = RunDir(run).labels_dir / "pseudonym.key"
    assert key_file.stat().st_mode & 0o777 == 0o600

    scores = pl.read_parquet(RunDir(run).latest_scores_path)
    queried = scores.filter(pl.col("sequence_id").is_in(result.sequence_ids))
    secrets = set(queried["sequence_id"].to_list()) | set(queried["entity_id"].to_list())
    for neighbours in queried["neighbors"].to_list():  # neighbours' ids are real ids too
        secrets |= {n["sequence_id"] for n in neighbours} | {_entity(n["sequence_id"]) for n in neighbours}
    tasks = [
        t.model_dump(mode="json") for t in client.sdk.tasks.list(project=result.project_id, fields="all")
    ]
    assert len(tasks) == 30
    text = json.dumps(tasks)
    assert all(t["data"]["html"] and t["data"]["entity"] for t in tasks)
    leaked = sorted(s for s in secrets if s in text)
    assert not leaked, leaked
    assert key_file.read_text() not in text

    truth = _truth(scored_run, cfg)
    answer_pending(run, client, result.project_id, truth)
    assert sync_labels(run, cfg, client).added == 30
    stored = _stored(run)
    assert set(stored) == set(result.sequence_ids)  # mapped back to the real ids
    assert all(stored[s] == truth[s] for s in stored)

    plain_title = f"{title}-plain"
    plain = _cfg(run, ls.url, plain_title, "query.pseudonymize=false")
    try:
        shown = query_labels(run, plain, client, n=3, strategy="topk")
        tasks = [
            t.model_dump(mode="json") for t in client.sdk.tasks.list(project=shown.project_id, fields="all")
        ]
        assert sorted(t["data"]["sequence_id"] for t in tasks) == sorted(shown.sequence_ids)
        assert {t["data"]["entity"] for t in tasks} == {_entity(s) for s in shown.sequence_ids}
        answer_pending(run, client, shown.project_id, truth)
        assert sync_labels(run, plain, client).added == 3
        assert set(shown.sequence_ids) <= set(_stored(run))
    finally:
        client.delete_project(client.find_project(plain_title))


# ------------------------------------------------------------------ 5. disagreement


@pytest.mark.labelstudio
def test_disagreement_ties_skips_and_unsure(scored_run: TinyRun, ls, title):
    run = scored_run.run
    cfg = _cfg(run, ls.url, title)
    client = ls.client()
    result = query_labels(run, cfg, client, n=4, strategy="topk")
    tie, skipped, unsure, only_unsure = result.sequence_ids
    task = dict(zip(result.sequence_ids, result.task_ids))
    tag = uuid.uuid4().hex[:8]
    second = client.create_user(f"second-{tag}@example.com")
    third = client.create_user(f"third-{tag}@example.com")
    client.create_annotation(task[tie], annotation_result("anomaly", "card_testing"))
    client.create_annotation(task[tie], annotation_result("normal"), completed_by=second)
    client.create_annotation(task[skipped], [], was_cancelled=True)
    client.create_annotation(task[skipped], annotation_result("normal"), completed_by=second)
    client.create_annotation(task[unsure], annotation_result("unsure"))
    client.create_annotation(task[unsure], annotation_result("anomaly", "scraping_bot"), completed_by=second)
    client.create_annotation(task[only_unsure], annotation_result("unsure"))

    synced = sync_labels(run, cfg, client)
    assert (synced.ties, synced.only_unsure, synced.cancelled_or_skipped, synced.unsure) == (1, 1, 1, 2)
    assert (synced.resolved_normal, synced.resolved_anomaly, synced.added) == (1, 1, 2)
    assert sorted(synced.unresolved_ids) == sorted([tie, only_unsure])
    assert _stored(run) == {skipped: (0, None), unsure: (1, "scraping_bot")}

    result = CliRunner().invoke(cli, ["sync-labels", "--run", str(run), "--url", ls.url, "--project", title])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 0
    assert "unresolved" in result.stderr and tie in result.stderr  # listed, by real id

    client.create_annotation(task[tie], annotation_result("anomaly", "card_testing"), completed_by=third)
    synced = sync_labels(run, cfg, client)
    assert (synced.added, synced.ties, synced.unresolved_ids) == (1, 0, [only_unsure])
    assert _stored(run)[tie] == (1, "card_testing")
    record = [r for r in LabelStore.for_run(run).records() if r.sequence_id == tie][-1]
    assert len(record.annotators) == 3 and len(record.annotation_ids) == 3


# ------------------------------------------------------------------ 6. faults


@pytest.mark.labelstudio
def test_unreachable_server_and_wrong_key_fail_cleanly_before_logging(
    scored_run: TinyRun, ls, title, monkeypatch
):
    run = scored_run.run
    runner = CliRunner()
    query = [
        "query-labels",
        "--run",
        str(run),
        "--n",
        "5",
        "--project",
        title,
        "--set",
        "label_studio.retries=0",
    ]
    closed = f"http://127.0.0.1:{free_port()}"
    err = _one_line_error(runner.invoke(cli, [*query, "--url", closed]))
    assert f"cannot reach Label Studio at {closed}" in err
    err = _one_line_error(
        runner.invoke(
            cli, ["sync-labels", "--run", str(run), "--url", closed, "--set", "label_studio.retries=0"]
        )
    )
    assert "cannot reach Label Studio" in err

    wrong = "wrong-key-3f9a1c7e5b"
    monkeypatch.setenv(KEY_ENV, wrong)
    err = _one_line_error(runner.invoke(cli, [*query, "--url", ls.url]))
    assert f"rejected the API key from {KEY_ENV}" in err and wrong not in err
    monkeypatch.setenv("MY_LS_KEY", wrong)
    err = _one_line_error(
        runner.invoke(cli, [*query, "--url", ls.url, "--set", "label_studio.api_key_env=MY_LS_KEY"])
    )
    assert "rejected the API key from MY_LS_KEY" in err and wrong not in err
    monkeypatch.delenv(KEY_ENV)
    err = _one_line_error(runner.invoke(cli, [*query, "--url", ls.url]))
    assert f"no Label Studio API key: set {KEY_ENV}" in err

    # nothing was logged, stored or created for pushes that never happened
    labels_dir = RunDir(run).labels_dir
    assert not (labels_dir / "queries.jsonl").exists() and not (labels_dir / "queried.parquet").exists()
    assert ls.client().find_project(title) is None


@pytest.mark.labelstudio
def test_deleted_project_keeps_local_labels_and_unlabelled_sequences_are_sent_again(
    scored_run: TinyRun, ls, title
):
    run = scored_run.run
    cfg = _cfg(run, ls.url, title)
    client = ls.client()
    first = query_labels(run, cfg, client, n=5, strategy="topk")
    truth = _truth(scored_run, cfg)
    for sid, task_id in list(zip(first.sequence_ids, first.task_ids))[:3]:  # two stay unanswered
        label, kind = truth[sid]
        client.create_annotation(task_id, annotation_result("anomaly" if label else "normal", kind))
    assert sync_labels(run, cfg, client).added == 3
    store = LabelStore.for_run(run).path
    before = store.read_bytes()

    client.delete_project(first.project_id)
    result = CliRunner().invoke(cli, ["sync-labels", "--run", str(run), "--url", ls.url, "--project", title])
    err = _one_line_error(result)
    assert f"no Label Studio project titled {title!r}" in err and "deleted" in err
    assert store.read_bytes() == before

    # the next query re-creates the project and first re-sends the two that never got a label
    second = query_labels(run, cfg, client, n=4, strategy="topk")
    assert second.project_id != first.project_id
    assert second.sequence_ids[:2] == first.sequence_ids[3:]
    assert (second.counts["resent"], second.counts["new"]) == (2, 2)
    assert not set(second.sequence_ids[2:]) & set(first.sequence_ids)
    answer_pending(run, client, second.project_id, truth)
    assert sync_labels(run, cfg, client).added == 4
    assert set(_stored(run)) == set(first.sequence_ids) | set(second.sequence_ids)


@pytest.mark.labelstudio
def test_timeout_mid_push_is_recovered_without_duplicates_or_losses(
    scored_run: TinyRun, ls, title, monkeypatch
):
    run = scored_run.run
    cfg = _cfg(run, ls.url, title)
    flaky = ls.client(retries=0)
    real_import = flaky.sdk.projects.import_tasks

    def store_then_time_out(*args, **kwargs):
        real_import(*args, **kwargs)  # the server stored the chunk, but the answer never arrives
        raise httpx.ReadTimeout("timed out")

    monkeypatch.setattr(flaky.sdk.projects, "import_tasks", store_then_time_out)
    with pytest.raises(LabelStudioTimeoutError, match="did not answer within"):
        query_labels(run, cfg, flaky, n=6, strategy="topk")
    qlog = QueryLog.for_run(run)
    pending = qlog.without_task()
    assert len(pending) == 6  # logged as sent, task ids unknown

    client = ls.client()
    project_id = client.find_project(title)
    assert len(client.existing_tasks(project_id)) == 6
    # one of them got a label meanwhile (e.g. from another source): it must not be sent again
    LabelStore.for_run(run).append([LabelRecord(pending[0], 0, source="elsewhere")])
    again = query_labels(run, cfg, client, n=6, strategy="topk")
    assert again.sequence_ids[:5] == pending[1:]  # the owed ones first, then one new pick
    assert (again.counts["resent"], again.counts["new"]) == (5, 1)
    assert again.sequence_ids[5] not in pending
    assert qlog.without_task() == pending[:1]  # labelled, so no longer owed
    more = query_labels(run, cfg, client, n=3, strategy="topk")
    assert (more.counts["resent"], more.counts["new"]) == (0, 3)
    assert not set(more.sequence_ids) & set(again.sequence_ids + pending)
    tasks = client.existing_tasks(project_id)
    assert len(tasks) == 10 and all(len(v) == 1 for v in tasks.values())  # no duplicates

    truth = _truth(scored_run, cfg)
    assert answer_pending(run, client, project_id, truth) == 10
    assert sync_labels(run, cfg, client).added == 10
    assert set(_stored(run)) == set(pending + again.sequence_ids + more.sequence_ids)  # nothing lost


# ------------------------------------------------------------------ 7. one class


@pytest.mark.labelstudio
def test_one_class_labels_keep_the_unsupervised_score(scored_run: TinyRun, ls, title):
    run = scored_run.run
    cfg = _cfg(run, ls.url, title)
    client = ls.client()
    result = query_labels(run, cfg, client, n=5, strategy="random")
    all_normal = {sid: (0, None) for sid in result.sequence_ids}
    assert answer_pending(run, client, result.project_id, all_normal) == 5
    assert sync_labels(run, cfg, client).resolved_normal == 5

    runner = CliRunner()
    tuned = runner.invoke(cli, ["finetune", "--run", str(run)])
    assert tuned.exit_code == 0, tuned.output
    assert "not fine-tuned: all 5 labels are normal (0)" in tuned.stderr
    assert "keeps the unsupervised score" in tuned.stderr
    assert not RunDir(run).head_path.exists() and not (run / "head.json").exists()
    assert not rounds_path(RunDir(run)).exists()
    assert load_rescorer(RunDir(run)) is None

    scored = runner.invoke(cli, ["-q", "score", "--run", str(run), "--data", str(scored_run.events)])
    assert scored.exit_code == 0, scored.output
    scores = pl.read_parquet(RunDir(run).latest_scores_path)
    assert scores["head_proba"].null_count() == scores.height
    assert scores["model_version"][0].startswith("unsup")
    assert (scores["score"] == scores["unsup_score"]).all()


# ------------------------------------------------------------------ 8. task records (no server)


def test_fmt_gap():
    cases = {
        None: "", float("nan"): "", float("inf"): "", 0: "0s", 0.5: "0.5s", 1: "1s", 42.2: "42s",
        59.6: "1m", 90: "2m", 3599: "1.0h", 5400: "1.5h", 86399: "1.0d", 2.5 * 86400: "2.5d",
    }  # fmt: skip
    assert {k: _fmt_gap(k) for k in cases} == cases


def _scored_row() -> tuple[pl.DataFrame, pl.DataFrame]:
    chosen = pl.DataFrame(
        {
            "sequence_id": ["u77:3"],
            "entity_id": ["u77"],
            "score": [2.5],
            "threshold": [1.0],
            "is_anomaly": pl.Series([1], dtype=pl.Int8),
            "unsup_score": [2.5],
            "contrib_knn": [1.75],
            "contrib_surprise": [0.25],
            "top_events": [
                [
                    {
                        "pos": 2,
                        "time": "x",
                        "event": "pay",
                        "surprise": 6.5,
                        "expected": "view",
                        "attrs": "{}",
                    },
                    {
                        "pos": 0,
                        "time": "x",
                        "event": "login",
                        "surprise": 1.5,
                        "expected": None,
                        "attrs": "{}",
                    },
                ]
            ],
            "neighbors": [[{"sequence_id": "u12:0", "distance": 0.125, "summary": "login → view"}]],
        }
    )
    t0 = 1_709_800_000.0  # 2024-03-07 08:26:40 UTC
    table = pl.DataFrame(
        {
            "sequence_id": ["u77:3"],
            "entity_id": ["u77"],
            "event": [["login", "view", "pay"]],
            "ts": [[t0, t0 + 30.0, t0 + 7230.0]],
            "gap": [[None, 30.0, 7200.0]],
            "device": [["ios", "ios", None]],
            "price": [[None, 9.5, 9.5]],
            "card_id": [["CARD-XYZ-1"] * 3],  # not a configured attribute: never shown
        }
    )
    return chosen, table


def test_task_records_from_a_scored_row():
    chosen, table = _scored_row()
    cfg = load_config("tiny")
    records, shown = _task_records(chosen, table, cfg, None)
    assert shown == ["u77:3"]
    (rec,) = records
    assert (rec["sequence_id"], rec["entity_id"], rec["score"], rec["threshold"], rec["is_anomaly"]) == (
        "u77:3", "u77", 2.5, 1.0, 1,
    )  # fmt: skip
    assert rec["events"] == [
        {"pos": 0, "time": "2024-03-07 08:26:40", "gap": "", "event": "login", "device": "ios"},
        {
            "pos": 1,
            "time": "2024-03-07 08:27:10",
            "gap": "30s",
            "event": "view",
            "device": "ios",
            "price": 9.5,
        },
        {"pos": 2, "time": "2024-03-07 10:27:10", "gap": "2.0h", "event": "pay", "price": 9.5},
    ]
    assert rec["top_surprising"] == [
        {"pos": 2, "surprise": 6.5, "expected": "view"},
        {"pos": 0, "surprise": 1.5, "expected": None},
    ]
    assert rec["neighbors"] == [{"sequence_id": "u12:0", "distance": 0.125, "summary": "login → view"}]
    assert rec["detector_contributions"] == {"knn": 1.75, "surprise": 0.25}

    task = build_task(rec, "unsup-1", "secret", run_id="r")
    html = task["data"]["html"]
    assert "expected view" in html and "2.0h" in html and "login → view" in html and "CARD-XYZ" not in html


def test_task_records_pseudonymise_sequence_entity_and_neighbour_ids():
    chosen, table = _scored_row()
    records, shown = _task_records(chosen, table, load_config("tiny"), "secret")
    assert shown[0].endswith(":3") and "u77" not in shown[0]
    task = build_task(records[0], "unsup-1", "secret", run_id="r")
    assert task["data"]["sequence_id"] == shown[0] and task["data"]["task_key"] == f"r/{shown[0]}"
    text = json.dumps(task)
    assert "u77" not in text and "u12" not in text


def test_task_records_from_real_scores(scored_template: TinyRun):
    run = scored_template.run
    cfg = load_config(None, [], base=RunDir(run).read_config_dict())
    scores = pl.read_parquet(RunDir(run).latest_scores_path).sort("score", descending=True).head(3)
    table = fetch_sequences(scored_template.events, cfg, set(scores["sequence_id"].to_list()))
    records, _ = _task_records(scores, table, cfg, None)
    for rec, n_events in zip(records, scores["n_events"].to_list()):
        assert [e["pos"] for e in rec["events"]] == list(range(n_events))
        assert all(e["time"] and e["time"].startswith("20") for e in rec["events"])
        assert rec["events"][0]["gap"] in ("", "0s") and all(e["gap"] for e in rec["events"][1:])
        assert 0 < len(rec["top_surprising"]) <= cfg.detect.explain_topk
        assert all(0 <= t["pos"] <= n_events for t in rec["top_surprising"])  # n_events = end of sequence
        assert len(rec["neighbors"]) == cfg.detect.explain_neighbors
        assert set(rec["detector_contributions"]) == set(cfg.detect.members)
    with pytest.raises(DataError, match=r"sequences \['nobody:0'\] of the score file are not in the data"):
        fetch_sequences(scored_template.events, cfg, {"nobody:0"})


def test_query_boundary_keeps_the_unsupervised_flag_rate_after_finetuning(tmp_path):
    from active_learning.loop import query_boundary
    from anomaly_ssl.io import write_json
    from anomaly_ssl.run import RunDir

    run = RunDir(tmp_path / "run")
    run.detector_dir.mkdir(parents=True)
    write_json(run.detector_dir / "detector.json", {"threshold": 0.9})
    rng = np.random.default_rng(0)
    unsup = rng.uniform(size=1000)  # 10% above the unsupervised threshold 0.9
    head_score = rng.uniform(size=1000) ** 3  # a differently scaled fine-tuned score
    no_head = pl.Series([None] * 1000, dtype=pl.Float64)
    before = pl.DataFrame({"score": unsup, "unsup_score": unsup, "head_proba": no_head, "threshold": 0.9})
    assert query_boundary(run, before, {"threshold": 0.9}) == 0.9
    after = pl.DataFrame(
        {"score": head_score, "unsup_score": unsup, "head_proba": head_score, "threshold": 0.5}
    )
    boundary = query_boundary(run, after, {"threshold": 0.5})
    assert boundary != 0.5
    assert abs((head_score > boundary).mean() - (unsup > 0.9).mean()) < 0.002


def test_uncertainty_asks_where_the_head_is_unsure_even_when_the_final_score_blends(tmp_path):
    """After fine-tuning, ``uncertainty``/``diverse`` follow ``head_proba``, ``topk`` the final score."""
    from active_learning.loop import query_inputs
    from active_learning.strategies import make_strategy
    from anomaly_ssl.io import write_json
    from anomaly_ssl.run import RunDir

    run = RunDir(tmp_path / "run")
    run.detector_dir.mkdir(parents=True)
    write_json(run.detector_dir / "detector.json", {"threshold": 0.9})
    rng = np.random.default_rng(1)
    unsup = rng.uniform(size=1000)  # the unsupervised threshold flags 10%
    head = rng.uniform(size=1000)
    final = 1 - (1 - head) ** 0.25 * (1 - unsup) ** 0.75  # finetune.blend = 0.25
    after = pl.DataFrame({"score": final, "unsup_score": unsup, "head_proba": head, "threshold": 0.5})
    inputs = query_inputs(run, after, None, {"threshold": 0.5})
    boundary = np.quantile(head, 1 - (unsup > 0.9).mean())  # flags the unsupervised share
    assert inputs.proba_threshold == pytest.approx(boundary)
    avail = np.arange(1000)
    picks = make_strategy("uncertainty", seed=0).query(inputs, avail, np.zeros(0, np.int64), n=20)
    nearest = np.argsort(np.abs(head - boundary), kind="stable")[:20]
    assert set(picks) == set(nearest)
    final_nearest = np.argsort(np.abs(final - inputs.threshold), kind="stable")[:20]
    assert len(set(picks) & set(final_nearest)) < 10  # the blended score would have asked elsewhere
    top = make_strategy("topk", seed=0).query(inputs, avail, np.zeros(0, np.int64), n=20)
    assert set(top) == set(np.argsort(-final, kind="stable")[:20])
    # no detector threshold to take the flag rate from: the head's boundary is 0.5, not the score's
    (run.detector_dir / "detector.json").unlink()
    assert query_inputs(run, after, None, {"threshold": 0.7}).proba_threshold == 0.5
    write_json(run.detector_dir / "detector.json", {"threshold": 0.9})
    # before fine-tuning (no head): the unsupervised score and the detector's threshold
    before = after.with_columns(score=pl.Series(unsup), head_proba=pl.Series([None] * 1000, dtype=pl.Float64))
    inputs = query_inputs(run, before, None, {"threshold": 0.9})
    assert inputs.probas is None and inputs.threshold == 0.9
