"""Local-density (LOF-style) detector on the contamination-robust neighbour graph.

The local outlier factor compares a point's local reachability density with
that of its neighbours: ``LOF(p) = mean_o lrd(o) / lrd(p)`` with ``lrd(p) = 1 /
(mean_o max(k-distance(o), d(p, o)) + eps)`` over p's k nearest reference points
o (weighted by multiplicity).  Higher = more anomalous; about 1 inside a
homogeneous cluster.  The graph, its duplicate handling, reference trimming and
self-exclusion are those of :mod:`.knn`.  Two adaptations to contaminated,
duplicate-heavy pools: exact duplicates make k-distances 0 and densities
infinite, so reachability distances get a floor ``eps_ = eps_factor *`` (median
positive k-distance of the reference); and reference trimming ranks points by
their kNN distance (``trim_by='knn'``), because LOF's local ratio calls a tight
group of anomalies normal and would keep it in the reference.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..errors import ConfigError
from .knn import GraphDetector, aggregate_distances


class DensityDetector(GraphDetector):
    """LOF-style density-ratio detector; see :class:`~anomaly_ssl.detectors.knn.GraphDetector`.

    Parameters
    ----------
    k : int
        Number of neighbours.
    eps_factor : float
        Floor of mean reachability distances, relative to the median positive
        k-distance of the reference (bounds density ratios near exact duplicates).
    trim_by : {'knn', 'self'}
        What reference trimming ranks by: the mean kNN distance, or the LOF score.
    **kwargs
        The remaining :class:`GraphDetector` parameters.

    Attributes
    ----------
    eps_ : float
        The reachability floor in distance units.
    """

    def __init__(
        self, k: int = 10, eps_factor: float = 0.1, trim_by: Literal["knn", "self"] = "knn", **kwargs: Any
    ) -> None:
        super().__init__(k=k, **kwargs)
        self.eps_factor = eps_factor
        self.trim_by = trim_by

    def _check_params(self) -> None:
        super()._check_params()
        if self.eps_factor <= 0:
            raise ConfigError(f"DensityDetector: eps_factor must be > 0, got {self.eps_factor}")
        if self.trim_by not in ("knn", "self"):
            raise ConfigError(f"DensityDetector: trim_by must be 'knn' or 'self', got {self.trim_by!r}")

    def _after_build(self) -> None:
        g = self._graph
        u = len(g.vectors)
        # k-distance of each distinct reference vector, seen as one of its own reference points
        D, nbr, take = g.neighbors(g.vectors, np.arange(u, dtype=np.int64), np.ones(u, dtype=bool))
        self._kdist = aggregate_distances(D, take, "kth")  # (u,)
        positive = self._kdist[self._kdist > 0]
        self.eps_ = float(self.eps_factor * np.median(positive)) if positive.size else 1e-12
        self._lrd = 1.0 / (self._mean_reach(D, nbr, take) + self.eps_)  # (u,)

    def _mean_reach(self, D: np.ndarray, nbr: np.ndarray, take: np.ndarray) -> np.ndarray:
        reach = np.maximum(self._kdist[nbr], D)  # (m, K)
        return (take * reach).sum(axis=1) / np.maximum(take.sum(axis=1), 1e-300)

    def _aggregate(self, D: np.ndarray, nbr: np.ndarray, take: np.ndarray) -> np.ndarray:
        mass = np.maximum(take.sum(axis=1), 1e-300)
        neighbour_lrd = (take * self._lrd[nbr]).sum(axis=1) / mass  # (m,)
        return neighbour_lrd * (self._mean_reach(D, nbr, take) + self.eps_)

    def _trim_statistic(
        self, D: np.ndarray, nbr: np.ndarray, take: np.ndarray, scores: np.ndarray
    ) -> np.ndarray:
        return aggregate_distances(D, take, "mean") if self.trim_by == "knn" else scores
