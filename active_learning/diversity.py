"""Diversity in embedding space: greedy k-center and nearest-neighbour distances.

The numeric core of :class:`~active_learning.strategies.DiverseSampler`:
:func:`l2_normalize` rows, :func:`k_center_greedy` (farthest-first selection
given each candidate's distance to already-covered points) and
:func:`nearest_sq_distances`, the squared distance from each query to its
nearest reference, searched with faiss (``IndexFlatL2``) when installed or with
the exact chunked numpy reference beside it (the two must agree).  faiss is
imported lazily; requiring it when it is missing raises
:class:`~active_learning.al_errors.MissingDependencyError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .al_errors import MissingDependencyError


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); float32, C-contiguous, shape as ``x``."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0))


def k_center_greedy(emb: np.ndarray, k: int, covered: np.ndarray) -> np.ndarray:
    """Greedy farthest-first selection of ``k`` rows of ``emb``.

    Parameters
    ----------
    emb : ndarray of float32, shape (m, d)
        Candidate vectors, most wanted first (ties go to the earlier row).
    k : int
        How many to pick (``k <= m``).
    covered : ndarray of float, shape (m,)
        Squared distance of each candidate to the nearest already-covered point;
        ``inf`` everywhere = nothing covered (the first pick is row 0).

    Returns
    -------
    ndarray of int64, shape (k,)
        Positions in ``emb``, in pick order.
    """
    m = len(emb)
    assert k <= m
    dist = np.asarray(covered, dtype=np.float64).copy()
    sq_norms = np.einsum("ij,ij->i", emb, emb).astype(np.float64)  # (m,)
    picked = np.empty(k, dtype=np.int64)
    taken = np.zeros(m, dtype=bool)
    for step in range(k):
        free = np.where(taken, -np.inf, dist)
        j = int(np.argmax(free))  # first maximum = most wanted among equals
        picked[step] = j
        taken[j] = True
        # ||e_i - e_j||^2 for all i, one matrix-vector product
        d_new = sq_norms + sq_norms[j] - 2.0 * (emb @ emb[j]).astype(np.float64)
        dist = np.minimum(dist, np.maximum(d_new, 0.0))
    return picked


def nearest_sq_distances(
    queries: np.ndarray, references: np.ndarray, *, use_faiss: bool | None = None
) -> np.ndarray:
    """Squared L2 distance from each query to its nearest reference.

    Parameters
    ----------
    queries : ndarray of float32, shape (m, d)
    references : ndarray of float32, shape (r, d), r >= 1
    use_faiss : bool, optional
        ``None`` = faiss when installed, else the exact numpy reference;
        ``True`` = faiss or :class:`MissingDependencyError`; ``False`` = numpy.

    Returns
    -------
    ndarray of float64, shape (m,)
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    r = np.ascontiguousarray(references, dtype=np.float32)
    faiss = _import_faiss(required=bool(use_faiss)) if use_faiss is not False else None
    if faiss is None:
        return _nearest_sq_distances_numpy(q, r)
    index = faiss.IndexFlatL2(r.shape[1])
    index.add(r)
    dist, _ = index.search(q, 1)  # (m, 1)
    return np.maximum(dist[:, 0].astype(np.float64), 0.0)


def _nearest_sq_distances_numpy(q: np.ndarray, r: np.ndarray, chunk: int = 4096) -> np.ndarray:
    out = np.empty(len(q), dtype=np.float64)
    r64 = r.astype(np.float64)
    r_sq = np.einsum("ij,ij->i", r64, r64)  # (r,)
    for start in range(0, len(q), chunk):
        block = q[start : start + chunk].astype(np.float64)  # (c, d)
        d = np.einsum("ij,ij->i", block, block)[:, None] + r_sq[None, :] - 2.0 * block @ r64.T  # (c, r)
        out[start : start + chunk] = np.maximum(d.min(axis=1), 0.0)
    return out


def _import_faiss(required: bool) -> Any:
    try:
        import faiss
    except ImportError as exc:
        if required:
            raise MissingDependencyError(
                "faiss is not installed; install the extra: pip install 'anomaly-ssl[cpu]' "
                "(or [gpu]), or pass use_faiss=False for the exact numpy search"
            ) from exc
        return None
    return faiss
