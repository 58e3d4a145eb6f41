"""Query strategies: which pool rows go to annotators next.

Follows small-text's query protocol: ``strategy.query(inputs, indices_unlabeled,
indices_labeled, n)`` returns **row indices relative to the pool** (positions in
the arrays of :class:`QueryInputs`, not sequence ids), unique, drawn only from
``indices_unlabeled``, ``min(n, len(indices_unlabeled))`` of them; an empty pool
raises :class:`EmptyPoolError`, a pool with nothing left to label
:class:`PoolExhaustedError`.  After a query every strategy keeps its per-row
query utility in ``last_scores_`` (shape ``(n_pool,)``, higher = picked
earlier, NaN for rows that were not eligible) for inspection.  Strategies are
deterministic given a seed: ties are broken by the lower row index, and random
draws come from a generator the caller passes or one the strategy owns.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .al_errors import EmptyPoolError, PoolExhaustedError, QueryInputError
from .diversity import k_center_greedy, l2_normalize, nearest_sq_distances

logger = logging.getLogger(__name__)

#: consistency constant that makes the MAD estimate the standard deviation of a normal
_MAD_TO_STD = 1.4826


@dataclass
class QueryInputs:
    """Everything a strategy may look at, one entry per pool row.

    Parameters
    ----------
    scores : ndarray of float, shape (n_pool,), optional
        Anomaly score per row (higher = more anomalous): the ensemble score, or
        the blended score once a head exists.
    threshold : float, optional
        The unsupervised decision threshold on ``scores`` (the detector's ``threshold_``).
    scale : float, optional
        Robust scale of ``scores`` used to express distances to ``threshold``;
        ``None`` = :func:`robust_scale` of ``scores``.
    probas : ndarray of float, shape (n_pool,), optional
        The supervised head's P(anomaly) per row, when a head exists.
    proba_threshold : float
        The head's decision boundary on ``probas`` (0.5, or the head's ``threshold_``).
    embeddings : ndarray of float, shape (n_pool, d), optional
        Sequence embeddings; required by :class:`DiverseSampler`.
    n_pool : int, optional
        Pool size when no array is given (e.g. :class:`RandomSampler` alone).
    """

    scores: np.ndarray | None = None
    threshold: float | None = None
    scale: float | None = None
    probas: np.ndarray | None = None
    proba_threshold: float = 0.5
    embeddings: np.ndarray | None = None
    n_pool: int | None = None

    def __post_init__(self) -> None:
        sizes: dict[str, int] = {}
        for name in ("scores", "probas"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim != 1:
                raise QueryInputError(f"QueryInputs.{name} must be 1-D (n_pool,), got shape {arr.shape}")
            _require_finite(arr, f"QueryInputs.{name}")
            setattr(self, name, arr)
            sizes[name] = len(arr)
        if self.embeddings is not None:
            emb = np.asarray(self.embeddings, dtype=np.float32)
            if emb.ndim != 2:
                raise QueryInputError(
                    f"QueryInputs.embeddings must be 2-D (n_pool, d), got shape {emb.shape}"
                )
            _require_finite(emb, "QueryInputs.embeddings")
            self.embeddings = emb
            sizes["embeddings"] = len(emb)
        if self.n_pool is not None:
            sizes["n_pool"] = int(self.n_pool)
        if len(set(sizes.values())) > 1:
            raise QueryInputError(f"QueryInputs arrays disagree on the pool size: {sizes}")
        if not sizes:
            raise QueryInputError("QueryInputs needs scores, probas, embeddings or n_pool")
        self.n_pool = next(iter(sizes.values()))
        if self.probas is not None and ((self.probas < 0).any() or (self.probas > 1).any()):
            raise QueryInputError("QueryInputs.probas must lie in [0, 1]")
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise QueryInputError(f"QueryInputs.scale must be a finite number > 0, got {self.scale}")


def _require_finite(arr: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(arr), -1).any(axis=1))
        raise QueryInputError(
            f"{what} has {len(rows)} non-finite row(s) (first: row {int(rows[0])}); "
            "fill or drop them before querying"
        )


def robust_scale(values: np.ndarray) -> float:
    """A robust spread of ``values``: 1.4826·MAD, else IQR/1.349, else std, else 1.

    Parameters
    ----------
    values : ndarray of float, shape (n,)

    Returns
    -------
    float
        Always finite and > 0, so it can divide.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return 1.0
    mad = _MAD_TO_STD * float(np.median(np.abs(x - np.median(x))))
    if mad > 0:
        return mad
    q75, q25 = np.percentile(x, [75, 25])
    if q75 > q25:
        return float(q75 - q25) / 1.349
    std = float(np.std(x))
    return std if std > 0 else 1.0


def _as_index_array(values: Any, name: str, n_pool: int) -> np.ndarray:
    raw = np.asarray([] if values is None else values)
    if raw.size and raw.dtype.kind not in "iu":
        raise QueryInputError(f"{name} must hold integer pool rows, got dtype {raw.dtype}")
    idx = raw.astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n_pool):
        bad = idx[(idx < 0) | (idx >= n_pool)][0]
        raise QueryInputError(f"{name} holds row {int(bad)}, outside the pool [0, {n_pool})")
    if np.unique(idx).size != idx.size:
        raise QueryInputError(f"{name} holds duplicate rows")
    return idx


def _top_rows(rows: np.ndarray, utility: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` rows of highest utility; ties go to the lower row index."""
    order = np.lexsort((rows, -utility))  # primary: -utility, secondary: row
    return rows[order[:k]]


class QueryStrategy(ABC):
    """Base class: validates the pool, calls :meth:`_select`, records ``last_scores_``.

    Parameters
    ----------
    seed : int
        Seed of the strategy's own generator, used when ``query`` gets no ``rng``.
    """

    name: ClassVar[str] = "base"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.last_scores_: np.ndarray | None = None
        self._rng: np.random.Generator | None = None

    def query(
        self,
        inputs: QueryInputs,
        indices_unlabeled: np.ndarray,
        indices_labeled: np.ndarray,
        n: int = 10,
        *,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """Pick up to ``n`` unlabelled rows to send to annotators.

        Parameters
        ----------
        inputs : QueryInputs
            Per-row scores/probabilities/embeddings of the whole pool.
        indices_unlabeled : ndarray of int, shape (n_unlabeled,)
            Pool rows that may be queried (positions in ``inputs`` arrays).
        indices_labeled : ndarray of int, shape (n_labeled,)
            Pool rows already labelled (never returned; used by diversity).
        n : int
            How many rows to return at most.
        rng : numpy Generator or int, optional
            Source of randomness; ``None`` = the strategy's own generator seeded with ``seed``.

        Returns
        -------
        ndarray of int64, shape (min(n, n_unlabeled),)
            Unique row indices **relative to the pool**, all from
            ``indices_unlabeled``, most wanted first.

        Raises
        ------
        EmptyPoolError
            The pool has no rows.
        PoolExhaustedError
            ``indices_unlabeled`` is empty.
        QueryInputError
            Bad indices (out of range, duplicated, labelled and unlabelled at once),
            ``n < 1``, or an input the strategy needs is missing.
        """
        n_pool = int(inputs.n_pool or 0)
        if n_pool == 0:
            raise EmptyPoolError(f"{self.name}: the pool is empty; score some sequences before querying")
        unlabeled = _as_index_array(indices_unlabeled, "indices_unlabeled", n_pool)
        labeled = _as_index_array(indices_labeled, "indices_labeled", n_pool)
        if np.intersect1d(unlabeled, labeled).size:
            raise QueryInputError("indices_unlabeled and indices_labeled share rows")
        if n < 1:
            raise QueryInputError(f"{self.name}: n must be >= 1, got {n}")
        if unlabeled.size == 0:
            raise PoolExhaustedError(
                f"{self.name}: no unlabelled rows left in the pool of {n_pool} "
                f"({labeled.size} labelled); nothing more to query"
            )
        k = min(int(n), unlabeled.size)
        utility = self._utility(inputs, unlabeled, self._generator(rng))  # (n_unlabeled,)
        self.last_scores_ = np.full(n_pool, np.nan)
        self.last_scores_[unlabeled] = utility
        picks = self._select(inputs, unlabeled, labeled, utility, k)
        assert picks.size == k and np.unique(picks).size == k and np.isin(picks, unlabeled).all()
        logger.debug("%s picked %d of %d unlabelled rows", self.name, k, unlabeled.size)
        return picks.astype(np.int64)

    def _generator(self, rng: np.random.Generator | int | None) -> np.random.Generator:
        if isinstance(rng, np.random.Generator):
            return rng
        if rng is not None:
            return np.random.default_rng(rng)
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        return self._rng

    @abstractmethod
    def _utility(
        self, inputs: QueryInputs, unlabeled: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Query utility of each unlabelled row, shape (n_unlabeled,); higher = wanted more."""

    def _select(
        self,
        inputs: QueryInputs,
        unlabeled: np.ndarray,
        labeled: np.ndarray,
        utility: np.ndarray,
        k: int,
    ) -> np.ndarray:
        return _top_rows(unlabeled, utility, k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


class UncertaintySampler(QueryStrategy):
    """Rows nearest the decision boundary.

    With head probabilities: utility = −|p − proba_threshold|.  Without a head:
    utility = −|score − threshold| / scale, the distance to the unsupervised
    threshold in robust-standardised units (``scale`` from :class:`QueryInputs`
    or :func:`robust_scale` of all pool scores).
    """

    name = "uncertainty"

    def _utility(self, inputs: QueryInputs, unlabeled: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return -boundary_distance(inputs)[unlabeled]


def boundary_distance(inputs: QueryInputs) -> np.ndarray:
    """Distance of every pool row to the decision boundary, shape (n_pool,), float64.

    ``|p − proba_threshold|`` when ``inputs.probas`` is set, else
    ``|score − threshold| / scale``.
    """
    if inputs.probas is not None:
        return np.abs(inputs.probas - inputs.proba_threshold)
    if inputs.scores is None:
        raise QueryInputError("uncertainty sampling needs QueryInputs.probas or QueryInputs.scores")
    if inputs.threshold is None:
        raise QueryInputError(
            "uncertainty sampling on unsupervised scores needs QueryInputs.threshold "
            "(pass the detector's threshold_)"
        )
    scale = inputs.scale if inputs.scale is not None else robust_scale(inputs.scores)
    return np.abs(inputs.scores - float(inputs.threshold)) / scale


class TopKSampler(QueryStrategy):
    """Rows with the highest anomaly score (exploitation: confirms alerts).

    Utility = ``scores`` (or ``probas`` when no scores are given).
    """

    name = "topk"

    def _utility(self, inputs: QueryInputs, unlabeled: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        values = inputs.scores if inputs.scores is not None else inputs.probas
        if values is None:
            raise QueryInputError("top-k sampling needs QueryInputs.scores (or probas)")
        return values[unlabeled]


class RandomSampler(QueryStrategy):
    """Uniformly random rows (the baseline); utility = a uniform random key per row."""

    name = "random"

    def _utility(self, inputs: QueryInputs, unlabeled: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.random(unlabeled.size)


class DiverseSampler(QueryStrategy):
    """Borderline rows, de-duplicated in embedding space.

    Rule: take the ``candidate_factor × n`` rows a base strategy wants most
    (uncertainty by default), then run greedy k-center (farthest-first) on their
    L2-normalised embeddings: each next pick is the candidate whose nearest
    already-covered point is farthest away, ties going to the more wanted
    candidate.  Covered points are the picks so far and, with
    ``cover_labeled=True``, the already labelled rows, so a batch never holds
    two copies of one bot while a distinct candidate remains, nor re-asks about a
    pattern that is already labelled.  With nothing covered yet, the first pick
    is the most wanted candidate.  The nearest-labelled search uses faiss
    (``IndexFlatL2`` on normalised vectors) or its exact numpy reference.

    Parameters
    ----------
    candidate_factor : int
        Candidates considered per requested row (``QueryConfig.candidate_factor``).
    base : str
        Strategy that ranks the candidates: ``uncertainty`` or ``topk``.
    cover_labeled : bool
        Count labelled rows as already covered.
    use_faiss : bool, optional
        ``None`` = faiss when installed, else numpy; ``True`` = require faiss.
    seed : int
    """

    name = "diverse"

    def __init__(
        self,
        candidate_factor: int = 5,
        base: str = "uncertainty",
        cover_labeled: bool = True,
        use_faiss: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        if candidate_factor < 1:
            raise QueryInputError(f"candidate_factor must be >= 1, got {candidate_factor}")
        if base not in ("uncertainty", "topk"):
            raise QueryInputError(f"DiverseSampler base must be 'uncertainty' or 'topk', got {base!r}")
        self.candidate_factor = candidate_factor
        self.base = base
        self.cover_labeled = cover_labeled
        self.use_faiss = use_faiss
        self.last_candidates_: np.ndarray | None = None

    def _utility(self, inputs: QueryInputs, unlabeled: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        base = UncertaintySampler if self.base == "uncertainty" else TopKSampler
        return base(seed=self.seed)._utility(inputs, unlabeled, rng)

    def _select(
        self,
        inputs: QueryInputs,
        unlabeled: np.ndarray,
        labeled: np.ndarray,
        utility: np.ndarray,
        k: int,
    ) -> np.ndarray:
        if inputs.embeddings is None:
            raise QueryInputError("diverse sampling needs QueryInputs.embeddings (n_pool, d)")
        m = min(unlabeled.size, self.candidate_factor * k)
        candidates = _top_rows(unlabeled, utility, m)  # most wanted first
        self.last_candidates_ = candidates
        emb = l2_normalize(inputs.embeddings[candidates])  # (m, d)
        covered = np.full(m, np.inf)  # squared distance to the nearest covered point
        if self.cover_labeled and labeled.size:
            ref = l2_normalize(inputs.embeddings[labeled])
            covered = nearest_sq_distances(emb, ref, use_faiss=self.use_faiss)
        return candidates[k_center_greedy(emb, k, covered)]

    def __repr__(self) -> str:
        return (
            f"DiverseSampler(candidate_factor={self.candidate_factor}, base={self.base!r}, "
            f"seed={self.seed})"
        )



STRATEGIES: dict[str, type[QueryStrategy]] = {
    "uncertainty": UncertaintySampler,
    "diverse": DiverseSampler,
    "topk": TopKSampler,
    "random": RandomSampler,
}


def make_strategy(name: str, **params: Any) -> QueryStrategy:
    """Build a strategy by name (``uncertainty``, ``diverse``, ``topk``, ``random``).

    Raises
    ------
    QueryInputError
        Unknown name, or a parameter the strategy does not take.
    """
    if name not in STRATEGIES:
        raise QueryInputError(f"unknown query strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    try:
        return STRATEGIES[name](**params)
    except TypeError as exc:
        raise QueryInputError(f"query strategy {name!r}: {exc}") from exc


def strategy_from_config(query_config: Any, seed: int = 0) -> QueryStrategy:
    """Build the strategy a :class:`~anomaly_ssl.config.QueryConfig` names."""
    params: dict[str, Any] = {"seed": seed}
    if query_config.strategy == "diverse":
        params["candidate_factor"] = query_config.candidate_factor
    return make_strategy(query_config.strategy, **params)
