"""Benchmark the data layer on a large synthetic event file: load + sessionise, fit, encode.

Generates (or takes) a parquet file of N events (user_id, ts, event, item_id,
price; numpy, seeded), then runs each measured phase in a fresh Python process
so that its peak RSS (``resource.getrusage(...).ru_maxrss``) belongs to that
phase alone:

* ``load``: :func:`load_sequences` (scan, typing, checks, sessionisation,
  grouping) + :meth:`Vocabulary.fit` + :meth:`Vocabulary.encode`;
* ``iter``: :func:`iter_sequence_batches` over the same file (streaming path).

Usage::

    python bench/bench_data_load.py                      # 10M events
    python bench/bench_data_load.py --events 1000000 --keep /tmp/events_1m.parquet
    python bench/bench_data_load.py --data existing.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# run from a checkout without relying on the package being installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EVENT_TYPES = ["view", "search", "add_to_cart", "remove_from_cart", "checkout", "purchase",
               "login", "logout", "wishlist", "review", "coupon", "support"]  # fmt: skip
EVENT_P = [0.45, 0.2, 0.1, 0.03, 0.04, 0.03, 0.05, 0.03, 0.03, 0.01, 0.02, 0.01]


def generate(path: Path, n_events: int, n_users: int, seed: int) -> None:
    """Write ``n_events`` synthetic events to ``path`` (parquet), in global time order."""
    import polars as pl

    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, size=n_events)
    # per-user clocks: exponential gaps (mean 5 min) so that ~30 min breaks happen
    gaps = rng.exponential(300.0, size=n_events)
    order = np.argsort(users, kind="stable")
    clock = np.empty(n_events)
    clock[order] = np.cumsum(gaps[order])
    starts = np.zeros(n_users)
    first = np.unique(users[order], return_index=True)
    starts[first[0]] = np.cumsum(gaps[order])[first[1]]
    ts = 1_700_000_000.0 + clock - starts[users] + rng.uniform(0, 86_400 * 30, size=n_users)[users]
    df = pl.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "ts": ts,
            "event": pl.Series(rng.choice(len(EVENT_TYPES), size=n_events, p=EVENT_P)).replace_strict(
                list(range(len(EVENT_TYPES))), EVENT_TYPES, return_dtype=pl.Utf8
            ),
            "item_id": rng.zipf(1.3, size=n_events) % 200_000,
            "price": np.round(rng.lognormal(3.0, 1.0, size=n_events), 2),
        }
    ).sort("ts")
    df.write_parquet(path, row_group_size=1_000_000)


def phase(name: str, data: Path, batch_rows: int) -> dict[str, float]:
    """Run one measured phase in this process; return timings and peak RSS."""
    from anomaly_ssl.config import DataConfig, VocabConfig
    from anomaly_ssl.data import Vocabulary, iter_sequence_batches, load_sequences

    cfg = DataConfig(format="events", entity_col="user_id", time_col="ts", event_col="event",
                     categorical=["item_id"], numeric=["price"])  # fmt: skip
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    if name == "load":
        load = load_sequences(data, cfg)
        out["load_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        vocab = Vocabulary.fit(load.table, cfg, VocabConfig())
        out["fit_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        enc = vocab.encode(load.table)
        out["encode_s"] = time.perf_counter() - t2
        out["sequences"] = len(enc)
        out["events"] = int(enc.offsets[-1])
        out["vocab_sizes"] = vocab.sizes()  # type: ignore[assignment]
    else:
        n_seq = n_ev = n_batches = 0
        for batch in iter_sequence_batches(data, cfg, batch_rows=batch_rows):
            n_batches += 1
            n_seq += batch.height
            n_ev += int(batch["event"].list.len().sum())
        out["iter_s"] = time.perf_counter() - t0
        out.update(sequences=n_seq, events=n_ev, batches=n_batches)
    out["total_s"] = time.perf_counter() - t0
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="use this parquet file instead of generating one")
    parser.add_argument("--keep", type=Path, help="write the generated file here and keep it")
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--phases", default="load,iter")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # child process: one measured phase, JSON on stdout
        print(json.dumps(phase(args.phase, args.data, args.batch_rows)))
        return

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = args.keep or Path(tmp) / "events.parquet"
            t0 = time.perf_counter()
            generate(data, args.events, args.users, args.seed)
            size = data.stat().st_size / 2**20
            print(f"generated {args.events:,} events for {args.users:,} users in "
                  f"{time.perf_counter() - t0:.1f} s -> {data} ({size:.0f} MiB)")  # fmt: skip
        for name in args.phases.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--phase",
                name,
                "--data",
                str(data),
                "--batch-rows",
                str(args.batch_rows),
            ]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=os.environ | {"ANOMALY_SSL_NO_PROGRESS": "1"}
            )
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                sys.exit(proc.returncode)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"[{name}] " + ", ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
            ))  # fmt: skip


if __name__ == "__main__":
    main()
