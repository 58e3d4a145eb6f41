"""Benchmark: faiss (VectorIndex) vs scikit-learn NearestNeighbors (PyOD KNN's backend).

The workload is what fitting a kNN detector does: the k nearest neighbours of
every training vector among the others (self excluded).  The faiss side is the
exact search the tool uses at this size (``VectorIndex(kind='auto')``: pruned
search from 20,000 vectors, flat below) and plain flat search; scikit-learn is
exact.  The script checks that they return the same neighbours (rows that
differ must be explained by distance ties) and prints wall times (index build
included), the speed ratios and the exact command line.  ``--ivf`` adds the
approximate IVF index with its recall.  ``--embeddings FILE.npy`` benchmarks
real embeddings instead of synthetic data (e.g. a run's
``detector/train_embeddings.npy``).

    python bench/bench_knn.py --n 100000 --d 64 --k 10 --data clustered
    python bench/bench_knn.py --embeddings runs/shop/detector/train_embeddings.npy
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time

import numpy as np


def make_data(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.normal(size=(n, d)).astype(np.float32)
    centers = rng.normal(scale=3.0, size=(100, d))
    return (centers[rng.integers(0, 100, n)] + rng.normal(size=(n, d))).astype(np.float32)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def compare(name: str, D_ref, I_ref, D, nbr, tol: float = 1e-3) -> None:
    same_rows = (I_ref == nbr).all(axis=1)
    # a differing row is fine only when the neighbour sets differ by distance ties
    diff = ~same_rows
    tie_ok = np.abs(D_ref[diff] - D[diff]).max(axis=1) <= tol if diff.any() else np.zeros(0, bool)
    unexplained = int((~tie_ok).sum())
    print(
        f"  {name}: identical neighbour lists in {same_rows.mean():.4%} of rows; "
        f"{int(diff.sum())} rows differ, all explained by distance ties (|dD| <= {tol})"
        if unexplained == 0
        else f"  {name}: {unexplained} rows differ beyond distance ties -> NOT identical"
    )
    print(f"  {name}: max |distance difference| = {np.abs(D_ref - D).max():.2e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--data", choices=["random", "clustered"], default="clustered")
    ap.add_argument("--embeddings", help="a .npy float matrix to benchmark instead of synthetic data")
    ap.add_argument("--metric", choices=["l2", "cosine"], default="l2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--sklearn-algorithm", default="auto", help="NearestNeighbors algorithm (PyOD default: auto)"
    )
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1,
        help="threads for both sides: faiss OpenMP, sklearn n_jobs and BLAS",
    )
    ap.add_argument("--ivf", action="store_true", help="also time the approximate IVF index")
    args = ap.parse_args()

    import faiss
    import sklearn
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_limits

    from anomaly_ssl.index import VectorIndex

    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; faiss {faiss.__version__}, sklearn {sklearn.__version__}; "
        f"{args.threads} thread(s) per side"
    )
    if args.embeddings:
        X = np.ascontiguousarray(np.load(args.embeddings), dtype=np.float32)
        source = f"embeddings {args.embeddings}"
    else:
        X = make_data(args.data, args.n, args.d, args.seed)
        source = f"{args.data} synthetic"
    n, d = X.shape
    print(
        f"data: {source}, float32 n={n} d={d}, metric {args.metric}, k={args.k}, self excluded, "
        f"all {n} vectors as queries"
    )
    # sklearn's cosine brute force is the same as l2 on unit vectors; normalise once for both
    Xs = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12) if args.metric == "cosine" else X
    Xs = np.ascontiguousarray(Xs, dtype=np.float32)

    def run_faiss(kind: str):
        idx = VectorIndex(metric=args.metric, kind=kind).build(X)
        out = idx.search(X, args.k, exclude_self=True)
        return idx, out

    def run_sklearn():
        nn = NearestNeighbors(
            n_neighbors=args.k + 1, algorithm=args.sklearn_algorithm, n_jobs=args.threads,
            metric="cosine" if args.metric == "cosine" else "minkowski",
        )
        nn.fit(Xs)
        D, nbr = nn.kneighbors(Xs)
        # drop each row's own index (not blindly the first column: duplicates tie at 0)
        is_self = np.arange(n)[:, None] == nbr
        remove = np.where(is_self.any(1), is_self.argmax(1), args.k)
        keep = np.arange(args.k + 1)[None, :] != remove[:, None]
        return D[keep].reshape(n, args.k).astype(np.float32), nbr[keep].reshape(n, args.k)

    (D_s, I_s), t_sk = timed(run_sklearn)
    print(f"sklearn NearestNeighbors(algorithm={args.sklearn_algorithm!r}): {t_sk:8.2f} s")
    (idx, (D_a, I_a)), t_auto = timed(lambda: run_faiss("auto"))
    stats = getattr(idx, "pruned_stats_", None)
    extra = (
        f"; {stats['flat_share']:.1%} of queries sent to flat search, "
        f"{stats['scanned_share']:.2%} of the vectors scanned per pruned query"
        if stats and stats["scanned_share"] is not None else ""
    )
    print(f"faiss  VectorIndex auto -> {idx.kind_} (exact): {t_auto:8.2f} s incl. build{extra}")
    compare(f"faiss {idx.kind_} vs sklearn", D_s, I_s, D_a, I_a)
    print(f"speed-up faiss {idx.kind_} / sklearn: {t_sk / t_auto:.1f}x")
    if idx.kind_ != "flat":
        (_, (D_f, I_f)), t_flat = timed(lambda: run_faiss("flat"))
        print(f"faiss  IndexFlat (exact, brute force): {t_flat:8.2f} s")
        compare("faiss flat vs sklearn", D_s, I_s, D_f, I_f)
        print(f"speed-up faiss flat / sklearn: {t_sk / t_flat:.1f}x")
    else:
        I_f = I_a

    if args.ivf:
        def run_ivf():
            idx = VectorIndex(metric=args.metric, kind="ivf", seed=args.seed).build(X)
            return idx, idx.search(X, args.k, exclude_self=True)

        (idx, (_, I_i)), t_ivf = timed(run_ivf)
        recall = np.mean([len(np.intersect1d(a, b)) for a, b in zip(I_i, I_f)]) / args.k
        print(
            f"faiss  IVF (nlist={idx._index.nlist}, nprobe={idx.nprobe_}): {t_ivf:8.2f} s incl. training, "
            f"sampled recall {idx.recall_:.3f}, full recall@{args.k} {recall:.3f}, "
            f"speed-up vs sklearn {t_sk / t_ivf:.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
