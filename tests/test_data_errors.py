"""Bad input: every mistake is a DataError that says what, where and how to fix it."""

from __future__ import annotations

import gzip
import logging

import polars as pl
import pytest

from anomaly_ssl.config import DataConfig
from anomaly_ssl.data import load_sequences, read_labels
from anomaly_ssl.data.labels import join_labels
from anomaly_ssl.errors import ConfigError, DataError

GOOD_CSV = "user_id,ts,event,price\nu1,100,view,1.5\nu1,160,cart,2.5\nu2,100,view,3\n"


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def test_file_not_found(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*nope.csv"):
        load_sequences(tmp_path / "nope.csv", DataConfig())


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(DataError, match=r"empty.csv: the file is empty"):
        load_sequences(write(tmp_path, "empty.csv", ""), DataConfig())
    with pytest.raises(DataError, match=r"the file is empty"):
        load_sequences(write(tmp_path, "empty.csv.gz", gzip.compress(b"")), DataConfig())
    with pytest.raises(DataError, match=r"header.csv: the file has no data rows"):
        load_sequences(write(tmp_path, "header.csv", "user_id,ts,event\n"), DataConfig())


def test_unknown_extension_with_auto(tmp_path):
    with pytest.raises(DataError, match=r"unknown file extension '\.xlsx'.*set data.format"):
        load_sequences(write(tmp_path, "events.xlsx", GOOD_CSV), DataConfig())
    # with an explicit format the content decides
    assert (
        load_sequences(write(tmp_path, "events.xlsx", GOOD_CSV), DataConfig(format="events")).table.height
        == 2
    )


def test_missing_column_names_it_and_lists_present(tmp_path):
    path = write(tmp_path, "e.csv", GOOD_CSV)
    with pytest.raises(
        DataError,
        match=r"missing column\(s\) 'device' \(data.categorical\[0\]\); "
        r"the file has columns \['user_id', 'ts', 'event', 'price'\]",
    ):
        load_sequences(path, DataConfig(categorical=["device"]))
    with pytest.raises(DataError, match=r"'timestamp' \(data.time_col\)"):
        load_sequences(path, DataConfig(format="events", time_col="timestamp"))


def test_auto_cannot_tell_format(tmp_path):
    path = write(tmp_path, "x.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match=r"cannot tell the format.*columns \['a', 'b'\]"):
        load_sequences(path, DataConfig())


def test_headerless_file_without_column_names(tmp_path):
    path = write(tmp_path, "taobao.csv", "1,2268318,pv,1511544070\n1,2333346,pv,1511561733\n")
    with pytest.raises(DataError, match=r"no header.*set data.columns"):
        load_sequences(path, DataConfig(format="events"))
    with pytest.raises(DataError, match=r"data.columns names 2 columns.*first line has 4 fields"):
        load_sequences(path, DataConfig(format="events", has_header=False, columns=["a", "b"]))


def test_unparseable_timestamps_give_rows_and_example(tmp_path):
    path = write(
        tmp_path, "t.csv", "user_id,ts,event\nu1,2020-01-01 00:00:00,a\nu1,yesterday,b\nu2,2020-01-02,c\n"
    )
    with pytest.raises(DataError, match=r"1 unparseable timestamp\(s\) in column 'ts'.*row 2: 'yesterday'"):
        load_sequences(path, DataConfig())
    path = write(tmp_path, "t2.csv", "user_id,ts,event\nu1,soon,a\nu1,later,b\n")
    with pytest.raises(DataError, match=r"cannot parse timestamps in column 'ts'.*'soon'.*data.time_format"):
        load_sequences(path, DataConfig())
    path = write(tmp_path, "t3.csv", "user_id,ts,event\nu1,100,a\nu1,1e,b\n")
    with pytest.raises(DataError, match=r"row 2: '1e'"):
        load_sequences(path, DataConfig(time_unit="s"))


def test_mixed_types_in_numeric_column(tmp_path):
    path = write(tmp_path, "p.csv", GOOD_CSV + "u2,170,buy,cheap\n")
    with pytest.raises(DataError, match=r"'price' is in data.numeric but has 1 non-numeric.*row 4: 'cheap'"):
        load_sequences(path, DataConfig(numeric=["price"]))
    path = write(
        tmp_path,
        "p.jsonl",
        '{"user_id":"u","ts":1,"event":"a","price":1.5}\n{"user_id":"u","ts":2,"event":"b","price":"n/a"}\n',
    )
    with pytest.raises(DataError, match=r"row 2: 'n/a'"):
        load_sequences(path, DataConfig(numeric=["price"]))


def test_json_type_change_after_inference_window(tmp_path):
    lines = [f'{{"user_id":"u","ts":{i},"event":"a","price":{i}}}' for i in range(10_050)]
    lines[-1] = '{"user_id":"u","ts":10049.5,"event":"a","price":"free"}'
    path = write(tmp_path, "late.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"'price' is in data.numeric.*row 10050: 'free'"):
        load_sequences(path, DataConfig(numeric=["price"]))
    table = load_sequences(path, DataConfig(categorical=["price"], max_session_events=20_000)).table
    assert table["price"].to_list()[0][-2:] == ["10048", "free"]


def test_non_utf8_bytes_name_offset_and_line(tmp_path):
    path = write(tmp_path, "l1.csv", b"user_id,ts,event\nu1,100,caf\xe9\n")
    with pytest.raises(
        DataError, match=r"l1.csv: not valid UTF-8 text: byte 0xe9 at byte offset 27 \(line 2\)"
    ):
        load_sequences(path, DataConfig())
    # far beyond the sniffed head: found by streaming through the file
    body = b"user_id,ts,event\n" + b"u1,100,view\n" * 10_000
    path = write(tmp_path, "l2.csv", body + b"u2,200,\xff\n")
    with pytest.raises(DataError, match=rf"byte 0xff at byte offset {len(body) + 7} \(line 10002\)"):
        load_sequences(path, DataConfig())


def test_zero_length_sequences_name_ids_and_rows(tmp_path):
    path = write(tmp_path, "s.csv", "sequence_id,tokens\na,1 2\nb,\nc,   \nd,3\n")
    with pytest.raises(DataError, match=r"2 zero-length sequence\(s\).*'b' \(row 2\), 'c' \(row 3\)"):
        load_sequences(path, DataConfig())
    path = write(tmp_path, "lines.txt", "1 2\n\n3\n")
    with pytest.raises(DataError, match=r"'1' \(row 2\)"):
        load_sequences(path, DataConfig(format="lines"))
    with pytest.raises(DataError, match=r"data.format=lines has no attribute columns.*\['device'\]"):
        load_sequences(path, DataConfig(format="lines", categorical=["device"]))


def test_duplicate_sequence_ids(tmp_path):
    path = write(tmp_path, "s.csv", "sequence_id,tokens\na,1 2\nb,3\na,4\n")
    with pytest.raises(DataError, match=r"unique; repeated: 'a' \(row 1\), 'a' \(row 3\)"):
        load_sequences(path, DataConfig())


def test_nulls_are_an_error_when_not_dropping(tmp_path):
    path = write(tmp_path, "n.csv", "user_id,ts,event\nu1,100,a\n,160,b\n")
    with pytest.raises(DataError, match=r"1 row\(s\) with a null 'user_id'.*rows 2; .*drop_null_rows=true"):
        load_sequences(path, DataConfig(drop_null_rows=False))
    path = write(tmp_path, "all_null.csv", "user_id,ts,event\n,100,a\n,160,b\n")
    with pytest.raises(DataError, match=r"every row was dropped"):
        load_sequences(path, DataConfig())


def test_ragged_lines_and_bad_hdfs_lines(tmp_path):
    path = write(tmp_path, "r.csv", "user_id,ts,event\nu1,100,a\nu1,160,b,extra\n")
    with pytest.raises(DataError, match=r"more fields than the header.*data.delimiter"):
        load_sequences(path, DataConfig())
    path = write(tmp_path, "h", "just some words\n")
    with pytest.raises(DataError, match=r"expects `id,tok tok tok` lines"):
        load_sequences(path, DataConfig(format="hdfs"))


def test_corrupt_parquet_and_lines_on_parquet(tmp_path):
    path = write(tmp_path, "bad.parquet", b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"bad.parquet: cannot read it as parquet"):
        load_sequences(path, DataConfig())
    good = tmp_path / "good.parquet"
    pl.DataFrame({"user_id": ["u"], "ts": [1.0], "event": ["a"]}).write_parquet(good)
    with pytest.raises(DataError, match=r"data.format=lines needs a text file"):
        load_sequences(good, DataConfig(format="lines"))


def test_config_rejects_reserved_attribute_names():
    with pytest.raises(ConfigError, match=r"data.categorical names \['ts'\]"):
        DataConfig(categorical=["ts"]).validate()


# ------------------------------------------------------------------------ labels


def test_labels_read_and_checked(tmp_path, caplog):
    path = write(
        tmp_path, "labels.csv", "sequence_id,label,anomaly_type\na,0,\nb,1,scraping_bot\nc,anomaly,\n"
    )
    labels = read_labels(path)
    assert labels.schema == {"sequence_id": pl.Utf8, "label": pl.Int8, "anomaly_type": pl.Utf8}
    assert labels["label"].to_list() == [0, 1, 1]
    assert labels["anomaly_type"].to_list() == [None, "scraping_bot", None]
    with caplog.at_level(logging.WARNING, logger="anomaly_ssl.data.labels"):
        read_labels(path, sequence_ids=["a", "b", "x"])
    assert "1 of 3 label ids match no sequence" in caplog.text


def test_label_ids_matching_no_sequence(tmp_path):
    path = write(tmp_path, "labels.csv", "sequence_id,label\nu1:0,0\nu1:1,1\n")
    with pytest.raises(DataError, match=r"none of the 2 label ids matches.*\['u1:0', 'u1:1'\].*\['blk_1'\]"):
        read_labels(path, sequence_ids=["blk_1"])


def test_label_errors(tmp_path):
    with pytest.raises(DataError, match=r"no column\(s\) \['label'\]; it has \['sequence_id', 'y'\]"):
        read_labels(write(tmp_path, "a.csv", "sequence_id,y\na,1\n"))
    with pytest.raises(DataError, match=r"2 label\(s\).*not 0/1.*row 2: '2', row 3: 'maybe'"):
        read_labels(write(tmp_path, "b.csv", "sequence_id,label\na,1\nb,2\nc,maybe\n"))
    with pytest.raises(DataError, match=r"repeat a sequence id, e.g. 'a' in rows 1, 3"):
        read_labels(write(tmp_path, "c.csv", "sequence_id,label\na,1\nb,0\na,1\n"))
    with pytest.raises(DataError, match=r"not 0/1.*row 1: 2"):
        pl.DataFrame({"sequence_id": ["a"], "label": [2]}).write_parquet(tmp_path / "d.parquet")
        read_labels(tmp_path / "d.parquet")


def test_labels_with_other_id_column_and_join(tmp_path):
    path = write(tmp_path, "hdfs.csv", "block_id,label,event_ids\nblk_1,0,5 5\nblk_2,1,3\n")
    labels = read_labels(path, id_col="block_id")
    scores = pl.DataFrame({"sequence_id": ["blk_2", "blk_3", "blk_1"], "score": [3.0, 2.0, 1.0]})
    joined = join_labels(scores, labels)
    assert joined["sequence_id"].to_list() == ["blk_2", "blk_3", "blk_1"]
    assert joined["label"].to_list() == [1, None, 0]
    with pytest.raises(DataError, match=r"no scored sequence has a label"):
        join_labels(scores.with_columns(pl.lit("zz").alias("sequence_id")), labels)
