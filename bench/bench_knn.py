"""Benchmark: faiss (VectorIndex) vs scikit-learn NearestNeighbors (PyOD KNN's backend).

The workload is what fitting a kNN detector does: the k nearest neighbours of
every training vector among the others (self excluded).  Both sides are exact;
the script checks that they return the same neighbours (rows that differ must
be explained by distance ties) and prints wall times, the speed ratio and the
exact command line.  ``--ivf`` adds the approximate IVF index with its recall.

    python bench/bench_knn.py --n 100000 --d 64 --k 10 --data clustered
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
    ap.add_argument("--metric", choices=["l2"], default="l2")
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
    X = make_data(args.data, args.n, args.d, args.seed)
    print(
        f"data: {args.data} float32 n={args.n} d={args.d}, k={args.k}, self excluded, "
        f"all {args.n} vectors as queries"
    )

    def run_faiss():
        idx = VectorIndex(metric="l2", kind="flat").build(X)
        return idx.search(X, args.k, exclude_self=True)

    def run_sklearn():
        nn = NearestNeighbors(n_neighbors=args.k + 1, algorithm=args.sklearn_algorithm, n_jobs=args.threads)
        nn.fit(X)
        D, nbr = nn.kneighbors(X)
        # drop each row's own index (not blindly the first column: duplicates tie at 0)
        is_self = np.arange(len(X))[:, None] == nbr
        remove = np.where(is_self.any(1), is_self.argmax(1), args.k)
        keep = np.arange(args.k + 1)[None, :] != remove[:, None]
        return D[keep].reshape(len(X), args.k).astype(np.float32), nbr[keep].reshape(len(X), args.k)

    (D_f, I_f), t_faiss = timed(run_faiss)
    print(f"faiss  IndexFlatL2 (exact): {t_faiss:8.2f} s")
    (D_s, I_s), t_sk = timed(run_sklearn)
    print(f"sklearn NearestNeighbors(algorithm={args.sklearn_algorithm!r}): {t_sk:8.2f} s")
    compare("faiss vs sklearn", D_s, I_s, D_f, I_f)
    print(f"speed-up faiss / sklearn: {t_sk / t_faiss:.1f}x")

    if args.ivf:
        def run_ivf():
            idx = VectorIndex(metric="l2", kind="ivf", seed=args.seed).build(X)
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
