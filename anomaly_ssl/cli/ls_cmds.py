"""``anomaly-ssl label-studio ...``: install, start, stop and check a local Label Studio.

A thin shell over :mod:`active_learning.ls_server` and
:mod:`active_learning.ls_client`.  Users with their own server skip ``start``
and pass ``--url`` (or ``label_studio.url``) with ``LABEL_STUDIO_API_KEY`` set.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import UserError
from .common import config_options, load_cli_config

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(func: F) -> F:
    """Report active-learning errors as one line (the group only knows AnomalySSLError)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from active_learning.errors import ActiveLearningError

        try:
            return func(*args, **kwargs)
        except ActiveLearningError as exc:
            raise UserError(str(exc), exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _where(func: F) -> F:
    func = click.option(
        "--run",
        "run_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Keep the server's data in RUN/label-studio instead of --data-dir.",
    )(func)
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(".label-studio"),
        show_default=True,
        help="Database, credentials, log and state of the managed server.",
    )(func)
    return func


def _venv_option(func: F) -> F:
    return click.option(
        "--venv",
        "venv_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The server's own virtualenv [default: $ANOMALY_SSL_LS_VENV or "
        "~/.cache/anomaly-ssl/label-studio-venv].",
    )(func)


def _server(data_dir: Path, run_dir: Path | None, port: int = 8080, venv_dir: Path | None = None) -> Any:
    from active_learning.ls_server import LabelStudioServer

    return LabelStudioServer(run_dir / "label-studio" if run_dir else data_dir, port=port, venv_dir=venv_dir)


@click.group("label-studio")
def label_studio() -> None:
    """Run a local Label Studio server for annotators (or check your own).

    \b
      anomaly-ssl label-studio start            # install on first use (~1 min), start on 127.0.0.1:8080
      export LABEL_STUDIO_API_KEY=...           # as printed by start
      anomaly-ssl label-studio status
      anomaly-ssl label-studio stop
    """


@label_studio.command("install")
@_venv_option
@_user_errors
def install_cmd(venv_dir: Path | None) -> None:
    """Install Label Studio into its own virtualenv (done by `start` when needed)."""
    from active_learning.ls_server import LabelStudioServer

    server = LabelStudioServer(venv_dir=venv_dir)
    command = server.ensure_installed()
    click.echo(f"label-studio {server.version} ready: {command}")


@label_studio.command("start")
@click.option("--port", type=int, default=8080, show_default=True, help="Port on 127.0.0.1; 0 = any free.")
@_where
@_venv_option
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for the server to become healthy.",
)
@_user_errors
def start_cmd(
    port: int, data_dir: Path, run_dir: Path | None, venv_dir: Path | None, timeout_s: float
) -> None:
    """Start a managed Label Studio in the background and wait until it answers."""
    server = _server(data_dir, run_dir, port, venv_dir)
    server.start_timeout_s = timeout_s
    state = server.start()
    click.echo(f"Label Studio is running at {state.url} (pid {state.pid}, data {state.data_dir})")
    click.echo(f"log in as {state.username}; the password is in {server.password_path}")
    click.echo("to use it from anomaly-ssl (query-labels, sync-labels), run:")
    click.echo(f"  export LABEL_STUDIO_API_KEY={shlex.quote(server.api_key())}")
    if state.port != 8080:
        click.echo(f"  and pass --set label_studio.url={state.url}")


@label_studio.command("stop")
@_where
@_user_errors
def stop_cmd(data_dir: Path, run_dir: Path | None) -> None:
    """Stop the managed server started from this data directory."""
    server = _server(data_dir, run_dir)
    if server.stop():
        click.echo("Label Studio stopped")
    else:
        click.echo(f"no managed Label Studio is running from {server.data_dir}")


@label_studio.command("status")
@_where
@_user_errors
def status_cmd(data_dir: Path, run_dir: Path | None) -> None:
    """Show whether the managed server runs and is healthy (exit 1 when not)."""
    server = _server(data_dir, run_dir)
    status = server.status()
    if not status.running:
        click.echo(f"not running (data dir {status.data_dir})")
        click.get_current_context().exit(1)
    health = "healthy" if status.healthy else "NOT answering /health"
    click.echo(f"running at {status.url} (pid {status.pid}), {health}; data dir {status.data_dir}")
    click.echo(f"API key: export LABEL_STUDIO_API_KEY=$(cat {shlex.quote(str(server.token_path))})")
    if not status.healthy:
        click.get_current_context().exit(1)


@label_studio.command("check")
@click.option("--url", default=None, help="Server URL [default: label_studio.url from the config].")
@config_options
@click.pass_context
@_user_errors
def check_cmd(ctx: click.Context, url: str | None, config: str | None, set_: tuple[str, ...]) -> None:
    """Check that a Label Studio server answers and accepts the API key."""
    from active_learning.ls_client import LabelStudioClient

    cfg = load_cli_config(ctx, config, set_).label_studio
    if url:
        cfg.url = url
    info = LabelStudioClient.from_config(cfg, retries=0).check()
    click.echo(f"ok: {info['url']} (Label Studio {info['version'] or '?'}) accepts the key as {info['user']}")
