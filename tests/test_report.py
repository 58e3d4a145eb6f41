"""The HTML report: sections, embedded figures, escaping, graceful degradation, CLI, a real browser.

A synthetic run directory (model card, training log, scores with list-of-struct
explanations, embeddings, labels, active-learning rounds) stands in for a real
run; :func:`make_run` is also used by ``scripts/screenshot_report.py --demo``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from anomaly_ssl import plots
from anomaly_ssl.cli import cli
from anomaly_ssl.errors import RunDirError
from anomaly_ssl.evaluate import evaluate_scores
from anomaly_ssl.report import build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE_ID = "<script>alert(1)</script>"
NORMAL_FLOW = ["session_start", "search", "view_item", "view_item", "add_to_cart", "checkout_start",
               "payment_attempt", "payment_ok", "order_placed", "session_end"]  # fmt: skip
ANOMALY_FLOWS = {
    "card_testing": ["session_start", "view_item", "add_to_cart", "checkout_start"]
    + ["payment_attempt", "payment_declined"] * 4 + ["payment_attempt", "payment_ok", "order_placed"],
    "scraping_bot": ["session_start"] + ["view_item"] * 14 + ["session_end"],
    "account_takeover": ["login", "change_email", "change_password", "add_card", "checkout_start",
                         "payment_attempt", "payment_ok", "order_placed"],
}
STRUCT_EVENT = pl.Struct({"pos": pl.Int32, "time": pl.Utf8, "event": pl.Utf8, "surprise": pl.Float32,
                          "expected": pl.Utf8, "attrs": pl.Utf8})  # fmt: skip
STRUCT_NEIGHBOUR = pl.Struct({"sequence_id": pl.Utf8, "distance": pl.Float32, "summary": pl.Utf8})


def _compact(events: list[str]) -> str:
    out: list[str] = []
    for e in events:
        if out and out[-1].split(" ×")[0] == e:
            k = int(out[-1].split(" ×")[1]) + 1 if " ×" in out[-1] else 2
            out[-1] = f"{e} ×{k}"
        else:
            out.append(e)
    return " → ".join(out)


def make_run(
    root: Path,
    n: int = 400,
    seed: int = 0,
    *,
    hostile: bool = True,
    embeddings: bool = True,
    extras: bool = True,
    fine_tuned: bool = True,
    metadata: bool = True,
) -> dict[str, Any]:
    """Write a synthetic run directory with every report input; return paths and truth.

    ``extras=False`` leaves out the model card, training log, label files and rounds;
    ``fine_tuned=False`` leaves ``head_proba`` null.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    types = np.array([None] * n, dtype=object)
    anomalous = rng.random(n) < 0.06
    types[anomalous] = rng.choice(sorted(ANOMALY_FLOWS), int(anomalous.sum()))
    ids = [f"u_{e}:{i % 5}" for i, e in enumerate(10_000 + rng.permutation(max(89_999, n))[:n])]
    if hostile:
        ids[int(np.flatnonzero(anomalous)[0])] = HOSTILE_ID
    raw_surprise = rng.gamma(2.0, 1.0, n) + anomalous * rng.uniform(2.0, 6.0, n)
    raw_knn = rng.gamma(2.0, 0.1, n) + anomalous * rng.uniform(0.0, 0.6, n)
    contrib = {m: (np.argsort(np.argsort(v)) + 1) / n
               for m, v in (("surprise", raw_surprise), ("knn", raw_knn))}  # fmt: skip
    unsup = np.maximum(contrib["surprise"], contrib["knn"])
    head = 1 / (1 + np.exp(-(anomalous * 4.0 - 2.0 + rng.normal(0, 1.2, n))))
    score = 0.5 * unsup + 0.5 * head if fine_tuned else unsup
    threshold = float(np.quantile(score[~anomalous], 0.97))
    start = datetime(2026, 3, 2, 9, 0, 0)
    rows_top, rows_nb, rows_ev, n_events = [], [], [], []
    for i in range(n):
        cut = rng.integers(5, len(NORMAL_FLOW) + 1)
        flow = ANOMALY_FLOWS[types[i]] if anomalous[i] else NORMAL_FLOW[:cut]
        t0 = start + timedelta(minutes=int(rng.integers(0, 600)))
        picks = sorted(rng.choice(len(flow), min(4, len(flow)), replace=False),
                       key=lambda p: -p)  # fmt: skip
        top = []
        for rank, p in enumerate(picks):
            attrs = {"page": f"/p/{rng.integers(1000, 9999)}", "price": round(float(rng.uniform(5, 120)), 2)}
            if hostile and ids[i] == HOSTILE_ID and rank == 0:
                attrs["note"] = "<b>bold</b>"
            top.append({"pos": int(p), "time": (t0 + timedelta(seconds=int(p) * 7)).isoformat(),
                        "event": flow[p], "surprise": float(raw_surprise[i] * (1.0 - 0.2 * rank)),
                        "expected": NORMAL_FLOW[min(p, len(NORMAL_FLOW) - 1)], "attrs": json.dumps(attrs)})
        rows_top.append(top)
        rows_nb.append([{"sequence_id": f"u_{rng.integers(10_000, 99_999)}:{k}",
                         "distance": float(0.1 + 0.05 * k + rng.uniform(0, 0.05)),
                         "summary": f"{_compact(NORMAL_FLOW)} ({len(NORMAL_FLOW)} events, {3 + k}m)"}
                        for k in range(3)])  # fmt: skip
        events = _compact(flow)
        rows_ev.append(events + (" → <img src=x onerror=alert(1)>" if ids[i] == HOSTILE_ID else ""))
        n_events.append(len(flow))
    df = pl.DataFrame(
        {"sequence_id": ids, "entity_id": [s.split(":")[0] for s in ids], "score": score,
         "is_anomaly": (score > threshold).astype(np.int8), "threshold": np.full(n, threshold),
         "unsup_score": unsup, "head_proba": head if fine_tuned else [None] * n, "n_events": n_events,
         "score_surprise": raw_surprise, "contrib_surprise": contrib["surprise"],
         "score_knn": raw_knn, "contrib_knn": contrib["knn"], "top_events": rows_top, "neighbors": rows_nb,
         "events": rows_ev, "model_version": ["run@r2" if fine_tuned else "run@r0"] * n},
        schema_overrides={"is_anomaly": pl.Int8, "n_events": pl.Int32, "head_proba": pl.Float64,
                          "top_events": pl.List(STRUCT_EVENT), "neighbors": pl.List(STRUCT_NEIGHBOUR)},
    )  # fmt: skip
    meta = {"threshold": threshold, "threshold_source": "train contamination 0.03",
            "members": ["surprise", "knn"], "model_version": "run@r2", "normalize": "rank", "combine": "max"}
    scores_dir = root / "scores"
    scores_dir.mkdir(exist_ok=True)
    scores_path = scores_dir / "latest.parquet"
    df.write_parquet(scores_path, metadata={"anomaly_ssl": json.dumps(meta)} if metadata else None)
    if embeddings:
        emb = rng.normal(0, 1, (n, 16)).astype(np.float32)
        emb[anomalous, :2] += 4.0
        np.save(scores_dir / "latest_embeddings.npy", emb)
    paths: dict[str, Any] = {"run": root, "scores": scores_path, "ids": ids, "types": types,
                             "anomalous": anomalous, "threshold": threshold, "score": score}  # fmt: skip
    if extras:
        _write_extras(root, rng, ids, anomalous, types, paths)
    return paths


def _write_extras(root: Path, rng: np.random.Generator, ids: list[str], anomalous: np.ndarray,
                  types: np.ndarray, paths: dict[str, Any]) -> None:  # fmt: skip
    card = {"format": "anomaly-ssl-model-card/1", "created": "2026-03-01T12:00:00+00:00",
            "data": {"path": "/data/shop/events.parquet", "n_sequences": len(ids),
                     "fields": ["event", "page"]},
            "model": {"size": "tiny", "d_model": 64, "n_params": 123456, "field_sizes": {"event": 40}},
            "training": {"steps": 200, "wall_time_s": 12.5},
            "validation": {"val_masked_accuracy": 0.61, "val_unigram_accuracy": 0.22}}  # fmt: skip
    (root / "model_card.json").write_text(json.dumps(card))
    steps = np.arange(1, 201)
    log = pl.DataFrame({"step": steps, "epoch": steps // 50, "lr": 1e-3 * np.minimum(1, steps / 20),
                        "train_loss": 3.5 * np.exp(-steps / 60) + 1 + rng.normal(0, 0.05, 200),
                        "val_loss": [2.0 + 2 * np.exp(-s / 60) if s % 50 == 0 else None for s in steps],
                        "val_acc": [0.6 - 0.4 * np.exp(-s / 60) if s % 50 == 0 else None for s in steps],
                        "tokens_per_s": np.full(200, 5e4), "elapsed_s": steps * 0.06})  # fmt: skip
    log.write_csv(root / "metrics.csv")
    labels = pl.DataFrame({"sequence_id": ids, "label": anomalous.astype(int),
                           "anomaly_type": [t or "" for t in types]})  # fmt: skip
    labels.write_csv(root / "truth.csv")
    paths["labels"] = root / "truth.csv"
    (root / "labels").mkdir(exist_ok=True)
    rounds = [{"round": r, "n_labels": 40 * r, "n_anomalies": 9 * r, "strategy": "borderline+diverse",
               "model_version": f"run@r{r}", "created_at": f"2026-03-0{r + 1}T10:00:00+00:00",
               "metrics": {"cv_f1": 0.5 + 0.1 * r, "cv_pr_auc": 0.55 + 0.1 * r, "unsup_pr_auc": 0.42}}
              for r in (1, 2, 3)]  # fmt: skip
    (root / "labels" / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "img":
            self.srcs.append(dict(attrs)["src"] or "")


def _parse(text: str) -> _Images:
    parser = _Images()
    parser.feed(text)
    return parser


@pytest.fixture
def run(tmp_path: Path) -> dict[str, Any]:
    return make_run(tmp_path / "run")


def test_full_report_has_every_section_and_decodable_pngs(run: dict[str, Any], tmp_path: Path) -> None:
    out = build_report(run["run"], tmp_path / "r.html", labels_path=run["labels"])
    text = out.read_text(encoding="utf-8")
    for key in ("summary", "distribution", "anomalies", "evaluation", "map", "active-learning", "training",
                "model-card"):
        assert f'<section id="{key}">' in text
    page = _parse(text)
    assert len(page.srcs) == 5  # histogram, PR/ROC, map, active learning, training
    for src in page.srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert text.count('<article class="anomaly"') == 20
    assert "card_testing" in text and "Recall per anomaly type" in text
    assert "unsupervised only" in text  # before/after fine-tuning comparison
    assert "train contamination 0.03" in text and "val_unigram_accuracy" in text


def test_summary_metrics_agree_with_evaluate_scores(run: dict[str, Any], tmp_path: Path) -> None:
    text = build_report(run["run"], tmp_path / "r.html", labels_path=run["labels"]).read_text()
    ev = evaluate_scores(run["score"], run["anomalous"].astype(int), threshold=run["threshold"])
    for key, name in (("pr_auc", "PR-AUC"), ("roc_auc", "ROC-AUC"), ("recall", "Recall")):
        assert re.search(rf'<div class="k">{name}</div><div class="v">{ev[key]:.3g}</div>', text), key
    flagged = int((run["score"] > run["threshold"]).sum())
    assert f'<div class="k">Flagged</div><div class="v">{flagged:,}</div>' in text


def test_user_strings_are_escaped_and_the_page_is_self_contained(run: dict[str, Any], tmp_path: Path) -> None:
    text = build_report(run["run"], tmp_path / "r.html").read_text()
    assert HOSTILE_ID not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    page = _parse(text)
    assert "script" not in page.tags and "link" not in page.tags
    assert not re.search(r'(src|href)="(https?:)?//', text)


def test_top_anomalies_are_the_highest_scores_in_order(run: dict[str, Any], tmp_path: Path) -> None:
    text = build_report(run["run"], tmp_path / "r.html", max_anomalies=5).read_text()
    assert text.count('<article class="anomaly"') == 5
    order = np.argsort(-run["score"], kind="stable")[:5]
    shown = re.findall(r'<code class="sid">(.*?)</code>', text)
    expected = [str(run["ids"][i]).replace("<", "&lt;").replace(">", "&gt;") for i in order]
    assert shown == expected


def test_missing_optional_inputs_degrade_to_notes(tmp_path: Path) -> None:
    paths = make_run(tmp_path / "bare", n=60, embeddings=False, extras=False, fine_tuned=False)
    text = build_report(paths["run"]).read_text()  # default out: RUN/report.html
    assert (paths["run"] / "report.html").is_file()
    assert "No embeddings file" in text and "No labels yet" in text and "No training log" in text
    assert "No model_card.json" in text and "No labels: pass" in text
    assert "unsupervised only" not in text and "classifier p(anomaly)" not in text
    assert len(_parse(text).srcs) == 1  # only the histogram


def test_metadata_falls_back_to_columns(tmp_path: Path) -> None:
    paths = make_run(tmp_path / "run", n=80, metadata=False, extras=False)
    text = build_report(paths["run"]).read_text()
    assert f'<div class="v">{paths["threshold"]:.4g}</div>' in text
    assert "surprise, knn" in text and "not recorded" in text


def test_misaligned_embeddings_and_bad_round_lines_are_reported(run: dict[str, Any], tmp_path: Path) -> None:
    np.save(run["scores"].with_name("latest_embeddings.npy"), np.zeros((7, 4), dtype=np.float32))
    with (run["run"] / "labels" / "rounds.jsonl").open("a") as fh:
        fh.write("{not json\n")
    text = build_report(run["run"], tmp_path / "r.html").read_text()
    assert "has shape (7, 4), not (400, d)" in text
    assert "1 unreadable line(s) in rounds.jsonl were skipped" in text


def test_missing_run_or_scores_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match=r"missing scores/latest\.parquet; run `anomaly-ssl score --run"):
        build_report(tmp_path / "empty")
    with pytest.raises(RunDirError, match=r"no scores at .*other\.parquet"):
        build_report(tmp_path / "empty", scores_path=tmp_path / "other.parquet")


def test_project_2d_is_pca_on_a_seeded_subsample_that_keeps_flagged_rows() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (500, 6)) * np.array([5.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    coords, rows, explained = plots.project_2d(X)
    assert coords.shape == (500, 2) and np.array_equal(rows, np.arange(500))
    ref = np.linalg.eigvalsh(np.cov(X, rowvar=False))[::-1]
    assert np.allclose(explained, ref[:2] / ref.sum(), rtol=1e-6)
    assert np.allclose(np.abs(coords.var(axis=0, ddof=1)), ref[:2], rtol=1e-4)
    keep = np.zeros(500, dtype=bool)
    keep[[3, 77, 499]] = True
    c1, r1, _ = plots.project_2d(X, max_points=50, seed=3, keep=keep)
    c2, r2, _ = plots.project_2d(X, max_points=50, seed=3, keep=keep)
    assert len(r1) == 50 and set(np.flatnonzero(keep)) <= set(r1) and np.array_equal(r1, r2)
    assert np.array_equal(c1, c2)


def test_figures_handle_sparse_inputs() -> None:
    s = np.r_[np.linspace(0, 1, 50), np.nan]
    for png in (plots.score_histogram(s), plots.score_histogram(s, 0.5, np.r_[np.full(50, np.nan), 1.0]),
                plots.active_learning_history([{"round": 1, "n_labels": 5}]),
                plots.training_curves(np.arange(3), {"train_loss": np.array([3.0, 2.0, np.nan])})):
        assert png.startswith(PNG_MAGIC)


def test_cli_report_with_label_store(run: dict[str, Any]) -> None:
    from active_learning.label_store import LabelStore

    flagged = [i for i in np.argsort(-run["score"])[:3]]
    LabelStore.for_run(run["run"]).append(
        [{"sequence_id": run["ids"][i], "label": 1, "anomaly_type": "card_testing", "source": "test",
          "annotation_ids": [str(i)]} for i in flagged]
    )
    result = CliRunner().invoke(cli, ["report", "--run", str(run["run"]), "--top", "3"])
    assert result.exit_code == 0, result.output
    text = (run["run"] / "report.html").read_text()
    assert text.count("analyst: anomaly · card_testing") == 2 * 3  # overview table + card
    assert "Label store: 3 labelled sequences, 3 anomalies" in text
    assert "Against the label store" in text  # no --labels: analyst labels drive the evaluation


def test_cli_missing_scores_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(cli, ["report", "--run", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "error: run directory" in result.output
    assert "anomaly-ssl score --run RUN --data DATA" in result.output
    assert "Traceback" not in result.output


def test_cli_as_subprocess_with_a_scores_file_elsewhere(run: dict[str, Any], tmp_path: Path) -> None:
    scores, emb = tmp_path / "s.parquet", tmp_path / "vectors.npy"
    shutil.copy(run["scores"], scores)
    shutil.copy(run["scores"].with_name("latest_embeddings.npy"), emb)
    out = tmp_path / "sub.html"
    cmd = [sys.executable, "-m", "anomaly_ssl", "-q", "report", "--run", str(run["run"]), "--out", str(out),
           "--scores", str(scores), "--labels", str(run["labels"]), "--top", "2"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and f"wrote {out}" in proc.stdout
    assert "No embeddings file (s_embeddings.npy)" in out.read_text()
    proc = subprocess.run([*cmd, "--embeddings", str(emb)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "No embeddings file" not in out.read_text() and len(_parse(out.read_text()).srcs) == 5


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or shutil.which("chromedriver", path="/usr/bin:/usr/lib/chromium")
    if browser and driver:
        return browser, driver
    message = "headless Chromium not installed: apt-get install -y chromium chromium-driver"
    if _in_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")  # pragma: no cover


def test_report_renders_in_headless_chromium(run: dict[str, Any], tmp_path: Path) -> None:
    browser, driver_path = _chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if _in_ci():
            pytest.fail("CI=true but selenium is not installed (the dev extra)", pytrace=False)
        pytest.skip("selenium not installed (the dev extra)")

    out = build_report(run["run"], tmp_path / "r.html", labels_path=run["labels"], max_anomalies=3)
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(flag)
    options.binary_location = browser
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(out.resolve().as_uri())
        assert driver.title == "anomaly-ssl report: run"
        sizes = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);")
        assert len(sizes) == 5 and all(done and width > 0 for done, width, _ in sizes), sizes
        heights = driver.execute_script(
            "return Array.from(document.querySelectorAll('section')).map(s => s.offsetHeight);")
        assert len(heights) == 8 and min(heights) > 40
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.read_bytes().startswith(PNG_MAGIC)
    finally:
        driver.quit()


def test_minimal_score_file_with_nan_and_empty_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "scores").mkdir(parents=True)
    pl.DataFrame({"sequence_id": ["a", "b", "c"], "score": [0.2, float("nan"), 0.9]}).write_parquet(
        run_dir / "scores" / "latest.parquet"
    )
    labels = tmp_path / "labels.csv"
    labels.write_text("sequence_id,label\na,0\nb,1\nc,1\n")
    text = build_report(run_dir, labels_path=labels).read_text()
    assert re.findall(r'<code class="sid">(.*?)</code>', text) == ["c", "a", "b"]  # NaN last
    assert '<div class="k">Labelled</div><div class="v">2</div>' in text  # the NaN row is not evaluated
    empty = pl.DataFrame(schema={"sequence_id": pl.Utf8, "score": pl.Float64})
    empty.write_parquet(run_dir / "scores" / "latest.parquet")
    text = build_report(run_dir).read_text()
    assert "No sequences were scored." in text
