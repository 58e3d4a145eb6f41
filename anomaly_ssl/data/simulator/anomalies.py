"""The anomaly library: one generator per kind of shop fraud or abuse, and the mixer.

Each generator (:mod:`.bots`: scraping bots, order brushing, cart hoarding;
:mod:`.fraud`: card testing, account takeover, returns and coupon abuse)
writes one *incident* into the event log: a single session, or a coordinated
group (a bot farm running one script, a brushing ring ordering one item,
fresh accounts reusing a coupon from one phone, scalpers at a product drop),
and returns how many sessions it wrote (never more than its budget).  Many
incidents are subtle on purpose: a human-looking browsing prefix, log-normal
human timing and a short anomalous part, so session length alone does not
give them away.  :func:`generate_anomalies` splits a session budget over the
types; it serves both the synthetic shop and the injection into real event
tables (:mod:`.inject`), where :data:`REQUIRED_EVENTS` decides which types the
real event vocabulary can express.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .bots import cart_hoarding, order_brushing, scraping_bot
from .context import SimContext
from .core import (
    ADD_TO_CART,
    ADDRESS_CHANGE,
    ANOMALY_TYPES,
    APPLY_COUPON,
    LOGIN,
    PAYMENT_FAILED,
    PAYMENT_SUCCESS,
    RETURN_REQUEST,
    VIEW,
    Draws,
)
from .fraud import account_takeover, card_testing, coupon_abuse, returns_abuse

log = logging.getLogger(__name__)

#: events each type cannot do without (injection skips types whose events are not mapped)
REQUIRED_EVENTS: dict[str, frozenset[int]] = {
    "scraping_bot": frozenset({VIEW}),
    "order_brushing": frozenset({VIEW, PAYMENT_SUCCESS}),
    "card_testing": frozenset({PAYMENT_FAILED}),
    "account_takeover": frozenset({LOGIN, ADDRESS_CHANGE}),
    "returns_abuse": frozenset({RETURN_REQUEST}),
    "coupon_abuse": frozenset({APPLY_COUPON}),
    "cart_hoarding": frozenset({ADD_TO_CART}),
}
#: share of the anomaly budget per type (bot farms are the most common abuse)
TYPE_WEIGHTS: dict[str, float] = {
    "scraping_bot": 0.18,
    "order_brushing": 0.14,
    "card_testing": 0.14,
    "account_takeover": 0.14,
    "returns_abuse": 0.14,
    "coupon_abuse": 0.13,
    "cart_hoarding": 0.13,
}
#: type name -> incident generator ``(ctx, budget) -> sessions written``
GENERATORS: dict[str, Callable[[SimContext, int], int]] = {
    "scraping_bot": scraping_bot,
    "order_brushing": order_brushing,
    "card_testing": card_testing,
    "account_takeover": account_takeover,
    "returns_abuse": returns_abuse,
    "coupon_abuse": coupon_abuse,
    "cart_hoarding": cart_hoarding,
}
assert tuple(GENERATORS) == ANOMALY_TYPES


def allocate(n_sessions: int, types: Sequence[str], draws: Draws) -> dict[str, int]:
    """Split ``n_sessions`` anomalous sessions over ``types`` (largest remainder, >= 1 each if possible)."""
    if not types:
        return {}
    if n_sessions < len(types):
        order = sorted(types, key=lambda _: draws.u())
        return {name: int(name in order[:n_sessions]) for name in types}
    weights = [TYPE_WEIGHTS.get(name, 1.0 / len(types)) for name in types]
    total = sum(weights)
    extra = n_sessions - len(types)
    raw = [extra * w / total for w in weights]
    counts = [1 + int(r) for r in raw]
    by_remainder = sorted(range(len(types)), key=lambda k: int(raw[k]) - raw[k])
    for k in by_remainder[: n_sessions - sum(counts)]:
        counts[k] += 1
    return dict(zip(types, counts))


def generate_anomalies(
    ctx: SimContext, n_sessions: int, types: Sequence[str] = ANOMALY_TYPES
) -> dict[str, int]:
    """Write exactly ``n_sessions`` anomalous sessions, split over ``types``.

    Returns
    -------
    dict
        Sessions written per type.
    """
    counts = allocate(n_sessions, types, ctx.draws)
    for name, budget in counts.items():
        remaining = budget
        while remaining > 0:
            made = GENERATORS[name](ctx, remaining)
            assert 1 <= made <= remaining, (name, made, remaining)
            remaining -= made
    log.debug("anomalous sessions per type: %s", counts)
    return counts
