"""Shared building blocks of the shop simulator: vocabularies, random draws, event log.

The simulator generates every session in a short Python loop per event, so the
two things that must be cheap are scalar random numbers and appending an event.
:class:`Draws` serves scalars from blocks pre-drawn with one
:class:`numpy.random.Generator` (deterministic per seed, no global RNG);
:class:`EventLog` stores events column-wise as integer codes in plain lists and
per-session attributes (user, device, country, start, label) beside them, to be
turned into a polars frame once at the end.  Times inside a session are
relative to the session start; the shop assigns absolute starts afterwards.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np

#: event vocabulary (index = internal event code)
EVENTS: tuple[str, ...] = (
    "signup",
    "login",
    "login_failed",
    "logout",
    "search",
    "view",
    "wishlist",
    "add_to_cart",
    "remove_from_cart",
    "apply_coupon",
    "coupon_rejected",
    "checkout",
    "add_payment_method",
    "payment_attempt",
    "payment_failed",
    "payment_success",
    "address_change",
    "password_change",
    "review",
    "return_request",
)
EV = {name: code for code, name in enumerate(EVENTS)}
(
    SIGNUP,
    LOGIN,
    LOGIN_FAILED,
    LOGOUT,
    SEARCH,
    VIEW,
    WISHLIST,
    ADD_TO_CART,
    REMOVE_FROM_CART,
    APPLY_COUPON,
    COUPON_REJECTED,
    CHECKOUT,
    ADD_PAYMENT_METHOD,
    PAYMENT_ATTEMPT,
    PAYMENT_FAILED,
    PAYMENT_SUCCESS,
    ADDRESS_CHANGE,
    PASSWORD_CHANGE,
    REVIEW,
    RETURN_REQUEST,
) = range(len(EVENTS))

#: events that carry the payment method (and card id for card methods)
PAYMENT_EVENTS = frozenset({CHECKOUT, ADD_PAYMENT_METHOD, PAYMENT_ATTEMPT, PAYMENT_FAILED, PAYMENT_SUCCESS})

#: device types; the last two are only used by automated clients
DEVICES: tuple[str, ...] = (
    "ios_app",
    "android_app",
    "desktop_web",
    "mobile_web",
    "headless_browser",
    "api_client",
)
IOS_APP, ANDROID_APP, DESKTOP_WEB, MOBILE_WEB, HEADLESS_BROWSER, API_CLIENT = range(len(DEVICES))
HUMAN_DEVICE_WEIGHTS = (0.34, 0.30, 0.22, 0.14)
APP_DEVICES = frozenset({IOS_APP, ANDROID_APP})

PAYMENT_METHODS: tuple[str, ...] = (
    "credit_card",
    "paypal",
    "debit_card",
    "apple_pay",
    "google_pay",
    "klarna",
)
CREDIT_CARD, PAYPAL, DEBIT_CARD, APPLE_PAY, GOOGLE_PAY, KLARNA = range(len(PAYMENT_METHODS))
PAYMENT_WEIGHTS = (0.42, 0.24, 0.14, 0.08, 0.07, 0.05)
CARD_METHODS = frozenset({CREDIT_CARD, DEBIT_CARD})

#: shopper countries (a European shop) and their shares; later ones are data-centre / far-away origins
COUNTRIES: tuple[str, ...] = (
    "DE",
    "AT",
    "CH",
    "NL",
    "FR",
    "PL",
    "IT",
    "US",
    "SG",
    "RU",
    "BR",
    "NG",
    "VN",
    "CN",
)
HOME_COUNTRY_WEIGHTS = (0.58, 0.12, 0.08, 0.07, 0.06, 0.05, 0.04)
FOREIGN_COUNTRIES = (7, 8, 9, 10, 11, 12, 13)

#: coupon codes: the first ones are genuine, then expired, leaked and guessed codes
COUPONS: tuple[str, ...] = (
    "WELCOME10",
    "SPRING15",
    "FREESHIP",
    "VIP20",
    "NEWSLETTER5",
    "WINTER20",
    "STAFF40",
    "SAVE50",
    "WELCOME50",
    "FREE100",
    "BLACKFRIDAY60",
    "VIP50",
    "TEST100",
)
GENUINE_COUPONS = (0, 1, 2, 3, 4)
EXPIRED_COUPON = 5
LEAKED_COUPON = 6
GUESSED_COUPONS = (7, 8, 9, 10, 11, 12)

#: anomaly types (index = label code; 0 is normal)
ANOMALY_TYPES: tuple[str, ...] = (
    "scraping_bot",
    "order_brushing",
    "card_testing",
    "account_takeover",
    "returns_abuse",
    "coupon_abuse",
    "cart_hoarding",
)
#: the ``anomaly_type`` value of normal sequences in ``labels.parquet``
NORMAL_TYPE = "normal"
TYPE_NAMES: tuple[str, ...] = (NORMAL_TYPE, *ANOMALY_TYPES)

#: longest think time inside a session (s); well below the 30-minute session gap
MAX_THINK_SECONDS = 1500.0
#: shortest think time (s); keeps event times strictly increasing at ms resolution
MIN_THINK_SECONDS = 0.05


def cumulative(weights: Iterable[float]) -> list[float]:
    """Cumulative sums of ``weights`` as a plain list (for :meth:`Draws.pick`)."""
    return list(itertools.accumulate(float(w) for w in weights))


class Draws:
    """Scalar random numbers served from blocks of one generator.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness; the sequence of values is a pure
        function of its state and the order of calls.
    block : int
        How many values to pre-draw at a time.
    """

    def __init__(self, rng: np.random.Generator, block: int = 16384) -> None:
        self.rng = rng
        self._block = block
        self._u: list[float] = []
        self._ui = 0
        self._n: list[float] = []
        self._ni = 0

    def u(self) -> float:
        """One uniform number in [0, 1)."""
        i = self._ui
        if i >= len(self._u):
            self._u = self.rng.random(self._block).tolist()
            i = 0
        self._ui = i + 1
        return self._u[i]

    def normal(self) -> float:
        """One standard normal number."""
        i = self._ni
        if i >= len(self._n):
            self._n = self.rng.standard_normal(self._block).tolist()
            i = 0
        self._ni = i + 1
        return self._n[i]

    def lognormal(self, median: float, sigma: float) -> float:
        """Log-normal number with the given median and log-space sigma."""
        return median * math.exp(sigma * self.normal())

    def randint(self, low: int, high: int) -> int:
        """Integer in ``[low, high]`` (both inclusive)."""
        return low + int(self.u() * (high - low + 1))

    def pick(self, cdf: list[float]) -> int:
        """Index drawn with probabilities proportional to the increments of ``cdf``."""
        return min(bisect.bisect_right(cdf, self.u() * cdf[-1]), len(cdf) - 1)

    def choice(self, options: Sequence[int]) -> int:
        """One element of ``options``, uniformly."""
        return options[int(self.u() * len(options))]

    def geometric(self, mean: float) -> int:
        """Count >= 0 with a geometric distribution of the given mean."""
        if mean <= 0:
            return 0
        p = 1.0 / (1.0 + mean)
        return int(math.log(1.0 - self.u()) / math.log(1.0 - p))

    def token(self) -> int:
        """A random 31-bit identifier (device, card)."""
        return int(self.u() * 2147483647)


class EventLog:
    """Store of simulated events and sessions.

    Events of one session are appended contiguously as tuples
    ``(session, t, event, item, category, qty, amount, pay, card, coupon,
    rating)``; ``t`` is seconds since the session's start.  Integer codes use
    -1 for "not applicable" (0 for ``qty``/``rating``), ``amount`` uses NaN.
    :meth:`columns` turns them into arrays.
    """

    #: names of the per-event fields, in tuple order
    FIELDS = ("sess", "t", "ev", "item", "cat", "qty", "amount", "pay", "card", "coupon", "rating")

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        # per session
        self.s_user: list[int] = []
        self.s_device: list[int] = []
        self.s_device_id: list[int] = []
        self.s_country: list[int] = []
        self.s_start: list[float] = []
        self.s_type: list[int] = []
        self.s_group: list[int] = []
        self.n_groups = 0
        self._current = -1
        self._columns: tuple[int, dict[str, np.ndarray]] | None = None

    @property
    def n_sessions(self) -> int:
        """Number of sessions started so far."""
        return len(self.s_user)

    def new_group(self) -> int:
        """A fresh incident id (for coordinated anomalous sessions)."""
        self.n_groups += 1
        return self.n_groups - 1

    def new_session(
        self,
        user: int,
        device: int,
        device_id: int,
        country: int,
        start: float,
        anomaly_type: int = 0,
        group: int = -1,
    ) -> int:
        """Open a session; following :meth:`add` calls belong to it. Returns its index."""
        if self._current >= 0 and (not self.rows or self.rows[-1][0] != self._current):
            raise AssertionError(f"simulated session {self._current} was left without events")
        self.s_user.append(user)
        self.s_device.append(device)
        self.s_device_id.append(device_id)
        self.s_country.append(country)
        self.s_start.append(start)
        self.s_type.append(anomaly_type)
        self.s_group.append(group)
        self._current = len(self.s_user) - 1
        return self._current

    def add(
        self,
        t: float,
        ev: int,
        item: int = -1,
        cat: int = -1,
        qty: int = 0,
        amount: float = math.nan,
        pay: int = -1,
        card: int = -1,
        coupon: int = -1,
        rating: int = 0,
    ) -> None:
        """Append one event to the current session (``t``: seconds since its start)."""
        self.rows.append((self._current, t, ev, item, cat, qty, amount, pay, card, coupon, rating))

    def columns(self) -> dict[str, np.ndarray]:
        """Per-event arrays keyed by :attr:`FIELDS` (``t`` and ``amount`` float64, the rest int64).

        Cached until the next event is added.
        """
        if self._columns is not None and self._columns[0] == len(self.rows):
            return self._columns[1]
        # (n_events, n_fields); all integer fields are < 2**31, exact in float64
        table = np.array(self.rows, dtype=np.float64).reshape(len(self.rows), len(self.FIELDS))
        cols = {
            name: table[:, k].copy() if name in ("t", "amount") else table[:, k].astype(np.int64)
            for k, name in enumerate(self.FIELDS)
        }
        self._columns = (len(self.rows), cols)
        return cols


def think(draws: Draws, median: float, sigma: float = 0.9) -> float:
    """A human think time (s): log-normal, clipped to the in-session range."""
    return min(max(draws.lognormal(median, sigma), MIN_THINK_SECONDS), MAX_THINK_SECONDS)


def schedule_sessions(log: EventLog, gap_seconds: float, draws: Draws) -> np.ndarray:
    """Absolute start of every session, keeping each user's sessions apart.

    Sessions of one user are taken in order of their wished start; one that
    would begin less than ``gap_seconds`` (+ a minute of margin) after the
    previous one ended is pushed later, so consecutive sessions of a user are
    always separated by more than the sessionisation gap.

    Returns
    -------
    numpy.ndarray
        ``(n_sessions,)`` float64 start times (seconds since the window start).
    """
    n = log.n_sessions
    cols = log.columns()
    sess, rel = cols["sess"], cols["t"]
    assert n == 0 or (np.all(np.diff(sess) >= 0) and np.array_equal(np.unique(sess), np.arange(n)))
    within = np.diff(rel)[sess[1:] == sess[:-1]]
    # a session must never hold a gap that the data layer would cut at
    assert within.size == 0 or (within.min() >= 0.0 and within.max() <= MAX_THINK_SECONDS + 1e-6)
    duration = np.zeros(n)
    np.maximum.at(duration, sess, rel)
    user = np.asarray(log.s_user, dtype=np.int64)
    wish = np.asarray(log.s_start, dtype=np.float64)
    start = wish.copy()
    order = np.lexsort((np.arange(n), wish, user))
    prev_user, prev_end = -1, 0.0
    for s, u, w, dur in zip(
        order.tolist(), user[order].tolist(), wish[order].tolist(), duration[order].tolist()
    ):
        if u == prev_user and w <= prev_end + gap_seconds + 60.0:
            w = prev_end + gap_seconds + 60.0 + draws.lognormal(1200.0, 1.0)
            start[s] = w
        prev_user, prev_end = u, w + dur
    return start
