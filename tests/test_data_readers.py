"""Readers: every input format gives the same sequences table; sessionisation edge cases."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from anomaly_ssl.config import DataConfig
from anomaly_ssl.data import (
    SEQUENCES_SCHEMA,
    iter_sequence_batches,
    load_sequences,
    validate_sequences_table,
)
from anomaly_ssl.errors import DataError

T0 = 1_600_000_000  # 2020-09-13 12:26:40 UTC

# file order matters: rows 2 and 3 share a timestamp; row 5 is exactly 30 min after row 3
EVENTS = pl.DataFrame(
    {
        "user_id": ["u1", "u2", "u1", "u1", "u2", "u1"],
        "ts": [T0, T0 + 10, T0 + 60, T0 + 60, T0 + 3000, T0 + 1860],
        "event": ["view", "view", "cart", "buy", "view", "view"],
        "item_id": ["a", "b", "a", "a", "c", "d"],
        "price": [10.0, 5.5, 10.0, 10.0, 7.25, None],
    }
).with_columns(pl.col("ts").cast(pl.Float64))


def cfg(**kw) -> DataConfig:
    base = {"categorical": ["item_id"], "numeric": ["price"]}
    c = DataConfig(**(base | kw))
    c.validate()
    return c


def expected_table() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sequence_id": ["u1:0", "u2:0", "u2:1"],
            "entity_id": ["u1", "u2", "u2"],
            "event": [["view", "cart", "buy", "view"], ["view"], ["view"]],
            "ts": [[T0, T0 + 60, T0 + 60, T0 + 1860], [T0 + 10], [T0 + 3000]],
            "gap": [[0.0, 60.0, 0.0, 1800.0], [0.0], [0.0]],
            "item_id": [["a", "a", "a", "d"], ["b"], ["c"]],
            "price": [[10.0, 10.0, 10.0, None], [5.5], [7.25]],
        },
        schema={**SEQUENCES_SCHEMA, "item_id": pl.List(pl.Utf8), "price": pl.List(pl.Float64)},
    )


@pytest.mark.parametrize(
    ("name", "kwargs", "extra_cfg"),
    [
        ("events.parquet", {}, {}),
        ("events.csv", {}, {}),
        ("events.tsv", {}, {}),
        ("events.txt", {"separator": ";"}, {}),
        ("events.csv.gz", {}, {}),
        ("events.jsonl", {}, {}),
        ("events.ndjson", {}, {}),
        ("noheader.csv", {"header": False}, {"columns": ["user_id", "ts", "event", "item_id", "price"]}),
        (
            "noheader_pipe.csv",
            {"header": False, "separator": "|"},
            {
                "has_header": False,
                "delimiter": "|",
                "columns": ["user_id", "ts", "event", "item_id", "price"],
            },
        ),
    ],
)
def test_every_event_format_gives_the_same_table(tmp_events, name, kwargs, extra_cfg):
    path = tmp_events(EVENTS, name, **kwargs)
    load = load_sequences(path, cfg(**extra_cfg))
    assert_frame_equal(load.table, expected_table())
    validate_sequences_table(load.table)
    assert load.report.format == "events"
    assert load.report.rows_read == 6
    assert (load.report.n_entities, load.report.n_sequences, load.report.n_events) == (2, 3, 6)
    assert load.report.time_unit == "s"


@pytest.mark.parametrize(
    ("values", "unit", "expected_unit"),
    [
        ([int(t * 1000) for t in EVENTS["ts"]], "auto", "ms"),
        ([int(t * 1_000_000) for t in EVENTS["ts"]], "auto", "us"),
        ([int(t * 1000) for t in EVENTS["ts"]], "ms", "ms"),
        (
            [
                dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
                for t in EVENTS["ts"]
            ],
            "auto",
            "iso",
        ),
        (
            [
                dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                for t in EVENTS["ts"]
            ],
            "iso",
            "iso",
        ),
        ([str(int(t)) for t in EVENTS["ts"]], "auto", "s"),
    ],
)
def test_timestamps_in_seconds_ms_us_and_iso(tmp_events, values, unit, expected_unit):
    path = tmp_events(EVENTS.with_columns(pl.Series("ts", values)), "events.parquet")
    load = load_sequences(path, cfg(time_unit=unit))
    assert_frame_equal(load.table, expected_table())
    assert load.report.time_unit == expected_unit


def test_datetime_column_and_custom_time_format(tmp_events):
    stamps = [dt.datetime.fromtimestamp(t, dt.timezone.utc).replace(tzinfo=None) for t in EVENTS["ts"]]
    path = tmp_events(EVENTS.with_columns(pl.Series("ts", stamps)), "events.parquet")
    assert_frame_equal(load_sequences(path, cfg()).table, expected_table())
    text = [s.strftime("%d/%m/%Y %H:%M:%S") for s in stamps]
    path = tmp_events(EVENTS.with_columns(pl.Series("ts", text)), "custom.csv")
    assert_frame_equal(load_sequences(path, cfg(time_format="%d/%m/%Y %H:%M:%S")).table, expected_table())


def test_gap_just_over_the_boundary_splits(tmp_events):
    df = EVENTS.with_columns(
        pl.when(pl.int_range(6) == 5).then(T0 + 1860.5).otherwise(pl.col("ts")).alias("ts")
    )
    table = load_sequences(tmp_events(df), cfg()).table
    assert table["sequence_id"].to_list() == ["u1:0", "u1:1", "u2:0", "u2:1"]
    assert table["event"].to_list()[:2] == [["view", "cart", "buy"], ["view"]]


def test_max_session_events_cuts_sessions(tmp_events):
    table = load_sequences(tmp_events(EVENTS), cfg(max_session_events=2)).table
    assert table["sequence_id"].to_list() == ["u1:0", "u1:1", "u2:0", "u2:1"]
    assert table["event"].to_list()[:2] == [["view", "cart"], ["buy", "view"]]
    # the first event of a cut part has gap 0 like every sequence start
    assert table["gap"].to_list()[1] == [0.0, 1800.0]


def test_session_column_with_cut(tmp_events):
    df = EVENTS.with_columns(pl.Series("session", ["s1", "s2", "s1", "s1", "s2", "s1"]))
    table = load_sequences(tmp_events(df), cfg(session_col="session", max_session_events=3)).table
    assert table["sequence_id"].to_list() == ["s1", "s1.1", "s2"]
    assert table["event"].to_list() == [["view", "cart", "buy"], ["view"], ["view", "view"]]
    assert table["entity_id"].to_list() == ["u1", "u1", "u2"]


def test_events_without_time_keep_file_order(tmp_events):
    table = load_sequences(tmp_events(EVENTS.drop("ts")), cfg(time_col=None)).table
    assert table["sequence_id"].to_list() == ["u1:0", "u2:0"]
    assert table["event"].to_list() == [["view", "cart", "buy", "view"], ["view", "view"]]
    assert table["ts"].null_count() == 2 and table["gap"].null_count() == 2
    validate_sequences_table(table)


def test_integer_entities_become_strings(tmp_events):
    df = EVENTS.with_columns(pl.Series("user_id", [7, 8, 7, 7, 8, 7]))
    table = load_sequences(tmp_events(df), cfg()).table
    assert table["sequence_id"].to_list() == ["7:0", "8:0", "8:1"]
    assert table.schema["entity_id"] == pl.Utf8


def test_null_rows_are_dropped_counted_and_logged(tmp_events, caplog):
    df = pl.concat(
        [
            EVENTS,
            pl.DataFrame(
                {
                    "user_id": [None, "u3"],
                    "ts": [T0, None],
                    "event": ["x", "y"],
                    "item_id": ["a", "a"],
                    "price": [1.0, 1.0],
                },
                schema=EVENTS.schema,
            ),
        ]
    )
    with caplog.at_level(logging.WARNING, logger="anomaly_ssl.data.readers"):
        load = load_sequences(tmp_events(df, "nulls.csv"), cfg())
    assert_frame_equal(load.table, expected_table())
    assert load.report.rows_read == 8
    assert load.report.rows_dropped == {"null entity_col": 1, "null time_col": 1}
    assert "dropped 2 of 8 rows" in caplog.text


# ------------------------------------------------------------------ sequence tables


SEQ_EXPECTED = pl.DataFrame(
    {
        "sequence_id": ["blk_1", "blk_2"],
        "entity_id": ["blk_1", "blk_2"],
        "event": [["5", "5", "22"], ["3"]],
        "ts": [None, None],
        "gap": [None, None],
    },
    schema=SEQUENCES_SCHEMA,
)


@pytest.mark.parametrize("name", ["seq.parquet", "seq.jsonl"])
def test_sequence_table_with_list_column(tmp_events, name):
    path = tmp_events({"sequence_id": ["blk_1", "blk_2"], "tokens": [[5, 5, 22], [3]]}, name)
    load = load_sequences(path, DataConfig())
    assert load.report.format == "sequences"
    assert_frame_equal(load.table, SEQ_EXPECTED)


def test_sequence_table_with_string_column_and_custom_separator(tmp_events):
    path = tmp_events({"id": ["blk_1", "blk_2"], "toks": ["5  5 22 ", "3"]}, "seq.csv")
    assert_frame_equal(load_sequences(path, DataConfig(id_col="id", tokens_col="toks")).table, SEQ_EXPECTED)
    path = tmp_events({"id": ["blk_1", "blk_2"], "toks": ["5|5|22", "3|"]}, "seq2.csv")
    table = load_sequences(path, DataConfig(id_col="id", tokens_col="toks", token_sep="|")).table
    assert_frame_equal(table, SEQ_EXPECTED)


def test_hdfs_lines_with_format_and_auto(tmp_path):
    path = tmp_path / "hdfs_train"
    path.write_text("blk_1,5 5 22\nblk_2,3\n")
    for fmt in ("hdfs", "auto"):
        load = load_sequences(path, DataConfig(format=fmt, time_col=None))
        assert load.report.format == "hdfs"
        assert_frame_equal(load.table, SEQ_EXPECTED)


def test_hdfs_sequence_csv_with_header(tmp_path):
    path = tmp_path / "seqs.csv"
    path.write_text("block_id,label,n_events,event_ids\nblk_1,0,3,5 5 22\nblk_2,1,1,3\n")
    c = DataConfig(format="hdfs", id_col="block_id", tokens_col="event_ids", time_col=None)
    assert_frame_equal(load_sequences(path, c).table, SEQ_EXPECTED)


def test_lines_format_ids_are_line_numbers(tmp_path):
    path = tmp_path / "deeplog_train"
    path.write_text("5 5 22 \n3 4\n\n")
    for fmt in ("lines", "auto"):
        load = load_sequences(path, DataConfig(format=fmt))
        assert load.report.format == "lines"
        assert load.table["sequence_id"].to_list() == ["0", "1"]
        assert load.table["event"].to_list() == [["5", "5", "22"], ["3", "4"]]
        assert load.report.rows_dropped == {"trailing blank line": 1}


# ------------------------------------------------------------------------ batches


@pytest.mark.parametrize("batch_rows", [1, 2, 100])
def test_iter_batches_equals_load_for_events(tmp_events, tmp_path, batch_rows):
    path = tmp_events(EVENTS, "events.csv")
    batches = list(iter_sequence_batches(path, cfg(), batch_rows=batch_rows, tmp_dir=tmp_path))
    assert all(b.height <= batch_rows for b in batches)
    assert_frame_equal(pl.concat(batches), load_sequences(path, cfg()).table)
    assert not list(tmp_path.glob("anomaly-ssl-*")), "temporary folder left behind"


@pytest.mark.parametrize("batch_rows", [1, 3])
def test_iter_batches_equals_load_for_sequences(tmp_path, batch_rows):
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"{i} {i + 1} {i % 3}\n" for i in range(7)))
    hdfs = tmp_path / "hdfs_lines"
    hdfs.write_text("".join(f"blk_{i},{i} {i % 4}\n" for i in range(7)))
    for path, c in ((lines, DataConfig(format="lines")), (hdfs, DataConfig(format="hdfs"))):
        batches = list(iter_sequence_batches(path, c, batch_rows=batch_rows))
        assert len(batches) >= 7 // batch_rows
        assert_frame_equal(pl.concat(batches), load_sequences(path, c).table)


def test_iter_batches_finds_duplicates_across_batches(tmp_path):
    path = tmp_path / "dups"
    path.write_text("blk_1,5\nblk_2,6\nblk_1,7\n")
    with pytest.raises(DataError, match=r"repeated: 'blk_1' \(row 3\)"):
        list(iter_sequence_batches(path, DataConfig(format="hdfs"), batch_rows=1))


def test_validate_rejects_a_broken_table():
    table = expected_table()
    validate_sequences_table(table)
    with pytest.raises(DataError, match=r"expected"):
        validate_sequences_table(table.select(["entity_id", "sequence_id", "event", "ts", "gap"]))
    bad = table.with_columns(pl.Series("gap", [[0.0], [0.0], [0.0]]))
    with pytest.raises(DataError, match=r"'gap' has a different length.*'u1:0'"):
        validate_sequences_table(bad)


def test_shared_file_paths_are_accepted_as_str(tmp_events):
    path: Path = tmp_events(EVENTS)
    assert load_sequences(str(path), cfg()).report.path == str(path)


def test_csv_rows_with_spaces_in_fields_are_not_taken_for_hdfs_lines(tmp_path):
    """A header-less CSV whose fields hold spaces (timestamps) is not ``id,tok tok`` lines."""
    from anomaly_ssl.config import DataConfig
    from anomaly_ssl.data.sniff import _HDFS_LINE

    assert _HDFS_LINE.match("blk_1,5 5 22 11 9")
    assert not _HDFS_LINE.match("blk_1,0,38,2008-11-09 20:35:30,2008-11-10 10:37:39,5 5 22")
    path = tmp_path / "blocks.csv"
    path.write_text(
        "block_id,label,n_events,first_ts,event_ids\n"
        "blk_1,0,3,2008-11-09 20:35:30,5 5 22\n"
        "blk_2,1,2,2008-11-09 20:35:31,5 22\n"
    )
    loaded = load_sequences(path, DataConfig(format="auto", id_col="block_id", tokens_col="event_ids"))
    assert loaded.table["sequence_id"].to_list() == ["blk_1", "blk_2"]
    assert loaded.table["event"].to_list() == [["5", "5", "22"], ["5", "22"]]
