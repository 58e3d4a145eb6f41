"""Scoring a run: the ready detector after pretrain, score files, explanations, round trips."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from anomaly_ssl.cli import cli
from anomaly_ssl.config_loader import load_config
from anomaly_ssl.errors import ConfigError
from anomaly_ssl.evaluate import evaluate_files
from anomaly_ssl.pipeline import load_run, read_scores_meta, score_file, score_table
from anomaly_ssl.pretrain import load_model
from anomaly_ssl.run import RunDir
from anomaly_ssl.scoring import SequenceScorer, parse_member


def test_pretrain_leaves_a_ready_detector(tiny_run):
    rd = RunDir(tiny_run.run)
    meta = json.loads((rd.detector_dir / "detector.json").read_text())
    train = pl.read_parquet(rd.detector_dir / "train.parquet")
    labels = pl.read_parquet(tiny_run.labels)
    assert train.height == labels.height  # every pool sequence got a training score
    assert set(train["sequence_id"]) == set(labels["sequence_id"])
    assert meta["members"] == ["surprise", "knn"]
    assert "held-out validation" in meta["threshold_source"]
    emb = np.load(rd.detector_dir / "train_embeddings.npy")
    assert emb.shape[0] == train.height and emb.dtype == np.float32


def test_score_file_writes_every_column_and_metadata(tiny_run, tmp_path):
    loaded = load_run(tiny_run.run)
    out = tmp_path / "scores.parquet"
    summary = score_file(loaded, tiny_run.events, out, save_latest=False)
    df = pl.read_parquet(out)
    for col in (
        "sequence_id",
        "entity_id",
        "score",
        "is_anomaly",
        "threshold",
        "unsup_score",
        "head_proba",
        "score_surprise",
        "score_knn",
        "contrib_surprise",
        "contrib_knn",
        "top_events",
        "events",
        "neighbors",
        "model_version",
    ):
        assert col in df.columns, col
    assert df.height == summary.n_sequences == pl.read_parquet(tiny_run.labels).height
    assert set(df["is_anomaly"].unique()) <= {0, 1}
    assert (df["is_anomaly"] == (df["score"] > summary.threshold).cast(pl.Int8)).all()
    meta = read_scores_meta(out)
    assert meta["threshold"] == pytest.approx(summary.threshold)
    assert meta["members"] == ["surprise", "knn"]
    first = df.row(0, named=True)
    assert 1 <= len(first["top_events"]) <= loaded.cfg.detect.explain_topk
    assert len(first["neighbors"]) == loaded.cfg.detect.explain_neighbors
    surprises = [t["surprise"] for t in first["top_events"]]
    assert surprises == sorted(surprises, reverse=True)


def test_streamed_batches_give_the_same_scores(tiny_run, tmp_path):
    loaded = load_run(tiny_run.run)
    whole = score_file(loaded, tiny_run.events, tmp_path / "a.parquet", batch_rows=100_000, save_latest=False)
    parts = score_file(loaded, tiny_run.events, tmp_path / "b.parquet", batch_rows=97, save_latest=False)
    a, b = pl.read_parquet(whole.out_path), pl.read_parquet(parts.out_path)
    assert a["sequence_id"].to_list() == b["sequence_id"].to_list()
    # raw member scores agree to float noise (BLAS blocking differs with the batch size) ...
    for col in ("score_surprise", "score_knn"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-4, atol=1e-6)
    # ... so the rank-normalised score moves at most a few steps of the training ECDF (where
    # training scores lie closer together than float noise; the tiny model's kNN distances are ~1e-4)
    diff = np.abs(a["score"].to_numpy() - b["score"].to_numpy())
    n_train = pl.read_parquet(tiny_run.labels).height
    assert diff.max() <= 5.0 / n_train
    assert diff.mean() <= 0.1 / n_train


def test_save_load_gives_identical_scores(tiny_run):
    from anomaly_ssl.data import load_sequences

    loaded = load_run(tiny_run.run)
    table = load_sequences(tiny_run.events, loaded.cfg.data).table.head(150)
    # a scorer fitted in memory on the same pool, with the same settings, scores identically
    model, vocab, cfg = load_model(tiny_run.run)
    pool = load_sequences(tiny_run.events, cfg.data).table
    fresh = SequenceScorer(model, vocab.sizes()["event"], cfg).fit(vocab.encode(pool))
    again = loaded.scorer.score_features(loaded.scorer.features(vocab.encode(table))).score
    direct = fresh.score_features(fresh.features(vocab.encode(table))).score
    np.testing.assert_allclose(again, direct, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(loaded.scorer.ensemble_.decision_scores_, fresh.ensemble_.decision_scores_)


def test_unseen_event_types_go_to_unk_and_score_high(tiny_run):
    from anomaly_ssl.data import load_sequences

    loaded = load_run(tiny_run.run)
    table = load_sequences(tiny_run.events, loaded.cfg.data).table.head(60)
    # replace one event of a normal-looking session by an event type never seen in training
    events = table["event"].to_list()
    target = next(i for i, e in enumerate(events) if len(e) >= 6)
    events[target] = [*events[target][:3], "teleport_to_moon", *events[target][4:]]
    table = table.with_columns(pl.Series("event", events, dtype=pl.List(pl.Utf8)))
    encoded = loaded.vocab.encode(table)
    assert (encoded.sequence(target)["event"] == 2).sum() >= 1  # UNK id
    scores, _ = score_table(loaded, table)
    top = scores.row(target, named=True)["top_events"]
    assert top[0]["event"] == "teleport_to_moon"
    assert scores["score"][target] >= np.median(scores["score"].to_numpy())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("kmeans", "unknown detector 'kmeans'"),
        ("iforest@pixels", "unknown detector"),
        ("foo@counts", "ALGO@"),
    ],
)
def test_unknown_members_are_config_errors(name, message):
    with pytest.raises(ConfigError, match=message):
        parse_member(name)


def test_cli_score_and_evaluate(tiny_run_copy, tmp_path):
    runner = CliRunner()
    out = tmp_path / "s.parquet"
    result = runner.invoke(
        cli,
        [
            "-q",
            "score",
            "--run",
            str(tiny_run_copy.run),
            "--data",
            str(tiny_run_copy.events),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sequences"] == pl.read_parquet(out).height
    assert RunDir(tiny_run_copy.run).latest_scores_path.exists()
    emb = np.load(RunDir(tiny_run_copy.run).scores_dir / "latest_embeddings.npy")
    assert emb.shape[0] == pl.read_parquet(out).height
    result = runner.invoke(
        cli,
        [
            "evaluate",
            "--scores",
            str(out),
            "--labels",
            str(tiny_run_copy.labels),
            "--plots",
            str(tmp_path / "plots"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    for key in ("precision", "recall", "f1", "fpr", "roc_auc", "pr_auc", "threshold", "threshold_source"):
        assert key in metrics
    assert set(metrics["per_type"]) >= {"card_testing", "order_brushing"}
    assert (tmp_path / "plots" / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the detector beats chance clearly even as a tiny model
    assert metrics["roc_auc"] > 0.7


def test_evaluate_files_matches_sklearn(tmp_path):
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.1).astype(int)
    s = rng.normal(size=300) + 1.5 * y
    ids = [f"s{i}" for i in range(300)]
    pl.DataFrame(
        {
            "sequence_id": ids,
            "score": s,
            "is_anomaly": (s > 1.0).astype(np.int8),
            "threshold": np.full(300, 1.0),
        }
    ).write_parquet(tmp_path / "s.parquet")
    pl.DataFrame({"sequence_id": ids, "label": y}).write_csv(tmp_path / "l.csv")
    m = evaluate_files(tmp_path / "s.parquet", tmp_path / "l.csv")
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s))
    assert m["f1"] == pytest.approx(f1_score(y, s > 1.0))


def test_score_bad_data_is_one_line_error_and_leaves_no_file(tiny_run, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,when,what\nu1,1,view\n")
    out = tmp_path / "never.parquet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "anomaly_ssl",
            "-q",
            "score",
            "--run",
            str(tiny_run.run),
            "--data",
            str(bad),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "ts" in proc.stderr and "error:" in proc.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".never.parquet*"))


def test_score_missing_run_is_clear(tmp_path):
    result = CliRunner().invoke(cli, ["score", "--run", str(tmp_path / "nope"), "--data", "x.parquet"])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "pretrain" in result.output


def test_changed_members_without_refit_is_an_error(tiny_run):
    with pytest.raises(ConfigError, match="differ from the fitted detectors"):
        load_run(tiny_run.run, ["detect.members=[surprise]"])


def test_config_loads_for_run(tiny_run):
    cfg = load_config(None, [], base=RunDir(tiny_run.run).read_config_dict())
    assert cfg.model.size == "tiny"
