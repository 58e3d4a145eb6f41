"""``anomaly-ssl report --run RUN``: write the run's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.command("report")
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None,
              help="HTML file to write (default RUN/report.html).")
@click.option("--scores", "scores_path", type=click.Path(path_type=Path), default=None,
              help="Score file (default RUN/scores/latest.parquet).")
@click.option("--labels", "labels_path", type=click.Path(path_type=Path), default=None,
              help="Ground-truth labels: sequence_id,label[,anomaly_type] (parquet/CSV/JSONL).")
@click.option("--embeddings", "embeddings_path", type=click.Path(path_type=Path), default=None,
              help="Embeddings for the map (default <scores stem>_embeddings.npy beside the scores).")
@click.option("--top", default=20, show_default=True, type=click.IntRange(min=0),
              help="How many of the highest-scoring sequences to explain.")
def report(
    run_dir: Path,
    out_path: Path | None,
    scores_path: Path | None,
    labels_path: Path | None,
    embeddings_path: Path | None,
    top: int,
) -> Any:
    """Write one HTML file (inline figures, no scripts, opens from disk) with the
    flagged sequences and why they were flagged, the score distribution, the
    evaluation against labels, an embedding map, the active-learning history,
    the training curves and the model card.

    Analyst labels from the run's label store (RUN/labels/labels.jsonl) are shown
    beside the anomalies, and used for the evaluation when --labels is not given.

    \b
    Examples:
      anomaly-ssl report --run runs/shop
      anomaly-ssl report --run runs/shop --labels shop/labels.parquet --out shop_report.html
    """
    from active_learning.label_store import LabelStore

    from ..report import build_report

    store = LabelStore.for_run(run_dir)
    store_labels = store.current_labels() if store.path.is_file() else None
    if store_labels is not None and store_labels.height == 0:
        store_labels = None
    out = build_report(run_dir, out_path, scores_path, labels_path, top, store_labels=store_labels,
                       embeddings_path=embeddings_path)
    click.echo(f"wrote {out}")
