"""Building blocks of the anomaly generators: actors' clocks, fresh accounts, shared scripts.

Fraud is run by scripts and by people.  :class:`Clock` gives the think times
of either (regular and fast, or log-normal and human); :func:`fresh_account`
registers an account with the same profile law as normal shoppers, so its
attributes reveal nothing; :func:`open_session` opens a labelled session;
:func:`replay` writes one member's copy of a ring's shared script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .context import SimContext
from .core import (
    HOME_COUNTRY_WEIGHTS,
    MIN_THINK_SECONDS,
    TYPE_NAMES,
    Draws,
    cumulative,
    think,
)

#: home countries drawn like normal shoppers'
HOME_CDF = cumulative(HOME_COUNTRY_WEIGHTS)


class Clock:
    """Think times of one actor: scripted (regular, fast) or human (log-normal)."""

    def __init__(self, draws: Draws, scripted: bool, interval: float, speed: float = 1.0) -> None:
        self.d = draws
        self.scripted = scripted
        self.interval = interval
        self.speed = speed

    def step(self, human_median: float) -> float:
        """The pause before the next event (s); ``human_median`` is a person's typical pause."""
        if self.scripted:
            return max(self.interval * (1.0 + 0.04 * self.d.normal()), MIN_THINK_SECONDS)
        return think(self.d, human_median * self.speed, 0.8)


def fresh_account(ctx: SimContext, new: bool, favourites: Sequence[int] | None = None) -> int:
    """Register a fresh account (same profile law as normal users)."""
    user = ctx.users.add(ctx.draws, ctx.catalog, new=new)
    if favourites:
        ctx.users.fav_cats[user] = list(favourites)
        ctx.users.fav_cdf[user] = cumulative([1.0] * len(favourites))
    return user


def open_session(
    ctx: SimContext,
    name: str,
    group: int,
    user: int,
    start: float,
    device: int | None = None,
    device_id: int | None = None,
    country: int | None = None,
) -> None:
    """Open an anomalous session; device and country default to the account's own."""
    u = ctx.users
    ctx.log.new_session(
        user,
        u.device[user] if device is None else device,
        u.device_id[user] if device_id is None else device_id,
        u.country[user] if country is None else country,
        start,
        TYPE_NAMES.index(name),
        group,
    )


def replay(
    ctx: SimContext, script: list[tuple[int, dict[str, Any]]], delays: list[float], jitter: float
) -> None:
    """Write one member's copy of a ring's shared script (times jittered by ``jitter``)."""
    d, log_ = ctx.draws, ctx.log
    t = 0.0
    for (ev, kwargs), delay in zip(script, delays):
        log_.add(t, ev, **kwargs)
        t += max(delay * (1.0 + jitter * d.normal()), MIN_THINK_SECONDS)
