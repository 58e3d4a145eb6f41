"""Evaluation of anomaly scores against labels: metrics and plots.

:func:`evaluate_scores` reports the threshold-free ranking metrics (ROC-AUC,
PR-AUC as average precision) and, for a decision made *without* test labels
(a threshold from training scores, or given 0/1 decisions), precision, recall,
F1 and false-positive rate, plus recall per anomaly type.  The best F1 over all
thresholds on the test set is reported only under the key
``best_f1_oracle_threshold``: it looks at test labels and must never be used
to choose a threshold.  The metrics are implemented here in numpy (tie-aware,
matching scikit-learn) so that the tool does not depend on scikit-learn's
metric API; :func:`plot_scores` writes PR, ROC and score-histogram PNGs with
matplotlib's Agg canvas (no pyplot global state).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)


def _check(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1 or len(s) != len(y):
        raise DataError(f"scores and labels must be 1-D of equal length, got shapes {s.shape} and {y.shape}")
    if len(s) == 0:
        raise DataError("no scores to evaluate")
    if not np.isfinite(s).all():
        raise DataError(f"scores hold NaN or inf (first at position {int(np.argmin(np.isfinite(s)))})")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"labels must be 0 (normal) or 1 (anomaly), got values {np.unique(y)[:5].tolist()}")
    return s, y.astype(np.int64)


def _curve_points(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (false positives, true positives) at each distinct score, descending; and the scores."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]
    tps = np.cumsum(y_sorted)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return fps.astype(np.float64), tps.astype(np.float64), s_sorted[last_of_tie]


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds (descending), starting at (0, 0)."""
    s, y = _check(scores, labels)
    fps, tps, thr = _curve_points(s, y)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.full(len(fps) + 1, np.nan)
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.full(len(tps) + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    s, y = _check(scores, labels)
    if y.min() == y.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(s, y)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))  # trapezoids


def precision_recall_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and thresholds at each distinct score (descending)."""
    s, y = _check(scores, labels)
    fps, tps, thr = _curve_points(s, y)
    precision = tps / (tps + fps)
    recall = tps / y.sum() if y.sum() else np.full(len(tps), np.nan)
    return precision, recall, thr


def average_precision(scores: Any, labels: Any) -> float:
    """PR-AUC as average precision, ``sum_n (R_n - R_{n-1}) P_n``; NaN without anomalies."""
    s, y = _check(scores, labels)
    if y.sum() == 0:
        return float("nan")
    precision, recall, _ = precision_recall_curve(s, y)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_f1(scores: Any, labels: Any) -> tuple[float, float]:
    """Best F1 over thresholds ``score >= t`` and that ``t`` -- uses labels: for reporting only."""
    precision, recall, thr = precision_recall_curve(scores, labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    i = int(np.nanargmax(f1))
    return float(f1[i]), float(thr[i])


def confusion_metrics(predicted: Any, labels: Any) -> dict[str, float | int]:
    """Precision, recall, F1, FPR and the counts of 0/1 decisions against 0/1 labels."""
    p = np.asarray(predicted).astype(bool)
    y = np.asarray(labels).astype(bool)
    tp, fp = int((p & y).sum()), int((p & ~y).sum())
    fn, tn = int((~p & y).sum()), int((~p & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    fpr = fp / (fp + tn) if fp + tn else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "fpr": fpr,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def evaluate_scores(
    scores: Any,
    labels: Any,
    is_anomaly: Any = None,
    threshold: float | None = None,
    threshold_source: str = "unspecified",
    anomaly_types: Any = None,
) -> dict[str, Any]:
    """Metrics of anomaly scores against 0/1 labels.

    Parameters
    ----------
    scores : array of float, shape (n,)
        Higher = more anomalous.
    labels : array of {0, 1}, shape (n,)
    is_anomaly : array of {0, 1} or bool, shape (n,), optional
        The decisions to evaluate; default ``scores > threshold``.
    threshold : float, optional
        Decision threshold, chosen without test labels (e.g. ``detector.threshold_``).
    threshold_source : str
        Where the threshold came from (e.g. ``'train contamination 0.03'``), reported as is.
    anomaly_types : array of str, shape (n,), optional
        Type of each anomaly (ignored for normal rows); adds per-type recall.

    Returns
    -------
    dict
        ``n``, ``n_anomalies``, ``roc_auc``, ``pr_auc``, ``threshold``,
        ``threshold_source``, ``precision``, ``recall``, ``f1``, ``fpr`` (None
        without decisions), ``per_type`` ({type: {count, detected, recall}}) when
        types are given, and ``best_f1_oracle_threshold`` with
        ``oracle_threshold`` (chosen on the test labels: never use to set a threshold).
    """
    s, y = _check(scores, labels)
    out: dict[str, Any] = {
        "n": len(y),
        "n_anomalies": int(y.sum()),
        "roc_auc": roc_auc(s, y),
        "pr_auc": average_precision(s, y),
        "threshold": None if threshold is None else float(threshold),
        "threshold_source": threshold_source,
    }
    if is_anomaly is None and threshold is not None:
        is_anomaly = s > threshold
    if is_anomaly is not None:
        pred = np.asarray(is_anomaly)
        if pred.shape != y.shape:
            raise DataError(f"is_anomaly has shape {pred.shape}, expected {y.shape}")
        out.update(confusion_metrics(pred, y))
        out["n_flagged"] = int(pred.astype(bool).sum())
    else:
        out.update({"precision": None, "recall": None, "f1": None, "fpr": None})
    if anomaly_types is not None:
        decisions = None if is_anomaly is None else np.asarray(is_anomaly)
        out["per_type"] = _per_type_recall(anomaly_types, y, decisions)
    if y.sum():
        f1, thr = best_f1(s, y)
        out["best_f1_oracle_threshold"], out["oracle_threshold"] = f1, thr
    return out


def _per_type_recall(types: Any, y: np.ndarray, pred: np.ndarray | None) -> dict[str, dict[str, Any]]:
    t = np.asarray(types, dtype=object)
    if t.shape != y.shape:
        raise DataError(f"anomaly_types has shape {t.shape}, expected {y.shape}")
    out: dict[str, dict[str, Any]] = {}
    for name in sorted({str(v) for v in t[y == 1]}):
        rows = (y == 1) & (t.astype(str) == name)
        count = int(rows.sum())
        detected = None if pred is None else int(pred.astype(bool)[rows].sum())
        out[name] = {"count": count, "detected": detected,
                     "recall": None if detected is None else detected / count}
    return out


def plot_scores(
    scores: Any,
    labels: Any,
    out_dir: str | Path,
    threshold: float | None = None,
    prefix: str = "",
    title: str = "",
) -> dict[str, Path]:
    """Write PR curve, ROC curve and score histogram (by label, threshold line) as PNG.

    Returns
    -------
    dict
        ``{'pr': path, 'roc': path, 'hist': path}``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s, y = _check(scores, labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"{prefix}{kind}.png" for kind in ("pr", "roc", "hist")}

    def save(fig: Figure, path: Path) -> None:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        fig.savefig(path, dpi=100)

    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    if y.sum():
        precision, recall, _ = precision_recall_curve(s, y)
        ax.step(np.r_[0.0, recall], np.r_[1.0, precision], where="post")
    ax.axhline(y.mean(), ls="--", c="grey", lw=1, label=f"base rate {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{title} PR (AP {average_precision(s, y):.3f})".strip())
    ax.legend(loc="lower left")
    save(fig, paths["pr"])

    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    fpr, tpr, _ = roc_curve(s, y)
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate",
           title=f"{title} ROC (AUC {roc_auc(s, y):.3f})".strip())
    save(fig, paths["roc"])

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    bins = np.histogram_bin_edges(s, bins=50)
    ax.hist(s[y == 0], bins=bins, alpha=0.6, label="normal", log=True)
    ax.hist(s[y == 1], bins=bins, alpha=0.6, label="anomaly", log=True)
    if threshold is not None:
        ax.axvline(threshold, c="k", ls="--", label=f"threshold {threshold:.3g}")
    ax.set(xlabel="anomaly score", ylabel="count", title=f"{title} scores".strip())
    ax.legend()
    save(fig, paths["hist"])
    log.info("wrote evaluation plots to %s", out)
    return paths


def evaluate_files(
    scores_path: str | Path,
    labels_path: str | Path,
    id_col: str = "sequence_id",
    label_col: str = "label",
    type_col: str = "anomaly_type",
    plots_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a score file (from ``anomaly-ssl score``) against a label file.

    The decisions are the score file's own ``is_anomaly`` column (its label-free
    threshold); sequences without a label are left out and counted.

    Returns
    -------
    dict
        :func:`evaluate_scores` output plus ``n_scored``, ``n_unlabelled_scored``,
        ``scores``, ``labels`` and ``plots`` (paths) when ``plots_dir`` is given.
    """
    import polars as pl

    from .data.labels import join_labels, read_labels
    from .errors import DataError

    path = Path(scores_path)
    if not path.is_file():
        raise DataError(f"score file {str(path)!r} not found; create it with `anomaly-ssl score`")
    try:
        scores = pl.read_parquet(path, columns=None)
    except Exception as exc:  # polars raises several types for a bad file
        raise DataError(f"{path}: not a readable parquet score file ({type(exc).__name__}: {exc})") from None
    missing = [c for c in ("sequence_id", "score") if c not in scores.columns]
    if missing:
        raise DataError(f"{path}: score file has no column(s) {missing}; it has {scores.columns}")
    labels = read_labels(
        labels_path, scores["sequence_id"], id_col=id_col, label_col=label_col, type_col=type_col
    )
    joined = join_labels(scores, labels).filter(pl.col("label").is_not_null())
    meta = _scores_meta(path)
    threshold = meta.get("threshold")
    if threshold is None and "threshold" in scores.columns:
        threshold = float(scores["threshold"][0])
    is_anomaly = joined["is_anomaly"].to_numpy() if "is_anomaly" in joined.columns else None
    types = joined["anomaly_type"].to_numpy() if joined["anomaly_type"].null_count() < joined.height else None
    result = evaluate_scores(
        joined["score"].to_numpy(),
        joined["label"].to_numpy(),
        is_anomaly=is_anomaly,
        threshold=threshold,
        threshold_source=str(meta.get("threshold_source", "score file's is_anomaly column")),
        anomaly_types=types,
    )
    result["n_scored"] = scores.height
    result["n_unlabelled_scored"] = scores.height - joined.height
    result["scores"] = str(path)
    result["labels"] = str(labels_path)
    if meta.get("model_version"):
        result["model_version"] = meta["model_version"]
    if plots_dir is not None:
        paths = plot_scores(joined["score"].to_numpy(), joined["label"].to_numpy(), plots_dir, threshold)
        result["plots"] = {k: str(v) for k, v in paths.items()}
    return result


#: score-file column prefix of each ensemble member's share of the score
CONTRIB_PREFIX = "contrib_"


def contribution_members(columns: Sequence[str]) -> list[str]:
    """Ensemble members with a contribution column (``contrib_<member>``) among ``columns``, in order."""
    return [c.removeprefix(CONTRIB_PREFIX) for c in columns if c.startswith(CONTRIB_PREFIX)]


def _scores_meta(path: Path) -> dict[str, Any]:
    import json

    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    blob = raw.get(b"anomaly_ssl")
    return json.loads(blob) if blob else {}
