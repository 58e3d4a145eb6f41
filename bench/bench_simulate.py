"""Benchmark the shop simulator: events per second for about one million events.

Usage: python bench/bench_simulate.py [--sessions N] [--seed S] [--write DIR]
Prints the exact command line, wall time (simulation, and writing when --write
is given), events, sessions and events/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time

from anomaly_ssl.data.simulator import simulate_shop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=115_000, help="sessions (~8.7 events each)")
    parser.add_argument("--anomaly-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", default=None, help="also time writing the parquet files into this folder")
    args = parser.parse_args()

    print("command:", shlex.join([os.path.basename(sys.executable), *sys.argv]))
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    t0 = time.perf_counter()
    shop = simulate_shop(args.sessions, anomaly_rate=args.anomaly_rate, seed=args.seed)
    wall = time.perf_counter() - t0
    n_events = shop.events.height
    n_anomalous = int(shop.labels["label"].sum())
    print(f"sessions: {shop.labels.height:,}  events: {n_events:,}  anomalous: {n_anomalous:,}")
    print(f"simulate wall time: {wall:.2f} s  ->  {n_events / wall:,.0f} events/s")
    out = args.write or tempfile.mkdtemp(prefix="bench_simulate_")
    t1 = time.perf_counter()
    shop.write(out)
    print(f"write parquet ({out}): {time.perf_counter() - t1:.2f} s")


if __name__ == "__main__":
    main()
