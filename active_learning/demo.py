"""The one-command demo: the whole loop on a simulated shop, ending in an HTML report.

simulate -> pretrain -> score -> start Label Studio -> (query -> annotate -> sync ->
finetune -> rescore) x rounds -> evaluate on held-out sequences -> report.

By default a *simulated annotator* answers from the simulator's ground truth (it
says so everywhere); with ``interactive=True`` the demo stops after each query,
prints the Label Studio URL and login, and waits for a person to annotate.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from anomaly_ssl.config_loader import load_config
from anomaly_ssl.data.simulator import simulate_shop
from anomaly_ssl.evaluate import evaluate_scores
from anomaly_ssl.io import write_json
from anomaly_ssl.pipeline import load_run, score_file
from anomaly_ssl.pretrain import pretrain
from anomaly_ssl.report import build_report

from .finetune import finetune_run, load_rescorer
from .label_store import LabelStore
from .loop import query_labels, sync_labels
from .ls_client import LabelStudioClient
from .ls_server import LabelStudioServer, free_port
from .oracle import ORACLE_NAME, answer_pending, truth_from_labels

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """Paths and headline numbers of a demo run."""

    out: Path
    report: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)
    held_out: dict[str, Any] = field(default_factory=dict)
    annotator: str = ORACLE_NAME
    seconds: float = 0.0


def _step(say: Callable[[str], None], text: str) -> None:
    say(f"==> {text}")


def held_out_metrics(scores: pl.DataFrame, labels: pl.DataFrame, labelled: set[str]) -> dict[str, Any]:
    """PR-AUC/ROC-AUC of the final and the unsupervised score on sequences nobody labelled."""
    joined = scores.join(labels.select("sequence_id", "label"), on="sequence_id", how="inner")
    held = joined.filter(~pl.col("sequence_id").is_in(list(labelled)))
    y = held["label"].to_numpy()
    out: dict[str, Any] = {
        "n_held_out": held.height,
        "n_anomalies": int(y.sum()),
        "n_labelled": len(labelled),
    }
    for name, col in (("fine_tuned", "score"), ("unsupervised", "unsup_score")):
        m = evaluate_scores(held[col].to_numpy(), y)
        out[name] = {"pr_auc": m["pr_auc"], "roc_auc": m["roc_auc"]}
    return out


def run_demo(
    out: str | Path = "demo_out",
    sessions: int = 3000,
    anomaly_rate: float = 0.05,
    rounds: int = 3,
    per_round: int = 40,
    config: str = "shop",
    overrides: tuple[str, ...] = (),
    interactive: bool = False,
    port: int = 0,
    keep_server: bool = False,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the whole loop; see the module docstring.

    Parameters
    ----------
    out : str or Path
        Folder for everything the demo writes (data, run, Label Studio data, report).
    sessions, anomaly_rate, seed
        Simulated shop size, share of anomalous sessions, seed.
    rounds, per_round : int
        Active-learning rounds and labels asked per round.
    config : str
        Config for pretraining (``shop``; ``tiny`` for a quick smoke run).
    overrides : tuple of str
        Extra ``key=value`` config overrides.
    interactive : bool
        Wait for a person to annotate in Label Studio instead of the simulated annotator.
    port : int
        Label Studio port on 127.0.0.1 (0 = any free port).
    keep_server : bool
        Leave Label Studio running at the end.
    say : callable
        Where progress lines go (the CLI passes ``click.echo``).
    """
    started = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shop, run = out / "shop", out / "run"
    _step(say, f"simulating {sessions} shop sessions ({anomaly_rate:.0%} anomalous, seven fraud types)")
    sim = simulate_shop(sessions, anomaly_rate=anomaly_rate, seed=seed)
    sim.write(shop)
    events, labels_path = shop / "events.parquet", shop / "labels.parquet"
    cfg = load_config(config, [f"seed={seed}", f"query.n={per_round}", *overrides])
    _step(say, f"pretraining the masked-event Transformer ({cfg.model.size}) and fitting the detectors")
    pretrain(events, cfg, run)
    card = json.loads((run / "model_card.json").read_text())["validation"]
    say(
        f"    masked-event accuracy {card['val_masked_accuracy']:.3f} "
        f"(always guessing the most frequent event: {card['val_unigram_accuracy']:.3f})"
    )
    _step(say, "scoring every session (unsupervised)")
    loaded = load_run(run)
    summary = score_file(loaded, events, out / "scores_unsupervised.parquet")
    say(f"    {summary.n_flagged} of {summary.n_sequences} sessions flagged at the label-free threshold")
    truth = truth_from_labels(labels_path, cfg.label_studio.taxonomy)
    labels = pl.read_parquet(labels_path)
    server = LabelStudioServer(out / "label-studio", port=port or free_port())
    _step(say, "starting Label Studio on 127.0.0.1 (first start migrates its database: about a minute)")
    state = server.start()
    os.environ.setdefault(cfg.label_studio.api_key_env, server.api_key())
    cfg.label_studio.url = state.url
    client = LabelStudioClient.from_config(cfg.label_studio)
    result = DemoResult(out, out / "report.html")
    try:
        for r in range(1, rounds + 1):
            _step(say, f"round {r}/{rounds}: asking annotators about {per_round} sessions (strategy diverse)")
            sent = query_labels(run, cfg, client, per_round, "diverse")
            if interactive:
                _wait_for_person(client, sent.project_id, state.url, server, say)
            else:
                n = answer_pending(run, client, sent.project_id, truth)
                say(f"    {ORACLE_NAME} answered {n} tasks")
            synced = sync_labels(run, cfg, client)
            say(
                f"    synced {synced.added} new labels; the project now holds {synced.resolved_anomaly} "
                f"anomalous and {synced.resolved_normal} normal verdicts "
                f"({len(synced.unresolved_ids)} unresolved)"
            )
            try:
                ft = finetune_run(run, cfg)
            except Exception as exc:  # one class so far: keep the unsupervised score
                say(f"    not fine-tuned yet: {exc}")
                continue
            loaded = load_run(run)
            score_file(loaded, events, out / f"scores_round{r}.parquet", rescorer=load_rescorer(loaded.run))
            labelled = set(LabelStore.for_run(run).current_labels()["sequence_id"].to_list())
            scores = pl.read_parquet(out / f"scores_round{r}.parquet")
            held = held_out_metrics(scores, labels, labelled)
            result.rounds.append(
                {"round": r, "labels": len(labelled), "model_version": ft.model_version, **held}
            )
            say(
                f"    held-out PR-AUC: fine-tuned {held['fine_tuned']['pr_auc']:.3f} vs unsupervised "
                f"{held['unsupervised']['pr_auc']:.3f} ({held['n_labelled']} labels so far)"
            )
    finally:
        if not keep_server:
            server.stop()
    if result.rounds:
        result.held_out = result.rounds[-1]
    _step(say, "writing the HTML report")
    build_report(
        run, result.report, labels_path=labels_path, store_labels=LabelStore.for_run(run).current_labels()
    )
    result.seconds = time.perf_counter() - started
    write_json(
        out / "demo_summary.json",
        {
            "annotator": result.annotator if not interactive else "person",
            "rounds": result.rounds,
            "seconds": round(result.seconds, 1),
        },
    )
    say(f"done in {result.seconds / 60:.1f} min: open {result.report}")
    if keep_server:
        say(
            f"Label Studio keeps running at {state.url} (stop: anomaly-ssl label-studio stop --data-dir "
            f"{server.data_dir})"
        )
    return result


def _wait_for_person(
    client: LabelStudioClient,
    project_id: int,
    url: str,
    server: LabelStudioServer,
    say: Callable[[str], None],
) -> None:
    """Print where to annotate and wait until every task has an annotation (or Enter is pressed)."""
    import select
    import sys

    say(f"    annotate the tasks at {url}/projects/{project_id}/data")
    say(f"    log in as {server.username} with the password in {server.password_path}")
    say("    waiting for all tasks to be annotated (press Enter to continue earlier) ...")
    while True:
        pending = sum(1 for tasks in client.existing_tasks(project_id).values() for _, n in tasks if n == 0)
        if pending == 0:
            return
        ready = select.select([sys.stdin], [], [], 10.0)[0] if sys.stdin.isatty() else []
        if ready:
            sys.stdin.readline()
            return


__all__ = ["DemoResult", "held_out_metrics", "run_demo"]
