"""What every session generator receives: the shared state of one simulation.

:class:`SimContext` bundles the random draws, the catalogue, the accounts, the
event log and a sampler of session start times.  Two samplers exist:
:class:`DiurnalStarts` for the synthetic shop (more traffic in the evening and
at weekends, quiet nights) and :class:`EmpiricalStarts`, which resamples the
start times of a real event table so injected sessions follow its daily
rhythm.  Times are seconds since the start of the simulated window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from .catalog import Catalog
from .core import Draws, EventLog, cumulative
from .users import Users

#: relative shop traffic per hour of the day (local time)
HOUR_WEIGHTS = (
    0.55, 0.32, 0.2, 0.15, 0.15, 0.25, 0.55, 1.1, 1.6, 1.9, 2.0, 2.1,
    2.4, 2.3, 2.0, 2.0, 2.1, 2.4, 2.9, 3.5, 3.9, 3.6, 2.6, 1.3,
)  # fmt: skip
#: relative traffic per weekday, Monday first
WEEKDAY_WEIGHTS = (1.0, 0.97, 0.97, 1.0, 1.05, 1.15, 1.25)
DAY = 86400.0


class DiurnalStarts:
    """Session start times over ``n_days`` days with a daily and weekly rhythm.

    Parameters
    ----------
    n_days : int
        Length of the window in days.
    start_time : float
        Unix time of the window start (its weekday sets the weekly rhythm).
    """

    def __init__(self, n_days: int, start_time: float) -> None:
        self.span = n_days * DAY
        weekday = dt.datetime.fromtimestamp(start_time, tz=dt.timezone.utc).weekday()
        self._day_cdf = cumulative([WEEKDAY_WEIGHTS[(weekday + k) % 7] for k in range(n_days)])
        self._hour_cdf = cumulative(HOUR_WEIGHTS)

    def human(self, draws: Draws) -> float:
        """A start time following human activity (seconds since the window start)."""
        day = draws.pick(self._day_cdf)
        hour = draws.pick(self._hour_cdf)
        return day * DAY + (hour + draws.u()) * 3600.0

    def flat(self, draws: Draws) -> float:
        """A start time uniform over the window (automated clients do not sleep)."""
        return draws.u() * self.span


class EmpiricalStarts:
    """Start times resampled from real ones (plus a few minutes of jitter).

    Parameters
    ----------
    times : numpy.ndarray
        ``(n,)`` float64 real session start times, seconds since the window start.
    span : float
        Window length in seconds.
    """

    def __init__(self, times: np.ndarray, span: float) -> None:
        self._times = np.sort(np.asarray(times, dtype=np.float64)).tolist()
        self.span = max(float(span), 1.0)

    def human(self, draws: Draws) -> float:
        """A real start time, jittered by about ten minutes."""
        base = self._times[int(draws.u() * len(self._times))] if self._times else draws.u() * self.span
        return min(max(base + 600.0 * draws.normal(), 0.0), self.span)

    def flat(self, draws: Draws) -> float:
        """A start time uniform over the window."""
        return draws.u() * self.span


def start_before(starts: DiurnalStarts | EmpiricalStarts, draws: Draws, latest: float) -> float:
    """A human start time no later than ``latest`` when possible (for chains of sessions)."""
    start = starts.human(draws)
    for _ in range(20):
        if start <= latest:
            return start
        start = starts.human(draws)
    return max(min(start, latest), 0.0)


@dataclass
class SimContext:
    """Shared state handed to every session generator.

    Attributes
    ----------
    draws : Draws
        The random numbers of this component.
    catalog : Catalog
        Items to browse and buy.
    users : Users
        Accounts (normal shoppers first, then fresh fraud accounts as they are made).
    log : EventLog
        Where events are written.
    starts : DiurnalStarts or EmpiricalStarts
        Session start sampler; ``starts.span`` is the window length (s).
    victims : list of int
        Established accounts that an account takeover may hit.
    available_events : frozenset of int, optional
        Event codes the output can express (injection into real data); generators
        skip parts made only of other events.  ``None``: all.
    """

    draws: Draws
    catalog: Catalog
    users: Users
    log: EventLog
    starts: DiurnalStarts | EmpiricalStarts
    victims: list[int] = field(default_factory=list)
    available_events: frozenset[int] | None = None

    def can_write(self, event: int) -> bool:
        """Whether ``event`` survives into the output."""
        return self.available_events is None or event in self.available_events
