"""Orchestration of the shop simulation: :func:`simulate_shop` and its result.

Draws a catalogue and shoppers, writes the normal sessions (with their review
and return follow-ups) and the anomalous incidents into one event log,
schedules every session in a window of ``n_days`` days so that a user's
sessions are more than 30 minutes apart, and turns the log into the event
table.  The labels are computed by running the data layer's own
sessionisation (:func:`anomaly_ssl.data.sessionize.sessionize`, settings of
``configs/shop.yaml``) on that table, so their ``sequence_id`` values are
exactly the ids the pipeline gives the sequences; each must map to one
simulated session, which is checked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ...errors import ConfigError
from ...io import atomic_write_with
from ..sessionize import SEQUENCE_ID, sessionize
from .anomalies import generate_anomalies
from .catalog import Catalog, make_catalog
from .context import DiurnalStarts, SimContext
from .core import (
    ANOMALY_TYPES,
    COUNTRIES,
    COUPONS,
    DEVICES,
    EVENTS,
    NORMAL_TYPE,
    PAYMENT_METHODS,
    TYPE_NAMES,
    Draws,
    EventLog,
    schedule_sessions,
)
from .normal import follow_up_session, normal_session
from .users import activity_weights, make_users

log = logging.getLogger(__name__)

#: sessionisation of configs/shop.yaml (data.session_gap_minutes, data.max_session_events)
SESSION_GAP_SECONDS = 30 * 60.0
MAX_SESSION_EVENTS = 4096
#: 2024-03-04 00:00:00 UTC, a Monday
DEFAULT_START_TIME = 1709510400.0
#: the most anomalous share the simulator accepts
MAX_ANOMALY_RATE = 0.5


@dataclass
class SimulatedShop:
    """A simulated event table and its per-sequence labels.

    Attributes
    ----------
    events : polars.DataFrame
        One row per event, time-ordered (see :func:`simulate_shop` for columns).
    labels : polars.DataFrame
        One row per data-layer sequence: ``sequence_id`` (Utf8), ``label`` (Int8,
        1 = anomalous), ``anomaly_type`` (Utf8, ``"normal"`` for normal
        sequences), ``group_id`` (Utf8, the incident; null for normal) and
        ``session_id`` (Utf8, the simulator's session).
    info : dict
        Parameters of the run.
    """

    events: pl.DataFrame
    labels: pl.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``events.parquet`` and ``labels.parquet`` into ``out_dir`` atomically.

        Returns
        -------
        (Path, Path)
            The two files written.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        events_path, labels_path = out / "events.parquet", out / "labels.parquet"
        atomic_write_with(events_path, lambda p: self.events.write_parquet(p))
        atomic_write_with(labels_path, lambda p: self.labels.write_parquet(p))
        return events_path, labels_path

    def summary(self) -> dict[str, Any]:
        """Counts: sessions, events, users, days, anomalies and sessions per anomaly type."""
        per_type = dict(self.labels.filter(pl.col("label") == 1).group_by("anomaly_type").len().iter_rows())
        ts = self.events["ts"]
        return {
            "sessions": self.labels.height,
            "events": self.events.height,
            "users": self.events["user_id"].n_unique(),
            "days": round(float(ts.max() - ts.min()) / 86400.0, 1) if self.events.height else 0.0,
            "anomalies": int(self.labels["label"].sum()),
            "per_type": {name: int(per_type.get(name, 0)) for name in ANOMALY_TYPES},
        }


def _check_args(n_sessions: int, anomaly_rate: float, n_users: int | None, n_days: int) -> None:
    if int(n_sessions) != n_sessions or n_sessions < 1:
        raise ConfigError(f"n_sessions must be a whole number >= 1 (--sessions), got {n_sessions!r}")
    if not 0.0 <= anomaly_rate <= MAX_ANOMALY_RATE:
        raise ConfigError(
            f"anomaly_rate must be in [0, {MAX_ANOMALY_RATE}] (--anomaly-rate), got {anomaly_rate!r}; "
            "e.g. 0.05 for 5 % anomalous sessions"
        )
    if n_users is not None and n_users < 1:
        raise ConfigError(f"n_users must be >= 1 (--users), got {n_users!r}")
    if n_days < 1:
        raise ConfigError(f"n_days must be >= 1, got {n_days!r}")


def simulate_shop(
    n_sessions: int,
    anomaly_rate: float = 0.05,
    seed: int = 0,
    n_users: int | None = None,
    start_time: float = DEFAULT_START_TIME,
    n_days: int = 14,
    n_items: int | None = None,
) -> SimulatedShop:
    """Simulate an online shop's click-stream with labelled anomalous sessions.

    Parameters
    ----------
    n_sessions : int
        Number of sessions (= labelled sequences) to generate.
    anomaly_rate : float
        Share of anomalous sessions, in ``[0, 0.5]``; exactly
        ``round(anomaly_rate * n_sessions)`` are anomalous.
    seed : int
        Seed of the only random generator; same seed, same tables.
    n_users : int, optional
        Number of regular shoppers (default ``max(20, n_sessions // 6)``);
        fraudsters' fresh accounts come on top.
    start_time : float
        Unix time (s) of the window start.
    n_days : int
        Length of the window in days (follow-ups and pushed sessions may end later).
    n_items : int, optional
        Catalogue size (default ``n_sessions`` clipped to [2000, 50000]).

    Returns
    -------
    SimulatedShop
        ``events`` columns: ``user_id, session_id, ts (Float64 unix s), event,
        item_id, category, price, quantity (Int32), device, device_id,
        ip_country, payment_method, card_id, coupon_code, rating (Int8)``.
        ``price`` is the item's unit price on item events and the order total
        on checkout and payment events; attributes that do not apply are null.
    """
    _check_args(n_sessions, anomaly_rate, n_users, n_days)
    n_sessions = int(n_sessions)
    n_users = int(n_users) if n_users is not None else max(20, n_sessions // 6)
    n_items = int(n_items) if n_items is not None else int(np.clip(n_sessions, 2000, 50000))
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    catalog = make_catalog(n_items, rngs[0])
    users = make_users(n_users, catalog, Draws(rngs[1]))
    n_anomalous = round(anomaly_rate * n_sessions)
    ctx = SimContext(Draws(rngs[2]), catalog, users, EventLog(), DiurnalStarts(n_days, start_time))
    active = _normal_sessions(ctx, n_sessions - n_anomalous, n_users)
    ctx.draws = Draws(rngs[3])
    ctx.victims = [u for u in sorted(active) if not users.is_new[u]] or sorted(active)
    counts = generate_anomalies(ctx, n_anomalous)
    starts = schedule_sessions(ctx.log, SESSION_GAP_SECONDS, Draws(rngs[4]))
    user_ids = rngs[5].choice(9_000_000, size=len(users), replace=False) + 1_000_000
    user_labels = pl.Series("user_id", [f"u{u}" for u in user_ids.tolist()], dtype=pl.Utf8)
    events, sessions = build_frames(ctx.log, catalog, user_labels, starts, start_time)
    labels = label_sequences(events, sessions)
    info = {"n_sessions": n_sessions, "anomaly_rate": anomaly_rate, "seed": seed, "n_users": n_users}
    log.info("simulated %d sessions, %d events; anomalous per type: %s", n_sessions, events.height, counts)
    return SimulatedShop(events=events, labels=labels, info=info)


def _normal_sessions(ctx: SimContext, n_normal: int, n_users: int) -> set[int]:
    """Write ``n_normal`` normal sessions (primary ones and their follow-ups); return active users."""
    d = ctx.draws
    if n_normal == 0:
        return set()
    cand_user = d.rng.choice(n_users, size=n_normal, p=activity_weights(ctx.users, n_users))
    cand_start = np.array([ctx.starts.human(d) for _ in range(n_normal)])
    # a new user's earliest session is their signup
    order = np.lexsort((cand_start, cand_user))
    first = order[np.r_[True, cand_user[order][1:] != cand_user[order][:-1]]]
    signup = np.zeros(n_normal, dtype=bool)
    signup[first] = np.asarray(ctx.users.is_new, dtype=bool)[cand_user[first]]
    made, active = 0, set()
    for user, start, new in zip(cand_user.tolist(), cand_start.tolist(), signup.tolist()):
        if made >= n_normal:
            break
        plans = normal_session(ctx, user, start, new)
        made += 1
        active.add(user)
        for plan in plans:
            if made < n_normal:
                follow_up_session(ctx, plan)
                made += 1
    assert made == n_normal
    return active


def _codes_to_labels(codes: np.ndarray, labels: pl.Series | list[str] | tuple[str, ...]) -> pl.Series:
    """Map integer codes to labels; negative codes become null."""
    values = labels if isinstance(labels, pl.Series) else pl.Series(list(labels), dtype=pl.Utf8)
    idx = pl.Series(codes.astype(np.int64))
    idx = pl.select(pl.when(idx >= 0).then(idx)).to_series()
    return values.gather(idx)


def _token_labels(tokens: np.ndarray, prefix: str) -> pl.Series:
    """Hex identifiers for integer tokens (``-1`` -> null)."""
    uniq, inverse = np.unique(tokens, return_inverse=True)
    names = pl.Series([f"{prefix}{t:08x}" if t >= 0 else None for t in uniq.tolist()], dtype=pl.Utf8)
    return names.gather(pl.Series(inverse.astype(np.int64).ravel()))


def build_frames(
    event_log: EventLog,
    catalog: Catalog,
    user_labels: pl.Series,
    starts: np.ndarray,
    start_time: float,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Turn the event log into the event table and a per-session label table.

    Parameters
    ----------
    event_log : EventLog
        The simulated events.
    catalog : Catalog
        Item ids, categories and prices.
    user_labels : polars.Series
        The id of each user index.
    starts : numpy.ndarray
        ``(n_sessions,)`` float64 session starts, seconds after ``start_time``.
    start_time : float
        Unix time (s) of the window start.

    Returns
    -------
    (events, sessions)
        ``events`` time-ordered; ``sessions`` with ``session_id, label,
        anomaly_type, group_id`` (one row per simulated session).
    """
    cols = event_log.columns()
    sess = cols["sess"]
    ts = np.round(start_time + starts[sess] + cols["t"], 3)
    item = cols["item"]
    has_item = item >= 0
    cat = np.where(has_item, catalog.item_cat[np.maximum(item, 0)], cols["cat"])
    price = np.where(has_item, catalog.price[np.maximum(item, 0)], cols["amount"])
    qty = cols["qty"].astype(np.int32)
    rating = cols["rating"].astype(np.int8)
    n_sess = event_log.n_sessions
    # session ids in order of start time, so they say nothing about how a session was made
    rank = np.empty(n_sess, dtype=np.int64)
    rank[np.lexsort((np.arange(n_sess), starts))] = np.arange(n_sess)
    session_names = pl.Series([f"s{r:07d}" for r in rank.tolist()], dtype=pl.Utf8)
    s_user = np.asarray(event_log.s_user, dtype=np.int64)
    events = pl.DataFrame(
        {
            "user_id": _codes_to_labels(s_user[sess], user_labels),
            "session_id": session_names.gather(pl.Series(sess)),
            "ts": pl.Series(ts, dtype=pl.Float64),
            "event": _codes_to_labels(cols["ev"], EVENTS),
            "item_id": _codes_to_labels(item, catalog.item_labels),
            "category": _codes_to_labels(cat, catalog.category_labels),
            "price": pl.Series(price, dtype=pl.Float64, nan_to_null=True),
            "quantity": pl.Series(np.where(qty > 0, qty, 0), dtype=pl.Int32),
            "device": _codes_to_labels(np.asarray(event_log.s_device)[sess], DEVICES),
            "device_id": _token_labels(np.asarray(event_log.s_device_id)[sess], "d"),
            "ip_country": _codes_to_labels(np.asarray(event_log.s_country)[sess], COUNTRIES),
            "payment_method": _codes_to_labels(cols["pay"], PAYMENT_METHODS),
            "card_id": _token_labels(cols["card"], "c"),
            "coupon_code": _codes_to_labels(cols["coupon"], COUPONS),
            "rating": pl.Series(rating, dtype=pl.Int8),
        }
    ).with_columns(
        pl.when(pl.col("quantity") > 0).then(pl.col("quantity")).alias("quantity"),
        pl.when(pl.col("rating") > 0).then(pl.col("rating")).alias("rating"),
    )
    events = events[np.argsort(ts, kind="stable")]
    s_type = np.asarray(event_log.s_type, dtype=np.int64)
    s_group = np.asarray(event_log.s_group, dtype=np.int64)
    group_names = [
        f"{TYPE_NAMES[t]}-{g:04d}" if t > 0 else None for t, g in zip(s_type.tolist(), s_group.tolist())
    ]
    sessions = pl.DataFrame(
        {
            "session_id": session_names,
            "label": pl.Series((s_type > 0).astype(np.int8), dtype=pl.Int8),
            "anomaly_type": _codes_to_labels(s_type, TYPE_NAMES),
            "group_id": pl.Series(group_names, dtype=pl.Utf8),
        }
    )
    return events, sessions


def label_sequences(
    events: pl.DataFrame,
    sessions: pl.DataFrame,
    entity_col: str = "user_id",
    time_col: str = "ts",
    session_col: str = "session_id",
    gap_seconds: float = SESSION_GAP_SECONDS,
    max_events: int = MAX_SESSION_EVENTS,
) -> pl.DataFrame:
    """Label the data layer's sequences of ``events`` with their simulated session's label.

    Runs :func:`~anomaly_ssl.data.sessionize.sessionize` with the given
    settings and checks that every sequence holds events of exactly one
    simulated session and every session is exactly one sequence.

    Returns
    -------
    polars.DataFrame
        ``sequence_id`` plus the columns of ``sessions``, one row per sequence,
        sorted by ``sequence_id``.
    """
    frame = events.lazy().select(entity_col, time_col, session_col)
    pairs = (
        sessionize(frame, entity_col, time_col, gap_seconds, max_events)
        .select(SEQUENCE_ID, session_col)
        .unique()
        .collect()
    )
    n_seq, n_sess = pairs[SEQUENCE_ID].n_unique(), pairs[session_col].n_unique()
    if not (pairs.height == n_seq == n_sess == sessions.height):
        raise AssertionError(
            f"sequences and simulated sessions are not 1:1 ({pairs.height} pairs, {n_seq} sequences, "
            f"{n_sess} sessions with events, {sessions.height} sessions simulated)"
        )
    return (
        pairs.join(sessions, on=session_col, how="left")
        .select(SEQUENCE_ID, "label", "anomaly_type", "group_id", session_col)
        .sort(SEQUENCE_ID)
    )


__all__ = ["NORMAL_TYPE", "SimulatedShop", "label_sequences", "simulate_shop"]
