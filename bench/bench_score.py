"""End-to-end ``score`` throughput and peak memory for growing numbers of sequences.

Pretrains once (HDFS ``hdfs_train`` with the ``hdfs`` config, or the shop
simulator with ``shop``), then scores a generated input of N sequences in a
*fresh process* per size (so peak RSS is that run's own) and prints
sequences/s, peak RSS, the size of the embeddings file, and "peak RSS minus
embeddings" — which should stay flat as N grows, since scoring streams.

Inputs:
* ``--data hdfs``: N blocks drawn with replacement from the real HDFS test
  blocks (``hdfs_test_normal`` + ``hdfs_test_abnormal``), with fresh ids.  Real
  HDFS traffic repeats itself, and anomaly-ssl computes each distinct sequence
  once: the distinct share is printed, because it drives the speed.
* ``--data shop``: N sessions from the shop simulator (timestamps and items make
  nearly every sequence distinct: the model runs on everything).

Usage::

    python bench/bench_score.py --data hdfs --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HDFS = ROOT.parent / "shared" / "data" / "hdfs"


def make_hdfs_input(n: int, out: Path, seed: int = 0) -> float:
    """Write n resampled HDFS blocks as ``id,tokens`` lines; return the distinct share."""
    blocks = []
    for name in ("hdfs_test_normal", "hdfs_test_abnormal"):
        blocks += [line.split(",", 1)[1] for line in (HDFS / name).read_text().splitlines() if "," in line]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(blocks), n)
    with open(out, "w") as fh:
        for i, j in enumerate(pick):
            fh.write(f"b{i},{blocks[j]}\n")
    return len(np.unique(pick)) / n


def make_shop_input(n: int, out: Path, seed: int = 0) -> float:
    from anomaly_ssl.data.simulator import simulate_shop

    sim = simulate_shop(n, anomaly_rate=0.05, seed=seed)
    sim.events.write_parquet(out)
    return 1.0


def child(run: str, data: str, out: str, batch_rows: int) -> None:
    """Score in this process and print JSON with throughput and peak RSS."""
    from anomaly_ssl.pipeline import load_run, score_file

    t0 = time.perf_counter()
    loaded = load_run(run)
    load_s = time.perf_counter() - t0
    summary = score_file(
        loaded, data, out, batch_rows=batch_rows, save_latest=False, embeddings_path=out + ".emb.npy"
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emb_mb = Path(out + ".emb.npy").stat().st_size / 2**20
    print(
        json.dumps(
            {
                "n": summary.n_sequences,
                "score_s": summary.seconds,
                "load_s": load_s,
                "seq_per_s": summary.n_sequences / summary.seconds,
                "peak_rss_mb": rss_mb,
                "embeddings_mb": emb_mb,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=["hdfs", "shop"], default="hdfs")
    ap.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    ap.add_argument("--batch-rows", type=int, default=50_000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--child", nargs=3, metavar=("RUN", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.batch_rows)
        return
    print("command:", " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_score_"))
    work.mkdir(parents=True, exist_ok=True)
    run = work / f"run_{args.data}"
    if not (run / "detector" / "detector.json").exists():
        from anomaly_ssl.config_loader import load_config
        from anomaly_ssl.pretrain import pretrain

        if args.data == "hdfs":
            pretrain(HDFS / "hdfs_train", load_config("hdfs", args.sets), run)
        else:
            train = work / "shop_train.parquet"
            make_shop_input(5000, train, seed=1)
            pretrain(train, load_config("shop", args.sets), run)
    rows = []
    for n in args.sizes:
        data = work / (f"hdfs_{n}.csv" if args.data == "hdfs" else f"shop_{n}.parquet")
        distinct = (make_hdfs_input if args.data == "hdfs" else make_shop_input)(n, data)
        out = str(work / f"scores_{n}.parquet")
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--batch-rows",
                str(args.batch_rows),
                "--child",
                str(run),
                str(data),
                out,
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "ANOMALY_SSL_NO_PROGRESS": "1"},
        )
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["distinct_share_of_input"] = round(distinct, 4)
        res["rss_minus_embeddings_mb"] = res["peak_rss_mb"] - res["embeddings_mb"]
        rows.append(res)
        print(json.dumps(res))
    print("\n| sequences | seq/s | score s | peak RSS MB | embeddings MB | RSS − embeddings MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['seq_per_s']:,.0f} | {r['score_s']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['embeddings_mb']:.0f} | {r['rss_minus_embeddings_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
