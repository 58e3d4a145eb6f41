"""``anomaly-ssl score`` and ``anomaly-ssl evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .common import config_options, load_cli_config


@click.command("score")
@click.option(
    "--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory from `pretrain`."
)
@click.option(
    "--data", "data_path", required=True, type=click.Path(dir_okay=False), help="Sequences to score."
)
@click.option(
    "--out",
    "out_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Score parquet to write [default: RUN/scores/<data name>.parquet].",
)
@click.option(
    "--batch-rows",
    default=50_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Sequences per streamed batch (bounds memory).",
)
@click.option("--no-explain", is_flag=True, help="Skip the explanation columns (faster).")
@click.option("--unsupervised", is_flag=True, help="Ignore a fine-tuned head; write the unsupervised score.")
@click.option(
    "--embeddings",
    "embeddings_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write the sequence embeddings (.npy, float32, row-aligned).",
)
@config_options
@click.pass_context
def score(
    ctx: click.Context,
    run_dir: str,
    data_path: str,
    out_path: str | None,
    batch_rows: int,
    no_explain: bool,
    unsupervised: bool,
    embeddings_path: str | None,
    config: str | None,
    set_: tuple[str, ...],
) -> None:
    """Score every sequence in DATA with the detector of RUN.

    Writes one row per sequence: sequence_id, score (higher = more anomalous),
    is_anomaly (score above the label-free threshold), one column per detector,
    and explanations: the most surprising events, the nearest normal training
    sequences, each detector's contribution.  Uses the run's data settings, so
    no --config is needed.  After `finetune`, the score blends the head's
    probability with the unsupervised score (use --unsupervised to skip it).
    """
    from ..pipeline import load_run, score_file
    from .common import collect_config_args

    path, sets = collect_config_args(ctx, config, set_)
    if path is not None:
        load_cli_config(ctx, config, set_, run_dir=run_dir)  # validates the file early
    loaded = load_run(run_dir, sets)
    if path is not None:
        loaded.cfg = load_cli_config(ctx, config, set_, run_dir=run_dir)
    rescorer = None
    if not unsupervised:
        from active_learning.finetune import load_rescorer

        rescorer = load_rescorer(loaded.run)
    out = (
        Path(out_path)
        if out_path
        else loaded.run.scores_dir / f"{Path(data_path).name.split('.')[0]}.parquet"
    )
    summary = score_file(loaded, data_path, out, rescorer, batch_rows, not no_explain, True, embeddings_path)
    click.echo(json.dumps(summary.to_dict(), indent=2))


@click.command("evaluate")
@click.option(
    "--scores", "scores_path", required=True, type=click.Path(dir_okay=False), help="Output of `score`."
)
@click.option(
    "--labels",
    "labels_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="sequence_id,label[,anomaly_type] (parquet, CSV or JSON lines).",
)
@click.option("--id-col", default="sequence_id", show_default=True, help="Id column of the labels file.")
@click.option("--label-col", default="label", show_default=True, help="Label column (0 normal, 1 anomaly).")
@click.option("--type-col", default="anomaly_type", show_default=True, help="Anomaly-type column, if any.")
@click.option(
    "--plots",
    "plots_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Write PR-curve, ROC and score-histogram PNGs here.",
)
@click.option(
    "--out", "out_json", default=None, type=click.Path(dir_okay=False), help="Also write the JSON here."
)
def evaluate(
    scores_path: str,
    labels_path: str,
    id_col: str,
    label_col: str,
    type_col: str,
    plots_dir: str | None,
    out_json: str | None,
) -> None:
    """Compare a score file with labels and print metrics as JSON.

    Precision, recall, F1 and FPR are at the score file's own label-free
    threshold (never tuned on these labels); ROC-AUC and PR-AUC are
    threshold-free.  The best-F1 threshold on these labels is reported only
    under a key that says so (best_f1_oracle_threshold).
    """
    from ..evaluate import evaluate_files

    result = evaluate_files(scores_path, labels_path, id_col, label_col, type_col, plots_dir)
    text = json.dumps(result, indent=2, default=_json_default)
    if out_json:
        from ..io import atomic_write_text

        atomic_write_text(out_json, text + "\n")
    click.echo(text)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)
