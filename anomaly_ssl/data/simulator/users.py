"""Shoppers and accounts: preferences, devices, payment methods, home country.

Each account has a few favourite categories, a home device (and sometimes a
second one), a saved payment method and card, a home country, an activity
level (how many sessions it gets), and behavioural traits: how readily it adds
to cart, uses coupons and returns items, and how fast it clicks.  Normal
shoppers and the fresh accounts fraudsters register are drawn by the same
code, so an account's attributes alone do not reveal its label.
"""

from __future__ import annotations

import numpy as np

from .catalog import Catalog
from .core import (
    ANDROID_APP,
    APP_DEVICES,
    APPLE_PAY,
    CARD_METHODS,
    GOOGLE_PAY,
    HOME_COUNTRY_WEIGHTS,
    HUMAN_DEVICE_WEIGHTS,
    PAYMENT_WEIGHTS,
    Draws,
    cumulative,
)

_DEVICE_CDF = cumulative(HUMAN_DEVICE_WEIGHTS)
_PAYMENT_CDF = cumulative(PAYMENT_WEIGHTS)
_COUNTRY_CDF = cumulative(HOME_COUNTRY_WEIGHTS)
#: share of sessions a user spends outside their favourite categories
EXPLORE_PROB = 0.2
#: most sessions a heavy user gets relative to the median user
MAX_ACTIVITY = 6.0


class Users:
    """A growing table of accounts (plain lists, index = user index)."""

    def __init__(self) -> None:
        self.device: list[int] = []
        self.device_id: list[int] = []
        self.second_device: list[int] = []
        self.second_device_id: list[int] = []
        self.pay: list[int] = []
        self.card: list[int] = []
        self.country: list[int] = []
        self.fav_cats: list[list[int]] = []
        self.fav_cdf: list[list[float]] = []
        self.activity: list[float] = []
        self.buy_prop: list[float] = []
        self.coupon_prop: list[float] = []
        self.return_prop: list[float] = []
        self.speed: list[float] = []
        self.is_new: list[bool] = []

    def __len__(self) -> int:
        return len(self.device)

    def add(self, draws: Draws, catalog: Catalog, new: bool = False) -> int:
        """Draw one account's profile and append it; return its index.

        ``new`` marks an account registered inside the simulated window (its
        first session starts with ``signup``).
        """
        d = draws
        device = d.pick(_DEVICE_CDF)
        self.device.append(device)
        self.device_id.append(d.token())
        if d.u() < 0.35:
            second = d.pick(_DEVICE_CDF)
            self.second_device.append(
                second if second != device else (device + 2) % len(HUMAN_DEVICE_WEIGHTS)
            )
            self.second_device_id.append(d.token())
        else:
            self.second_device.append(-1)
            self.second_device_id.append(-1)
        pay = d.pick(_PAYMENT_CDF)
        if pay == APPLE_PAY and device == ANDROID_APP:
            pay = GOOGLE_PAY
        self.pay.append(pay)
        self.card.append(d.token() if pay in CARD_METHODS else -1)
        self.country.append(d.pick(_COUNTRY_CDF))
        n_fav = d.randint(1, 3)
        favs = [catalog.sample_category(d) for _ in range(n_fav)]
        self.fav_cats.append(favs)
        self.fav_cdf.append(cumulative([d.u() + 0.2 for _ in favs]))
        self.activity.append(min(d.lognormal(1.0, 0.8), MAX_ACTIVITY))
        self.buy_prop.append(min(d.lognormal(1.0, 0.45), 2.5))
        deal_hunter = d.u() < 0.1
        self.coupon_prop.append(0.35 if deal_hunter else 0.04)
        self.return_prop.append(min(d.lognormal(1.0, 0.6), 3.0))
        self.speed.append(d.lognormal(1.0, 0.3))
        self.is_new.append(new)
        return len(self.device) - 1

    def pick_device(self, user: int, draws: Draws) -> tuple[int, int, bool]:
        """The device of one of ``user``'s sessions: ``(device, device_id, is_new_device)``.

        Mostly the home device, sometimes the second one, rarely a new one
        (a new phone, a friend's laptop), which forces a login.
        """
        r = draws.u()
        if r < 0.025:
            device = draws.pick(_DEVICE_CDF)
            return device, draws.token(), True
        if r < 0.25 and self.second_device[user] >= 0:
            return self.second_device[user], self.second_device_id[user], False
        return self.device[user], self.device_id[user], False

    def pick_category(self, user: int, draws: Draws, catalog: Catalog) -> int:
        """A category for ``user`` to browse: a favourite, or anything by share."""
        if draws.u() < EXPLORE_PROB:
            return catalog.sample_category(draws)
        favs = self.fav_cats[user]
        return favs[draws.pick(self.fav_cdf[user])]

    def logs_in(self, user: int, device: int, draws: Draws) -> bool:
        """Whether a session on ``device`` starts with an explicit login (apps stay logged in)."""
        return draws.u() < (0.12 if device in APP_DEVICES else 0.45)


def make_users(n_users: int, catalog: Catalog, draws: Draws, new_share: float = 0.12) -> Users:
    """Draw ``n_users`` shoppers; about ``new_share`` of them register during the window.

    Returns
    -------
    Users
        The table; ``activity`` gives each user's relative number of sessions.
    """
    users = Users()
    for _ in range(n_users):
        users.add(draws, catalog, new=draws.u() < new_share)
    return users


def activity_weights(users: Users, n: int) -> np.ndarray:
    """``(n,)`` float64 probabilities of the first ``n`` users starting a session."""
    w = np.asarray(users.activity[:n], dtype=np.float64)
    return w / w.sum()
