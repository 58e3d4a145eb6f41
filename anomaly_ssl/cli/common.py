"""Options and helpers shared by CLI commands (config loading, run directories)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def config_options(func: F) -> F:
    """Add ``--config FILE`` and repeatable ``--set KEY=VALUE`` to a command or the group."""
    func = click.option(
        "--set",
        "set_",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one config value, e.g. --set model.d_model=64 (repeatable).",
    )(func)
    func = click.option(
        "--config",
        "config",
        default=None,
        metavar="FILE",
        help="YAML config file, or a shipped name: default, tiny, shop, hdfs, taobao.",
    )(func)
    return func


def collect_config_args(
    ctx: click.Context, config: str | None, set_: tuple[str, ...]
) -> tuple[str | None, list[str]]:
    """Merge --config/--set given before the command (group) and after it (command).

    The command's --config wins over the group's; --set values apply group first,
    then command, so the last one given wins.
    """
    root = ctx.find_root()
    group_config = root.params.get("config")
    group_sets = list(root.params.get("set_") or ())
    return (config or group_config), group_sets + list(set_)


def load_cli_config(
    ctx: click.Context,
    config: str | None,
    set_: tuple[str, ...],
    run_dir: str | Path | None = None,
) -> Any:
    """Load the effective config for a command.

    With ``run_dir``, the run's saved config is the base (so scoring reuses the
    run's data settings without ``--config``); --config and --set apply on top.
    """
    from ..config_loader import load_config

    path, sets = collect_config_args(ctx, config, set_)
    base = None
    if run_dir is not None:
        from ..run import RunDir

        base = RunDir(run_dir).read_config_dict()
    return load_config(path, sets, base=base)
