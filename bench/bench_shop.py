"""Shop benchmarks: the simulator, and real Taobao sessions with injected anomalies.

1. **Simulator** (contaminated, the product's setting): simulate a shop, pretrain
   and fit on all its sessions *without labels*, score the same sessions, and a
   second, independently simulated shop (new users, new seed) with the same run.
   Per-type recall at the label-free threshold.
2. **Taobao + injected anomalies**: real shoppers from
   ``../shared/data/ecommerce/UserBehavior_head.csv`` (unlabelled, assumed
   normal) plus synthetic scraping bots, brushing rings and cart hoarders from
   the simulator's anomaly library (the only types Taobao's four event kinds can
   express).  Per-type recall at the label-free threshold and the false-alarm
   rate on the real shoppers.  The injected anomalies are synthetic.

Baselines in the same run, fitted the same way (on the whole unlabelled pool,
threshold at the same contamination): PyOD IsolationForest, ECOD and kNN on
log event-count vectors.

Usage::

    python bench/bench_shop.py [--sessions 5000] [--parts sim taobao] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anomaly_ssl.config_loader import load_config  # noqa: E402
from anomaly_ssl.data import load_sequences  # noqa: E402
from anomaly_ssl.data.simulator import inject_anomalies, simulate_shop  # noqa: E402
from anomaly_ssl.detectors import PyODDetector  # noqa: E402
from anomaly_ssl.detectors.counts import event_count_matrix  # noqa: E402
from anomaly_ssl.evaluate import evaluate_scores  # noqa: E402
from anomaly_ssl.pipeline import load_run, score_file  # noqa: E402
from anomaly_ssl.pretrain import pretrain  # noqa: E402

TAOBAO = ROOT.parent / "shared" / "data" / "ecommerce" / "UserBehavior_head.csv"
KEYS = ("precision", "recall", "f1", "fpr", "roc_auc", "pr_auc")


def _evaluate(scores: np.ndarray, y: np.ndarray, flags: np.ndarray, types: np.ndarray | None) -> dict:
    m = evaluate_scores(scores, y, is_anomaly=flags, anomaly_types=types)
    out = {k: m[k] for k in KEYS}
    if "per_type" in m:
        out["per_type_recall"] = {t: round(v["recall"], 3) for t, v in m["per_type"].items()}
    return out


def _joined(scores_path: Path, labels: pl.DataFrame) -> pl.DataFrame:
    return pl.read_parquet(scores_path).join(
        labels.select("sequence_id", "label", "anomaly_type"), on="sequence_id", how="inner"
    )


def _baselines(run: Path, data: Path, labels: pl.DataFrame, contamination: float) -> dict:
    loaded = load_run(run)
    table = load_sequences(data, loaded.cfg.data).table
    X = event_count_matrix(loaded.vocab.encode(table), loaded.vocab.sizes()["event"], log=True)
    order = table.select("sequence_id").join(
        labels.select("sequence_id", "label", "anomaly_type"), on="sequence_id", how="left"
    )
    y, types = order["label"].to_numpy(), order["anomaly_type"].to_numpy()
    rows = {}
    for algo, params in (("iforest", {}), ("ecod", {}), ("knn", {"n_neighbors": 10})):
        det = PyODDetector(algorithm=algo, random_state=0, contamination=contamination, **params).fit(X)
        rows[f"PyOD {algo} on counts"] = _evaluate(det.decision_scores_, y, det.labels_, types)
    return rows


def part_simulator(work: Path, sessions: int, sets: list[str]) -> dict:
    train_dir, fresh_dir = work / "shop_a", work / "shop_b"
    simulate_shop(sessions, anomaly_rate=0.05, seed=1).write(train_dir)
    simulate_shop(sessions, anomaly_rate=0.05, seed=2).write(fresh_dir)
    cfg = load_config("shop", sets)
    run = work / "run_shop"
    t0 = time.perf_counter()
    pretrain(train_dir / "events.parquet", cfg, run)
    fit_s = time.perf_counter() - t0
    loaded = load_run(run)
    result: dict = {"sessions": sessions, "pretrain_and_fit_s": round(fit_s, 1), "rows": {}}
    for name, folder in (("pool (trained on, unlabelled)", train_dir), ("fresh shop (new seed)", fresh_dir)):
        out = work / f"scores_{folder.name}.parquet"
        score_file(loaded, folder / "events.parquet", out, save_latest=False)
        d = _joined(out, pl.read_parquet(folder / "labels.parquet"))
        result["rows"][f"anomaly-ssl, {name}"] = _evaluate(
            d["score"].to_numpy(),
            d["label"].to_numpy(),
            d["is_anomaly"].to_numpy(),
            d["anomaly_type"].to_numpy(),
        )
    for k, v in _baselines(
        run,
        train_dir / "events.parquet",
        pl.read_parquet(train_dir / "labels.parquet"),
        cfg.detect.contamination,
    ).items():
        result["rows"][f"{k}, pool"] = v
    return result


def part_taobao(work: Path, sets: list[str], rate: float = 0.03) -> dict:
    cfg = load_config("taobao", sets)
    raw = pl.read_csv(
        TAOBAO,
        has_header=False,
        new_columns=cfg.data.columns,
        schema_overrides={
            "user_id": pl.Utf8,
            "item_id": pl.Utf8,
            "category_id": pl.Utf8,
            "behavior": pl.Utf8,
            "ts": pl.Int64,
        },
    )
    injected = inject_anomalies(raw, rate=rate, seed=0)
    events, labels = injected.events, injected.labels
    data = work / "taobao_injected.parquet"
    events.write_parquet(data)
    cfg.data.format, cfg.data.has_header, cfg.data.columns = "events", None, None
    run = work / "run_taobao"
    t0 = time.perf_counter()
    pretrain(data, cfg, run)
    fit_s = time.perf_counter() - t0
    out = work / "scores_taobao.parquet"
    score_file(load_run(run), data, out, save_latest=False)
    d = _joined(out, labels)
    real = d.filter(pl.col("label") == 0)
    result = {
        "real_sessions": real.height,
        "injected_sessions": int(d["label"].sum()),
        "pretrain_and_fit_s": round(fit_s, 1),
        "false_alarm_rate_on_real_shoppers": round(float(real["is_anomaly"].mean()), 4),
        "rows": {
            "anomaly-ssl": _evaluate(
                d["score"].to_numpy(),
                d["label"].to_numpy(),
                d["is_anomaly"].to_numpy(),
                d["anomaly_type"].to_numpy(),
            )
        },
    }
    for k, v in _baselines(run, data, labels, cfg.detect.contamination).items():
        result["rows"][k] = v
    return result


def _print(name: str, res: dict) -> None:
    head = {k: v for k, v in res.items() if k != "rows"}
    print(f"\n## {name}  {json.dumps(head)}")
    print(f"| detector | {' | '.join(KEYS)} | per-type recall |")
    print("|---|" + "---|" * (len(KEYS) + 1))
    for label, r in res["rows"].items():
        vals = " | ".join(f"{r[k]:.3f}" for k in KEYS)
        types = ", ".join(f"{t} {v:.2f}" for t, v in sorted(r.get("per_type_recall", {}).items()))
        print(f"| {label} | {vals} | {types} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--parts", nargs="+", default=["sim", "taobao"], choices=["sim", "taobao"])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    print("command:", " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_shop_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    if "sim" in args.parts:
        results["simulator"] = part_simulator(work, args.sessions, args.sets)
        _print("simulator", results["simulator"])
    if "taobao" in args.parts:
        if not TAOBAO.exists():
            sys.exit(f"Taobao data not found at {TAOBAO}")
        results["taobao_injected"] = part_taobao(work, args.sets)
        _print("taobao_injected", results["taobao_injected"])
    if args.out:
        Path(args.out).write_text(json.dumps({"command": sys.argv, "results": results}, indent=2))


if __name__ == "__main__":
    main()
