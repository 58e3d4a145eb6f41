"""The shop simulator: determinism, labels = data-layer sequences, realism, CLI, injection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from anomaly_ssl.cli import cli
from anomaly_ssl.config_loader import load_config
from anomaly_ssl.data.sessionize import sessionize
from anomaly_ssl.data.simulator import ANOMALY_TYPES, NORMAL_TYPE, inject_anomalies, simulate_shop
from anomaly_ssl.data.simulator.inject import TAOBAO_EVENT_MAP, supported_types
from anomaly_ssl.data.simulator.shop import MAX_SESSION_EVENTS, SESSION_GAP_SECONDS
from anomaly_ssl.errors import ConfigError, DataError

EVENT_SCHEMA = {
    "user_id": pl.Utf8,
    "session_id": pl.Utf8,
    "ts": pl.Float64,
    "event": pl.Utf8,
    "item_id": pl.Utf8,
    "category": pl.Utf8,
    "price": pl.Float64,
    "quantity": pl.Int32,
    "device": pl.Utf8,
    "device_id": pl.Utf8,
    "ip_country": pl.Utf8,
    "payment_method": pl.Utf8,
    "card_id": pl.Utf8,
    "coupon_code": pl.Utf8,
    "rating": pl.Int8,
}


@pytest.fixture(scope="module")
def shop():
    return simulate_shop(1000, anomaly_rate=0.06, seed=3)


@pytest.fixture(scope="module")
def sessions(shop) -> pl.DataFrame:
    """One row per simulated session: label, type, group, events (list), length."""
    return (
        shop.events.group_by("session_id", maintain_order=True)
        .agg(pl.col("event"), pl.len().alias("length"), pl.col("ts"), pl.col("user_id").first())
        .join(shop.labels, on="session_id")
    )


def _shop_sessionize(events: pl.DataFrame) -> pl.DataFrame:
    data = load_config("shop").data
    return sessionize(
        events.lazy(),
        data.entity_col,
        data.time_col,
        data.session_gap_minutes * 60.0,
        data.max_session_events,
    ).collect()


# ---------------------------------------------------------------- contract


def test_same_seed_same_tables_other_seed_differs():
    a, b = simulate_shop(300, seed=5), simulate_shop(300, seed=5)
    assert a.events.equals(b.events) and a.labels.equals(b.labels)
    c = simulate_shop(300, seed=6)
    assert not a.events.equals(c.events)


def test_schema_and_nulls(shop):
    assert dict(shop.events.schema) == EVENT_SCHEMA
    assert dict(shop.labels.schema) == {
        "sequence_id": pl.Utf8,
        "label": pl.Int8,
        "anomaly_type": pl.Utf8,
        "group_id": pl.Utf8,
        "session_id": pl.Utf8,
    }
    ev = shop.events
    assert (
        ev.select(pl.col("user_id", "session_id", "ts", "event", "device").null_count().sum()).row(0)
        == (0,) * 5
    )
    no_item = ev.filter(pl.col("event").is_in(["login", "logout", "search", "checkout", "payment_success"]))
    assert no_item["item_id"].null_count() == no_item.height
    assert ev.filter(pl.col("event").is_in(["login", "search"]))["price"].null_count() > 0
    pays = ev.filter(pl.col("event").is_in(["payment_attempt", "payment_success", "payment_failed"]))
    assert pays["payment_method"].null_count() == 0 and pays["price"].min() > 0
    assert (
        ev.filter(pl.col("event") == "view")["payment_method"].null_count()
        == ev.filter(pl.col("event") == "view").height
    )
    reviews = ev.filter(pl.col("event") == "review")
    assert reviews.height > 0 and reviews["rating"].is_between(1, 5).all()
    assert ev.filter(pl.col("event") != "review")["rating"].null_count() == ev.height - reviews.height
    assert ev["ts"].is_sorted()


def test_labels_are_exactly_the_data_layer_sequences(shop):
    assert (
        load_config("shop").data.session_gap_minutes * 60.0,
        load_config("shop").data.max_session_events,
    ) == (SESSION_GAP_SECONDS, MAX_SESSION_EVENTS)
    seq = _shop_sessionize(shop.events)
    labels = shop.labels
    assert labels["sequence_id"].is_unique().all()
    assert set(labels["sequence_id"]) == set(seq["sequence_id"])
    # each sequence holds one simulated session and each session is one sequence
    per_seq = seq.group_by("sequence_id").agg(pl.col("session_id").n_unique().alias("n"))
    assert per_seq["n"].max() == 1
    assert seq["session_id"].n_unique() == labels.height == 1000
    joined = seq.select("sequence_id", "session_id").unique().join(labels, on="sequence_id")
    assert (joined["session_id"] == joined["session_id_right"]).all()


def test_sessions_respect_the_gap_rule(sessions):
    gaps = sessions.select(pl.col("ts").list.diff(null_behavior="drop").list.max().alias("g"))["g"]
    assert gaps.drop_nulls().max() < SESSION_GAP_SECONDS
    spans = (
        sessions.select("user_id", pl.col("ts").list.first().alias("a"), pl.col("ts").list.last().alias("b"))
        .sort("user_id", "a")
        .with_columns((pl.col("a") - pl.col("b").shift(1).over("user_id")).alias("between"))
    )
    assert spans["between"].drop_nulls().min() > SESSION_GAP_SECONDS


def test_anomaly_rate_and_every_type_present(shop):
    labels = shop.labels
    assert labels["label"].sum() == 60
    assert set(labels.filter(pl.col("label") == 0)["anomaly_type"].unique()) == {NORMAL_TYPE}
    assert labels.filter(pl.col("label") == 0)["group_id"].null_count() == labels.height - 60
    counts = dict(labels.filter(pl.col("label") == 1).group_by("anomaly_type").len().iter_rows())
    assert set(counts) == set(ANOMALY_TYPES)
    small = simulate_shop(500, anomaly_rate=0.03, seed=11).labels
    assert small["label"].sum() == 15
    assert set(small.filter(pl.col("label") == 1)["anomaly_type"]) == set(ANOMALY_TYPES)
    assert simulate_shop(200, anomaly_rate=0.0, seed=1).labels["label"].sum() == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_many_anomalies_short_window_still_one_sequence_per_session(seed):
    # a crowded day with few users stresses the scheduling and every generator's edge cases
    shop = simulate_shop(600, anomaly_rate=0.5, seed=seed, n_users=10, n_days=1)
    assert shop.labels.height == 600 and shop.labels["label"].sum() == 300
    seq = _shop_sessionize(shop.events)
    assert set(seq["sequence_id"]) == set(shop.labels["sequence_id"])


def test_invalid_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match=r"n_sessions .*--sessions"):
        simulate_shop(0)
    with pytest.raises(ConfigError, match=r"anomaly_rate .*0.7"):
        simulate_shop(100, anomaly_rate=0.7)


# ---------------------------------------------------------------- realism


def test_purchase_funnel_narrows_among_normal_sessions(shop, sessions):
    normal_ids = sessions.filter(pl.col("label") == 0)["session_id"]
    counts = dict(
        shop.events.filter(pl.col("session_id").is_in(normal_ids.implode()))
        .group_by("event")
        .len()
        .iter_rows()
    )
    assert counts["view"] > counts["add_to_cart"] > counts["checkout"] > counts["payment_success"] > 0
    assert 0 < counts.get("payment_failed", 0) < counts["payment_success"]
    for event in ("login", "search", "wishlist", "apply_coupon", "review", "return_request", "signup"):
        assert counts.get(event, 0) > 0, event


def test_item_prices_and_categories_are_consistent(shop):
    per_item = (
        shop.events.filter(pl.col("item_id").is_not_null())
        .group_by("item_id")
        .agg(pl.col("price").n_unique().alias("prices"), pl.col("category").n_unique().alias("cats"))
    )
    assert per_item["prices"].max() == 1 and per_item["cats"].max() == 1
    # popularity is skewed (Zipf): the top 10 % of viewed items get far more than 10 % of views
    views = (
        shop.events.filter(pl.col("event") == "view").group_by("item_id").len().sort("len", descending=True)
    )
    top = views.head(max(1, views.height // 10))["len"].sum()
    assert top / views["len"].sum() > 0.25


def test_anomalous_lengths_overlap_normal_lengths(sessions):
    normal = sessions.filter(pl.col("label") == 0)["length"]
    anomalous = sessions.filter(pl.col("label") == 1)["length"]
    ratio = anomalous.median() / normal.median()
    assert 0.3 <= ratio <= 3.0
    assert anomalous.min() <= normal.median() <= anomalous.max()
    assert normal.quantile(0.95) >= anomalous.median()


def test_coordinated_rings_of_near_identical_sessions(sessions):
    rings = (
        sessions.filter(pl.col("label") == 1)
        .with_columns(pl.col("event").list.join(" ").alias("script"))
        .group_by("group_id", "script")
        .len()
        .filter(pl.col("len") >= 3)
    )
    assert rings.height >= 1
    # group ids tie sessions of one incident together, several incidents of a type exist
    groups = sessions.filter(pl.col("label") == 1).group_by("group_id").len()
    assert groups["len"].max() >= 3 and groups.height >= len(ANOMALY_TYPES)


def test_scripted_bots_are_regular_and_humans_are_not(sessions):
    def gap_cv(df: pl.DataFrame) -> pl.Series:
        gaps = df.select(
            pl.int_range(pl.len()).alias("i"), pl.col("ts").list.diff(null_behavior="drop").alias("g")
        )
        per_session = (
            gaps.explode("g").group_by("i").agg((pl.col("g").std() / pl.col("g").mean()).alias("cv"))
        )
        return per_session["cv"]

    humans = gap_cv(sessions.filter((pl.col("label") == 0) & (pl.col("length") >= 5)))
    bots = gap_cv(sessions.filter(pl.col("anomaly_type") == "scraping_bot"))
    assert (humans < 0.15).mean() < 0.01
    assert (bots < 0.15).sum() >= 1


def test_daytime_traffic_exceeds_night_traffic(shop):
    hours = pl.from_epoch(shop.events["ts"].cast(pl.Int64)).dt.hour()
    assert hours.is_between(18, 21).sum() > 3 * hours.is_between(2, 5).sum()
    days = (shop.events["ts"].max() - shop.events["ts"].min()) / 86400.0
    assert 10 <= days <= 15


def test_returns_and_reviews_come_in_later_sessions_after_buying(shop):
    ev = shop.events.join(shop.labels.select("session_id", "label"), on="session_id")
    normal = ev.filter(pl.col("label") == 0)
    returns = normal.filter(pl.col("event") == "return_request").select(
        "user_id", "item_id", "session_id", "ts"
    )
    carts = normal.filter(pl.col("event") == "add_to_cart").select(
        "user_id", "item_id", pl.col("session_id").alias("cart_session"), pl.col("ts").alias("cart_ts")
    )
    matched = returns.join(carts, on=["user_id", "item_id"]).filter(
        (pl.col("cart_ts") < pl.col("ts") - 86400.0) & (pl.col("cart_session") != pl.col("session_id"))
    )
    assert returns.height > 0
    assert matched.select(pl.struct("session_id", "item_id").n_unique()).item() == returns.height


# ---------------------------------------------------------------- CLI


def test_cli_writes_both_files_and_prints_a_summary(tmp_path: Path):
    out = tmp_path / "shop"
    result = CliRunner().invoke(
        cli, ["simulate", "--out", str(out), "--sessions", "300", "--seed", "1", "--config", "shop"]
    )
    assert result.exit_code == 0, result.output
    assert "300 sessions" in result.output and "anomalous sessions: 15" in result.output
    for name in ANOMALY_TYPES:
        assert name in result.output
    events, labels = pl.read_parquet(out / "events.parquet"), pl.read_parquet(out / "labels.parquet")
    expected = simulate_shop(300, seed=1)
    assert events.equals(expected.events) and labels.equals(expected.labels)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_cli_rejects_a_bad_rate_with_a_usage_error(tmp_path: Path):
    result = CliRunner().invoke(cli, ["simulate", "--out", str(tmp_path / "x"), "--anomaly-rate", "2"])
    assert result.exit_code == 2
    assert "--anomaly-rate" in result.output and "0.5" in result.output
    assert not (tmp_path / "x").exists()


def test_cli_as_a_subprocess(tmp_path: Path):
    out = tmp_path / "shop"
    cmd = [sys.executable, "-m", "anomaly_ssl", "-q", "simulate", "--out", str(out), "--sessions", "120"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "anomalous sessions: 6" in proc.stdout
    assert pl.read_parquet(out / "labels.parquet").height == 120
    bad = subprocess.run([*cmd[:-1], "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--sessions" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------- injection into real data


def _fake_taobao(seed: int = 0, n_users: int = 120) -> pl.DataFrame:
    """A small Taobao-like table: int ids, behaviour pv/cart/fav/buy, int seconds."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, n_users + 1):
        t = 1_511_500_000 + int(rng.integers(0, 86400 * 3))
        for _ in range(int(rng.integers(1, 5))):
            for _ in range(int(rng.integers(1, 12))):
                item = int(rng.zipf(1.5)) % 400 + 1000
                behavior = rng.choice(["pv", "pv", "pv", "pv", "cart", "fav", "buy"])
                rows.append((user, item, item % 17, str(behavior), t))
                t += int(rng.integers(1, 300))
            t += int(rng.integers(4000, 90000))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "category_id", "behavior", "ts"], orient="row")


def test_injection_into_a_taobao_like_table():
    real = _fake_taobao()
    events, labels = inject_anomalies(real, rate=0.1, seed=4)
    assert events.schema == real.schema
    assert events.head(real.height).equals(real)
    injected = events.slice(real.height)
    assert set(injected["behavior"].unique()) <= set(TAOBAO_EVENT_MAP.values())
    assert not set(injected["user_id"]) & set(real["user_id"])
    assert set(injected["item_id"]) <= set(real["item_id"])  # orders are per item, as in Taobao
    seq = sessionize(events.lazy(), "user_id", "ts", SESSION_GAP_SECONDS, MAX_SESSION_EVENTS).collect()
    assert labels["sequence_id"].is_unique().all()
    assert set(labels["sequence_id"]) == set(seq["sequence_id"])
    rate = labels["label"].mean()
    assert 0.08 <= rate <= 0.12
    real_labels = labels.filter(pl.col("source") == "real")
    assert real_labels["label"].sum() == 0 and set(real_labels["anomaly_type"]) == {NORMAL_TYPE}
    assert (
        real_labels.height
        == sessionize(real.lazy(), "user_id", "ts", 1800.0, 4096).collect()["sequence_id"].n_unique()
    )
    types = set(labels.filter(pl.col("label") == 1)["anomaly_type"])
    assert (
        types == set(supported_types(TAOBAO_EVENT_MAP)) == {"scraping_bot", "order_brushing", "cart_hoarding"}
    )


def test_injection_with_the_full_vocabulary_and_string_ids(shop):
    real = shop.events.filter(
        pl.col("session_id").is_in(shop.labels.filter(pl.col("label") == 0)["session_id"].implode())
    ).drop("session_id")
    identity = {name: name for name in ("view", "search", "add_to_cart", "remove_from_cart", "checkout",
                                        "payment_attempt", "payment_failed", "payment_success", "login",
                                        "address_change", "return_request", "apply_coupon", "coupon_rejected",
                                        "review", "signup")}  # fmt: skip
    columns = {"user_id": "user_id", "ts": "ts", "event": "event", "item_id": "item_id", "price": "price"}
    events, labels = inject_anomalies(
        real, rate=0.05, seed=1, column_map=columns, event_map=identity, item_level_orders=False
    )
    assert events.schema == real.schema
    types = set(labels.filter(pl.col("label") == 1)["anomaly_type"])
    assert types == set(ANOMALY_TYPES) - {"account_takeover"}
    seq = _shop_sessionize(events)
    assert (
        set(labels["sequence_id"]) == set(seq["sequence_id"])
        and labels.height == seq["sequence_id"].n_unique()
    )


def test_injection_errors_name_the_problem():
    real = _fake_taobao(n_users=20)
    with pytest.raises(DataError, match=r"card_testing.*payment_failed"):
        inject_anomalies(real, types=["card_testing"])
    with pytest.raises(DataError, match=r"no column\(s\) \['behaviour'\]"):
        inject_anomalies(
            real, column_map={"user_id": "user_id", "ts": "ts", "event": "behaviour", "item_id": "item_id"}
        )
    with pytest.raises(DataError, match="unknown simulator event"):
        inject_anomalies(real, event_map={"click": "pv"})


@pytest.mark.shared_data
def test_injection_into_real_taobao_sessions(shared_data: Path):
    path = shared_data / "ecommerce" / "UserBehavior_head.csv"
    real = pl.read_csv(
        path, has_header=False, new_columns=["user_id", "item_id", "category_id", "behavior", "ts"]
    )
    events, labels = inject_anomalies(real, rate=0.03, seed=0)
    assert abs(labels["label"].mean() - 0.03) < 0.003
    seq = sessionize(events.lazy(), "user_id", "ts", 1800.0, 4096).collect()
    assert set(labels["sequence_id"]) == set(seq["sequence_id"])
