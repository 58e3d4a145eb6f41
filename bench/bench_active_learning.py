"""Label efficiency of the active-learning loop: PR-AUC against the number of labels.

A simulated annotator (:func:`active_learning.answer_pending`) answers every
query from ground truth **through the real Label Studio API** (one managed
server for the whole run); the loop is the product's own: ``query_labels`` ->
``answer_pending`` -> ``sync_labels`` -> ``finetune_run`` -> rescore.  Each
query strategy starts from a fresh copy of the same pretrained run and has its
own Label Studio project.

1. **Shop**: pretrain (no labels) on a simulated pool (20,000 sessions, 5 %
   anomalous, seed 1); rounds of 40 labels up to 200 (1 % of the pool); after
   each round the pool is rescored (the next query sees the head) and an
   independent test shop (5,000 sessions, seed 2) is scored with the run.
   PR-AUC of the final ``score`` on the test shop.
2. **HDFS**: pool = ``../shared/data/hdfs/hdfs_2pct_sequences.csv`` (11,501
   blocks, 350 anomalous); rounds of 25 up to 125.  There is no separate test
   set at the natural anomaly rate, so the evaluation is *transductive*: PR-AUC
   over the pool blocks not labelled so far (a different set per strategy and
   budget; the unsupervised score and the ceiling are also reported on exactly
   those rows).

**Supervised ceiling** (same embeddings, same head, all labels): an
:class:`~active_learning.AnomalyHead` built from the run's ``finetune`` config,
trained on every pool label with the loop's features (embedding + unsupervised
rank + member contributions, :func:`active_learning.finetune.head_features`),
the logit of the unsupervised rank as its offset, pool standardisation, and
blended by the loop's rule (:func:`active_learning.finetune.choose_blend` on its
out-of-fold predictions; :func:`active_learning.head.blend`).  Reference
heads (free: no offset; a converged linear one and a 64-unit MLP) show how far
the embeddings go with every label.  Shop:
trained on the whole pool, evaluated on the test shop.  HDFS: 5-fold
out-of-fold predictions over the pool.  The head alone (no blend) and the
unsupervised score are reported beside it.

Usage::

    python bench/bench_active_learning.py [--parts shop hdfs] [--random-repeats 10]
        [--set k=v ...] [--hdfs-set k=v ...] [--out bench/results/active_learning.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from active_learning import (  # noqa: E402
    AnomalyHead,
    LabelStudioClient,
    LabelStudioServer,
    OneClassError,
    answer_pending,
    finetune_run,
    load_rescorer,
    query_labels,
    sync_labels,
    truth_from_labels,
)
from active_learning.finetune import (  # noqa: E402
    choose_blend,
    head_features,
    pool_feature_stats,
    train_unsup_scores,
)
from active_learning.head import blend, rank_logit, stratified_folds  # noqa: E402
from active_learning.label_store import LabelStore  # noqa: E402
from active_learning.ls_server import VENV_ENV, free_port  # noqa: E402
from anomaly_ssl import load_config, load_run, pretrain, read_labels, score_file, simulate_shop  # noqa: E402
from anomaly_ssl.evaluate import contribution_members, evaluate_scores  # noqa: E402
from anomaly_ssl.run import RunDir  # noqa: E402

HDFS_POOL = ROOT.parent / "shared" / "data" / "hdfs" / "hdfs_2pct_sequences.csv"
STRATEGIES = ("uncertainty", "diverse", "topk", "random")
GOAL_RATIO = 0.95


def pr_auc(scores: np.ndarray, y: np.ndarray) -> float:
    """Average precision (PR-AUC) of ``scores`` against 0/1 labels."""
    return float(evaluate_scores(np.asarray(scores, dtype=np.float64), np.asarray(y))["pr_auc"])


# ----------------------------------------------------------------- features


def pool_features(
    run: Path, scores: pl.DataFrame, emb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The loop's head inputs for scored rows: embeddings (n, d), extra (n, 1 + m), unsup rank (n,)."""
    members, reference = members_and_reference(run, scores)
    contributions = {m: scores[f"contrib_{m}"].to_numpy() for m in members}
    rank, extra = head_features(scores["unsup_score"].to_numpy(), contributions, members, reference)
    return np.asarray(emb, dtype=np.float32), extra, rank


def members_and_reference(run: Path, scores: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    """The ensemble members in a score file and the run's training scores (the rank's reference)."""
    return contribution_members(scores.columns), train_unsup_scores(RunDir(run))


class Features:
    """The loop's head inputs for a set of rows, and the pool statistics it standardises with."""

    def __init__(self, emb: np.ndarray, extra: np.ndarray, rank: np.ndarray, stats: Any) -> None:
        self.emb, self.extra, self.rank, self.stats = emb, extra, rank, stats

    def rows(self, sel: Any) -> Features:
        return Features(self.emb[sel], self.extra[sel], self.rank[sel], self.stats)


def loop_feature_stats(
    run: Path, scores: pl.DataFrame, emb: np.ndarray, extra: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The pool standardisation ``finetune`` uses (:func:`active_learning.finetune.pool_feature_stats`)."""
    members, reference = members_and_reference(run, scores)
    return pool_feature_stats(RunDir(run), members, reference, emb, extra)


def fit_head(cfg: Any, f: Features, y: np.ndarray, free: bool = False, **overrides: Any) -> AnomalyHead:
    """The loop's head (``finetune`` config: offset = logit of the unsupervised rank, pool
    standardisation); ``free=True`` and ``overrides`` only for the reference heads."""
    head = AnomalyHead.from_config(cfg.finetune, seed=cfg.seed, **overrides)
    if free:
        return head.fit(f.emb, y, f.extra)
    return head.fit(f.emb, y, f.extra, offset=rank_logit(f.rank), feature_stats=f.stats)


def predict_head(head: AnomalyHead, f: Features) -> np.ndarray:
    offset = rank_logit(f.rank) if head.uses_offset_ else None
    return head.predict_proba(f.emb, f.extra, offset)


#: reference heads on the same features (not the loop's head): how far the embeddings can go
REFERENCE_HEADS = {
    "linear_converged": {"epochs": 1000, "weight_decay": 0.0, "prior_labels": 0.0},
    "mlp64": {"hidden": 64, "epochs": 500},
}


# --------------------------------------------------------------------- loop


class Annotation:
    """The Label Studio server, a client, and the simulated annotator's ground truth."""

    def __init__(self, server: LabelStudioServer, url: str) -> None:
        self.server = server
        self.url = url
        self.client = LabelStudioClient(url, server.api_key())

    def fresh_project(self, title: str) -> None:
        while (pid := self.client.find_project(title)) is not None:
            self.client.delete_project(pid)


def strategy_run(
    base_run: Path,
    work: Path,
    name: str,
    strategy: str,
    seed: int,
    per_round: int,
    budget: int,
    pool_data: Path,
    truth: dict[str, tuple[int, str | None]],
    ls: Annotation,
    evaluate: Any,
) -> list[dict[str, Any]]:
    """One strategy's rounds from a fresh copy of the pretrained run; a row per budget."""
    run = work / f"run-{name}"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base_run, run)
    project = f"bench-{name}"
    ls.fresh_project(project)
    cfg = load_config(
        None,
        [
            f"label_studio.url={ls.url}",
            f"label_studio.project={project}",
            f"seed={seed}",
            f"query.n={per_round}",
        ],
        base=RunDir(run).read_config_dict(),
    )
    loaded = load_run(run)
    rows: list[dict[str, Any]] = []
    for r in range(1, budget // per_round + 1):
        t0 = time.perf_counter()
        sent = query_labels(run, cfg, ls.client, per_round, strategy)
        answered = answer_pending(run, ls.client, sent.project_id, truth)
        synced = sync_labels(run, cfg, ls.client)
        labels = LabelStore.for_run(run).current_labels()
        row: dict[str, Any] = {
            "round": r,
            "labels": labels.height,
            "labelled_anomalies": int(labels["label"].sum()),
            "labelled_types": sorted({t for t in labels["anomaly_type"].to_list() if t}),
            "answered": answered,
            "synced": synced.added,
        }
        rescorer = None
        try:
            ft = finetune_run(run, cfg)
            rescorer = load_rescorer(run)
            row["fine_tuned"] = True
            row["finetune_metrics"] = ft.metrics
        except OneClassError as exc:
            row["fine_tuned"] = False
            row["note"] = f"one class so far, unsupervised score kept ({exc})"
        if rescorer is not None:
            # the next query picks from these scores (latest.parquet + embeddings)
            score_file(loaded, pool_data, run / "scores" / "pool.parquet", rescorer=rescorer)
        row.update(evaluate(run, loaded, rescorer, set(labels["sequence_id"].to_list())))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(
            f"  {name:>14} {row['labels']:4d} labels ({row['labelled_anomalies']:3d} anomalous): "
            f"PR-AUC {row['pr_auc']:.3f} (head {_fmt(row.get('head_pr_auc'))}, unsup "
            f"{row['unsup_pr_auc']:.3f}) [{row['seconds']:.0f}s]",
            flush=True,
        )
    return rows


def _fmt(v: float | None) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def run_strategies(
    base_run: Path,
    work: Path,
    strategies: list[str],
    random_repeats: int,
    seed: int,
    **kw: Any,
) -> dict[str, list[dict[str, Any]]]:
    curves: dict[str, list[dict[str, Any]]] = {}
    for strategy in strategies:
        repeats = random_repeats if strategy == "random" else 1
        for rep in range(repeats):
            name = strategy if rep == 0 else f"{strategy}-{rep}"
            curves[name] = strategy_run(base_run, work, name, strategy, seed + 1000 * rep, **kw)
    return curves


# --------------------------------------------------------------------- shop


def part_shop(work: Path, args: argparse.Namespace, ls: Annotation) -> dict[str, Any]:
    t_start = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    pool_dir, test_dir = work / "shop_pool", work / "shop_test"
    simulate_shop(args.shop_pool, anomaly_rate=0.05, seed=1).write(pool_dir)
    simulate_shop(args.shop_test, anomaly_rate=0.05, seed=2).write(test_dir)
    pool_data, test_data = pool_dir / "events.parquet", test_dir / "events.parquet"
    cfg = load_config("shop", [f"seed={args.seed}", *args.set])
    base = work / "run-shop"
    t0 = time.perf_counter()
    pretrain(pool_data, cfg, base)
    pretrain_s = time.perf_counter() - t0
    loaded = load_run(base)
    score_file(loaded, pool_data, base / "scores" / "pool.parquet")  # latest scores + embeddings
    test_unsup = work / "shop_test_unsup.parquet"
    score_file(
        loaded, test_data, test_unsup, save_latest=False, explain=False, embeddings_path=work / "test_emb.npy"
    )
    test_labels = pl.read_parquet(test_dir / "labels.parquet").select("sequence_id", "label")
    pool_labels = pl.read_parquet(pool_dir / "labels.parquet").select("sequence_id", "label")
    truth = truth_from_labels(pool_dir / "labels.parquet", cfg.label_studio.taxonomy)

    # ceiling: the loop's head on every pool label, evaluated on the test shop
    pool_scores = pl.read_parquet(base / "scores" / "pool.parquet")
    y_pool = (
        pool_scores.select("sequence_id").join(pool_labels, on="sequence_id", how="left")["label"].to_numpy()
    )
    emb, extra, rank = pool_features(base, pool_scores, np.load(base / "scores" / "latest_embeddings.npy"))
    feats = Features(emb, extra, rank, loop_feature_stats(base, pool_scores, emb, extra))
    t0 = time.perf_counter()
    head = fit_head(cfg, feats, y_pool)
    ceiling_fit_s = time.perf_counter() - t0
    test_scores = pl.read_parquet(test_unsup)
    y_test = (
        test_scores.select("sequence_id").join(test_labels, on="sequence_id", how="left")["label"].to_numpy()
    )
    t_emb, t_extra, t_rank = pool_features(base, test_scores, np.load(work / "test_emb.npy"))
    t_feats = Features(t_emb, t_extra, t_rank, feats.stats)
    proba = predict_head(head, t_feats)
    weight, weight_source, _ = choose_blend(
        cfg.finetune.blend, cfg.finetune.blend_grid, y_pool, head.cv_oof_proba_, rank
    )
    ceiling = {
        "blended": pr_auc(blend(proba, t_rank, weight), y_test),
        "blend": weight,
        "blend_source": weight_source,
        "head_only": pr_auc(proba, y_test),
        "trained_on": len(y_pool),
        "fit_s": round(ceiling_fit_s, 1),
        "reference_heads": {},
    }
    for ref_name, overrides in REFERENCE_HEADS.items():
        p_ref = predict_head(fit_head(cfg, feats, y_pool, free=True, cv_folds=2, **overrides), t_feats)
        ceiling["reference_heads"][ref_name] = {
            "settings": overrides,
            "blended": pr_auc(blend(p_ref, t_rank, weight), y_test),
            "head_only": pr_auc(p_ref, y_test),
        }
    unsup = pr_auc(test_scores["unsup_score"].to_numpy(), y_test)
    print(
        f"shop: unsupervised test PR-AUC {unsup:.3f}; ceiling (all {len(y_pool)} pool labels) blended "
        f"{ceiling['blended']:.3f}, head only {ceiling['head_only']:.3f}",
        flush=True,
    )

    def evaluate(run: Path, loaded_run: Any, rescorer: Any, labelled: set[str]) -> dict[str, Any]:
        if rescorer is None:
            return {"pr_auc": unsup, "unsup_pr_auc": unsup, "head_pr_auc": None}
        out = run / "scores" / "test.parquet"
        score_file(loaded_run, test_data, out, rescorer=rescorer, save_latest=False, explain=False)
        d = pl.read_parquet(out).join(test_labels, on="sequence_id", how="inner")
        y = d["label"].to_numpy()
        return {
            "pr_auc": pr_auc(d["score"].to_numpy(), y),
            "roc_auc": float(evaluate_scores(d["score"].to_numpy(), y)["roc_auc"]),
            "unsup_pr_auc": pr_auc(d["unsup_score"].to_numpy(), y),
            "head_pr_auc": pr_auc(d["head_proba"].to_numpy(), y),
        }

    curves = run_strategies(
        base,
        work,
        args.strategies,
        args.random_repeats,
        args.seed,
        per_round=args.shop_round,
        budget=args.shop_budget,
        pool_data=pool_data,
        truth=truth,
        ls=ls,
        evaluate=evaluate,
    )
    return {
        "pool": {"sessions": args.shop_pool, "anomalies": int(y_pool.sum()), "seed": 1},
        "test": {"sessions": len(y_test), "anomalies": int(y_test.sum()), "seed": 2},
        "evaluated_on": f"independent test shop ({len(y_test)} sessions, seed 2)",
        "config": "shop",
        "overrides": list(args.set),
        "pretrain_s": round(pretrain_s, 1),
        "pool_size": len(y_pool),
        "per_round": args.shop_round,
        "budget": args.shop_budget,
        "one_percent": args.shop_pool // 100,
        "unsupervised": unsup,
        "ceiling": ceiling,
        "curves": curves,
        "seconds": round(time.perf_counter() - t_start, 1),
    }


# --------------------------------------------------------------------- hdfs


def part_hdfs(work: Path, args: argparse.Namespace, ls: Annotation) -> dict[str, Any]:
    t_start = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config("hdfs", [f"seed={args.seed}", *args.hdfs_set])
    base = work / "run-hdfs"
    t0 = time.perf_counter()
    pretrain(HDFS_POOL, cfg, base)
    pretrain_s = time.perf_counter() - t0
    loaded = load_run(base)
    score_file(loaded, HDFS_POOL, base / "scores" / "pool.parquet")
    labels = read_labels(HDFS_POOL, id_col="block_id").select("sequence_id", "label")
    truth = {str(s): (int(y), "system_failure" if y == 1 else None) for s, y in labels.iter_rows()}
    pool_scores = pl.read_parquet(base / "scores" / "pool.parquet")
    ids = pool_scores["sequence_id"]
    y_pool = pool_scores.select("sequence_id").join(labels, on="sequence_id", how="left")["label"].to_numpy()
    if np.isnan(y_pool.astype(float)).any():
        raise RuntimeError("some scored HDFS blocks have no label")
    emb, extra, rank = pool_features(base, pool_scores, np.load(base / "scores" / "latest_embeddings.npy"))
    feats = Features(emb, extra, rank, loop_feature_stats(base, pool_scores, emb, extra))
    # ceiling: 5-fold out-of-fold predictions over all pool labels
    folds = stratified_folds(y_pool, 5, np.random.default_rng(args.seed))

    def out_of_fold(free: bool = False, **overrides: Any) -> np.ndarray:
        oof = np.empty(len(y_pool))
        for f in range(5):
            test = folds == f
            head = fit_head(cfg, feats.rows(~test), y_pool[~test], free=free, **overrides)
            oof[test] = predict_head(head, feats.rows(test))
        return oof

    t0 = time.perf_counter()
    oof = out_of_fold()
    # the loop's rule on these out-of-fold predictions (chosen on the rows it is scored on:
    # one weight out of a few, over every pool label, so the optimism is slight; a ceiling)
    weight, weight_source, _ = choose_blend(cfg.finetune.blend, cfg.finetune.blend_grid, y_pool, oof, rank)
    oof_blend = blend(oof, rank, weight)
    ceiling_fit_s = time.perf_counter() - t0
    unsup_all = pool_scores["unsup_score"].to_numpy()
    ceiling = {
        "blended": pr_auc(oof_blend, y_pool),
        "blend": weight,
        "blend_source": weight_source,
        "head_only": pr_auc(oof, y_pool),
        "protocol": "5-fold stratified out-of-fold over all pool blocks (train on 4/5 of the labels)",
        "fit_s": round(ceiling_fit_s, 1),
        "reference_heads": {},
    }
    for ref_name, overrides in REFERENCE_HEADS.items():
        p_ref = out_of_fold(free=True, cv_folds=2, **overrides)
        ceiling["reference_heads"][ref_name] = {
            "settings": overrides,
            "blended": pr_auc(blend(p_ref, rank, weight), y_pool),
            "head_only": pr_auc(p_ref, y_pool),
        }
    unsup = pr_auc(unsup_all, y_pool)
    print(
        f"hdfs: unsupervised PR-AUC {unsup:.3f}; ceiling (5-fold OOF) blended {ceiling['blended']:.3f}, "
        f"head only {ceiling['head_only']:.3f}",
        flush=True,
    )
    row_of = {s: i for i, s in enumerate(ids.to_list())}

    def evaluate(run: Path, loaded_run: Any, rescorer: Any, labelled: set[str]) -> dict[str, Any]:
        keep = np.ones(len(y_pool), dtype=bool)
        keep[[row_of[s] for s in labelled]] = False
        y = y_pool[keep]
        if rescorer is None:
            score, head_pr = unsup_all, None
        else:  # the pool was just rescored with the head (scores/pool.parquet)
            d = pl.read_parquet(
                run / "scores" / "pool.parquet", columns=["sequence_id", "score", "head_proba"]
            )
            assert d["sequence_id"].equals(ids)
            score, head_pr = d["score"].to_numpy(), pr_auc(d["head_proba"].to_numpy()[keep], y)
        return {
            "pr_auc": pr_auc(score[keep], y),
            "unsup_pr_auc": pr_auc(unsup_all[keep], y),
            "head_pr_auc": head_pr,
            "ceiling_same_rows": pr_auc(oof_blend[keep], y),
            "held_out": int(keep.sum()),
            "held_out_anomalies": int(y.sum()),
        }

    curves = run_strategies(
        base,
        work,
        args.strategies,
        args.random_repeats,
        args.seed,
        per_round=args.hdfs_round,
        budget=args.hdfs_budget,
        pool_data=HDFS_POOL,
        truth=truth,
        ls=ls,
        evaluate=evaluate,
    )
    return {
        "pool": {"blocks": len(y_pool), "anomalies": int(y_pool.sum()), "path": str(HDFS_POOL.name)},
        "evaluated_on": "transductive: the pool blocks not labelled so far (per strategy and budget)",
        "config": "hdfs",
        "overrides": list(args.hdfs_set),
        "pretrain_s": round(pretrain_s, 1),
        "pool_size": len(y_pool),
        "per_round": args.hdfs_round,
        "budget": args.hdfs_budget,
        "one_percent": len(y_pool) // 100,
        "unsupervised": unsup,
        "ceiling": ceiling,
        "curves": curves,
        "seconds": round(time.perf_counter() - t_start, 1),
    }


# ------------------------------------------------------------------ summary


def summarize(part: dict[str, Any]) -> dict[str, Any]:
    """Per-budget table, the random baseline (mean of repeats), ratios to the ceiling, goal checks."""
    curves = part["curves"]
    budgets = [0] + [r["round"] * part["per_round"] for r in next(iter(curves.values()))]
    randoms = [k for k in curves if k.split("-")[0] == "random"]
    strategies = [k for k in curves if k not in randoms]
    table: dict[str, list[float]] = {
        k: [part["unsupervised"]] + [r["pr_auc"] for r in v] for k, v in curves.items()
    }
    if randoms:
        table["random (mean)"] = list(np.mean([table[k] for k in randoms], axis=0))
    one_pct = max(b for b in budgets if b <= part["one_percent"])
    i1 = budgets.index(one_pct)
    transductive = "ceiling_same_rows" in next(iter(curves.values()))[0]
    out: dict[str, Any] = {"budgets": budgets, "table": table, "goal_budget": one_pct, "strategies": {}}
    if len(randoms) > 1:
        out["random_runs"] = randoms
        out["random_sd"] = list(np.std([table[k] for k in randoms], axis=0, ddof=1))
    if transductive:  # the unsupervised score and the ceiling on each run's own held-out rows
        for key, at0 in (
            ("unsup_pr_auc", part["unsupervised"]),
            ("ceiling_same_rows", part["ceiling"]["blended"]),
        ):
            same = {k: [at0] + [r[key] for r in v] for k, v in curves.items()}
            if randoms:
                same["random (mean)"] = list(np.mean([same[k] for k in randoms], axis=0))
            out[f"table_{key}"] = same
    for k in [*strategies, *(["random (mean)"] if randoms else [])]:
        vals = table[k]
        ceil_at = (
            out["table_ceiling_same_rows"][k] if transductive else [part["ceiling"]["blended"]] * len(budgets)
        )
        unsup_at = out["table_unsup_pr_auc"][k] if transductive else [part["unsupervised"]] * len(budgets)
        ratio = vals[i1] / ceil_at[i1]
        info: dict[str, Any] = {
            "pr_auc_at_goal_budget": vals[i1],
            "ceiling_at_goal_budget": ceil_at[i1],
            "ratio_to_ceiling": ratio,
            "meets_95pct": ratio >= GOAL_RATIO,
            "ratio_to_ceiling_at_final_budget": vals[-1] / ceil_at[-1],
            "beats_unsupervised_at_every_budget": all(v > u for v, u in zip(vals[1:], unsup_at[1:])),
        }
        if randoms and k != "random (mean)":
            ref = table["random (mean)"]
            info["beats_random_mean_every_budget"] = all(v > b for v, b in zip(vals[1:], ref[1:]))
            info["beats_every_random_run_every_budget"] = all(
                all(vals[j] > table[rk][j] for rk in randoms) for j in range(1, len(budgets))
            )
            info["random_runs_beaten_per_budget"] = [
                sum(vals[j] > table[rk][j] for rk in randoms) for j in range(1, len(budgets))
            ]
        out["strategies"][k] = info
    return out


def print_table(title: str, part: dict[str, Any], summary: dict[str, Any]) -> None:
    table, budgets = summary["table"], summary["budgets"]
    randoms = summary.get("random_runs", [])
    cols = [c for c in table if c not in randoms] if len(randoms) > 1 else list(table)
    print(f"\n{title}: PR-AUC vs labels ({part['evaluated_on']})")
    head = f"{'labels':>7} " + " ".join(f"{c:>13}" for c in cols) + f" {'unsupervised':>13} {'ceiling':>9}"
    print(head)
    for j, b in enumerate(budgets):
        cells = " ".join(f"{table[c][j]:13.3f}" for c in cols)
        ceil = part["ceiling"]["blended"]
        print(f"{b:7d} {cells} {part['unsupervised']:13.3f} {ceil:9.3f}")
    if len(randoms) > 1:
        print(f"random sampling, {len(randoms)} runs (seeds differ); mean and sd in the table above:")
        for j, b in enumerate(budgets):
            runs = " ".join(f"{table[c][j]:.3f}" for c in randoms)
            print(f"{b:7d}  {runs}  (sd {summary['random_sd'][j]:.3f})")
    heads = {k: [None] + [r.get("head_pr_auc") for r in v] for k, v in part["curves"].items()}
    print("the head alone (head_proba, no blend; '-' = not fine-tuned yet):")
    for j, b in enumerate(budgets):
        print(f"{b:7d} " + " ".join(f"{_fmt(heads[c][j]):>13}" for c in cols if c in heads))
    for key, what in (
        ("table_unsup_pr_auc", "unsupervised score on the same held-out rows"),
        ("table_ceiling_same_rows", "ceiling (out-of-fold) on the same held-out rows"),
    ):
        if key in summary:
            print(f"{what}:")
            for j, b in enumerate(budgets):
                print(f"{b:7d} " + " ".join(f"{summary[key][c][j]:13.3f}" for c in cols))
    c = part["ceiling"]
    print(
        f"ceiling: blended {c['blended']:.3f}, head only {c['head_only']:.3f}; "
        f"unsupervised {part['unsupervised']:.3f}"
    )
    for ref_name, ref in c.get("reference_heads", {}).items():
        print(
            f"  reference head {ref_name} {ref['settings']} (not the loop's head): blended "
            f"{ref['blended']:.3f}, head only {ref['head_only']:.3f}"
        )
    pct = 100 * summary["goal_budget"] / part["pool_size"]
    print(
        f"at {summary['goal_budget']} labels ({pct:.2f}% of the pool), "
        f"ratio to the ceiling (goal >= {GOAL_RATIO}):"
    )
    for k, info in summary["strategies"].items():
        extra = ""
        if "beats_random_mean_every_budget" in info:
            extra = (
                f"; beats random (mean) at every budget: {info['beats_random_mean_every_budget']}"
                f", beats every random run: {info['beats_every_random_run_every_budget']}"
                f" (random runs beaten per budget: {info['random_runs_beaten_per_budget']})"
            )
        print(
            f"  {k:>14}: {info['pr_auc_at_goal_budget']:.3f} / {info['ceiling_at_goal_budget']:.3f} = "
            f"{info['ratio_to_ceiling']:.2f} ({'met' if info['meets_95pct'] else 'NOT met'}; at "
            f"{budgets[-1]} labels {info['ratio_to_ceiling_at_final_budget']:.2f}){extra}; beats the "
            f"unsupervised score at every budget: {info['beats_unsupervised_at_every_budget']}"
        )


def plot(title: str, part: dict[str, Any], summary: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    budgets, table = summary["budgets"], summary["table"]
    randoms = [k for k in table if k == "random" or k.startswith("random-")]
    for k in table:
        if k in randoms:
            continue
        label = k if k != "random (mean)" else f"random (mean of {len(randoms)} seeds)"
        ax.plot(budgets, table[k], marker="o", label=label, color="grey" if k.startswith("random") else None)
    if len(randoms) > 1:
        runs = np.array([table[k] for k in randoms])
        ax.fill_between(
            budgets, runs.min(axis=0), runs.max(axis=0), color="grey", alpha=0.2, label="random (range)"
        )
    elif randoms:
        ax.plot(budgets, table[randoms[0]], marker="o", color="grey", label="random")
    ceil = part["ceiling"]["blended"]
    ax.axhline(ceil, color="black", ls="--", lw=1.2, label=f"supervised ceiling (all labels) {ceil:.3f}")
    ax.axhline(GOAL_RATIO * ceil, color="black", ls=":", lw=0.8, label=f"{GOAL_RATIO:.0%} of the ceiling")
    ax.axhline(
        part["unsupervised"],
        color="tab:red",
        ls="--",
        lw=1.0,
        label=f"unsupervised {part['unsupervised']:.3f}",
    )
    ax.axvline(part["one_percent"], color="lightgrey", lw=0.8)
    ax.set_xlabel("labels (simulated annotator through Label Studio)")
    ax.set_ylabel("PR-AUC")
    ax.set_title(f"{title}: label efficiency\n{part['evaluated_on']}", fontsize=10)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------- main


def _git_state() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty_files": git("status", "--porcelain").splitlines()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=["shop", "hdfs"], default=["shop", "hdfs"])
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    p.add_argument(
        "--random-repeats", type=int, default=10,
        help="random-sampling runs (different seeds); their mean is the baseline",
    )
    p.add_argument("--shop-pool", type=int, default=20_000)
    p.add_argument("--shop-test", type=int, default=5_000)
    p.add_argument("--shop-round", type=int, default=40)
    p.add_argument("--shop-budget", type=int, default=200)
    p.add_argument("--hdfs-round", type=int, default=25)
    p.add_argument("--hdfs-budget", type=int, default=125)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], help="config overrides for the shop run")
    p.add_argument("--hdfs-set", nargs="*", default=[], help="config overrides for the HDFS run")
    p.add_argument("--ls-venv", default=os.environ.get(VENV_ENV), help=f"Label Studio venv (${VENV_ENV})")
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "active_learning.json")
    p.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img")
    p.add_argument(
        "--replot", type=Path, default=None, help="only print the tables and draw the plots of a results JSON"
    )
    args = p.parse_args(argv)
    if args.replot is not None:
        saved = json.loads(args.replot.read_text())
        for part, res in saved["parts"].items():
            res["summary"] = summarize(res)
            print_table(part, res, res["summary"])
            plot(part, res, res["summary"], args.img_dir / f"label_efficiency_{part}.png")
        print(f"\nrecorded command: {saved['command']}")
        return 0
    if "hdfs" in args.parts and not HDFS_POOL.exists():
        print(f"skipping hdfs: {HDFS_POOL} not found", file=sys.stderr)
        args.parts = [x for x in args.parts if x != "hdfs"]
    os.environ.setdefault("ANOMALY_SSL_NO_PROGRESS", "1")
    command = "python " + shlex.join([str(Path(sys.argv[0])), *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    load_before = os.getloadavg()
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-al-")
        args.work = Path(tmp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    server = LabelStudioServer(args.work / "label-studio", port=free_port(), venv_dir=args.ls_venv)
    results: dict[str, Any] = {"command": command, "git": _git_state(), "parts": {}}
    try:
        t0 = time.perf_counter()
        state = server.start()
        results["label_studio_start_s"] = round(time.perf_counter() - t0, 1)
        print(f"Label Studio up at {state.url} after {results['label_studio_start_s']:.0f}s", flush=True)
        ls = Annotation(server, state.url)
        for part in args.parts:
            fn = part_shop if part == "shop" else part_hdfs
            results["parts"][part] = fn(args.work / part, args, ls)
            results["parts"][part]["summary"] = summarize(results["parts"][part])
    finally:
        server.stop()
        if tmp is not None:
            tmp.cleanup()
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["load_average"] = {"before": load_before, "after": os.getloadavg(), "cpus": os.cpu_count()}
    for part, res in results["parts"].items():
        print_table(part, res, res["summary"])
        plot(part, res, res["summary"], args.img_dir / f"label_efficiency_{part}.png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"\n{results['seconds'] / 60:.1f} min; load average before {load_before}, after {os.getloadavg()}")
    pngs = ", ".join(str(args.img_dir / f"label_efficiency_{p}.png") for p in results["parts"])
    print(f"wrote {args.out} and {pngs}")
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
