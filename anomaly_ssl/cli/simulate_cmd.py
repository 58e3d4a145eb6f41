"""``anomaly-ssl simulate``: write a synthetic shop click-stream with labelled anomalies."""

from __future__ import annotations

from pathlib import Path

import click

from .common import collect_config_args, config_options, load_cli_config


@click.command("simulate")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder; events.parquet and labels.parquet are written there.",
)
@click.option(
    "--sessions", default=2000, show_default=True, type=click.IntRange(min=1), help="Number of sessions."
)
@click.option(
    "--anomaly-rate",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0.0, 0.5),
    help="Share of anomalous sessions (0 to 0.5).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same data).")
@click.option(
    "--users",
    default=None,
    type=click.IntRange(min=1),
    help="Number of regular shoppers [default: sessions / 6].",
)
@click.option(
    "--days", default=14, show_default=True, type=click.IntRange(min=1), help="Length of the window."
)
@config_options
@click.pass_context
def simulate(
    ctx: click.Context,
    out: Path,
    sessions: int,
    anomaly_rate: float,
    seed: int,
    users: int | None,
    days: int,
    config: str | None,
    set_: tuple[str, ...],
) -> None:
    """Simulate an online shop's sessions with labelled anomalies.

    Normal shoppers browse, search, buy, review and return over several days;
    scraping bots, order-brushing rings, card testers, account takeovers,
    returns and coupon abusers and cart hoarders are mixed in.  The labels
    name the sequence ids the data layer gives the events under the shop
    config (sessions cut per user at a 30-minute gap).

    \b
    Example:
      anomaly-ssl simulate --out shop --sessions 5000 --anomaly-rate 0.03
      anomaly-ssl --config shop pretrain --data shop/events.parquet --run runs/shop
    """
    from ..data.simulator import simulate_shop

    path, sets = collect_config_args(ctx, config, set_)
    if path or sets:  # not used by the simulator, but a typo should not pass silently
        load_cli_config(ctx, config, set_)
    shop = simulate_shop(sessions, anomaly_rate=anomaly_rate, seed=seed, n_users=users, n_days=days)
    events_path, labels_path = shop.write(out)
    s = shop.summary()
    rate = s["anomalies"] / max(s["sessions"], 1)
    click.echo(f"simulated {s['sessions']:,} sessions of {s['users']:,} users over {s['days']} days")
    click.echo(f"events: {s['events']:,}")
    click.echo(f"anomalous sessions: {s['anomalies']:,} ({rate:.1%})")
    for name, count in s["per_type"].items():
        click.echo(f"  {name:<18} {count:>6,}")
    click.echo(f"wrote {events_path} and {labels_path}")
