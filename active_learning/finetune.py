"""Fine-tune a classification head on the run's labels and blend it into the score.

The head (:class:`~active_learning.head.AnomalyHead`) sees each labelled
sequence's embedding plus its unsupervised evidence (the ensemble score as a
rank against the training pool and every detector's normalised contribution),
standardised with statistics of the whole scored pool.  It starts from the
unsupervised score: the logit of its rank is a fixed offset, and the head
learns a correction under an L2 prior worth ``finetune.prior_labels`` labels.
Labels chosen by a query strategy are a biased sample (they crowd around the
boundary); a head fitted freely on them can invert the ranking elsewhere, the
offset and the prior keep it anchored.  Kinds of anomaly nobody has labelled
keep their unsupervised rank unless labels say otherwise, and
:func:`~active_learning.head.blend` mixes the rank in further, with a weight
chosen by cross-validation on the labels (:func:`choose_blend`).  The threshold
of the final score is the F1-optimal cut on cross-validated (out-of-fold)
predictions over the labels.  Each call is one round, recorded in
``labels/rounds.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from anomaly_ssl.config import Config
from anomaly_ssl.evaluate import contribution_members
from anomaly_ssl.io import read_json, write_json
from anomaly_ssl.run import RunDir

from .al_errors import HeadError, OneClassError
from .head import AnomalyHead, blend, f1_optimal_threshold, rank_logit, rank_scores
from .label_store import AppendOnlyJsonl, LabelStore, utc_now
from .loop import queried_path

log = logging.getLogger(__name__)

HEAD_META = "head.json"


def rounds_path(run: RunDir) -> Path:
    """One JSON line per fine-tuning round (labels, metrics, model version)."""
    return run.labels_dir / "rounds.jsonl"


def train_unsup_scores(run: RunDir) -> np.ndarray:
    """The run's unsupervised scores of its training sequences: the reference of the rank feature."""
    return pl.read_parquet(run.detector_dir / "train.parquet", columns=["score"])["score"].to_numpy()


def head_features(
    unsup_score: np.ndarray, contributions: dict[str, np.ndarray], members: list[str], reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Extra head features: unsupervised rank and member contributions, shape (n, 1 + m)."""
    r = rank_scores(unsup_score, reference)
    cols = [r] + [np.asarray(contributions[m], dtype=np.float64) for m in members]
    return r, np.stack(cols, axis=1)


@dataclass
class HeadRescorer:
    """Blends a fine-tuned head into scores (implements :class:`anomaly_ssl.pipeline.Rescorer`)."""

    head: AnomalyHead
    members: list[str]
    reference: np.ndarray
    weight: float
    threshold: float
    threshold_source: str
    model_version: str

    def rescore(
        self, embeddings: np.ndarray, unsup_score: np.ndarray, contributions: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(head_proba, blended score)`` for a batch."""
        r, extra = head_features(unsup_score, contributions, self.members, self.reference)
        offset = rank_logit(r) if self.head.uses_offset_ else None
        proba = self.head.predict_proba(embeddings, extra, offset)
        return proba, blend(proba, r, self.weight)


def load_rescorer(run: RunDir | str | Path) -> HeadRescorer | None:
    """The run's fine-tuned head as a rescorer, or ``None`` before ``finetune``."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    meta_path = run.path / HEAD_META
    if not run.head_path.exists() or not meta_path.exists():
        return None
    meta = read_json(meta_path)
    return HeadRescorer(
        AnomalyHead.load(run.head_path),
        list(meta["members"]),
        train_unsup_scores(run),
        float(meta["blend"]),
        float(meta["threshold"]),
        str(meta["threshold_source"]),
        str(meta["model_version"]),
    )


@dataclass
class FinetuneResult:
    """What one fine-tuning round did."""

    round: int
    n_labels: int
    n_anomalies: int
    model_version: str
    threshold: float
    metrics: dict[str, float | None] = field(default_factory=dict)
    kept_unsupervised: bool = False
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def labelled_training_set(run: RunDir) -> tuple[pl.DataFrame, int]:
    """Labels joined with the stored features of the labelled sequences.

    Returns the joined frame and the number of labels without stored features.
    """
    labels = LabelStore.for_run(run.path).current_labels()
    path = queried_path(run)
    if labels.height == 0:
        return labels, 0
    if not path.exists():
        return labels.head(0), labels.height
    feats = pl.read_parquet(path).filter(pl.col("embedding").is_not_null())
    # sorted: the head (and its CV folds) must not depend on the order annotations arrived in
    joined = labels.join(feats, on="sequence_id", how="inner").sort("sequence_id")
    return joined, labels.height - joined.height


def finetune_run(run_dir: str | Path, cfg: Config) -> FinetuneResult:
    """Train the head on the run's labels; write ``head.safetensors`` and ``head.json``.

    With labels of only one class it raises :class:`OneClassError` (the caller
    keeps the unsupervised score, and nothing in the run changes).
    """
    run = RunDir(run_dir)
    run.require(run.detector_dir / "train.parquet", hint="pretrain the run first")
    data, missing = labelled_training_set(run)
    if missing:
        log.warning("%d labels have no stored features (not queried from this run) and are skipped", missing)
    if data.height == 0:
        raise OneClassError(
            "no labels to fine-tune on yet: run `anomaly-ssl query-labels`, annotate, then `sync-labels`"
        )
    members = contribution_members(data.columns)
    y = data["label"].to_numpy().astype(np.int64)
    emb = np.asarray(data["embedding"].to_list(), dtype=np.float32)
    reference = train_unsup_scores(run)
    contributions = {m: data[f"contrib_{m}"].to_numpy() for m in members}
    r, extra = head_features(data["unsup_score"].to_numpy(), contributions, members, reference)
    stats = pool_feature_stats(run, members, reference, emb, extra)
    head = AnomalyHead.from_config(cfg.finetune, seed=cfg.seed).fit(emb, y, extra, rank_logit(r), stats)
    weight, blend_source, blend_cv = choose_blend(
        cfg.finetune.blend, cfg.finetune.blend_grid, y, head.cv_oof_proba_, r
    )
    log.info("blend weight %.2f (%s)", weight, blend_source)
    if head.cv_oof_proba_ is not None:
        oof_blend = blend(head.cv_oof_proba_, r, weight)
        threshold, cv_f1 = f1_optimal_threshold(y, oof_blend)
        source = (
            f"F1-optimal cut of out-of-fold blended scores over {len(y)} labels (CV F1 {cv_f1:.3f}; "
            f"head weight {weight:g} in the blend, "
            f"{'chosen on the labels' if cfg.finetune.blend == 'auto' else 'from finetune.blend'})"
        )
        cv_pr = _average_precision(y, oof_blend)
    else:
        threshold = float(blend(np.array([head.threshold_]), np.array([0.5]), weight)[0])
        source, cv_f1, cv_pr = (
            f"default (too few labels per class for CV: {head.threshold_source_})",
            None,
            None,
        )
    round_no = _next_round(run)
    digest = hashlib.sha256(json.dumps([round_no, len(y), int(y.sum()), float(threshold)]).encode())
    version = f"head-r{round_no}-{digest.hexdigest()[:8]}"
    head.save(run.head_path)
    write_json(
        run.path / HEAD_META,
        {
            "model_version": version,
            "members": members,
            "blend": weight,
            "blend_source": blend_source,
            "threshold": threshold,
            "threshold_source": source,
            "round": round_no,
            "n_labels": len(y),
            "n_anomalies": int(y.sum()),
            "head_threshold": head.threshold_,
            "created_at": utc_now(),
        },
    )
    metrics = {
        "cv_f1": cv_f1,
        "cv_pr_auc": cv_pr,
        "head_cv_f1": head.cv_f1_,
        "unsup_pr_auc_on_labels": _average_precision(y, r),
        "blend": weight,
        "blend_cv_pr_auc": blend_cv,
    }
    AppendOnlyJsonl(rounds_path(run)).append_with(
        lambda _old: [
            {
                "round": round_no,
                "n_labels": len(y),
                "n_anomalies": int(y.sum()),
                "strategy": _last_strategy(run),
                "model_version": version,
                "created_at": utc_now(),
                "metrics": metrics,
            }
        ]
    )
    log.info(
        "fine-tuned head round %d on %d labels (%d anomalies): %s", round_no, len(y), int(y.sum()), source
    )
    return FinetuneResult(round_no, len(y), int(y.sum()), version, float(threshold), metrics)


def choose_blend(
    setting: str | float,
    grid: list[float],
    y: np.ndarray,
    oof_proba: np.ndarray | None,
    rank: np.ndarray,
) -> tuple[float, str, dict[str, float] | None]:
    """The blend weight of the head's probability in the final score.

    A number is used as given.  ``"auto"`` takes the weight in ``grid`` whose
    blend of the head's *out-of-fold* probabilities with the unsupervised rank
    has the highest average precision over the labels; ties go to the larger
    weight (the labels decide unless the unsupervised rank helps them).  How
    much the head should be trusted over the unsupervised score depends on the
    data: where the unsupervised score is already good (HDFS) a head fitted on a
    few dozen labels mostly adds noise, where it misses whole kinds of anomaly
    (coordinated shop fraud) the head must lead.  The labels are the only
    evidence of which case holds.

    Parameters
    ----------
    setting : {"auto"} or float
        ``FinetuneConfig.blend``.
    grid : list of float
        Candidate weights in [0, 1] (``FinetuneConfig.blend_grid``).
    y : ndarray of int, shape (n,)
        The labels.
    oof_proba : ndarray of float, shape (n,), optional
        The head's out-of-fold P(anomaly) per label; ``None`` when a class had
        too few labels to cross-validate (``auto`` then gives 1.0).
    rank : ndarray of float, shape (n,)
        The labelled sequences' unsupervised ranks.

    Returns
    -------
    (weight, source, cv) : float, str, dict or None
        The weight, how it was chosen, and the average precision per candidate
        weight (``None`` unless chosen by cross-validation).
    """
    if setting != "auto":
        return float(setting), "finetune.blend", None
    if oof_proba is None or y.min() == y.max():
        return 1.0, "auto: too few labels per class to cross-validate, the head alone", None
    cv: dict[str, float] = {}
    best_w, best_ap = 1.0, -np.inf
    for w in sorted({float(v) for v in grid}, reverse=True):  # larger weights first: ties keep them
        ap = float(_average_precision(y, blend(oof_proba, rank, w)) or 0.0)  # both classes: never None
        cv[f"{w:g}"] = ap
        if ap > best_ap:
            best_w, best_ap = w, ap
    return best_w, f"auto: best out-of-fold PR-AUC over {len(y)} labels ({best_ap:.3f})", cv


def pool_feature_stats(
    run: RunDir, members: list[str], reference: np.ndarray, emb: np.ndarray, extra: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the head's features over the unlabelled pool, each shape (d + k,).

    Embedding columns: the pretraining pool (``detector/train_embeddings.npy``).
    Extra columns: the most recently scored sequences (what labels are queried
    from) when their scores carry every member's contribution; otherwise the
    labelled rows themselves.
    """
    train_emb = run.detector_dir / "train_embeddings.npy"
    emb_stats = _column_stats(np.load(train_emb, mmap_mode="r")) if train_emb.is_file() else None
    if emb_stats is None or len(emb_stats[0]) != emb.shape[1]:
        emb_stats = _column_stats(emb)
    ext_stats = None
    latest = run.latest_scores_path
    cols = ["unsup_score"] + [f"contrib_{m}" for m in members]
    if latest.is_file() and set(cols) <= set(pl.read_parquet_schema(latest)):
        frame = pl.read_parquet(latest, columns=cols)  # not the explanation columns
        if frame.height > 1:
            _r, pool_extra = head_features(
                frame["unsup_score"].to_numpy(),
                {m: frame[f"contrib_{m}"].to_numpy() for m in members},
                members,
                reference,
            )
            ext_stats = _column_stats(pool_extra)
    if ext_stats is None:
        ext_stats = _column_stats(extra)
    assert emb_stats is not None and ext_stats is not None
    return np.concatenate([emb_stats[0], ext_stats[0]]), np.concatenate([emb_stats[1], ext_stats[1]])


def _column_stats(x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray] | None:
    """Column mean and std (float64 accumulation, chunked for memory-mapped arrays)."""
    n = len(x)
    if n == 0:
        return None
    total = np.zeros(x.shape[1])
    total_sq = np.zeros(x.shape[1])
    for start in range(0, n, chunk):
        block = np.asarray(x[start : start + chunk], dtype=np.float64)
        total += block.sum(axis=0)
        total_sq += (block**2).sum(axis=0)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return mean, std


def _average_precision(y: np.ndarray, s: np.ndarray) -> float | None:
    if y.min() == y.max():
        return None
    from anomaly_ssl.evaluate import evaluate_scores

    return float(evaluate_scores(s, y)["pr_auc"])


def _next_round(run: RunDir) -> int:
    path = rounds_path(run)
    if not path.exists():
        return 1
    rows = AppendOnlyJsonl(path).read()
    return 1 + max((int(r.get("round", 0)) for r in rows), default=0)


def _last_strategy(run: RunDir) -> str | None:
    from .query_log import QueryLog

    frame = QueryLog.for_run(run.path).frame()
    return None if frame.height == 0 else str(frame["strategy"][-1])


__all__ = ["FinetuneResult", "HeadError", "HeadRescorer", "choose_blend", "finetune_run", "load_rescorer"]
