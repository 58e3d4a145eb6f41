"""``anomaly-ssl inspect DATA``: summarise a data file with the effective data settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import config_options, load_cli_config


@click.command("inspect")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@config_options
@click.pass_context
def inspect_cmd(
    ctx: click.Context, data: Path, as_json: bool, config: str | None, set_: tuple[str, ...]
) -> Any:
    """Read DATA as the pipeline would and print entities, sequences, lengths,
    vocabulary sizes, top events, dropped rows and the time range.

    \b
    Examples:
      anomaly-ssl --config shop inspect shop/events.parquet
      anomaly-ssl inspect ../shared/data/hdfs/hdfs_train --config hdfs --json
      anomaly-ssl inspect hdfs_train --set data.format=lines
    """
    from ..data.inspect import format_summary, inspect_data
    from ..io import to_json

    cfg = load_cli_config(ctx, config, set_)
    summary = inspect_data(data, cfg)
    click.echo(to_json(summary) if as_json else format_summary(summary))
