"""Nearest-neighbour search over float32 vectors: faiss, with an exact numpy reference.

:class:`VectorIndex` wraps faiss.  Sets up to ``exact_max`` vectors are searched
exactly: small ones by a flat (brute-force BLAS) index, larger ones on the CPU by
*pruned* search, an IVF partition searched with a triangle-inequality bound so
that every list that could hold a closer point is scanned (the same neighbours
as flat search, far fewer distance computations on clustered data; queries the
bound cannot prune go to flat search).  Beyond ``exact_max`` an IVF or HNSW
index is used whose recall@k is measured against exact search on a sample of
the indexed vectors and tuned (``nprobe`` / ``efSearch``) until it reaches
``target_recall``.  The GPU is used through the
same code path (``faiss.index_cpu_to_gpu``) when asked; the decision comes from
:func:`anomaly_ssl.device.use_faiss_gpu`, which never falls back silently.
:class:`NumpyIndex` is the brute-force reference with the same API.  Distances
are "higher = farther" for both metrics: Euclidean distance for ``'l2'`` and
``1 - cos`` for ``'cosine'`` (vectors L2-normalised, inner product search).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import ConfigError, DataError, DependencyError, NotFittedError
from .io import atomic_write_with, read_json, write_json

log = logging.getLogger(__name__)

Metric = Literal["l2", "cosine"]
IndexKind = Literal["auto", "flat", "pruned", "ivf", "hnsw"]
#: largest k faiss GPU indexes can return
GPU_MAX_K = 2048
#: lists probed by the first pass of pruned search (its k-th distance bounds the second pass)
PRUNED_FIRST_PROBE = 8
#: a query whose bound leaves more than this share of the vectors to scan goes to flat search
#: (scanning IVF lists costs about ten times a BLAS distance per vector)
PRUNED_MAX_SCAN = 0.05
#: lists of the pruned search's partition per sqrt(n) vectors
PRUNED_LISTS_PER_SQRT_N = 2.0
#: after this many queries, if over 90% went to flat search, the rest go there directly
PRUNED_GIVE_UP_AFTER = 1024
#: centroid distances held per block of pruned search (queries per block = this / nlist, <= 2048)
PRUNED_BLOCK_ENTRIES = 1 << 22


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a declared extra
        raise DependencyError(
            "faiss is not installed; pip install 'anomaly-ssl[cpu]' (or [gpu] on a CUDA host)"
        ) from None
    return faiss


def as_float32_matrix(X: np.ndarray, name: str = "X", d: int | None = None) -> np.ndarray:
    """Return ``X`` as a C-contiguous float32 (n, d) array after checking it.

    Raises
    ------
    DataError
        If ``X`` is not 2-D, is empty, has the wrong width or holds NaN/inf.
    """
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (n_samples, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {arr.shape}); pass at least one row and one column")
    if d is not None and arr.shape[1] != d:
        raise DataError(f"{name} has {arr.shape[1]} features but the index was built with {d}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise DataError(f"{name} holds NaN or inf values (first at row {bad}); clean or impute them first")
    return arr


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` scaled to unit L2 norm (zero rows stay zero); float32 (n, d)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X / np.maximum(norms, 1e-12), dtype=np.float32)


def _drop_self(D: np.ndarray, nbr: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own id from a (m, k+1) result; drop the last column where it is absent.

    Exact duplicates may tie at distance 0 with the query, so the own id is
    searched for instead of assuming it sits in the first column.
    """
    m = nbr.shape[0]
    is_self = nbr == np.arange(m, dtype=nbr.dtype)[:, None]  # (m, k+1)
    remove = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)  # (m,)
    keep = np.arange(k + 1)[None, :] != remove[:, None]  # (m, k+1), k True per row
    return D[keep].reshape(m, k), nbr[keep].reshape(m, k)


class _BaseIndex:
    """Shared argument checks and the self-exclusion wrapper."""

    metric: Metric
    d_: int
    n_: int

    def _check_metric(self) -> None:
        if self.metric not in ("l2", "cosine"):
            raise ConfigError(f"index metric must be 'l2' or 'cosine', got {self.metric!r}")

    def _prepare(self, X: np.ndarray, name: str, d: int | None = None) -> np.ndarray:
        arr = as_float32_matrix(X, name, d)
        return l2_normalize(arr) if self.metric == "cosine" else arr

    def _check_k(self, k: int, exclude_self: bool) -> None:
        if not hasattr(self, "n_"):
            raise NotFittedError(f"{type(self).__name__} is empty; call build(X) before search")
        available = self.n_ - (1 if exclude_self else 0)
        if not 1 <= k <= available:
            raise DataError(
                f"k={k} neighbours requested but the index holds {self.n_} vectors"
                f"{' (one is the query itself)' if exclude_self else ''}; use 1 <= k <= {available}"
            )

    def _to_distance(self, raw: np.ndarray) -> np.ndarray:
        """faiss raw scores (squared L2 or inner product) to 'higher = farther' distances."""
        if self.metric == "cosine":
            return np.clip(1.0 - raw, 0.0, 2.0).astype(np.float32)
        return np.sqrt(np.maximum(raw, 0.0)).astype(np.float32)

    def search(
        self, Q: np.ndarray, k: int, exclude_self: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed vectors of each query row.

        Parameters
        ----------
        Q : ndarray of float, shape (m, d)
            Queries.  With ``exclude_self=True`` they must be the indexed vectors
            themselves, in the same order.
        k : int
            Neighbours per query.
        exclude_self : bool
            Remove each row's own index from its result (exact duplicates of the
            query are kept: they are real neighbours at distance 0).

        Returns
        -------
        distances : ndarray of float32, shape (m, k)
            Ascending; Euclidean distance (``l2``) or ``1 - cos`` (``cosine``).
        indices : ndarray of int64, shape (m, k)
            Row numbers in the indexed set.
        """
        self._check_k(k, exclude_self)
        q = self._prepare(Q, "queries", self.d_)
        if exclude_self and q.shape[0] != self.n_:
            raise DataError(
                f"exclude_self=True needs the indexed set itself as queries ({self.n_} rows), "
                f"got {q.shape[0]} rows"
            )
        kk = k + 1 if exclude_self else k
        raw, nbr = self._search_raw(q, kk)
        D = self._to_distance(raw)
        nbr = nbr.astype(np.int64, copy=False)
        if exclude_self:
            D, nbr = _drop_self(D, nbr, k)
        return np.ascontiguousarray(D), np.ascontiguousarray(nbr)

    def _search_raw(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class NumpyIndex(_BaseIndex):
    """Exact brute-force search in numpy (float64 arithmetic): the reference for :class:`VectorIndex`.

    Parameters
    ----------
    metric : {'l2', 'cosine'}
    batch_size : int
        Queries per block (memory is ``batch_size * n`` floats).
    """

    def __init__(self, metric: Metric = "l2", batch_size: int = 1024) -> None:
        self.metric = metric
        self.batch_size = batch_size

    def build(self, X: np.ndarray) -> NumpyIndex:
        """Index the rows of ``X`` (float, shape (n, d)); returns ``self``."""
        self._check_metric()
        self._X = self._prepare(X, "X").astype(np.float64)
        self.n_, self.d_ = self._X.shape
        self._sq = (self._X**2).sum(axis=1)
        return self

    def _search_raw(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q64 = q.astype(np.float64)
        out_d = np.empty((len(q), k), dtype=np.float64)
        out_i = np.empty((len(q), k), dtype=np.int64)
        for a in range(0, len(q), self.batch_size):
            block = q64[a : a + self.batch_size]
            if self.metric == "cosine":
                sim = block @ self._X.T  # (b, n)
                key = -sim
            else:
                key = (block**2).sum(axis=1)[:, None] - 2.0 * block @ self._X.T + self._sq[None, :]
            part = np.argpartition(key, k - 1, axis=1)[:, :k] if k < key.shape[1] else np.tile(
                np.arange(key.shape[1]), (len(block), 1)
            )
            vals = np.take_along_axis(key, part, axis=1)
            # order by (value, index) so ties resolve like faiss flat search
            order = np.lexsort((part, vals), axis=1)
            part = np.take_along_axis(part, order, axis=1)
            vals = np.take_along_axis(vals, order, axis=1)
            out_i[a : a + len(block)] = part
            out_d[a : a + len(block)] = -vals if self.metric == "cosine" else vals
        return out_d, out_i


class VectorIndex(_BaseIndex):
    """faiss nearest-neighbour index: exact for small sets, IVF/HNSW with checked recall for large.

    Parameters
    ----------
    metric : {'l2', 'cosine'}
        ``cosine`` L2-normalises vectors and searches by inner product.
    kind : {'auto', 'flat', 'pruned', 'ivf', 'hnsw'}
        ``flat`` and ``pruned`` are exact; ``ivf`` and ``hnsw`` approximate.
        ``auto``: flat search up to ``pruned_min`` vectors (and on the GPU up to
        ``exact_max``), pruned search up to ``exact_max``, IVF above.
        ``pruned`` is CPU-only and keeps a flat copy of the vectors for the
        queries its bound cannot prune (twice the memory of ``flat``).
    exact_max : int
        Largest set searched exactly when ``kind='auto'``.
    pruned_min : int
        Smallest set ``kind='auto'`` searches by pruned search on the CPU.
    gpu : bool
        Put the index on GPU 0 (decide with :func:`anomaly_ssl.device.use_faiss_gpu`).
    seed : int
        Seed of the IVF k-means and of the recall sample.
    target_recall : float
        Approximate indexes raise ``nprobe`` / ``efSearch`` until recall@``recall_k``
        on a sample reaches this value (a warning is logged if it cannot).
    recall_k, recall_sample : int
        k and number of sampled queries of the recall check.

    Attributes
    ----------
    kind_ : str
        The index type actually built (``flat``, ``pruned``, ``ivf`` or ``hnsw``).
    recall_ : float
        Measured recall@k of the approximate index (1.0 for exact search).
    pruned_stats_ : dict
        After a pruned search: queries, the share sent to flat search and the
        mean share of vectors scanned per pruned query.
    nprobe_, ef_search_ : int or None
        The tuned search parameter of IVF / HNSW indexes.
    """

    def __init__(
        self,
        metric: Metric = "l2",
        kind: IndexKind = "auto",
        exact_max: int = 100_000,
        gpu: bool = False,
        seed: int = 0,
        target_recall: float = 0.95,
        recall_k: int = 10,
        recall_sample: int = 1000,
        pruned_min: int = 20_000,
    ) -> None:
        self.metric = metric
        self.kind = kind
        self.exact_max = exact_max
        self.pruned_min = pruned_min
        self.gpu = gpu
        self.seed = seed
        self.target_recall = target_recall
        self.recall_k = recall_k
        self.recall_sample = recall_sample

    # ------------------------------------------------------------------ build
    def build(self, X: np.ndarray) -> VectorIndex:
        """Index the rows of ``X`` (float, shape (n, d)); returns ``self``."""
        self._check_metric()
        if self.kind not in ("auto", "flat", "pruned", "ivf", "hnsw"):
            raise ConfigError(f"index kind must be auto, flat, pruned, ivf or hnsw, got {self.kind!r}")
        faiss = _faiss()
        x = self._prepare(X, "X")
        self.n_, self.d_ = x.shape
        kind = self.kind
        if kind == "auto":
            if self.n_ > self.exact_max:
                kind = "ivf"
            else:
                kind = "pruned" if self.n_ >= self.pruned_min and not self.gpu else "flat"
        if self.gpu and kind in ("hnsw", "pruned"):
            raise ConfigError(
                f"faiss has no GPU {kind} index; use index kind 'flat' (exact) or 'ivf' with the GPU"
            )
        self.kind_ = kind
        fm = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        self.nprobe_: int | None = None
        self.ef_search_: int | None = None
        if kind == "pruned":
            self._build_pruned(x)
            self.recall_ = 1.0
            log.debug("built pruned index over %d x %d (%s)", self.n_, self.d_, self.metric)
            return self
        if kind == "flat":
            cpu = faiss.IndexFlatIP(self.d_) if self.metric == "cosine" else faiss.IndexFlatL2(self.d_)
        elif kind == "ivf":
            nlist = _n_lists(self.n_, 4.0)
            quantizer = faiss.IndexFlatIP(self.d_) if self.metric == "cosine" else faiss.IndexFlatL2(self.d_)
            cpu = faiss.IndexIVFFlat(quantizer, self.d_, nlist, fm)
            cpu.cp.seed = int(self.seed)
            cpu.train(x)
            self._quantizer = quantizer  # keep the quantizer alive alongside the index
        else:
            cpu = faiss.IndexHNSWFlat(self.d_, 32, fm)
            cpu.hnsw.efConstruction = 80
        self._index = self._to_device(cpu)
        self._index.add(x)
        if kind == "flat":
            self.recall_ = 1.0
        else:
            self._tune(x)
        log.debug("built %s index over %d x %d (%s)", self.kind_, self.n_, self.d_, self.metric)
        return self

    # ---------------------------------------------------------- pruned search
    def _build_pruned(self, x: np.ndarray) -> None:
        """IVF partition of ``x`` (L2; ``x`` already normalised for cosine) plus list radii."""
        faiss = _faiss()
        quantizer = faiss.IndexFlatL2(self.d_)
        nlist = _n_lists(self.n_, PRUNED_LISTS_PER_SQRT_N)
        ivf = faiss.IndexIVFFlat(quantizer, self.d_, nlist, faiss.METRIC_L2)
        ivf.cp.seed = int(self.seed)
        ivf.train(x)
        ivf.add(x)
        self._index = ivf
        self._init_pruned(x)

    def _init_pruned(self, x: np.ndarray) -> None:
        """Centroids, list sizes and radii read back from the built IVF (and the flat copy)."""
        faiss = _faiss()
        ivf = self._index
        nlist = int(ivf.nlist)
        quantizer = faiss.downcast_index(ivf.quantizer)
        centroids = quantizer.reconstruct_n(0, nlist).astype(np.float64)
        invlists = ivf.invlists
        owner = np.empty(self.n_, dtype=np.int64)
        sizes = np.empty(nlist, dtype=np.int64)
        for lst in range(nlist):
            size = int(invlists.list_size(lst))
            sizes[lst] = size
            if size:
                owner[faiss.rev_swig_ptr(invlists.get_ids(lst), size)] = lst
        # radius of each list: the farthest member from its centroid, in float64 and rounded
        # up so that float32 rounding elsewhere can only widen the search, never narrow it
        dist = np.linalg.norm(x.astype(np.float64) - centroids[owner], axis=1)
        radius = np.zeros(nlist, dtype=np.float64)
        np.maximum.at(radius, owner, dist)
        self._radius = radius * (1 + 1e-5) + 1e-6
        self._quantizer = quantizer
        self._centroids = centroids.astype(np.float32)
        self._centroid_sq = (centroids**2).sum(axis=1)
        self._list_sizes = sizes
        self._flat = faiss.IndexFlatL2(self.d_)
        self._flat.add(x)

    def _search_pruned(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k-NN: probe a few lists, then scan every list the bound cannot rule out.

        For a query at distance ``d_c`` from centroid ``c`` of radius ``r_c``, no
        member of list ``c`` is nearer than ``d_c - r_c``; lists whose bound
        exceeds the k-th distance found by the first probe are skipped.
        Returns squared L2 distances and ids.
        """
        ivf = self._index
        nlist = int(ivf.nlist)
        first = min(PRUNED_FIRST_PROBE, nlist)
        m = len(q)
        out_d = np.empty((m, k), dtype=np.float32)
        out_i = np.empty((m, k), dtype=np.int64)
        to_flat = np.zeros(m, dtype=bool)
        scanned = 0.0
        sizes = self._list_sizes.astype(np.float64)
        # relative error bound of a float32 dot product or squared distance over d terms
        eps = self.d_ * 2.0**-23
        block = int(min(2048, max(16, PRUNED_BLOCK_ENTRIES // nlist)))
        for a in range(0, m, block):
            qb = q[a : a + block]
            qsq = (qb.astype(np.float64) ** 2).sum(axis=1)
            cross = (qb @ self._centroids.T).astype(np.float64)
            dc = np.maximum(qsq[:, None] + self._centroid_sq[None, :] - 2.0 * cross, 0.0)  # (b, nlist)
            probe_d, probe = self._quantizer.search(qb, first)
            ivf.nprobe = first
            d1, _ = ivf.search_preassigned(qb, k, probe, probe_d)
            # the k-th distance found so far bounds the true one (inf when fewer than k found)
            kth = np.sqrt(np.maximum(d1[:, k - 1].astype(np.float64), 0.0)) * (1 + eps) + 1e-6
            kth[~np.isfinite(d1[:, k - 1])] = np.inf
            # the float32 product q.c is off by at most eps * |q| |c| <= eps * (|q|^2 + |c|^2) / 2:
            # lower dc by twice that, so rounding can only widen the search
            slack = eps * (qsq[:, None] + self._centroid_sq[None, :])
            lower = np.sqrt(np.maximum(dc - slack, 0.0)) - self._radius[None, :]
            need = lower <= kth[:, None]  # (b, nlist)
            share = (need * sizes[None, :]).sum(axis=1) / self.n_
            heavy = share > PRUNED_MAX_SCAN
            to_flat[a : a + len(qb)] = heavy
            light = np.flatnonzero(~heavy)
            if len(light):
                scanned += float(share[light].sum())
                nl = need[light]
                counts = nl.sum(axis=1)
                rows, cols = np.nonzero(nl)
                starts = np.cumsum(counts) - counts
                assign = np.full((len(light), int(counts.max())), -1, dtype=np.int64)
                assign[rows, np.arange(len(rows)) - np.repeat(starts, counts)] = cols
                ivf.nprobe = assign.shape[1]
                d2, i2 = ivf.search_preassigned(np.ascontiguousarray(qb[light]), k, assign, None)
                out_d[a + light], out_i[a + light] = d2, i2
            done = a + len(qb)
            if done >= PRUNED_GIVE_UP_AFTER and to_flat[:done].mean() > 0.9:
                # the bound prunes (almost) nothing on this data: flat-scan the rest directly
                to_flat[done:] = True
                break
        heavy_rows = np.flatnonzero(to_flat)
        if len(heavy_rows):
            out_d[heavy_rows], out_i[heavy_rows] = self._flat.search(np.ascontiguousarray(q[heavy_rows]), k)
        n_light = m - len(heavy_rows)
        self.pruned_stats_ = {
            "queries": m,
            "flat_share": len(heavy_rows) / m,
            "scanned_share": scanned / n_light if n_light else None,
        }
        log.debug("pruned search: %s", self.pruned_stats_)
        return out_d, out_i

    def _to_device(self, cpu_index):
        if not self.gpu:
            return cpu_index
        from .device import use_faiss_gpu

        use_faiss_gpu("on")  # raises ConfigError when faiss sees no GPU: no silent fallback
        faiss = _faiss()
        self._gpu_res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(self._gpu_res, 0, cpu_index)

    def _set_param(self, name: str, value: int) -> None:
        faiss = _faiss()
        space = faiss.GpuParameterSpace() if self.gpu else faiss.ParameterSpace()
        space.set_index_parameter(self._index, name, int(value))

    def _tune(self, x: np.ndarray) -> None:
        """Raise the search breadth until recall@k on a sample reaches ``target_recall``."""
        faiss = _faiss()
        rng = np.random.default_rng(self.seed)
        m = min(self.recall_sample, self.n_)
        sample = x[np.sort(rng.choice(self.n_, size=m, replace=False))]
        k = min(self.recall_k, self.n_)
        exact = faiss.IndexFlatIP(self.d_) if self.metric == "cosine" else faiss.IndexFlatL2(self.d_)
        exact.add(x)
        _, truth = exact.search(sample, k)
        if self.kind_ == "ivf":
            name, values = "nprobe", _doubling(1, int(self._index.nlist))
        else:
            name, values = "efSearch", _doubling(max(16, k), 2048)
        recall = 0.0
        for value in values:
            self._set_param(name, value)
            _, found = self._index.search(sample, k)
            recall = _recall(found, truth)
            if recall >= self.target_recall:
                break
        self.recall_ = float(recall)
        if name == "nprobe":
            self.nprobe_ = int(value)
        else:
            self.ef_search_ = int(value)
        msg = "%s index: recall@%d = %.3f on %d sampled queries with %s=%d (target %.2f)"
        args = (self.kind_, k, recall, m, name, value, self.target_recall)
        if recall < self.target_recall:
            log.warning(msg + "; target not reached, results are approximate", *args)
        else:
            log.info(msg, *args)

    def _search_raw(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.gpu and k > GPU_MAX_K:
            raise ConfigError(
                f"faiss GPU search supports k <= {GPU_MAX_K}, got k={k}; lower k or use the CPU"
            )
        if self.kind_ == "pruned":
            D, nbr = self._search_pruned(q, k)
            if self.metric == "cosine":  # unit vectors: |a - b|^2 = 2 - 2 cos
                D = 1.0 - D / 2.0
            return D, nbr
        D, nbr = self._index.search(q, k)
        missing = (nbr < 0).any(axis=1)
        if missing.any() and self.kind_ == "ivf":
            # too few vectors in the probed lists: search those rows over every list
            self._set_param("nprobe", int(self._index.nlist))
            D[missing], nbr[missing] = self._index.search(np.ascontiguousarray(q[missing]), k)
            self._set_param("nprobe", int(self.nprobe_ or 1))
        if (nbr < 0).any():
            raise DataError(
                f"the {self.kind_} index returned fewer than k={k} neighbours; use index kind 'flat'"
            )
        return D, nbr

    # -------------------------------------------------------------- persist
    def _cpu_index(self):
        faiss = _faiss()
        return faiss.index_gpu_to_cpu(self._index) if self.gpu else self._index

    def to_bytes(self) -> np.ndarray:
        """The faiss index serialised to a uint8 array (for safetensors/npz state)."""
        if not hasattr(self, "_index"):
            raise NotFittedError("VectorIndex is empty; call build(X) first")
        return np.asarray(_faiss().serialize_index(self._cpu_index()), dtype=np.uint8)

    def meta(self) -> dict:
        """JSON-able description of the built index (the sidecar of :meth:`save`)."""
        return {
            "metric": self.metric,
            "kind": self.kind,
            "kind_": self.kind_,
            "exact_max": self.exact_max,
            "seed": self.seed,
            "target_recall": self.target_recall,
            "recall_k": self.recall_k,
            "recall_sample": self.recall_sample,
            "pruned_min": self.pruned_min,
            "n": self.n_,
            "d": self.d_,
            "recall": self.recall_,
            "nprobe": self.nprobe_,
            "ef_search": self.ef_search_,
        }

    @classmethod
    def from_bytes(cls, data: np.ndarray, meta: dict, gpu: bool = False) -> VectorIndex:
        """Rebuild an index from :meth:`to_bytes` output and :meth:`meta`."""
        faiss = _faiss()
        self = cls(
            metric=meta["metric"],
            kind=meta["kind"],
            exact_max=meta["exact_max"],
            gpu=gpu,
            seed=meta["seed"],
            target_recall=meta["target_recall"],
            recall_k=meta["recall_k"],
            recall_sample=meta["recall_sample"],
            pruned_min=meta.get("pruned_min", 20_000),
        )
        self.kind_ = meta["kind_"]
        self.n_, self.d_ = int(meta["n"]), int(meta["d"])
        self.recall_ = float(meta["recall"])
        self.nprobe_, self.ef_search_ = meta["nprobe"], meta["ef_search"]
        cpu = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
        if self.kind_ == "pruned":
            cpu.make_direct_map()
            vectors = cpu.reconstruct_n(0, self.n_)
            if gpu:
                # pruned search is CPU-only; its GPU equivalent is exact flat search
                self.kind_ = "flat"
                flat = faiss.IndexFlatIP(self.d_) if self.metric == "cosine" else faiss.IndexFlatL2(self.d_)
                flat.add(vectors)
                self._index = self._to_device(flat)
                return self
            cpu.set_direct_map_type(faiss.DirectMap.NoMap)
            self._index = cpu
            self._init_pruned(vectors)
            return self
        self._index = self._to_device(cpu)
        if self.nprobe_ is not None:
            self._set_param("nprobe", self.nprobe_)
        if self.ef_search_ is not None:
            self._set_param("efSearch", self.ef_search_)
        return self

    def save(self, path: str | Path) -> None:
        """Write the index (``faiss.write_index``, CPU form) and a JSON sidecar ``<path>.json``."""
        if not hasattr(self, "_index"):
            raise NotFittedError("VectorIndex is empty; call build(X) before save")
        path = Path(path)
        cpu = self._cpu_index()
        atomic_write_with(path, lambda tmp: _faiss().write_index(cpu, str(tmp)))
        write_json(path.with_name(path.name + ".json"), self.meta())

    @classmethod
    def load(cls, path: str | Path, gpu: bool = False) -> VectorIndex:
        """Read an index written by :meth:`save` (optionally moving it to the GPU)."""
        path = Path(path)
        sidecar = path.with_name(path.name + ".json")
        if not path.exists() or not sidecar.exists():
            raise DataError(f"index file {path} or its sidecar {sidecar.name} is missing; save it again")
        meta = read_json(sidecar)
        data = np.fromfile(path, dtype=np.uint8)
        return cls.from_bytes(data, meta, gpu=gpu)


def _n_lists(n: int, per_sqrt_n: float) -> int:
    """IVF lists for ``n`` vectors: ``per_sqrt_n * sqrt(n)``, at least 39 vectors per list (faiss k-means)."""
    return int(max(1, min(round(per_sqrt_n * np.sqrt(n)), n // 39 or 1)))


def _doubling(start: int, stop: int) -> list[int]:
    values, v = [], max(1, start)
    while v < stop:
        values.append(v)
        v *= 2
    values.append(stop)
    return values


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true k neighbours present in the found k, per query."""
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth))
    return hits / truth.size
