"""Pool state: who is labelled, queried, ignored or available; update checks (small-text)."""

from __future__ import annotations

import numpy as np
import pytest

from active_learning.al_errors import PoolUpdateError
from active_learning.pool import Pool
from active_learning.strategies import QueryInputs, UncertaintySampler


def test_states_move_as_labels_arrive():
    pool = Pool(10)
    assert pool.indices_unlabeled.tolist() == list(range(10))
    pool.mark_queried([2, 3, 4])
    pool.update([2, 3], [1, 0])
    pool.ignore([4, 7])
    assert pool.indices_labeled.tolist() == [2, 3]
    assert pool.y.tolist() == [1, 0]
    assert pool.indices_queried.tolist() == []
    assert pool.indices_ignored.tolist() == [4, 7]
    assert pool.indices_unlabeled.tolist() == [0, 1, 5, 6, 8, 9]
    expected = {"available": 6, "queried": 0, "ignored": 2, "labelled": 2, "normal": 1, "anomaly": 1}
    assert pool.counts() == expected
    assert pool.labels.tolist() == [-1, -1, 1, 0, -1, -1, -1, -1, -1, -1]


def test_queried_rows_are_not_offered_again():
    pool = Pool(6)
    pool.mark_queried([0, 1])
    assert not np.isin([0, 1], pool.indices_unlabeled).any()
    pool.release([1])
    assert 1 in pool.indices_unlabeled


def test_relabel_overrides():
    pool = Pool(4)
    pool.update([1], [1])
    pool.update([1], [0])
    assert pool.y.tolist() == [0]


def test_y_is_aligned_with_indices_labeled():
    pool = Pool(8)
    pool.update([6, 1, 4], [1, 0, 1])
    assert pool.indices_labeled.tolist() == [1, 4, 6]
    assert pool.y.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("indices", "labels", "match"),
    [
        ([1, 2], [0], "2 indices but 1 labels"),
        ([1, 1], [0, 1], "duplicate index 1"),
        ([1, 10], [0, 1], "index 10 is out of range for a pool of 10 rows"),
        ([-1], [0], "index -1 is out of range"),
        ([1, 2], [0, 2], "labels must be 0 .* got 2 for row 2"),
        ([1.5], [0], "indices must be integers"),
    ],
)
def test_update_errors_are_named(indices, labels, match):
    pool = Pool(10)
    with pytest.raises(PoolUpdateError, match=match):
        pool.update(indices, labels)
    assert pool.indices_labeled.size == 0  # a rejected update changes nothing


def test_state_changes_check_the_current_state():
    pool = Pool(5)
    pool.update([0], [1])
    with pytest.raises(PoolUpdateError, match="row 0 is labelled; mark_queried accepts only available"):
        pool.mark_queried([0])
    with pytest.raises(PoolUpdateError, match="row 0 is labelled"):
        pool.ignore([0])


def test_sequence_ids_map_to_rows():
    pool = Pool(sequence_ids=["a", "b", "c"])
    assert pool.rows_of(["c", "a"]).tolist() == [2, 0]
    assert pool.contains(["a", "zz"]).tolist() == [True, False]
    with pytest.raises(PoolUpdateError, match=r"not in the pool.*'zz'"):
        pool.rows_of(["zz"])
    with pytest.raises(PoolUpdateError, match="unique"):
        Pool(sequence_ids=["a", "a"])
    with pytest.raises(PoolUpdateError, match="without sequence_ids"):
        Pool(3).rows_of(["a"])


def test_query_update_round_trip():
    rng = np.random.default_rng(0)
    inputs = QueryInputs(scores=rng.normal(size=30), threshold=0.0)
    pool, strategy = Pool(30), UncertaintySampler()
    seen: set[int] = set()
    for _ in range(3):
        picks = strategy.query(inputs, pool.indices_unlabeled, pool.indices_labeled, n=10)
        assert not seen & set(picks.tolist())
        seen |= set(picks.tolist())
        pool.mark_queried(picks)
        pool.update(picks, (inputs.scores[picks] > 0).astype(int))
    assert pool.indices_labeled.size == 30 and pool.indices_unlabeled.size == 0
