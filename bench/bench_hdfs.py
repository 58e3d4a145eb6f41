"""HDFS log-anomaly benchmark: the three protocols of ../shared/data/README.md, one run.

For each protocol it pretrains anomaly-ssl with a shipped config (``hdfs_clean``
for the normal-only training sets of protocols 1 and 3, ``hdfs`` for the
contaminated pool of protocol 2),
scores the test blocks through the normal ``score`` path, and evaluates with
the labels at the *label-free* threshold the tool chose (never tuned on test
labels).  In the same run it fits the baselines a user would pick instead on
log event-count vectors (PyOD IsolationForest, ECOD, kNN, LOF) and an n-gram
(bigram rarity) detector, with the same thresholding rule, and prints every
number with ratios to the best baseline.

Protocols
---------
1. clean: train on ``hdfs_train`` (normal only), test on ``hdfs_test_normal`` (0)
   + ``hdfs_test_abnormal`` (1); no loss trimming; threshold = 99th percentile
   of held-out training scores (10% of the training blocks, never trained on).
2. contaminated: pretrain and fit on all 11,501 blocks of
   ``hdfs_2pct_sequences.csv`` (3% anomalous) without labels, score the same
   blocks; threshold = contamination 0.03 (a prior, not a label).
3. literature recall: train on ``deeplog_split/hdfs_train``, recall on
   ``deeplog_split/hdfs_test_abnormal`` at the protocol-1 threshold rule.

Usage::

    python bench/bench_hdfs.py [--protocols 1 2 3] [--out bench/results/hdfs.json] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import copy
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
from anomaly_ssl.data import read_labels  # noqa: E402
from anomaly_ssl.detectors import NGramDetector, PyODDetector  # noqa: E402
from anomaly_ssl.detectors.counts import event_count_matrix  # noqa: E402
from anomaly_ssl.detectors.threshold import compute_threshold  # noqa: E402
from anomaly_ssl.evaluate import evaluate_scores  # noqa: E402
from anomaly_ssl.pipeline import load_run, score_file  # noqa: E402
from anomaly_ssl.pretrain import pretrain  # noqa: E402
from anomaly_ssl.scoring import SequenceScorer  # noqa: E402

HDFS = ROOT.parent / "shared" / "data" / "hdfs"
KEYS = ("precision", "recall", "f1", "fpr", "roc_auc", "pr_auc")


def _metrics(scores: np.ndarray, y: np.ndarray, threshold: float, source: str) -> dict:
    m = evaluate_scores(scores, y, threshold=threshold, threshold_source=source)
    return {k: m.get(k) for k in (*KEYS, "threshold_source")}


def _pool_counts(loaded, table: pl.DataFrame) -> np.ndarray:
    n_events = loaded.vocab.sizes()["event"]
    return event_count_matrix(loaded.vocab.encode(table), n_events, log=True)


#: other detector sets fitted on the same pretrained model, each with the tool's own threshold rule
ALTERNATIVES = (["surprise"], ["knn"], ["density"], ["surprise", "knn"])


def _our_rows(
    loaded, scored: pl.DataFrame, y: np.ndarray, pool_enc, test_enc, holdout: np.ndarray | None
) -> dict[str, dict]:
    """The configured detector through ``score_file``, then other member sets on the same model."""
    members = list(loaded.cfg.detect.members)
    rows = {
        f"anomaly-ssl ({'+'.join(members)}, as configured)": _metrics(
            scored["score"].to_numpy(), y, float(scored["threshold"][0]), "the tool's own (label-free)"
        )
    }
    scorer = loaded.scorer
    pool_feats = scorer.features(pool_enc)
    test_feats = pool_feats if test_enc is pool_enc else scorer.features(test_enc)
    for alt in ALTERNATIVES:
        if alt == members:
            continue
        cfg = copy.deepcopy(loaded.cfg)
        cfg.detect.members = list(alt)
        sc = SequenceScorer(scorer.model, scorer.n_events, cfg).fit(pool_enc, holdout, pool_feats)
        batch = sc.score_features(test_feats)
        rows[f"  anomaly-ssl {'+'.join(alt)}"] = _metrics(batch.score, y, sc.threshold_, "the tool's own")
    return rows


def _baselines(
    X_fit: np.ndarray,
    X_ref: np.ndarray,
    X_test: np.ndarray,
    y: np.ndarray,
    q: float,
    enc_fit,
    enc_ref,
    enc_test,
    contamination: float | None,
) -> dict[str, dict]:
    """PyOD on log counts + bigram rarity; threshold = quantile q of scores on X_ref."""
    rows = {}
    specs = [
        ("iforest", {}),
        ("ecod", {}),
        ("knn", {"n_neighbors": 5 if contamination is None else 10}),
        ("lof", {"n_neighbors": 10 if contamination is None else 20}),
    ]
    for algo, params in specs:
        det = PyODDetector(algorithm=algo, random_state=0, **params).fit(X_fit)
        ref = det.decision_function(X_ref) if X_ref is not X_fit else det.decision_scores_
        t = compute_threshold(ref, "quantile", 0.05, q, 3.5)
        rows[f"PyOD {algo} on counts"] = _metrics(det.decision_function(X_test), y, t, f"q{q}")
    ng = NGramDetector(n=2).fit(enc_fit)
    ref = ng.decision_function(enc_ref) if enc_ref is not enc_fit else ng.decision_scores_
    t = compute_threshold(ref, "quantile", 0.05, q, 3.5)
    rows["bigram rarity"] = _metrics(ng.decision_function(enc_test), y, t, f"q{q}")
    return rows


def protocol_clean(work: Path, sets: list[str], lines: bool = False) -> dict:
    """Protocols 1 (block files) and 3 (DeepLog split, ``lines``)."""
    cfg = load_config("hdfs_clean", [*sets] + (["data.format=lines"] if lines else []))
    base = HDFS / "deeplog_split" if lines else HDFS
    run = work / ("p3" if lines else "p1")
    t0 = time.perf_counter()
    res = pretrain(base / "hdfs_train", cfg, run)
    fit_s = time.perf_counter() - t0
    loaded = load_run(run)
    parts, ys = [], []
    tests = [("hdfs_test_abnormal", 1)] if lines else [("hdfs_test_normal", 0), ("hdfs_test_abnormal", 1)]
    t1 = time.perf_counter()
    for name, label in tests:
        out = work / f"{run.name}_{name}.parquet"
        score_file(loaded, base / name, out, save_latest=False)
        df = pl.read_parquet(out)
        parts.append(df)
        ys.append(np.full(df.height, label))
    score_s = time.perf_counter() - t1
    scored, y = pl.concat(parts), np.concatenate(ys)
    from anomaly_ssl.data import load_sequences

    pool = load_sequences(base / "hdfs_train", cfg.data).table
    hold = np.zeros(pool.height, dtype=bool)
    hold[res.val_index] = True
    test_tables = [load_sequences(base / name, cfg.data).table for name, _ in tests]
    test_table = pl.concat(test_tables)
    ep, et = loaded.vocab.encode(pool), loaded.vocab.encode(test_table)
    rows = _our_rows(loaded, scored, y, ep, et, hold)
    # baselines: fit on the training split, threshold from the held-out split (same rule as ours)
    Xp, Xt = _pool_counts(loaded, pool), _pool_counts(loaded, test_table)
    rows |= _baselines(
        Xp[~hold],
        Xp[hold],
        Xt,
        y,
        0.99,
        ep.subset(np.flatnonzero(~hold)),
        ep.subset(np.flatnonzero(hold)),
        et,
        None,
    )
    card = json.loads((run / "model_card.json").read_text())
    return {
        "rows": rows,
        "n_test": len(y),
        "n_anomalous": int(y.sum()),
        "pretrain_and_fit_s": round(fit_s, 1),
        "score_s": round(score_s, 1),
        "score_sequences_per_s": round(len(y) / score_s, 1),
        "val_masked_accuracy": card["validation"]["val_masked_accuracy"],
        "val_unigram_accuracy": card["validation"]["val_unigram_accuracy"],
        "best_step": card.get("training", {}).get("best_step"),
    }


def protocol_contaminated(work: Path, sets: list[str]) -> dict:
    cfg = load_config("hdfs", ["detect.contamination=0.03", *sets])
    data = HDFS / "hdfs_2pct_sequences.csv"
    run = work / "p2"
    t0 = time.perf_counter()
    pretrain(data, cfg, run)
    fit_s = time.perf_counter() - t0
    loaded = load_run(run)
    out = work / "p2_scores.parquet"
    score_file(loaded, data, out, save_latest=False)
    scored = pl.read_parquet(out)
    labels = read_labels(data, scored["sequence_id"], id_col="block_id")
    y = scored.join(labels, on="sequence_id", how="left")["label"].to_numpy()
    from anomaly_ssl.data import load_sequences

    pool = load_sequences(data, cfg.data).table
    assert pool["sequence_id"].to_list() == scored["sequence_id"].to_list()
    X = _pool_counts(loaded, pool)
    enc = loaded.vocab.encode(pool)
    hold = pl.read_parquet(run / "detector" / "train.parquet")["is_holdout"].to_numpy()
    rows = _our_rows(loaded, scored, y, enc, enc, hold)
    rows |= _baselines(X, X, X, y, 0.97, enc, enc, enc, 0.03)
    card = json.loads((run / "model_card.json").read_text())
    return {
        "rows": rows,
        "n_test": len(y),
        "n_anomalous": int(y.sum()),
        "pretrain_and_fit_s": round(fit_s, 1),
        "val_masked_accuracy": card["validation"]["val_masked_accuracy"],
        "val_unigram_accuracy": card["validation"]["val_unigram_accuracy"],
    }


def _print(name: str, result: dict) -> None:
    print(
        f"\n## {name}  (n={result['n_test']}, anomalous={result['n_anomalous']}; "
        f"pretrain+fit {result['pretrain_and_fit_s']} s)"
    )
    rows = result["rows"]
    best_base = max(
        (r["pr_auc"] for k, r in rows.items() if "anomaly-ssl" not in k),
        default=float("nan"),
    )
    print(f"| detector | {' | '.join(KEYS)} | PR-AUC / best baseline |")
    print("|---|" + "---|" * (len(KEYS) + 1))
    for label, r in rows.items():
        vals = " | ".join(f"{r[k]:.3f}" if r[k] is not None else "-" for k in KEYS)
        print(f"| {label.strip()} | {vals} | {r['pr_auc'] / best_base:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocols", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--workdir", default=None, help="keep runs and scores here (default: a temp dir)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override k=v")
    args = ap.parse_args()
    if not HDFS.is_dir():
        sys.exit(f"HDFS data not found at {HDFS}")
    print("command:", " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_hdfs_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for p in args.protocols:
        started = time.perf_counter()
        if p == 1:
            results["protocol_1_clean"] = protocol_clean(work, args.sets)
        elif p == 2:
            results["protocol_2_contaminated"] = protocol_contaminated(work, args.sets)
        elif p == 3:
            results["protocol_3_deeplog_recall"] = protocol_clean(work, args.sets, lines=True)
        key = list(results)[-1]
        results[key]["wall_s"] = round(time.perf_counter() - started, 1)
        _print(key, results[key])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"command": sys.argv, "results": results}, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
