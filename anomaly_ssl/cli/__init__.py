"""The ``anomaly-ssl`` command line: a thin shell over the library.

This package is the composition root: the only place in ``anomaly_ssl`` that may
import ``active_learning``.  Commands are loaded lazily so ``--help`` is fast.
User mistakes (:class:`~anomaly_ssl.errors.AnomalySSLError`, click usage errors)
print one line and exit 1 (data) or 2 (usage), never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from active_learning.errors import ActiveLearningError

from .._version import __version__
from ..errors import AnomalySSLError
from .common import config_options

#: error roots whose messages are shown as one line (user mistakes, not bugs)
USER_ERRORS = (AnomalySSLError, ActiveLearningError)

log = logging.getLogger(__name__)

#: command name -> "module:attribute" (relative to this package), loaded on first use
COMMANDS: dict[str, str] = {
    "simulate": ".simulate_cmd:simulate",
    "inspect": ".inspect_cmd:inspect_cmd",
    "pretrain": ".pretrain_cmd:pretrain",
    "score": ".score_cmds:score",
    "evaluate": ".score_cmds:evaluate",
    "query-labels": ".al_cmds:query_labels",
    "sync-labels": ".al_cmds:sync_labels",
    "finetune": ".al_cmds:finetune",
    "label-studio": ".ls_cmds:label_studio",
    "report": ".report_cmd:report",
    "demo": ".demo_cmd:demo",
}


class UserError(click.ClickException):
    """A user mistake reported as one line (``error: ...``) with the error's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used.

    It also turns :class:`AnomalySSLError` into a one-line :class:`UserError`,
    so click's own runner (and ``CliRunner`` in tests) shows no traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            raise UserError(str(exc), getattr(exc, "exit_code", 1)) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._spec_exists(name)]

    @staticmethod
    def _spec_exists(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        try:
            return importlib.util.find_spec(module, __name__) is not None
        except ModuleNotFoundError:
            return False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None or not self._spec_exists(cmd_name):
            return None
        module_name, attr = spec.split(":")
        module = importlib.import_module(module_name, __name__)
        return getattr(module, attr)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, "--version", prog_name="anomaly-ssl")
@config_options
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, **_: Any) -> None:
    """Find anomalous behaviour in event sequences without labels, and sharpen
    the detector with a few human labels from Label Studio.

    \b
    Typical loop:
      anomaly-ssl simulate --out shop               # synthetic shop data
      anomaly-ssl --config shop pretrain --data shop/events.parquet --run runs/shop
      anomaly-ssl score --run runs/shop --data shop/events.parquet --out scores.parquet
      anomaly-ssl evaluate --scores scores.parquet --labels shop/labels.parquet
      anomaly-ssl query-labels --run runs/shop --n 50
      anomaly-ssl sync-labels --run runs/shop && anomaly-ssl finetune --run runs/shop

    --config and --set work before or after the command name.
    """
    from ..logs import setup_logging

    setup_logging(-1 if quiet else verbose)
    if quiet:
        import os

        os.environ.setdefault("ANOMALY_SSL_NO_PROGRESS", "1")
    ctx.ensure_object(dict)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map errors to exit codes."""
    try:
        rv = cli.main(args=argv, prog_name="anomaly-ssl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except USER_ERRORS as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
