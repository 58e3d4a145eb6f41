"""The fitted detector stack of a run: members, ensemble, threshold, neighbour index.

:class:`SequenceScorer` turns a pretrained model into a detector.  Members are
named in ``detect.members`` (see :class:`~anomaly_ssl.config.DetectConfig`).
Fitting is two-stage so that the neighbour detectors survive a contaminated
pool: members that need no reference set (surprise, n-grams, PyOD) are fitted
first; their combined training scores mark the most suspicious
``reference_trim`` share of the pool, which the kNN/density members may not use
as neighbours (on top of their duplicate-aware rule).  The label-free threshold
is a quantile of the combined scores of the sequences held out from pretraining
(the validation split), so it is not biased by sequences the model memorised.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from .config import Config, DetectConfig
from .data.encoded import EncodedSequences
from .detectors import (
    BaseDetector,
    DensityDetector,
    EnsembleDetector,
    KNNDetector,
    NGramDetector,
    PyODDetector,
    ScalarDetector,
    load_detector,
    save_detector,
)
from .detectors.normalize import ScoreNormalizer
from .detectors.threshold import compute_threshold
from .device import use_faiss_gpu
from .errors import ConfigError, RunDirError
from .features import SequenceFeatures, compute_features
from .index import VectorIndex
from .io import read_json, write_json
from .model import EventTransformer
from .run import RunDir

log = logging.getLogger(__name__)

PYOD_ALGORITHMS = ("iforest", "ecod", "copod", "hbos", "knn", "lof", "pca", "ocsvm")
FEATURE_KINDS = ("embedding", "counts")
GRAPH_MEMBERS = ("knn", "density")
DETECTOR_FORMAT = "anomaly-ssl-detector/1"


@dataclass(frozen=True)
class MemberSpec:
    """A parsed ``detect.members`` entry."""

    name: str
    kind: str  # surprise | knn | density | ngram | pyod
    features: str  # surprise | embedding | counts | sequences
    algorithm: str | None = None


def parse_member(name: str) -> MemberSpec:
    """Parse a member name such as ``knn``, ``surprise`` or ``iforest@counts``.

    Raises
    ------
    ConfigError
        For an unknown detector or feature kind.
    """
    if name == "surprise":
        return MemberSpec(name, "surprise", "surprise")
    if name in GRAPH_MEMBERS:
        return MemberSpec(name, name, "embedding")
    if name == "ngram":
        return MemberSpec(name, "ngram", "sequences")
    algo, sep, feats = name.partition("@")
    if sep and algo in PYOD_ALGORITHMS and feats in FEATURE_KINDS:
        return MemberSpec(name, "pyod", feats, algo)
    raise ConfigError(
        f"detect.members: unknown detector {name!r}; use surprise, knn, density, ngram or "
        f"ALGO@FEATURES with ALGO in {', '.join(PYOD_ALGORITHMS)} and FEATURES in embedding, counts "
        "(e.g. iforest@counts)"
    )


def build_member(spec: MemberSpec, det: DetectConfig, seed: int, gpu: bool, own_trim: bool) -> BaseDetector:
    """A fresh, unfitted detector for ``spec`` with the config's parameters."""
    common = {"contamination": det.contamination}
    if spec.kind == "surprise":
        return ScalarDetector(**common)
    if spec.kind == "ngram":
        return NGramDetector(n=det.ngram_n, **common)
    if spec.kind == "pyod":
        return PyODDetector(algorithm=spec.algorithm, random_state=seed, **common)
    graph = {
        "k": det.k,
        "metric": det.metric,
        "index_kind": det.index,
        "exact_max": det.exact_max,
        "gpu": gpu,
        "reference_trim": det.reference_trim if own_trim else 0.0,
        "trim_iterations": det.trim_iterations,
        "min_cluster_size": det.min_cluster_size,
        "duplicate_radius": det.duplicate_radius,
        "seed": seed,
        **common,
    }
    if spec.kind == "knn":
        return KNNDetector(aggregate=det.knn_aggregate, **graph)
    return DensityDetector(**graph)


def member_input(spec: MemberSpec, feats: SequenceFeatures) -> Any:
    """The input a member takes, from the computed features."""
    if spec.features == "surprise":
        return feats.surprise_score[:, None]
    if spec.features == "embedding":
        return feats.embeddings
    if spec.features == "counts":
        assert feats.counts is not None, "counts were not computed"
        return feats.counts
    return feats.encoded


@dataclass
class ScoreBatch:
    """Scores of a batch of sequences.

    Attributes
    ----------
    score : ndarray of float64, shape (n,)
        Ensemble score (higher = more anomalous).
    is_anomaly : ndarray of int8, shape (n,)
        ``score > threshold``.
    raw : dict of str to ndarray, shape (n,)
        Each member's own score.
    contributions : dict of str to ndarray, shape (n,)
        Each member's normalised share of the ensemble score.
    """

    score: np.ndarray
    is_anomaly: np.ndarray
    raw: dict[str, np.ndarray]
    contributions: dict[str, np.ndarray]


class SequenceScorer:
    """Model + detectors of one run: fit on the unlabelled pool, score anything.

    Parameters
    ----------
    model : EventTransformer
        The pretrained encoder.
    n_events : int
        Size of the event vocabulary (specials included).
    cfg : Config
    device : torch.device or str, optional
    """

    def __init__(self, model: EventTransformer, n_events: int, cfg: Config, device: Any = None) -> None:
        self.model = model
        self.n_events = n_events
        self.cfg = cfg
        self.device = device
        self.specs = [parse_member(m) for m in cfg.detect.members]

    # ------------------------------------------------------------ features
    @property
    def needs_counts(self) -> bool:
        """Whether any member takes event-count vectors."""
        return any(s.features == "counts" for s in self.specs)

    def features(self, encoded: EncodedSequences) -> SequenceFeatures:
        """Compute every feature the members and explanations need."""
        return compute_features(
            self.model, encoded, self.cfg, self.device, self.n_events, need_counts=self.needs_counts
        )

    # ----------------------------------------------------------------- fit
    def fit(
        self,
        encoded: EncodedSequences,
        holdout: np.ndarray | None = None,
        features: SequenceFeatures | None = None,
    ) -> SequenceScorer:
        """Fit every member and the ensemble on the unlabelled pool.

        Parameters
        ----------
        encoded : EncodedSequences
            The whole unlabelled pool (training and validation sequences).
        holdout : ndarray of bool, shape (n,), optional
            Sequences held out from pretraining; the threshold is taken from their
            scores when there are at least 50 of them.
        features : SequenceFeatures, optional
            Precomputed features of ``encoded``.
        """
        det, started = self.cfg.detect, time.perf_counter()
        feats = features if features is not None else self.features(encoded)
        gpu = use_faiss_gpu(det.faiss_gpu)
        stage_a = [s for s in self.specs if s.kind not in GRAPH_MEMBERS]
        members: dict[str, BaseDetector] = {}
        for spec in stage_a:
            members[spec.name] = build_member(spec, det, self.cfg.seed, gpu, own_trim=False).fit(
                member_input(spec, feats)
            )
        reference = self._reference_mask(members, len(feats))
        for spec in self.specs:
            if spec.kind in GRAPH_MEMBERS:
                detector = build_member(spec, det, self.cfg.seed, gpu, own_trim=reference is None)
                members[spec.name] = detector.fit(member_input(spec, feats), reference_mask=reference)
        members = {s.name: members[s.name] for s in self.specs}  # config order
        self.ensemble_ = EnsembleDetector(
            members,
            normalize=det.normalize,
            combine=det.combine,
            weights=det.weights,
            clip=det.normalize_clip,
            fit_members=False,
            contamination=det.contamination,
            threshold=det.threshold,
            threshold_quantile=det.threshold_quantile,
            threshold_z=det.threshold_z,
        ).fit()
        self._set_threshold(holdout)
        self.train_labels_ = (self.ensemble_.decision_scores_ > self.threshold_).astype(np.int8)
        self._build_neighbor_index(feats)
        self.train_features_ = feats
        log.info(
            "detectors fitted on %d sequences (%d distinct) in %.1fs; threshold %.4g (%s), %d flagged",
            len(feats),
            feats.n_unique,
            time.perf_counter() - started,
            self.threshold_,
            self.threshold_source_,
            int(self.train_labels_.sum()),
        )
        return self

    def _reference_mask(self, stage_a: dict[str, BaseDetector], n: int) -> np.ndarray | None:
        """Neighbour reference = the pool minus the most suspicious share by the stage-A members."""
        trim = self.cfg.detect.reference_trim
        if not stage_a or trim <= 0:
            return None
        normed = [
            ScoreNormalizer("rank").fit(d.decision_scores_).transform(d.decision_scores_)
            for d in stage_a.values()
        ]
        first = np.max(np.stack(normed), axis=0)
        cut = np.quantile(first, 1.0 - trim)
        mask = first < cut if (first >= cut).sum() <= 2 * trim * n else first <= cut
        if mask.sum() < self.cfg.detect.k + 1:
            return None
        log.info(
            "neighbour reference: %d of %d sequences (the top %.0f%% by %s left out)",
            int(mask.sum()),
            n,
            100 * trim,
            "+".join(stage_a),
        )
        return mask

    def _set_threshold(self, holdout: np.ndarray | None) -> None:
        det = self.cfg.detect
        scores = self.ensemble_.decision_scores_
        if holdout is not None and holdout.sum() >= 50:
            pool, source = (
                scores[holdout],
                f"{det.threshold} on held-out validation sequences (n={holdout.sum()})",
            )
        else:
            pool, source = scores, f"{det.threshold} on training scores (n={len(scores)})"
        self.threshold_ = float(
            compute_threshold(pool, det.threshold, det.contamination, det.threshold_quantile, det.threshold_z)
        )
        self.threshold_source_ = source

    def _build_neighbor_index(self, feats: SequenceFeatures) -> None:
        """Index of training sequences judged normal, for "nearest normal examples"."""
        normal = np.flatnonzero(self.train_labels_ == 0)
        if len(normal) == 0:
            normal = np.arange(len(feats))
        self.neighbor_rows_ = normal.astype(np.int64)
        gpu = use_faiss_gpu(self.cfg.detect.faiss_gpu)
        self.neighbor_index_ = VectorIndex(
            metric=self.cfg.detect.metric,
            kind="auto",
            exact_max=self.cfg.detect.exact_max,
            gpu=gpu,
            seed=self.cfg.seed,
        ).build(feats.embeddings[normal])

    # --------------------------------------------------------------- score
    def score_features(self, feats: SequenceFeatures) -> ScoreBatch:
        """Score precomputed features of new sequences."""
        self._check_fitted()
        inputs = {s.name: member_input(s, feats) for s in self.specs}
        raw = {name: det.decision_function(inputs[name]) for name, det in self.ensemble_.members.items()}
        normed = {name: self.ensemble_.normalizers_[name].transform(r) for name, r in raw.items()}
        contributions = self.ensemble_._parts(normed)
        score = np.asarray(self.ensemble_._combine(normed), dtype=np.float64)
        return ScoreBatch(score, (score > self.threshold_).astype(np.int8), raw, contributions)

    def nearest_normal(self, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest training sequences judged normal: (distances, training rows)."""
        self._check_fitted()
        k = min(k, len(self.neighbor_rows_))
        if k == 0 or len(embeddings) == 0:
            return np.zeros((len(embeddings), 0), np.float32), np.zeros((len(embeddings), 0), np.int64)
        dist, idx = self.neighbor_index_.search(embeddings, k)
        return dist, self.neighbor_rows_[idx]

    def _check_fitted(self) -> None:
        if not hasattr(self, "ensemble_"):
            raise RunDirError("the detectors are not fitted; run `anomaly-ssl pretrain` (which fits them)")

    @property
    def model_version(self) -> str:
        """Short id of the fitted unsupervised detector (weights + detector settings)."""
        return getattr(self, "model_version_", "unfitted")

    # ------------------------------------------------------------ save/load
    def save(self, run: RunDir, train_table: pl.DataFrame) -> None:
        """Write the fitted detectors and the training index to ``run.detector_dir``.

        Parameters
        ----------
        run : RunDir
        train_table : polars.DataFrame
            Per training sequence: ``sequence_id``, ``entity_id``, ``events`` summary
            (row order = the fitted pool).
        """
        self._check_fitted()
        folder = run.detector_dir
        folder.mkdir(parents=True, exist_ok=True)
        save_detector(self.ensemble_, folder / "ensemble.safetensors")
        self.neighbor_index_.save(folder / "neighbors.faiss")
        np.save(folder / "neighbor_rows.npy", self.neighbor_rows_)
        feats = self.train_features_
        _save_npy(folder / "train_embeddings.npy", feats.embeddings)
        table = train_table.with_columns(
            pl.Series("score", self.ensemble_.decision_scores_),
            pl.Series("is_anomaly", self.train_labels_),
            *[pl.Series(f"score_{n}", d.decision_scores_) for n, d in self.ensemble_.members.items()],
        )
        from .io import atomic_write_with

        atomic_write_with(folder / "train.parquet", lambda p: table.write_parquet(p))
        digest = hashlib.sha256()
        if run.weights_path.exists():
            digest.update(run.weights_path.read_bytes())
        digest.update(repr(self.cfg.detect).encode())
        self.model_version_ = "unsup-" + digest.hexdigest()[:10]
        write_json(
            folder / "detector.json",
            {
                "format": DETECTOR_FORMAT,
                "members": [s.name for s in self.specs],
                "normalize": self.cfg.detect.normalize,
                "combine": self.cfg.detect.combine,
                "threshold": self.threshold_,
                "threshold_source": self.threshold_source_,
                "model_version": self.model_version_,
                "n_train": len(feats),
                "n_train_distinct": feats.n_unique,
                "n_train_flagged": int(self.train_labels_.sum()),
                "n_events": self.n_events,
            },
        )

    @classmethod
    def load(cls, run: RunDir, model: EventTransformer, cfg: Config, device: Any = None) -> SequenceScorer:
        """Load the detectors fitted by ``pretrain`` from a run directory."""
        folder = run.detector_dir
        meta_path = folder / "detector.json"
        run.require(
            meta_path,
            folder / "ensemble.safetensors",
            hint="the detectors are fitted by `anomaly-ssl pretrain`; rerun it to create them",
        )
        meta = read_json(meta_path)
        if meta.get("format") != DETECTOR_FORMAT:
            raise RunDirError(f"{meta_path}: unknown detector format {meta.get('format')!r}")
        if meta["members"] != list(cfg.detect.members):
            raise ConfigError(
                f"detect.members {cfg.detect.members} differ from the fitted detectors {meta['members']}; "
                "the detectors are fitted by `pretrain`: drop the --set, or pretrain again"
            )
        self = cls(model, int(meta["n_events"]), cfg, device)
        ensemble = load_detector(folder / "ensemble.safetensors")
        assert isinstance(ensemble, EnsembleDetector)
        self.ensemble_ = ensemble
        self.threshold_ = float(meta["threshold"])
        self.threshold_source_ = str(meta["threshold_source"])
        self.model_version_ = str(meta["model_version"])
        self.train_labels_ = (ensemble.decision_scores_ > self.threshold_).astype(np.int8)
        gpu = use_faiss_gpu(cfg.detect.faiss_gpu)
        self.neighbor_index_ = VectorIndex.load(folder / "neighbors.faiss", gpu=gpu)
        self.neighbor_rows_ = np.load(folder / "neighbor_rows.npy")
        return self


def _save_npy(path: Path, arr: np.ndarray) -> None:
    from .io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device the model's parameters live on."""
    return next(model.parameters()).device
