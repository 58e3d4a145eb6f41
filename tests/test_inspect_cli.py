"""``anomaly-ssl inspect``: library summary, CLI (CliRunner and subprocess), real data files."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from anomaly_ssl.cli import cli
from anomaly_ssl.config_loader import load_config
from anomaly_ssl.data import format_summary, inspect_data


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI installs a stderr handler bound to CliRunner's stream; remove it afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def shop_events(tmp_events):
    """A small file shaped like the simulator's events.parquet."""
    rng = np.random.default_rng(0)
    n = 300
    users = rng.integers(0, 12, size=n)
    df = pl.DataFrame(
        {
            "user_id": [f"user_{u}" for u in users],
            "session_id": [f"user_{u}-s" for u in users],
            "ts": 1_700_000_000.0 + np.sort(rng.uniform(0, 6 * 3600, size=n)),
            "event": rng.choice(
                ["view", "search", "add_to_cart", "checkout", "purchase"],
                size=n,
                p=[0.6, 0.2, 0.1, 0.05, 0.05],
            ),
            "item_id": rng.integers(0, 40, size=n).astype(str),
            "category": rng.choice(["books", "toys", "garden"], size=n),
            "price": np.round(rng.lognormal(3, 1, size=n), 2),
            "device": rng.choice(["ios_app", "desktop_web"], size=n),
            "payment_method": rng.choice(["paypal", "credit_card"], size=n),
            "unused": rng.choice(["DE", "AT"], size=n),
        }
    )
    # whatever other attributes configs/shop.yaml names get random values too
    data_cfg = load_config("shop").data
    extra_cats = [c for c in data_cfg.categorical if c not in df.columns]
    extra_nums = [c for c in data_cfg.numeric if c not in df.columns]
    df = df.with_columns(
        [pl.Series(c, rng.choice(["a", "b", "c"], size=n)) for c in extra_cats]
        + [pl.Series(c, rng.integers(1, 4, size=n).astype(float)) for c in extra_nums]
    )
    return tmp_events(df, "events.parquet")


def test_inspect_data_summary(shop_events):
    summary = inspect_data(shop_events, load_config("shop"))
    assert summary["events"] == 300 and summary["rows_read"] == 300
    assert summary["entities"] == 12 and summary["sequences"] >= 12
    assert summary["vocab_sizes"]["event"] == 5 + 5
    data_cfg = load_config("shop").data
    assert list(summary["vocab_sizes"]) == ["event", *data_cfg.categorical, *data_cfg.numeric, "gap"]
    assert summary["vocab_kinds"]["price"] == "numeric" and summary["vocab_kinds"]["category"] == "exact"
    length = summary["length"]
    assert length["min"] <= length["p50"] <= length["p90"] <= length["p99"] <= length["max"]
    top = summary["top_events"]
    assert top[0]["event"] == "view" and [t["count"] for t in top] == sorted(
        (t["count"] for t in top), reverse=True
    )
    assert abs(sum(t["share"] for t in top) - 1.0) < 1e-4
    assert summary["time_range"]["start"].startswith("2023-11-14")
    text = format_summary(summary)
    assert "sequences" in text and "view" in text and "price" in text


@pytest.mark.parametrize("before", [True, False])
def test_cli_inspect_json_with_config_before_or_after(shop_events, before):
    opts = ["--config", "shop", "--set", "data.session_gap_minutes=1"]
    args = (
        [*opts, "inspect", str(shop_events), "--json"]
        if before
        else ["inspect", str(shop_events), "--json", *opts]
    )
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    default = inspect_data(shop_events, load_config("shop"))
    # a 1-minute gap cuts more sessions than the shop default of 30 minutes
    assert summary["sequences"] > default["sequences"]
    assert summary["events"] == 300


def test_cli_inspect_text_output(shop_events):
    result = CliRunner().invoke(cli, ["--config", "shop", "inspect", str(shop_events)])
    assert result.exit_code == 0, result.output
    assert "top events" in result.stdout and "vocabulary" in result.stdout


def test_cli_bad_data_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,ts,event\nu1,never,a\n")
    result = CliRunner().invoke(cli, ["inspect", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "cannot parse timestamps in column 'ts'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_python_dash_m_inspect(shop_events, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "anomaly_ssl",
        "-q",
        "inspect",
        str(shop_events),
        "--config",
        "shop",
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["events"] == 300
    missing = tmp_path / "missing.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "anomaly_ssl", "inspect", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: data file not found: {missing}"


# --------------------------------------------------------------- real public data

HDFS_EVENTS = [
    "--set",
    "data.format=events",
    "--set",
    "data.entity_col=block_id",
    "--set",
    "data.session_col=block_id",
    "--set",
    "data.time_col=timestamp",
    "--set",
    "data.event_col=event_id",
]
DIGINETICA = [
    "--set",
    "data.format=events",
    "--set",
    "data.entity_col=session_id",
    "--set",
    "data.session_col=session_id",
    "--set",
    "data.event_col=item_id",
    "--set",
    "data.time_col=timeframe",
    "--set",
    "data.time_unit=ms",
]


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("relpath", "args", "sequences", "events"),
    [
        ("hdfs/hdfs_train", ["--config", "hdfs"], 5583, None),
        ("hdfs/hdfs_test_normal", ["--config", "hdfs"], 11039, None),
        ("hdfs/hdfs_test_abnormal", ["--config", "hdfs"], 16838, None),
        ("hdfs/hdfs_2pct_sequences.csv", ["--config", "hdfs"], 11501, 222579),
        ("hdfs/hdfs_2pct_events_long.csv.gz", HDFS_EVENTS, 11501, 222579),
        ("hdfs/deeplog_split/hdfs_train", ["--config", "hdfs", "--set", "data.format=lines"], 4855, None),
        (
            "hdfs/deeplog_split/hdfs_test_abnormal",
            ["--config", "hdfs", "--set", "data.format=lines"],
            16838,
            None,
        ),
        ("ecommerce/UserBehavior_head.csv", ["--config", "taobao"], None, 84475),
        ("ecommerce/sample_train-item-views.csv", DIGINETICA, 2986, 12391),
    ],
)
def test_inspect_every_shared_file(shared_data, relpath, args, sequences, events):
    path = shared_data / relpath
    result = CliRunner().invoke(cli, [*args, "inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows_dropped"] == {}
    if sequences is not None:
        assert summary["sequences"] == sequences
    if events is not None:
        assert summary["events"] == events
    assert summary["length"]["min"] >= 1 and summary["vocab_sizes"]["event"] > 5


@pytest.mark.shared_data
def test_taobao_and_hdfs_events_have_times(shared_data):
    taobao = inspect_data(shared_data / "ecommerce/UserBehavior_head.csv", load_config("taobao"))
    assert taobao["entities"] == 815 and taobao["time_unit"] == "s"
    assert {t["event"] for t in taobao["top_events"]} == {"pv", "cart", "fav", "buy"}
    hdfs = inspect_data(
        shared_data / "hdfs/hdfs_2pct_events_long.csv.gz",
        load_config(None, [a for a in HDFS_EVENTS if a != "--set"]),
    )
    assert hdfs["time_unit"] == "iso" and hdfs["time_range"]["start"].startswith("2008-11-0")


def test_simulator_output_loads_and_labels_match(tmp_path):
    simulator = pytest.importorskip("anomaly_ssl.data.simulator")
    from anomaly_ssl.data import load_sequences, read_labels

    events, labels = simulator.simulate_shop(120, seed=3).write(tmp_path)
    result = CliRunner().invoke(cli, ["--config", "shop", "inspect", str(events), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["sequences"] == 120 and summary["rows_dropped"] == {}
    table = load_sequences(events, load_config("shop").data).table
    assert read_labels(labels, sequence_ids=table["sequence_id"]).height == 120
