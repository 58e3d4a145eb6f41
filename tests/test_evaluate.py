"""Evaluation metrics agree with scikit-learn on fixed arrays; plots are written."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from anomaly_ssl.errors import DataError
from anomaly_ssl.evaluate import (
    average_precision,
    best_f1,
    evaluate_scores,
    plot_scores,
    roc_auc,
    roc_curve,
)

# fixed arrays with ties, across both classes and within one
SCORES = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.6, 0.6, 0.5, 0.4, 0.3, 0.3, 0.2, 0.1, 0.1, 0.05])
LABELS = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0])


def _random_case(seed: int, n: int = 300, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    s = rng.normal(size=n) + 1.2 * y
    if ties:
        s = np.round(s, 1)
    return s, y


@pytest.mark.parametrize("case", ["fixed", "random", "random_ties"])
def test_ranking_metrics_match_sklearn(case):
    s, y = (SCORES, LABELS) if case == "fixed" else _random_case(1, ties=case == "random_ties")
    assert roc_auc(s, y) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(s, y) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(s, y)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_threshold_metrics_match_sklearn():
    s, y = _random_case(2)
    thr = 0.8
    out = evaluate_scores(s, y, threshold=thr, threshold_source="train contamination 0.03")
    pred = (s > thr).astype(int)
    assert out["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert out["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert out["f1"] == pytest.approx(skm.f1_score(y, pred))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert out["fpr"] == pytest.approx(fp / (fp + tn))
    assert (out["tp"], out["fp"], out["fn"], out["tn"]) == (tp, fp, fn, tn)
    assert out["n"] == len(y) and out["n_anomalies"] == y.sum() and out["n_flagged"] == pred.sum()
    assert out["threshold"] == thr and out["threshold_source"] == "train contamination 0.03"


def test_is_anomaly_overrides_threshold():
    out = evaluate_scores(SCORES, LABELS, is_anomaly=LABELS.astype(bool), threshold=10.0)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["fpr"] == 0.0


def test_best_f1_is_the_oracle_maximum_and_labelled_as_such():
    s, y = _random_case(3, ties=True)
    f1, thr = best_f1(s, y)
    brute = max(skm.f1_score(y, (s >= t).astype(int)) for t in np.unique(s))
    assert f1 == pytest.approx(brute)
    assert skm.f1_score(y, (s >= thr).astype(int)) == pytest.approx(f1)
    out = evaluate_scores(s, y)
    assert out["best_f1_oracle_threshold"] == pytest.approx(brute)
    assert "oracle_threshold" in out
    assert out["precision"] is None and out["f1"] is None, "no decision without a threshold"


def test_per_type_recall():
    y = np.array([0, 1, 1, 1, 0, 1])
    types = np.array(["", "bot", "bot", "fraud", "", "fraud"], dtype=object)
    s = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.95])
    out = evaluate_scores(s, y, threshold=0.5, anomaly_types=types)
    assert out["per_type"] == {
        "bot": {"count": 2, "detected": 1, "recall": 0.5},
        "fraud": {"count": 2, "detected": 2, "recall": 1.0},
    }


def test_single_class_gives_nan_not_crash():
    out = evaluate_scores(np.array([0.1, 0.2, 0.3]), np.zeros(3, int), threshold=0.15)
    assert np.isnan(out["roc_auc"]) and np.isnan(out["pr_auc"]) and out["fpr"] == pytest.approx(2 / 3)
    assert "best_f1_oracle_threshold" not in out


def test_input_errors():
    with pytest.raises(DataError, match="equal length"):
        evaluate_scores(np.zeros(3), np.zeros(4))
    with pytest.raises(DataError, match="0 \\(normal\\) or 1"):
        evaluate_scores(np.zeros(3), np.array([0, 2, 1]))
    with pytest.raises(DataError, match="NaN"):
        evaluate_scores(np.array([0.0, np.nan]), np.array([0, 1]))
    with pytest.raises(DataError, match="is_anomaly has shape"):
        evaluate_scores(np.zeros(3), np.array([0, 1, 0]), is_anomaly=np.zeros(2))


def test_plots_are_written(tmp_path):
    s, y = _random_case(4)
    paths = plot_scores(s, y, tmp_path / "plots", threshold=0.9, prefix="knn_", title="kNN")
    assert set(paths) == {"pr", "roc", "hist"}
    for p in paths.values():
        assert p.parent == tmp_path / "plots" and p.name.startswith("knn_")
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
