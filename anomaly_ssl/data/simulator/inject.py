"""Inject the anomaly library's synthetic sessions into a real event table.

Real click logs (e.g. Taobao UserBehavior: ``user_id, item_id, category_id,
behavior in {pv, cart, fav, buy}, ts``) have no anomaly labels.  To measure a
detector on real normal behaviour, :func:`inject_anomalies` builds a catalogue
from the real items (interaction counts as popularity), lets the anomaly
generators write incidents with fresh accounts at real-looking start times,
keeps only the events the real vocabulary has (``event_map``; gaps left by
dropped events are shortened so no injected session splits), and appends them
in the real table's schema.  Types whose defining events are not mapped are
skipped (with the Taobao map: card testing, returns abuse, coupon abuse);
account takeover is never injected, as it would have to write into real
users' histories.  Real sequences are labelled 0 with ``anomaly_type ==
"normal"`` and ``source == "real"``: real, unlabelled, assumed normal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np
import polars as pl

from ...errors import DataError
from ..sessionize import SEQUENCE_ID, sessionize
from .anomalies import REQUIRED_EVENTS, generate_anomalies
from .catalog import Catalog
from .context import EmpiricalStarts, SimContext
from .core import (
    ANOMALY_TYPES,
    EV,
    EVENTS,
    MAX_THINK_SECONDS,
    NORMAL_TYPE,
    Draws,
    EventLog,
    schedule_sessions,
)
from .shop import MAX_ANOMALY_RATE, MAX_SESSION_EVENTS, SESSION_GAP_SECONDS, build_frames
from .users import Users

log = logging.getLogger(__name__)

#: simulator event -> Taobao UserBehavior ``behavior`` value
TAOBAO_EVENT_MAP: dict[str, str] = {
    "view": "pv",
    "add_to_cart": "cart",
    "wishlist": "fav",
    "payment_success": "buy",
}
#: simulator field -> Taobao column (configs/taobao.yaml)
TAOBAO_COLUMNS: dict[str, str] = {
    "user_id": "user_id",
    "ts": "ts",
    "event": "behavior",
    "item_id": "item_id",
    "category": "category_id",
}
#: fields a column map may name (the simulator's event columns)
MAPPABLE_FIELDS = (
    "user_id", "ts", "event", "item_id", "category", "price", "quantity", "device",
    "device_id", "ip_country", "payment_method", "card_id", "coupon_code", "rating",
)  # fmt: skip
_TIME_SCALE = {"s": 1.0, "ms": 1000.0}


class InjectedData(NamedTuple):
    """Result of :func:`inject_anomalies` (unpacks as ``events, labels``).

    ``events`` has the real table's columns and dtypes (real rows first, in
    their order, then the injected rows); ``labels`` has one row per sequence
    of ``events`` under the given sessionisation: ``sequence_id``, ``label``
    (Int8), ``anomaly_type`` (``"normal"`` for real sequences), ``group_id``
    (incident, null for real) and ``source`` (``"real"`` or ``"injected"``).
    """

    events: pl.DataFrame
    labels: pl.DataFrame


def supported_types(event_map: Mapping[str, str]) -> list[str]:
    """Anomaly types that can be injected with ``event_map`` (all their defining events mapped)."""
    mapped = {EV[name] for name in event_map if name in EV}
    return [t for t in ANOMALY_TYPES if t != "account_takeover" and REQUIRED_EVENTS[t] <= mapped]


def _check(
    events: pl.DataFrame,
    rate: float,
    columns: Mapping[str, str],
    event_map: Mapping[str, str],
    types: Sequence[str],
) -> None:
    if not 0.0 <= rate <= MAX_ANOMALY_RATE:
        raise DataError(f"anomaly rate must be in [0, {MAX_ANOMALY_RATE}], got {rate!r}")
    unknown = sorted(set(columns) - set(MAPPABLE_FIELDS))
    if unknown:
        raise DataError(f"column_map has unknown field(s) {unknown}; valid fields: {list(MAPPABLE_FIELDS)}")
    for key in ("user_id", "ts", "event", "item_id"):
        if key not in columns:
            raise DataError(
                f"column_map must name the real column for {key!r} (e.g. {TAOBAO_COLUMNS[key]!r})"
            )
    missing = sorted(c for c in columns.values() if c not in events.columns)
    if missing:
        raise DataError(f"event table has no column(s) {missing}; it has {events.columns}; fix column_map")
    bad_events = sorted(set(event_map) - set(EV))
    if bad_events:
        raise DataError(f"event_map names unknown simulator event(s) {bad_events}; known: {list(EV)}")
    for key in ("user_id", "ts"):
        n_null = events[columns[key]].null_count()
        if n_null:
            raise DataError(f"column {columns[key]!r} has {n_null} null value(s); drop those rows first")
    possible = supported_types(event_map)
    for name in types:
        if name not in ANOMALY_TYPES:
            raise DataError(f"unknown anomaly type {name!r}; known: {list(ANOMALY_TYPES)}")
        if name not in possible:
            need = sorted(EVENTS[c] for c in REQUIRED_EVENTS[name] if EVENTS[c] not in event_map)
            why = (
                f"it needs event(s) {need} in event_map" if need else "it would rewrite real users' histories"
            )
            raise DataError(f"anomaly type {name!r} cannot be injected: {why}; injectable: {possible}")


def _real_catalog(
    events: pl.DataFrame, item_col: str, cat_col: str | None, rng: np.random.Generator
) -> Catalog:
    """Catalogue of the real items: popularity = interaction count, category = most frequent one."""
    cat_expr = pl.col(cat_col).mode().first() if cat_col else pl.lit("all")
    events = events.filter(pl.col(item_col).is_not_null())
    if events.height == 0:
        raise DataError(f"column {item_col!r} has no item ids; injected sessions need real items to act on")
    items = events.group_by(item_col).agg(pl.len().alias("n"), cat_expr.alias("__cat")).sort(item_col)
    cats = items["__cat"].unique().sort()
    codes = items.join(pl.DataFrame({"__cat": cats, "__code": np.arange(len(cats))}), on="__cat", how="left")
    codes = codes.sort(item_col)
    return Catalog.from_items(
        item_labels=items[item_col],
        item_cat=codes["__code"].to_numpy(),
        category_labels=cats,
        counts=items["n"].to_numpy(),
        rng=rng,
    )


def _fresh_user_ids(real: pl.Series, n: int, rng: np.random.Generator) -> pl.Series:
    """``n`` user ids of ``real``'s dtype that do not occur in ``real``."""
    if real.dtype.is_integer():
        top = int(real.max()) if real.len() else 0
        offsets = rng.choice(max(10 * n, 1), size=n, replace=False) + 1
        return pl.Series(top + np.sort(offsets)[rng.permutation(n)]).cast(real.dtype)
    taken = set(real.cast(pl.Utf8).unique().to_list())
    ids: list[str] = []
    while len(ids) < n:
        cand = f"{rng.integers(10**9, 10**10)}"
        if cand not in taken:
            taken.add(cand)
            ids.append(cand)
    return pl.Series(ids, dtype=pl.Utf8).cast(real.dtype)


def inject_anomalies(
    events: pl.DataFrame,
    rate: float = 0.03,
    seed: int = 0,
    column_map: Mapping[str, str] | None = None,
    event_map: Mapping[str, str] | None = None,
    types: Sequence[str] | None = None,
    time_unit: Literal["s", "ms"] = "s",
    gap_seconds: float = SESSION_GAP_SECONDS,
    max_events: int = MAX_SESSION_EVENTS,
    item_level_orders: bool = True,
) -> InjectedData:
    """Add labelled synthetic anomalous sessions to a real event table.

    Parameters
    ----------
    events : polars.DataFrame
        Real events (one row per event).
    rate : float
        Share of anomalous sequences in the result, in ``[0, 0.5]``.
    seed : int
        Seed of the generator.
    column_map : mapping, optional
        Simulator field -> real column; ``user_id``, ``ts``, ``event`` and
        ``item_id`` are required, other fields (``category``, ``price``, ...)
        are filled when named.  Default: :data:`TAOBAO_COLUMNS`.
    event_map : mapping, optional
        Simulator event -> real event value; unmapped events are dropped
        from injected sessions.  Default: :data:`TAOBAO_EVENT_MAP`.
    types : sequence of str, optional
        Anomaly types to inject (default: every type the map supports).
    time_unit : {"s", "ms"}
        Unit of the real time column.
    gap_seconds, max_events : float, int
        Sessionisation the labels refer to (as in the config's ``data`` section).
    item_level_orders : bool
        Write an order as one ``payment_success`` row per bought item (as
        Taobao's ``buy``) instead of one row per order without item.

    Returns
    -------
    InjectedData
        ``(events, labels)``; injected accounts have fresh user ids.

    Raises
    ------
    DataError
        On a missing column, an unknown field or event, or a type the map cannot express.
    """
    columns = dict(column_map or TAOBAO_COLUMNS)
    emap = dict(event_map or TAOBAO_EVENT_MAP)
    types = list(types) if types is not None else supported_types(emap)
    _check(events, rate, columns, emap, types)
    if not types:
        raise DataError(
            f"no anomaly type can be injected with event_map {emap}; map e.g. 'view' and 'add_to_cart'"
        )
    scale = _TIME_SCALE[time_unit]
    ent, tcol = columns["user_id"], columns["ts"]
    real_seq = sessionize(events.lazy().select(ent, tcol), ent, tcol, gap_seconds * scale, max_events)
    real_seq = real_seq.group_by(SEQUENCE_ID).agg(pl.col(tcol).min().alias("start")).collect()
    n_real = real_seq.height
    n_inject = round(rate * n_real / (1.0 - rate))
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
    # the window: real session starts without the stray outliers click logs often have
    real_starts = real_seq["start"].cast(pl.Float64).to_numpy() / scale
    lo, hi = np.quantile(real_starts, [0.001, 0.999]) if n_real else (0.0, 86400.0)
    t0 = float(lo)
    inside = real_starts[(real_starts >= lo) & (real_starts <= hi)]
    starts = EmpiricalStarts(inside - t0, float(hi) - t0)
    catalog = _real_catalog(events, columns["item_id"], columns.get("category"), rngs[0])
    ctx = SimContext(Draws(rngs[1]), catalog, Users(), EventLog(), starts)
    ctx.available_events = frozenset(EV[name] for name in emap)
    counts = generate_anomalies(ctx, n_inject, types)
    session_starts = schedule_sessions(ctx.log, gap_seconds, Draws(rngs[2]))
    user_labels = _fresh_user_ids(events[ent], len(ctx.users), rngs[3])
    sim, sessions = build_frames(ctx.log, catalog, user_labels, session_starts, t0)
    if item_level_orders:
        sim = _item_level_orders(sim, catalog)
    injected = _to_real_schema(sim, events, columns, emap, scale)
    kept = injected["__session"].unique()
    sessions = sessions.filter(pl.col("session_id").is_in(kept.implode()))
    if sessions.height < ctx.log.n_sessions:
        log.warning(
            "%d injected sessions had no mapped event and were left out", ctx.log.n_sessions - sessions.height
        )
    combined = pl.concat([events.with_columns(pl.lit(None, pl.Utf8).alias("__session")), injected])
    labels = _label(combined, sessions, ent, tcol, gap_seconds * scale, max_events)
    log.info("injected %d anomalous sessions into %d real ones: %s", sessions.height, n_real, counts)
    return InjectedData(events=combined.drop("__session"), labels=labels)


def _item_level_orders(sim: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    """Replace each ``payment_success`` by one row per item put in the cart since the previous order."""
    order = pl.col("event") == "payment_success"
    sim = sim.with_row_index("__i")
    pays = sim.filter(order).with_columns(
        pl.col("ts").shift(1).over("session_id").fill_null(-np.inf).alias("__prev")
    )
    carts = sim.filter(pl.col("event") == "add_to_cart").select(
        "session_id", pl.col("ts").alias("__cart_ts"), pl.col("item_id").alias("__item")
    )
    bought = (
        pays.join(carts, on="session_id")
        .filter((pl.col("__cart_ts") < pl.col("ts")) & (pl.col("__cart_ts") > pl.col("__prev")))
        .unique(["__i", "__item"], keep="first", maintain_order=True)
    )
    prices = pl.DataFrame({"__item": catalog.item_labels, "__price": catalog.price})
    cats = catalog.category_labels.gather(pl.Series(catalog.item_cat))
    prices = prices.with_columns(cats.alias("__cat"))
    bought = bought.join(prices, on="__item", how="left").with_columns(
        pl.col("__item").alias("item_id"), pl.col("__price").alias("price"), pl.col("__cat").alias("category")
    )
    kept = sim.filter(~order | ~pl.col("__i").is_in(bought["__i"].implode()))
    return pl.concat([kept, bought.select(kept.columns)]).sort("__i", maintain_order=True).drop("__i")


def _to_real_schema(
    sim: pl.DataFrame, real: pl.DataFrame, columns: Mapping[str, str], emap: Mapping[str, str], scale: float
) -> pl.DataFrame:
    """Keep mapped events, close the gaps they leave, and cast to the real table's schema."""
    kept = sim.filter(pl.col("event").is_in(list(emap))).sort("session_id", "ts", maintain_order=True)
    step = pl.col("ts").diff().fill_null(0.0).clip(upper_bound=MAX_THINK_SECONDS)
    kept = kept.with_columns(
        (pl.col("ts").first() + step.cum_sum()).over("session_id").alias("ts"),
        pl.col("event").replace_strict(dict(emap), default=None),
    ).sort("ts", maintain_order=True)
    tdtype = real[columns["ts"]].dtype
    ts = pl.col("ts") * scale
    out = []
    by_real = {real_col: field for field, real_col in columns.items()}
    for name, dtype in real.schema.items():
        field = by_real.get(name)
        if field is None:
            out.append(pl.lit(None, dtype).alias(name))
        elif field == "ts":
            out.append((ts.round(0) if dtype.is_integer() else ts).cast(tdtype).alias(name))
        else:
            out.append(pl.col(field).cast(dtype).alias(name))
    return kept.select(*out, pl.col("session_id").alias("__session"))


def _label(
    combined: pl.DataFrame, sessions: pl.DataFrame, ent: str, tcol: str, gap: float, max_events: int
) -> pl.DataFrame:
    """One label row per sequence of ``combined``; injected sequences map 1:1 to injected sessions."""
    seq = sessionize(combined.lazy().select(ent, tcol, "__session"), ent, tcol, gap, max_events)
    per_seq = (
        seq.group_by(SEQUENCE_ID)
        .agg(
            pl.col("__session").drop_nulls().n_unique().alias("n_sess"),
            pl.col("__session").null_count().alias("n_real"),
            pl.col("__session").drop_nulls().first().alias("session_id"),
        )
        .collect()
    )
    mixed = per_seq.filter((pl.col("n_sess") > 1) | ((pl.col("n_sess") == 1) & (pl.col("n_real") > 0)))
    n_inj_seq = per_seq.filter(pl.col("n_sess") == 1).height
    if mixed.height or n_inj_seq != sessions.height:
        raise AssertionError(
            f"injected sessions are not 1:1 with sequences ({mixed.height} mixed sequences, "
            f"{n_inj_seq} injected sequences for {sessions.height} sessions)"
        )
    labels = per_seq.join(sessions, on="session_id", how="left").select(
        SEQUENCE_ID,
        pl.col("label").fill_null(0).cast(pl.Int8),
        pl.col("anomaly_type").fill_null(NORMAL_TYPE),
        "group_id",
        pl.when(pl.col("session_id").is_null())
        .then(pl.lit("real"))
        .otherwise(pl.lit("injected"))
        .alias("source"),
    )
    return labels.sort(SEQUENCE_ID)
