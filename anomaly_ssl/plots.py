"""Figures for the HTML report, each returned as PNG bytes.

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas
(no pyplot, no global rc changes), styles its axes explicitly and returns the
encoded PNG, so the report can embed it as a data URI and the functions are
safe to call from threads and notebooks alike.  :func:`project_2d` is the one
numeric helper: a seeded, subsampled PCA (numpy SVD) of the embeddings.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .evaluate import average_precision, precision_recall_curve, roc_auc, roc_curve

log = logging.getLogger(__name__)

#: the report's palette (kept in sync with the CSS in report.py)
NORMAL = "#4f6d9a"
ANOMALY = "#d1495b"
UNLABELLED = "#b8bec8"
INK = "#2b3340"
GRID = "#e3e6eb"
SERIES = ("#4f6d9a", "#d1495b", "#edae49", "#30a08a", "#7b5ea7", "#66a3d2")


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.spines[["left", "bottom"]].set_color("#9aa3af")
        ax.tick_params(colors=INK, labelsize=8.5)
        ax.grid(True, color=GRID, lw=0.8)
        ax.set_axisbelow(True)
    return fig, axes


def _title(ax: Any, text: str) -> None:
    ax.set_title(text, fontsize=10.5, color=INK, loc="left", fontweight="bold")


def _labels(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel, fontsize=9, color=INK)
    ax.set_ylabel(ylabel, fontsize=9, color=INK)


def _legend(ax: Any, **kwargs: Any) -> None:
    kwargs.setdefault("fontsize", 8.5)
    ax.legend(frameon=False, **kwargs)


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """Render a matplotlib ``Figure`` to PNG bytes with the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def score_histogram(
    scores: np.ndarray,
    threshold: float | None = None,
    labels: np.ndarray | None = None,
    bins: int = 60,
) -> bytes:
    """Histogram of scores (log counts) with the threshold line.

    Parameters
    ----------
    scores : ndarray of float, shape (n,)
        Final scores, higher = more anomalous (non-finite values are dropped).
    threshold : float, optional
        Drawn as a dashed vertical line.
    labels : ndarray of float, shape (n,), optional
        1 anomaly, 0 normal, NaN unlabelled: bars are coloured by label.  Without
        labels, bars above the threshold are coloured as flagged.
    """
    s = np.asarray(scores, dtype=np.float64)
    keep = np.isfinite(s)
    s = s[keep]
    fig, (ax,) = _figure(9.0, 3.3)
    edges = np.histogram_bin_edges(s, bins=bins) if len(s) else np.linspace(0, 1, bins + 1)
    style = {"bins": edges, "log": len(s) > 0, "histtype": "stepfilled", "alpha": 0.75, "lw": 0}
    if labels is not None:
        y = np.asarray(labels, dtype=np.float64)[keep]
        groups = [("unlabelled", np.isnan(y), UNLABELLED), ("normal", y == 0, NORMAL),
                  ("anomaly", y == 1, ANOMALY)]  # fmt: skip
        for name, rows, colour in groups:
            if rows.any():
                ax.hist(s[rows], color=colour, label=f"{name} ({int(rows.sum()):,})", **style)
    elif threshold is not None:
        low = s <= threshold
        ax.hist(s[low], color=NORMAL, label=f"not flagged ({int(low.sum()):,})", **style)
        ax.hist(s[~low], color=ANOMALY, label=f"flagged ({int((~low).sum()):,})", **style)
    else:
        ax.hist(s, color=NORMAL, **style)
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color=INK, ls="--", lw=1.2, label=f"threshold {threshold:.4g}")
    _labels(ax, "anomaly score (higher = more unusual)", "sequences (log scale)")
    if ax.get_legend_handles_labels()[0]:
        _legend(ax, loc="upper right")
    return figure_png(fig)


def pr_roc_curves(curves: Mapping[str, np.ndarray], labels: np.ndarray) -> bytes:
    """Precision-recall and ROC curves of one or more score arrays against the same labels.

    Parameters
    ----------
    curves : mapping of str to ndarray of float, shape (n,)
        Name (e.g. ``'final score'``, ``'unsupervised only'``) to scores.
    labels : ndarray of {0, 1}, shape (n,)
        Needs both classes.
    """
    y = np.asarray(labels)
    fig, (ax_pr, ax_roc) = _figure(9.5, 3.8, ncols=2)
    for i, (name, scores) in enumerate(curves.items()):
        colour, ls = SERIES[i % len(SERIES)], "-" if i == 0 else "--"
        precision, recall, _ = precision_recall_curve(scores, y)
        ap = average_precision(scores, y)
        ax_pr.step(np.r_[0.0, recall], np.r_[1.0, precision], where="post", color=colour, ls=ls, lw=1.8,
                   label=f"{name} (AP {ap:.3f})")
        fpr, tpr, _ = roc_curve(scores, y)
        ax_roc.plot(fpr, tpr, color=colour, ls=ls, lw=1.8, label=f"{name} (AUC {roc_auc(scores, y):.3f})")
    ax_pr.axhline(y.mean(), ls=":", c="grey", lw=1, label=f"base rate {y.mean():.3f}")
    ax_roc.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="random")
    ax_pr.set(xlim=(0, 1), ylim=(0, 1.02))
    ax_roc.set(xlim=(0, 1), ylim=(0, 1.02))
    _title(ax_pr, "Precision-recall")
    _labels(ax_pr, "recall", "precision")
    _title(ax_roc, "ROC")
    _labels(ax_roc, "false-positive rate", "true-positive rate")
    _legend(ax_pr, loc="lower left")
    _legend(ax_roc, loc="lower right")
    return figure_png(fig)


def project_2d(
    embeddings: np.ndarray,
    max_points: int = 20_000,
    seed: int = 0,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project embeddings on their first two principal components (numpy SVD).

    Parameters
    ----------
    embeddings : ndarray of float, shape (n, d)
        May be a memory map: only the sampled rows are read.
    max_points : int
        At most this many rows are projected (and plotted).
    seed : int
        Seed of the subsample.
    keep : ndarray of bool, shape (n,), optional
        Rows kept in the subsample first (e.g. flagged ones, so that rare anomalies
        show), at most a tenth of ``max_points`` of them; the rest is a uniform sample.

    Returns
    -------
    coords : ndarray of float32, shape (m, 2)
    rows : ndarray of int64, shape (m,)
        Row of ``embeddings`` for each point, ascending.
    explained : ndarray of float64, shape (2,)
        Share of the variance on each axis.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"need a 2-D array with at least 2 rows, got shape {embeddings.shape}")
    n = embeddings.shape[0]
    rows = np.arange(n)
    if n > max_points:
        rng = np.random.default_rng(seed)
        forced = np.flatnonzero(keep) if keep is not None else np.empty(0, dtype=np.int64)
        if len(forced) > max_points // 10:
            forced = rng.choice(forced, max_points // 10, replace=False)
        rest = np.setdiff1d(rows, forced)
        rows = np.sort(np.r_[forced, rng.choice(rest, max_points - len(forced), replace=False)])
    X = np.asarray(embeddings[rows], dtype=np.float64)  # (m, d); only the sample leaves a memory map
    Xs = X - X.mean(axis=0)  # (m, d) centred
    _, sing, vt = np.linalg.svd(Xs, full_matrices=False)
    k = min(2, vt.shape[0])
    coords = np.zeros((len(rows), 2), dtype=np.float32)
    coords[:, :k] = Xs @ vt[:k].T  # (m, k)
    var = sing**2
    explained = np.zeros(2)
    explained[:k] = var[:k] / var.sum() if var.sum() > 0 else 0.0
    return coords, rows.astype(np.int64), explained


def embedding_map(
    coords: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    explained: np.ndarray | None = None,
) -> bytes:
    """Scatter of 2-D coordinates coloured by score percentile, and by label when known.

    Parameters
    ----------
    coords : ndarray of float, shape (m, 2)
    scores : ndarray of float, shape (m,)
    labels : ndarray of float, shape (m,), optional
        1 anomaly, 0 normal, NaN unlabelled; adds a second panel.
    flagged : ndarray of bool, shape (m,), optional
        Points above the threshold get a dark outline.
    explained : ndarray of float, shape (2,), optional
        Variance shares shown in the axis labels.
    """
    c = np.asarray(coords, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    ranks = np.argsort(np.argsort(np.nan_to_num(s, nan=-np.inf), kind="stable"), kind="stable")
    pct = ranks / max(len(s) - 1, 1)  # (m,) score percentile in [0, 1]
    size = 10.0 if len(s) < 3000 else 4.0
    ncols = 2 if labels is not None else 1
    fig, axes = _figure(10.0 if ncols == 2 else 6.2, 4.4, ncols=ncols)
    order = np.argsort(pct, kind="stable")  # most anomalous drawn last, on top
    sc = axes[0].scatter(c[order, 0], c[order, 1], c=pct[order], cmap="viridis", s=size, lw=0, vmin=0, vmax=1)
    if flagged is not None and np.asarray(flagged).any():
        f = np.asarray(flagged, dtype=bool)
        axes[0].scatter(c[f, 0], c[f, 1], facecolors="none", edgecolors=ANOMALY, s=size * 2.5,
                        lw=0.9 if len(s) < 3000 else 0.5,
                        label=f"flagged ({int(f.sum()):,})")
        _legend(axes[0], loc="best")
    cbar = fig.colorbar(sc, ax=axes[0], fraction=0.046, pad=0.02)
    cbar.set_label("score percentile", fontsize=8.5, color=INK)
    cbar.ax.tick_params(labelsize=8)
    _title(axes[0], "Coloured by score")
    if labels is not None:
        y = np.asarray(labels, dtype=np.float64)
        for name, rows, colour, mult in (("unlabelled", np.isnan(y), UNLABELLED, 0.7),
                                         ("normal", y == 0, NORMAL, 1.4), ("anomaly", y == 1, ANOMALY, 2.0)):
            if rows.any():
                axes[1].scatter(c[rows, 0], c[rows, 1], color=colour, s=size * mult, lw=0,
                                label=f"{name} ({int(rows.sum()):,})")
        _title(axes[1], "Coloured by label")
        _legend(axes[1], loc="best", markerscale=2)
    ev = explained if explained is not None else np.full(2, np.nan)
    for ax in axes:
        _labels(ax, f"PC 1 ({ev[0]:.0%} of variance)", f"PC 2 ({ev[1]:.0%} of variance)")
    return figure_png(fig)


def training_curves(
    steps: np.ndarray,
    columns: Mapping[str, np.ndarray],
    unigram_accuracy: float | None = None,
) -> bytes:
    """Loss, masked-event accuracy and learning rate against the training step.

    Parameters
    ----------
    steps : ndarray of int, shape (n,)
    columns : mapping of str to ndarray of float, shape (n,)
        Any of ``train_loss``, ``val_loss``, ``val_acc``, ``lr``; NaN where not logged.
    unigram_accuracy : float, optional
        Accuracy of always predicting the most frequent event, drawn as a baseline.
    """
    x = np.asarray(steps, dtype=np.float64)
    fig, (ax_loss, ax_acc, ax_lr) = _figure(11.0, 3.2, ncols=3)

    def line(ax: Any, key: str, colour: str, label: str, marker: str | None = None) -> None:
        if key in columns:
            v = np.asarray(columns[key], dtype=np.float64)
            ok = np.isfinite(v)
            if ok.any():
                ax.plot(x[ok], v[ok], color=colour, lw=1.5, marker=marker, ms=3.5, label=label)

    line(ax_loss, "train_loss", NORMAL, "train")
    line(ax_loss, "val_loss", ANOMALY, "validation", marker="o")
    line(ax_acc, "val_acc", ANOMALY, "validation", marker="o")
    if unigram_accuracy is not None and np.isfinite(unigram_accuracy):
        ax_acc.axhline(unigram_accuracy, ls="--", c="grey", lw=1,
                       label=f"most-frequent baseline {unigram_accuracy:.3f}")
    line(ax_lr, "lr", SERIES[3], "learning rate")
    for ax, title, ylabel in ((ax_loss, "Masked-event loss", "cross-entropy"),
                              (ax_acc, "Masked-event accuracy", "accuracy"),
                              (ax_lr, "Learning rate", "lr")):
        _title(ax, title)
        _labels(ax, "step", ylabel)
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            _legend(ax, loc="best")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return figure_png(fig)


def active_learning_history(rounds: Sequence[Mapping[str, Any]]) -> bytes:
    """Labels per round (stacked normal/anomaly bars) and validation metrics per round.

    Parameters
    ----------
    rounds : sequence of mapping
        ``rounds.jsonl`` records: ``round``, ``n_labels``, ``n_anomalies`` and a
        ``metrics`` mapping of name to number (missing or null values are skipped).
    """
    x = np.array([int(r.get("round", i)) for i, r in enumerate(rounds)])
    n_labels = np.array([float(r.get("n_labels") or 0) for r in rounds])
    n_anom = np.array([float(r.get("n_anomalies") or 0) for r in rounds])
    fig, (ax_n, ax_m) = _figure(10.0, 3.4, ncols=2)
    ax_n.bar(x, n_labels - n_anom, color=NORMAL, width=0.6, label="normal")
    ax_n.bar(x, n_anom, bottom=n_labels - n_anom, color=ANOMALY, width=0.6, label="anomaly")
    _title(ax_n, "Labelled sequences per round")
    _labels(ax_n, "round", "labelled sequences")
    _legend(ax_n, loc="upper left")
    names: list[str] = []
    for r in rounds:
        names += [k for k, v in (r.get("metrics") or {}).items() if k not in names and _is_number(v)]
    for i, name in enumerate(names):
        v = np.array([_number((r.get("metrics") or {}).get(name)) for r in rounds])
        ok = np.isfinite(v)
        ls = "--" if name.startswith("unsup") else "-"
        ax_m.plot(x[ok], v[ok], marker="o", ms=4, lw=1.6, ls=ls, color=SERIES[i % len(SERIES)], label=name)
    ax_m.set_ylim(0, 1.02)
    _title(ax_m, "Quality per round")
    _labels(ax_m, "round", "metric")
    if names:
        _legend(ax_m, loc="lower right")
    for ax in (ax_n, ax_m):
        ax.set_xticks(x)
    return figure_png(fig)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _number(value: Any) -> float:
    return float(value) if _is_number(value) else float("nan")
