"""``anomaly-ssl demo``: the whole loop on a simulated shop, in one command."""

from __future__ import annotations

import click


@click.command("demo")
@click.option(
    "--out",
    default="demo_out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the data, the run, Label Studio's data and the report.",
)
@click.option(
    "--sessions",
    default=3000,
    show_default=True,
    type=click.IntRange(min=200),
    help="Simulated shop sessions.",
)
@click.option("--anomaly-rate", default=0.05, show_default=True, type=click.FloatRange(0.005, 0.3))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1), help="Labelling rounds.")
@click.option(
    "--per-round", default=40, show_default=True, type=click.IntRange(min=2), help="Labels per round."
)
@click.option(
    "--config",
    "config",
    default="shop",
    show_default=True,
    help="Pretraining config (shop; tiny for a smoke test).",
)
@click.option("--set", "set_", multiple=True, metavar="KEY=VALUE", help="Config override (repeatable).")
@click.option(
    "--interactive",
    is_flag=True,
    help="Stop after each query and wait for a person to annotate in Label Studio "
    "(default: a simulated annotator answers from the simulator's ground truth).",
)
@click.option(
    "--port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Label Studio port on 127.0.0.1 (0 = any free port).",
)
@click.option("--keep-server", is_flag=True, help="Leave Label Studio running at the end.")
@click.option("--seed", default=0, show_default=True, type=int)
def demo(
    out: str,
    sessions: int,
    anomaly_rate: float,
    rounds: int,
    per_round: int,
    config: str,
    set_: tuple[str, ...],
    interactive: bool,
    port: int,
    keep_server: bool,
    seed: int,
) -> None:
    """Simulate a shop, pretrain, score, label with Label Studio, fine-tune, report.

    Runs the whole loop end to end (about 10 minutes on 2 CPU cores) and writes
    OUT/report.html.  Unless --interactive, a simulated annotator (it answers
    from the simulator's ground truth, and says so) does the labelling.
    """
    from active_learning.demo import run_demo

    run_demo(
        out,
        sessions,
        anomaly_rate,
        rounds,
        per_round,
        config,
        set_,
        interactive,
        port,
        keep_server,
        seed,
        say=click.echo,
    )
