"""Vocabulary: fitting rules, UNK handling, hashing, buckets, CSR encoding and round trips."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from anomaly_ssl.config import DataConfig, VocabConfig
from anomaly_ssl.data import (
    N_SPECIAL,
    SEQUENCES_SCHEMA,
    UNK_ID,
    Vocabulary,
    gap_edges,
    stable_hash_bucket,
)
from anomaly_ssl.errors import DataError

SCHEMA = {**SEQUENCES_SCHEMA, "device": pl.List(pl.Utf8), "price": pl.List(pl.Float64)}
DATA_CFG = DataConfig(categorical=["device"], numeric=["price"])


def table(
    rows: list[tuple[str, list[str], list[str], list[float | None]]], with_time: bool = True
) -> pl.DataFrame:
    """Build a sequences table; ts are 0, 10, 20 ... within each sequence."""
    data = {
        "sequence_id": [r[0] for r in rows],
        "entity_id": [r[0] for r in rows],
        "event": [r[1] for r in rows],
        "ts": [[10.0 * i for i in range(len(r[1]))] if with_time else None for r in rows],
        "gap": [[0.0] + [10.0] * (len(r[1]) - 1) if with_time else None for r in rows],
        "device": [r[2] for r in rows],
        "price": [r[3] for r in rows],
    }
    return pl.DataFrame(data, schema=SCHEMA)


TRAIN = table(
    [
        ("s1", ["view", "view", "cart"], ["ios", "ios", "web"], [1.0, 2.0, 3.0]),
        ("s2", ["view", "buy"], ["web", "web"], [4.0, None]),
        ("s3", ["view", "cart", "view", "rare"], ["ios", "ios", "ios", "ios"], [5.0, 6.0, 7.0, 8.0]),
    ]
)


def fit(vocab_cfg: VocabConfig | None = None, train: pl.DataFrame = TRAIN) -> Vocabulary:
    return Vocabulary.fit(train, DATA_CFG, vocab_cfg or VocabConfig(numeric_buckets=4, gap_buckets=6))


def test_fields_sizes_and_frequency_order():
    vocab = fit()
    assert vocab.field_names == ["event", "device", "price", "gap"]
    # view 5 > cart 2 > buy 1 = rare 1 (ties by value)
    assert vocab.decode("event", range(N_SPECIAL, vocab.sizes()["event"])) == ["view", "cart", "buy", "rare"]
    assert vocab.sizes() == {
        "event": N_SPECIAL + 4,
        "device": N_SPECIAL + 2,
        "price": N_SPECIAL + 4,
        "gap": N_SPECIAL + 6,
    }
    assert vocab.decode("event", [0, 1, 2, 3, 4]) == ["[PAD]", "[MASK]", "[UNK]", "[CLS]", "[EOS]"]
    counts = vocab.event_token_counts()
    assert counts.dtype == np.int64 and counts.tolist() == [0, 0, 0, 0, 0, 5, 2, 1, 1]


def test_min_count_sends_rare_values_to_unk():
    vocab = fit(VocabConfig(min_count=2))
    assert vocab.decode("event", range(N_SPECIAL, vocab.sizes()["event"])) == ["view", "cart"]
    assert vocab.event_token_counts()[UNK_ID] == 2  # buy + rare
    enc = vocab.encode(TRAIN)
    assert enc.sequence(1)["event"].tolist() == [N_SPECIAL, UNK_ID]


def test_encode_is_csr_and_unseen_values_are_unk():
    vocab = fit()
    test = table(
        [("t1", ["view", "never_seen"], ["android", "ios"], [None, 100.0]), ("t2", ["cart"], ["web"], [0.0])]
    )
    enc = vocab.encode(test)
    assert enc.sequence_ids.tolist() == ["t1", "t2"]
    assert enc.offsets.tolist() == [0, 2, 3]
    assert enc.field_names == ["event", "device", "price", "gap"]
    assert all(a.dtype == np.int32 and a.flags.c_contiguous for a in enc.fields.values())
    assert enc.sequence(0)["event"].tolist() == [N_SPECIAL, UNK_ID]
    assert enc.sequence(0)["device"].tolist() == [UNK_ID, N_SPECIAL]  # ios is the most frequent device
    price = enc.fields["price"]
    assert price[0] == UNK_ID  # null
    assert price[1] == vocab.sizes()["price"] - 1  # above every training value: last bucket
    assert price[2] == N_SPECIAL  # below every training value: first bucket
    assert enc.timestamps is not None and enc.timestamps.tolist() == [0.0, 10.0, 0.0]


def test_numeric_buckets_are_monotone_and_decode_to_ranges():
    rng = np.random.default_rng(0)
    prices = rng.lognormal(3.0, 1.0, size=500)
    train = table(
        [(f"s{i}", ["view"] * 50, ["ios"] * 50, prices[i * 50 : (i + 1) * 50].tolist()) for i in range(10)]
    )
    vocab = fit(VocabConfig(numeric_buckets=8), train)
    assert vocab.sizes()["price"] == N_SPECIAL + 8
    grid = np.sort(np.concatenate([rng.lognormal(3.0, 2.0, size=200), [0.0, 1e9]]))
    probe = table([("p", ["view"] * len(grid), ["ios"] * len(grid), grid.tolist())])
    ids = vocab.encode(probe).fields["price"]
    assert np.all(np.diff(ids) >= 0) and ids.min() == N_SPECIAL and ids.max() == N_SPECIAL + 7
    labels = vocab.decode("price", range(N_SPECIAL, N_SPECIAL + 8))
    assert labels[0].startswith("[-inf, ") and labels[-1].endswith(", inf)")
    # each training bucket holds about an eighth of the values
    counts = np.asarray(vocab.fields["price"].counts)
    assert counts.sum() == 500 and counts.min() > 40


def test_gap_buckets():
    edges = gap_edges(6)
    assert edges[0] == 0.0 and edges[-1] == 86_400.0 and np.all(np.diff(edges) > 0)
    vocab = fit()
    gaps = pl.DataFrame(
        {
            "sequence_id": ["g"],
            "entity_id": ["g"],
            "event": [["view"] * 5],
            "ts": [[0.0, 0.0, 0.5, 100.0, 1e6]],
            "gap": [[0.0, 0.0, 0.5, 99.5, 1e6]],
            "device": [["ios"] * 5],
            "price": [[1.0] * 5],
        },
        schema=SCHEMA,
    )
    ids = vocab.encode(gaps).fields["gap"]
    assert ids[0] == ids[1] == N_SPECIAL  # first event and simultaneous events
    assert N_SPECIAL < ids[2] < ids[3] < ids[4] == N_SPECIAL + 5
    assert vocab.decode("gap", [N_SPECIAL, N_SPECIAL + 5]) == ["0s", "> 1d"]


def test_no_time_means_no_gap_field_and_gap_unk_when_missing():
    no_time = table([("s1", ["a", "b"], ["x", "y"], [1.0, 2.0])], with_time=False)
    vocab = Vocabulary.fit(no_time, DATA_CFG, VocabConfig())
    assert vocab.field_names == ["event", "device", "price"]
    assert vocab.encode(no_time).timestamps is None
    with_gap = fit()
    enc = with_gap.encode(no_time)
    assert enc.fields["gap"].tolist() == [UNK_ID, UNK_ID]


def test_high_cardinality_fields_are_hashed_stably():
    assert stable_hash_bucket("item_12345", 1024) == 297
    assert stable_hash_bucket("hello", 1024) == 679
    assert stable_hash_bucket("héllo", 97) == 91
    items = [f"item_{i}" for i in range(30)]
    train = table([("s", items, items, [1.0] * 30)])
    vocab = Vocabulary.fit(train, DATA_CFG, VocabConfig(hash_threshold=10, hash_buckets=16))
    assert vocab.fields["device"].kind == "hashed" and vocab.sizes()["device"] == N_SPECIAL + 16
    ids = vocab.encode(table([("t", ["item_1", "new"], ["item_12345", "item_12345"], [1.0, 1.0])])).fields
    assert ids["device"].tolist() == [N_SPECIAL + stable_hash_bucket("item_12345", 16)] * 2
    assert ids["event"][1] == N_SPECIAL + stable_hash_bucket("new", 16)  # unseen but still hashed
    assert vocab.decode("device", [N_SPECIAL + 3]) == ["#3"]
    assert sum(vocab.fields["device"].counts) == 30


def test_hash_is_the_same_in_another_process():
    code = "from anomaly_ssl.data.vocab import stable_hash_bucket as h; print(h('item_12345', 1024))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            timeout=60,
        )
        assert out.stdout.strip() == "297"


def test_save_load_round_trip_is_exact(tmp_path):
    vocab = fit(VocabConfig(numeric_buckets=3, gap_buckets=5, min_count=1))
    path = tmp_path / "run" / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.to_dict() == vocab.to_dict()
    test = table([("t", ["view", "zzz", "buy"], ["web", "ios", "?"], [2.5, None, 7.0])])
    a, b = vocab.encode(test), loaded.encode(test)
    for name in vocab.field_names:
        np.testing.assert_array_equal(a.fields[name], b.fields[name])
    assert Vocabulary.from_dict(vocab.to_dict()).sizes() == vocab.sizes()


def test_vocabulary_errors(tmp_path):
    with pytest.raises(DataError, match=r"no column\(s\) \['device'\]"):
        Vocabulary.fit(TRAIN.drop("device"), DATA_CFG, VocabConfig())
    with pytest.raises(DataError, match="not an anomaly-ssl vocabulary"):
        Vocabulary.from_dict({"fields": []})
    (tmp_path / "v.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid vocabulary JSON"):
        Vocabulary.load(tmp_path / "v.json")
    with pytest.raises(DataError, match="vocabulary file not found"):
        Vocabulary.load(tmp_path / "missing.json")


def test_encode_many_events_is_vectorised():
    # 200k events: a per-event Python loop would still pass, but the result must be right
    rng = np.random.default_rng(1)
    n_seq, length = 2000, 100
    events = rng.integers(0, 50, size=(n_seq, length)).astype(str).tolist()
    big = pl.DataFrame(
        {
            "sequence_id": [str(i) for i in range(n_seq)],
            "entity_id": [str(i) for i in range(n_seq)],
            "event": events,
            "ts": [None] * n_seq,
            "gap": [None] * n_seq,
        },
        schema=SEQUENCES_SCHEMA,
    )
    vocab = Vocabulary.fit(big, DataConfig(), VocabConfig())
    enc = vocab.encode(big)
    decoded = vocab.decode("event", enc.sequence(123)["event"])
    assert decoded == events[123]
