"""Windows: every event covered, mapping back to sequences, truncate mode, batches, bucketing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_ssl.config import WindowConfig
from anomaly_ssl.data.encoded import CLS_ID, EOS_ID, PAD_ID, EncodedSequences
from anomaly_ssl.errors import ConfigError
from anomaly_ssl.windows import assemble, bucket_batches, make_windows, padding_waste


def numbered_sequences(lengths: list[int]) -> EncodedSequences:
    """Sequences whose event ids encode (sequence, position): id = 5 + 1000 * i + j."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ev = np.concatenate([5 + 1000 * i + np.arange(n) for i, n in enumerate(lengths)]).astype(np.int32)
    ids = np.array([f"s{i}" for i in range(len(lengths))], dtype=object)
    return EncodedSequences(ids, offsets, {"event": ev, "other": ev + 1})


@pytest.mark.parametrize(
    ("max_len", "stride", "add_eos"), [(8, None, True), (8, 1, True), (6, 4, False), (16, 7, True)]
)
def test_split_windows_cover_every_event_and_map_back(max_len, stride, add_eos):
    lengths = [0, 1, 5, 6, 7, 8, 13, 40, 101]
    enc = numbered_sequences(lengths)
    w = make_windows(enc.lengths, WindowConfig(max_len=max_len, stride=stride), add_eos=add_eos)
    assert (w.lengths <= max_len).all()
    inputs, mask = assemble(enc, w, np.arange(len(w)))
    ev = inputs["event"].numpy()
    covered = [set() for _ in lengths]
    for k in range(len(w)):
        s, start, n = int(w.sequence_index[k]), int(w.start[k]), int(w.n_events[k])
        row = ev[k]
        assert row[0] == CLS_ID
        # the window's events are the sequence's events start .. start+n-1, in order
        expected = 5 + 1000 * s + np.arange(start, start + n)
        assert np.array_equal(row[1 : 1 + n], expected)
        assert np.array_equal(inputs["other"][k, 1 : 1 + n].numpy(), expected + 1)
        covered[s].update(range(start, start + n))
        is_last = start + n == lengths[s]
        assert bool(w.reaches_end[k]) == is_last
        if w.has_eos[k]:
            assert row[1 + n] == EOS_ID and inputs["other"][k, 1 + n] == EOS_ID
        assert mask[k].sum().item() == w.lengths[k]
        assert (row[~mask[k].numpy()] == PAD_ID).all()
    for s, n in enumerate(lengths):
        assert covered[s] == set(range(n)), f"sequence {s} not fully covered"
    # each sequence's windows are consecutive, start at 0, and the last one ends with EOS (when enabled)
    assert np.array_equal(np.unique(w.sequence_index), np.arange(len(lengths)))
    assert (np.diff(w.sequence_index) >= 0).all()
    last = np.r_[w.sequence_index[1:] != w.sequence_index[:-1], True]
    assert (w.has_eos == (last & add_eos)).all()


def test_short_sequences_get_one_window_with_eos():
    w = make_windows(np.array([1, 6, 7]), WindowConfig(max_len=8), add_eos=True)
    # 6 events + CLS + EOS = 8 fits; 7 events need two windows
    assert list(w.sequence_index) == [0, 1, 2, 2]
    assert list(w.lengths) == [3, 8, 8, 8]
    assert list(w.has_eos) == [True, True, False, True]


def test_truncate_mode_keeps_the_first_events():
    lengths = [3, 6, 7, 50]
    enc = numbered_sequences(lengths)
    w = make_windows(enc.lengths, WindowConfig(max_len=8, mode="truncate"), add_eos=True)
    assert list(w.sequence_index) == [0, 1, 2, 3]
    assert list(w.start) == [0, 0, 0, 0]
    assert list(w.n_events) == [3, 6, 7, 7]
    assert list(w.has_eos) == [True, True, False, False]  # EOS only when the whole sequence fits
    inputs, _ = assemble(enc, w, np.arange(4))
    assert np.array_equal(inputs["event"][3, 1:].numpy(), 5 + 3000 + np.arange(7))


def test_assemble_pads_to_the_longest_window_and_pad_to():
    enc = numbered_sequences([2, 5])
    w = make_windows(enc.lengths, WindowConfig(max_len=16))
    inputs, mask = assemble(enc, w, np.array([1, 0]))
    assert inputs["event"].shape == (2, 7) and inputs["event"].dtype == torch.int64
    assert mask.tolist() == [[True] * 7, [True] * 4 + [False] * 3]
    inputs, mask = assemble(enc, w, np.array([0]), pad_to=10)
    assert inputs["event"].shape == (1, 10) and mask.sum().item() == 4


def test_bucketed_batches_are_a_permutation_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=5000)
    plain = [np.arange(i, min(i + 64, 5000)) for i in range(0, 5000, 64)]
    batches = bucket_batches(lengths, 64, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), np.arange(5000))
    assert padding_waste(lengths, batches) < 0.1 < padding_waste(lengths, plain)
    again = bucket_batches(lengths, 64, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = bucket_batches(lengths, 64, np.random.default_rng(2))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))
    # inference order: sorted by length, deterministic
    inf = bucket_batches(lengths, 100)
    assert (np.diff(lengths[np.concatenate(inf)]) >= 0).all()


def test_invalid_stride_is_a_config_error():
    with pytest.raises(ConfigError, match=r"window\.stride must be in"):
        make_windows(np.array([10]), WindowConfig(max_len=8, stride=7))
    with pytest.raises(ConfigError, match=r"window\.max_len must be >= 4"):
        make_windows(np.array([10]), WindowConfig(max_len=3))
