"""``query-labels``, ``sync-labels`` and ``finetune``: the active-learning loop."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from .common import config_options, load_cli_config


def _ls_options(func: Any) -> Any:
    func = click.option(
        "--project", default=None, help="Label Studio project title [default: label_studio.project]."
    )(func)
    func = click.option(
        "--url",
        default=None,
        help="Label Studio URL [default: label_studio.url]; the API key comes from "
        "$LABEL_STUDIO_API_KEY (or label_studio.api_key_env).",
    )(func)
    return func


def _client(cfg: Any, url: str | None, project: str | None) -> Any:
    from active_learning.ls_client import LabelStudioClient

    if url:
        cfg.label_studio.url = url
    if project:
        cfg.label_studio.project = project
    cfg.label_studio.validate()
    return LabelStudioClient.from_config(cfg.label_studio, os.environ)


@click.command("query-labels")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option(
    "--n", "n", default=None, type=click.IntRange(min=1), help="Sequences to send [default: query.n]."
)
@click.option(
    "--strategy",
    default=None,
    type=click.Choice(["uncertainty", "diverse", "topk", "random"]),
    help="uncertainty = nearest the decision boundary (of the fine-tuned head once there is one); "
    "diverse = uncertain and not near-copies of each other; topk = highest scores; random = baseline "
    "[default: query.strategy].",
)
@click.option(
    "--scores",
    "scores_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Query from this score file instead of the run's latest scores.",
)
@click.option(
    "--embeddings",
    "embeddings_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Embeddings of --scores (needed by --strategy diverse).",
)
@_ls_options
@config_options
@click.pass_context
def query_labels(
    ctx: click.Context,
    run_dir: str,
    n: int | None,
    strategy: str | None,
    scores_path: str | None,
    embeddings_path: str | None,
    url: str | None,
    project: str | None,
    config: str | None,
    set_: tuple[str, ...],
) -> None:
    """Pick the sequences a label would teach most and send them to Label Studio.

    Picks from the sequences most recently scored with `score --run RUN` (or
    --scores), never sends a sequence twice, records what was sent, when and
    why, and pseudonymises entity ids (query.pseudonymize) before they leave.
    """
    from active_learning.loop import query_labels as run_query

    cfg = load_cli_config(ctx, config, set_, run_dir=run_dir)
    client = _client(cfg, url, project)
    result = run_query(run_dir, cfg, client, n, strategy, scores_path, embeddings_path)
    resent = result.counts.get("resent", 0)
    again = f"; {resent} of them again, their earlier push did not complete" if resent else ""
    click.echo(
        f"sent {len(result.sequence_ids)} sequences ({result.strategy}, round {result.round}{again}) to "
        f"project {result.project!r} (id {result.project_id}): {result.url}/projects/{result.project_id}/data"
    )


@click.command("sync-labels")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@_ls_options
@config_options
@click.pass_context
def sync_labels(
    ctx: click.Context,
    run_dir: str,
    url: str | None,
    project: str | None,
    config: str | None,
    set_: tuple[str, ...],
) -> None:
    """Pull finished annotations into the run's label store (safe to repeat).

    Skipped or cancelled annotations are ignored; each sequence's label is the
    majority of its annotators, ties stay unresolved and are listed.
    """
    from active_learning.loop import sync_labels as run_sync

    cfg = load_cli_config(ctx, config, set_, run_dir=run_dir)
    result = run_sync(run_dir, cfg, _client(cfg, url, project))
    counts = result.to_dict()
    counts.pop("unresolved_ids")
    click.echo(json.dumps(counts, indent=2))
    if result.unresolved_ids:
        click.echo(f"unresolved (tie or only 'unsure'): {', '.join(result.unresolved_ids[:20])}", err=True)


@click.command("finetune")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@config_options
@click.pass_context
def finetune(ctx: click.Context, run_dir: str, config: str | None, set_: tuple[str, ...]) -> None:
    """Train the classification head on the labels and blend it into the score.

    Afterwards `score` writes the blended score (unsupervised ensemble + head)
    and records the new model version.  With labels of one class only, the
    unsupervised score is kept and nothing changes.
    """
    from active_learning.al_errors import OneClassError
    from active_learning.finetune import finetune_run

    cfg = load_cli_config(ctx, config, set_, run_dir=run_dir)
    try:
        result = finetune_run(run_dir, cfg)
    except OneClassError as exc:
        from ..run import RunDir

        kept = (
            "the head of the previous round"
            if RunDir(run_dir).head_path.exists()
            else "the unsupervised score"
        )
        click.echo(f"not fine-tuned: {exc}; `score` keeps {kept}", err=True)
        return
    click.echo(json.dumps(result.to_dict(), indent=2, default=str))
