"""``anomaly-ssl pretrain --data DATA --run RUN``: pretrain the masked-event Transformer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from .common import collect_config_args, config_options, load_cli_config

log = logging.getLogger(__name__)


@click.command("pretrain")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Training data file.")
@click.option(
    "--run",
    "--run-dir",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory to create (config, vocabulary, weights, metrics, checkpoint, model card); "
    "under torchrun spell it --run-dir (torchrun would take --run for its own --run-path).",
)
@click.option("--resume", is_flag=True, help="Continue from RUN/checkpoints/last.pt (reuses RUN's config).")
@config_options
@click.pass_context
def pretrain(
    ctx: click.Context, data: Path, run_dir: Path, resume: bool, config: str | None, set_: tuple[str, ...]
) -> Any:
    """Pretrain on unlabelled sequences in DATA and write the run directory RUN.

    \b
    Examples:
      anomaly-ssl --config shop pretrain --data shop/events.parquet --run runs/shop
      anomaly-ssl --config hdfs pretrain --data ../shared/data/hdfs/hdfs_train --run runs/hdfs
      anomaly-ssl pretrain --data shop/events.parquet --run runs/shop --resume
      torchrun --nproc_per_node 2 -m anomaly_ssl pretrain --config shop --data D --run-dir R
    """
    from ..distributed import cleanup
    from ..pretrain import pretrain as run_pretrain
    from ..run import RunDir

    path, _ = collect_config_args(ctx, config, set_)
    reuse = resume and path is None and RunDir(run_dir).config_path.exists()
    cfg = load_cli_config(ctx, config, set_, run_dir=run_dir if reuse else None)
    try:
        result = run_pretrain(data, cfg, run_dir, resume=resume)
    finally:
        cleanup()
    if result.dist.is_main:
        v = result.card["validation"]
        t = result.card["training"]
        acc = v.get("val_masked_accuracy")
        uni = v.get("val_unigram_accuracy")
        summary = (
            f"pretrained {t['steps']} steps in {t['wall_time_s']:.1f} s ({t['tokens_per_s']:,.0f} tokens/s)"
        )
        if acc is not None:
            summary += f"; val masked accuracy {acc:.3f} (unigram {uni:.3f}), val loss {v['val_loss']:.4f}"
        click.echo(summary)
        click.echo(f"run directory: {run_dir}")
    return 0
