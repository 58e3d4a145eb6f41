"""Contamination-robust k-nearest-neighbour detectors on a faiss neighbour graph.

The training pool usually contains its anomalies, often as groups of
near-identical points (a bot farm, a ring of accounts, 73 identical failing HDFS
blocks); plain kNN then calls them normal because they are each other's
neighbours.  Three mechanisms counter that, all shared by :class:`KNNDetector`
and :class:`~anomaly_ssl.detectors.density.DensityDetector`:

* **duplicate-aware neighbours** (``min_cluster_size``): the index holds the
  distinct reference vectors with their multiplicities; a query's own group of
  exact duplicates (or of points within ``duplicate_radius``) counts as its own
  neighbours only when that group holds at least ``min_cluster_size`` points
  (a share of the pool when < 1).  A small repeated pattern must find its k
  neighbours elsewhere, a large one (a common normal behaviour) supports itself;
* **reference trimming** (``reference_trim``, ``trim_iterations``): score the
  pool, drop the top share from the reference set, re-score everything against
  the trimmed reference;
* **a caller's reference mask** (``fit(X, reference_mask=...)``): e.g. the
  points a robust first-stage detector finds normal.

``decision_scores_`` are always computed for *all* training points against the
final reference, with each point's own copy excluded (other exact duplicates
still count, subject to ``min_cluster_size``).  ``decision_function`` on new
data uses the same rules, so a new copy of a small training group scores like
its members.  On the HDFS pool (log event counts, 3% anomalous, the largest
anomalous group 73 identical blocks = 0.63% of the pool) kNN's PR-AUC goes from
0.33 (plain) to 0.77 (``min_cluster_size=0.01``); it stays at 0.29 with 0.005,
below the group size: ``min_cluster_size`` must exceed the largest plausible
group of identical anomalies.  Trimming alone does not help there (0.39): tight
anomalous groups score low and are never trimmed.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, DataError
from ..index import VectorIndex, as_float32_matrix, l2_normalize
from .base import BaseDetector, check_matrix

log = logging.getLogger(__name__)


def _row_keys(Z: np.ndarray) -> np.ndarray:
    """One opaque byte-string key per row of a C-contiguous float32 matrix, shape (n,)."""
    return Z.view(np.dtype((np.void, Z.dtype.itemsize * Z.shape[1]))).ravel()


class NeighborGraph:
    """Distinct reference vectors with multiplicities, searched with the exclusion rules.

    Parameters
    ----------
    k : int
        Neighbour mass per query (a vector of multiplicity 3 counts as 3 neighbours).
    min_cluster : int
        A query's own duplicate group supports it only with at least this many points.
    duplicate_radius : float
        Reference vectors within this distance of a query form its own group
        (0 = exact duplicates only).
    index_params : dict
        Keyword arguments of :class:`~anomaly_ssl.index.VectorIndex`.
    """

    def __init__(self, k: int, min_cluster: int, duplicate_radius: float, index_params: dict) -> None:
        self.k = k
        self.min_cluster = min_cluster
        self.duplicate_radius = duplicate_radius
        self.index_params = index_params

    def build(
        self,
        vectors: np.ndarray,
        weights: np.ndarray,
        index_bytes: np.ndarray | None = None,
        index_meta: dict | None = None,
    ) -> NeighborGraph:
        """Index distinct vectors (float32 (u, d), sorted by row key) with int64 weights (u,)."""
        self.vectors, self.weights = vectors, weights.astype(np.int64)
        self.keys = _row_keys(vectors)
        self.copy_tol = _copy_tolerance(self.index_params["metric"], vectors)
        if index_bytes is not None and index_meta is not None:
            self.index = VectorIndex.from_bytes(index_bytes, index_meta, gpu=self.index_params["gpu"])
        else:
            self.index = VectorIndex(**self.index_params).build(vectors)
        return self

    def lookup(self, Z: np.ndarray) -> np.ndarray:
        """Row in ``vectors`` identical to each query, or -1; int64 shape (m,)."""
        q = _row_keys(Z)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return np.where(self.keys[pos] == q, pos, -1).astype(np.int64)

    def neighbors(
        self, Z: np.ndarray, own: np.ndarray, self_in_ref: np.ndarray, drop_own: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Neighbours of each query with their effective weights, truncated to mass ``k``.

        Parameters
        ----------
        Z : ndarray of float32, shape (m, d)
            Prepared queries (normalised for cosine).
        own : ndarray of int64, shape (m,)
            The query's exact-duplicate row in ``vectors`` (-1 if none).
        self_in_ref : ndarray of bool, shape (m,)
            Whether the query itself is one of the reference points (its own copy
            is then removed from its group's weight).
        drop_own : bool
            Ignore the query's exact-duplicate group entirely (whatever its size).

        Returns
        -------
        D : ndarray of float64, shape (m, K)
            Ascending distances.
        nbr : ndarray of int64, shape (m, K)
            Rows of ``vectors``.
        take : ndarray of float64, shape (m, K)
            Neighbour mass used per column; each row sums to ``k`` unless fewer
            eligible neighbours exist.
        """
        u = len(self.vectors)
        extra = 1 if self.duplicate_radius <= 0 else max(self.min_cluster, 1)
        K = min(u, self.k + extra)
        D32, nbr = self.index.search(Z, K)
        D = D32.astype(np.float64)
        W = self.weights[nbr].astype(np.float64)  # (m, K)
        is_own = nbr == own[:, None]  # (m, K)
        D[is_own] = 0.0  # exact copies: remove float noise of the BLAS distance expansion
        D[self.copy_tol >= D] = 0.0  # near-copies within float noise are copies too
        if self.min_cluster > 1:
            group = is_own | (self.duplicate_radius >= D) if self.duplicate_radius > 0 else is_own
            mass = (W * group).sum(axis=1)  # (m,) the query's own cluster, itself included
            W[group & (mass < self.min_cluster)[:, None]] = 0.0
        W -= is_own * self_in_ref[:, None]
        if drop_own:
            W[is_own] = 0.0
        np.maximum(W, 0.0, out=W)
        cum = np.cumsum(W, axis=1)
        take = np.clip(self.k - (cum - W), 0.0, W)
        return D, nbr, take


def _copy_tolerance(metric: str, vectors: np.ndarray) -> float:
    """Largest distance still taken as "the same vector" (float noise of the metric).

    A copy of a training sequence embedded in another batch differs from its
    training embedding by ~1e-7 per coordinate.
    """
    if metric == "cosine":
        return 1e-5  # 1 - cos of unit vectors; float32 noise is ~1e-7
    # l2 through the BLAS expansion |a|^2 + |b|^2 - 2ab: the noise grows with the norms
    norms = np.linalg.norm(vectors[: min(len(vectors), 1000)], axis=1)
    return 1e-3 * float(np.median(norms)) if len(norms) else 0.0


def aggregate_distances(D: np.ndarray, take: np.ndarray, how: str) -> np.ndarray:
    """kNN score from weighted neighbours: weighted mean or k-th distance, float64 (m,)."""
    mass = take.sum(axis=1)
    if how == "mean":
        out = (take * D).sum(axis=1) / np.maximum(mass, 1e-300)
    else:
        last = D.shape[1] - 1 - np.argmax((take > 0)[:, ::-1], axis=1)
        out = D[np.arange(len(D)), last]
    # no eligible neighbour at all (everything excluded): the farthest searched distance
    return np.where(mass > 0, out, D[:, -1])


class GraphDetector(BaseDetector):
    """Shared fit/score logic of the neighbour-graph detectors (see the module docstring).

    Parameters
    ----------
    k : int
        Number of neighbours.
    metric : {'cosine', 'l2'}
    index_kind : {'auto', 'flat', 'pruned', 'ivf', 'hnsw'}
    exact_max : int
        Largest reference searched exactly with ``index_kind='auto'``.
    gpu : bool
        Build the faiss index on the GPU (decide with ``use_faiss_gpu``).
    reference_trim : float
        Share of the pool, highest scores first, left out of the reference per
        trimming round (0 = no trimming).
    trim_iterations : int
        Trimming rounds when ``reference_trim > 0``.
    min_cluster_size : float
        A duplicate group smaller than this (points; a share of the pool if < 1)
        is not its own neighbour.  0 = plain kNN.
    duplicate_radius : float
        Points closer than this to a query belong to its group (0 = exact copies).
    seed : int
        Seed of the approximate index (IVF k-means, recall sample).
    """

    def __init__(
        self,
        k: int = 10,
        metric: Literal["cosine", "l2"] = "cosine",
        index_kind: Literal["auto", "flat", "pruned", "ivf", "hnsw"] = "auto",
        exact_max: int = 100_000,
        gpu: bool = False,
        reference_trim: float = 0.0,
        trim_iterations: int = 1,
        min_cluster_size: float = 0.01,
        duplicate_radius: float = 0.0,
        seed: int = 0,
        contamination: float = 0.03,
        threshold: str = "contamination",
        threshold_quantile: float = 0.99,
        threshold_z: float = 3.5,
    ) -> None:
        super().__init__(contamination, threshold, threshold_quantile, threshold_z)
        self.k = k
        self.metric = metric
        self.index_kind = index_kind
        self.exact_max = exact_max
        self.gpu = gpu
        self.reference_trim = reference_trim
        self.trim_iterations = trim_iterations
        self.min_cluster_size = min_cluster_size
        self.duplicate_radius = duplicate_radius
        self.seed = seed

    # ---------------------------------------------------------------- checks
    def _check_params(self) -> None:
        if not isinstance(self.k, int | np.integer) or self.k < 1:
            raise ConfigError(f"{type(self).__name__}: k must be an integer >= 1, got {self.k!r}")
        if self.metric not in ("cosine", "l2"):
            raise ConfigError(f"{type(self).__name__}: metric must be 'cosine' or 'l2', got {self.metric!r}")
        if not 0.0 <= self.reference_trim < 0.5:
            raise ConfigError(f"reference_trim must be in [0, 0.5), got {self.reference_trim}")
        if self.trim_iterations < 1:
            raise ConfigError(f"trim_iterations must be >= 1, got {self.trim_iterations}")
        if self.min_cluster_size < 0:
            raise ConfigError(f"min_cluster_size must be >= 0, got {self.min_cluster_size}")
        if self.duplicate_radius < 0:
            raise ConfigError(f"duplicate_radius must be >= 0, got {self.duplicate_radius}")

    def _validate(self, X: Any, fitting: bool) -> np.ndarray:
        n_features = None if fitting else getattr(self, "n_features_in_", None)
        arr = check_matrix(X, "X", n_features, dtype=np.float32)
        if fitting:
            self.n_features_in_ = arr.shape[1]
        return arr

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        Z = as_float32_matrix(X)
        Z = l2_normalize(Z) if self.metric == "cosine" else Z
        return np.ascontiguousarray(Z + np.float32(0.0))  # -0.0 -> 0.0 so equal rows have equal bytes

    def _index_params(self) -> dict:
        return {
            "metric": self.metric,
            "kind": self.index_kind,
            "exact_max": self.exact_max,
            "gpu": bool(self.gpu),
            "seed": self.seed,
            "recall_k": self.k + 1,
        }

    # ------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any = None, reference_mask: np.ndarray | None = None) -> GraphDetector:
        """Fit on the pool ``X`` (float, shape (n, d)); returns ``self``.

        Parameters
        ----------
        reference_mask : ndarray of bool, shape (n,), optional
            ``True`` for points allowed to serve as neighbours (e.g. those a robust
            first-stage detector calls normal).  Every point is still scored.
        """
        return super().fit(X, y, reference_mask=reference_mask)

    def _fit(self, X: np.ndarray, reference_mask: np.ndarray | None = None) -> np.ndarray:
        Z = self._prepare(X)
        n = len(Z)
        mask = self._check_mask(reference_mask, n)
        keys = _row_keys(Z)
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        pool_vectors = Z[first]  # distinct rows, sorted by key
        m = self.min_cluster_size
        self.min_cluster_ = math.ceil(m * n) if 0 < m < 1 else int(m)
        rounds = self.trim_iterations + 1 if self.reference_trim > 0 else 1
        ref = mask.copy()
        for r in range(rounds):
            self._build_reference(pool_vectors, inverse, ref)
            scores, trim_stat = self._score_pool(pool_vectors, inverse, ref)
            if r == rounds - 1:
                break
            ref = mask & ~self._trimmed(trim_stat)
        self.reference_size_ = int(ref.sum())
        self.reference_mask_ = ref
        log.info(
            "%s: %d points (%d distinct), reference %d, min_cluster %d",
            type(self).__name__,
            n,
            len(first),
            self.reference_size_,
            self.min_cluster_,
        )
        return scores

    def _check_mask(self, reference_mask: np.ndarray | None, n: int) -> np.ndarray:
        if reference_mask is None:
            mask = np.ones(n, dtype=bool)
        else:
            mask = np.asarray(reference_mask)
            if mask.shape != (n,) or mask.dtype != bool:
                raise DataError(
                    f"reference_mask must be a boolean array of shape ({n},), got {mask.dtype} {mask.shape}"
                )
        if mask.sum() < self.k + 1:
            raise DataError(
                f"{type(self).__name__}: k={self.k} needs at least {self.k + 1} reference points, "
                f"got {int(mask.sum())}; lower k or pass more data"
            )
        return mask

    def _trimmed(self, scores: np.ndarray) -> np.ndarray:
        """Points left out of the reference: the top ``reference_trim`` share (ties kept together)."""
        cut = np.quantile(scores, 1.0 - self.reference_trim)
        drop = scores >= cut
        if drop.sum() > 2 * self.reference_trim * len(scores):
            drop = scores > cut  # a huge tie at the cut: do not drop it wholesale
        return drop

    def _build_reference(self, pool_vectors: np.ndarray, inverse: np.ndarray, ref: np.ndarray) -> None:
        weights = np.bincount(inverse[ref], minlength=len(pool_vectors))
        keep = weights > 0
        self._graph = NeighborGraph(self.k, self.min_cluster_, self.duplicate_radius, self._index_params())
        self._graph.build(np.ascontiguousarray(pool_vectors[keep]), weights[keep])
        self._pool_to_ref = np.where(keep, np.cumsum(keep) - 1, -1)
        self._after_build()

    def _score_pool(
        self, pool_vectors: np.ndarray, inverse: np.ndarray, ref: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Training scores and trimming statistic, shape (n,) each.

        One query per (distinct vector, in reference) pair, broadcast to the pool.
        """
        pair = inverse * 2 + ref  # (n,)
        pairs, pair_inverse = np.unique(pair, return_inverse=True)
        pair_inverse = pair_inverse.ravel()
        groups, in_ref = pairs // 2, (pairs % 2).astype(bool)
        Q = np.ascontiguousarray(pool_vectors[groups])
        D, nbr, take = self._graph.neighbors(Q, self._pool_to_ref[groups], in_ref)
        scores = self._aggregate(D, nbr, take)
        return scores[pair_inverse], self._trim_statistic(D, nbr, take, scores)[pair_inverse]

    def _score(self, X: np.ndarray) -> np.ndarray:
        Z = self._prepare(X)
        own = self._own_rows(Z)
        D, nbr, take = self._graph.neighbors(Z, own, np.zeros(len(Z), dtype=bool))
        return self._aggregate(D, nbr, take)

    def _own_rows(self, Z: np.ndarray) -> np.ndarray:
        """Each query's copy among the reference vectors, or -1.

        Exact byte equality first; otherwise the nearest reference vector if it is
        within float noise (a copy of a training sequence embedded in another
        batch differs from its training embedding by ~1e-7).
        """
        own = self._graph.lookup(Z)
        miss = np.flatnonzero(own < 0)
        if len(miss):
            D, nbr = self._graph.index.search(np.ascontiguousarray(Z[miss]), 1)
            close = D[:, 0] <= self._graph.copy_tol
            own[miss[close]] = nbr[close, 0]
        return own

    # ---------------------------------------------------------- subclass hooks
    def _after_build(self) -> None:
        """Precompute reference-side quantities (LOF's k-distances)."""

    def _aggregate(self, D: np.ndarray, nbr: np.ndarray, take: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _trim_statistic(
        self, D: np.ndarray, nbr: np.ndarray, take: np.ndarray, scores: np.ndarray
    ) -> np.ndarray:
        """What reference trimming ranks by (default: the detector's own scores)."""
        return scores

    # ----------------------------------------------------------------- state
    def _get_state_arrays(self) -> tuple[dict, dict]:
        g = self._graph
        arrays = {"ref_vectors": g.vectors, "ref_weights": g.weights, "reference_mask": self.reference_mask_}
        meta = {"min_cluster": self.min_cluster_, "index": g.index.meta()}
        if g.index.kind_ != "flat":  # approximate indexes are stored as built, so scores match exactly
            arrays["index_bytes"] = g.index.to_bytes()
        return arrays, meta

    def _set_state_arrays(self, arrays: dict, meta: dict) -> None:
        self.min_cluster_ = int(meta["min_cluster"])
        self.reference_mask_ = np.asarray(arrays["reference_mask"], dtype=bool)
        self.reference_size_ = int(self.reference_mask_.sum())
        self._graph = NeighborGraph(self.k, self.min_cluster_, self.duplicate_radius, self._index_params())
        self._graph.build(
            np.ascontiguousarray(arrays["ref_vectors"], dtype=np.float32),
            np.asarray(arrays["ref_weights"]),
            arrays.get("index_bytes"),
            meta["index"] if "index_bytes" in arrays else None,
        )
        self._after_build()


class KNNDetector(GraphDetector):
    """kNN distance detector: the mean (or k-th) distance to the k nearest reference points.

    Parameters are those of :class:`GraphDetector`, plus

    aggregate : {'mean', 'kth'}
        Mean of the k neighbour distances, or the k-th.
    """

    def __init__(self, k: int = 10, aggregate: Literal["mean", "kth"] = "mean", **kwargs: Any) -> None:
        super().__init__(k=k, **kwargs)
        self.aggregate = aggregate

    def _check_params(self) -> None:
        super()._check_params()
        if self.aggregate not in ("mean", "kth"):
            raise ConfigError(f"KNNDetector: aggregate must be 'mean' or 'kth', got {self.aggregate!r}")

    def _aggregate(self, D: np.ndarray, nbr: np.ndarray, take: np.ndarray) -> np.ndarray:
        return aggregate_distances(D, take, self.aggregate)
