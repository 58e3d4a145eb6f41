"""Query strategies: the small-text query contract for every strategy, plus each one's rule."""

from __future__ import annotations

import numpy as np
import pytest

from active_learning.al_errors import (
    ActiveLearningError,
    EmptyPoolError,
    PoolExhaustedError,
    QueryInputError,
)
from active_learning.strategies import (
    STRATEGIES,
    DiverseSampler,
    QueryInputs,
    RandomSampler,
    TopKSampler,
    UncertaintySampler,
    make_strategy,
    nearest_sq_distances,
    robust_scale,
    strategy_from_config,
)
from anomaly_ssl.config import QueryConfig

ALL = sorted(STRATEGIES)
N_POOL = 60


@pytest.fixture
def inputs() -> QueryInputs:
    rng = np.random.default_rng(0)
    return QueryInputs(
        scores=rng.normal(size=N_POOL),
        threshold=0.8,
        embeddings=rng.normal(size=(N_POOL, 8)).astype(np.float32),
    )


def _split(n_labeled: int = 15) -> tuple[np.ndarray, np.ndarray]:
    labeled = np.arange(0, 2 * n_labeled, 2)
    unlabeled = np.setdiff1d(np.arange(N_POOL), labeled)
    return unlabeled, labeled


# ------------------------------------------------------------------ contracts


@pytest.mark.parametrize("name", ALL)
def test_returns_n_unique_unlabelled_pool_rows(name, inputs):
    unlabeled, labeled = _split()
    picks = make_strategy(name, seed=1).query(inputs, unlabeled, labeled, n=7)
    assert picks.dtype == np.int64 and picks.shape == (7,)
    assert len(np.unique(picks)) == 7
    assert np.isin(picks, unlabeled).all()
    assert not np.isin(picks, labeled).any()


@pytest.mark.parametrize("name", ALL)
def test_only_picks_from_indices_unlabeled_even_when_it_is_a_subset(name, inputs):
    # rows that are queried/ignored are in neither list; they must not come back
    unlabeled = np.array([3, 9, 17, 33, 41, 50])
    labeled = np.array([0, 1, 2])
    picks = make_strategy(name, seed=0).query(inputs, unlabeled, labeled, n=4)
    assert set(picks.tolist()) <= set(unlabeled.tolist())


@pytest.mark.parametrize("name", ALL)
def test_exhausted_pool_raises(name, inputs):
    with pytest.raises(PoolExhaustedError, match="no unlabelled rows left"):
        make_strategy(name).query(inputs, np.array([], dtype=int), np.arange(N_POOL), n=3)


@pytest.mark.parametrize("name", ALL)
def test_empty_pool_raises(name):
    empty = QueryInputs(scores=np.array([]), threshold=0.0, embeddings=np.zeros((0, 4), np.float32))
    with pytest.raises(EmptyPoolError, match="pool is empty"):
        make_strategy(name).query(empty, np.array([], dtype=int), np.array([], dtype=int), n=3)


@pytest.mark.parametrize("name", ALL)
def test_errors_share_the_package_root_and_builtin(name, inputs):
    with pytest.raises(ActiveLearningError):
        make_strategy(name).query(inputs, np.array([], dtype=int), np.arange(N_POOL), n=3)
    with pytest.raises(ValueError):
        make_strategy(name).query(inputs, np.array([], dtype=int), np.arange(N_POOL), n=3)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_picks(name, inputs):
    unlabeled, labeled = _split()
    a = make_strategy(name, seed=7).query(inputs, unlabeled, labeled, n=6)
    b = make_strategy(name, seed=7).query(inputs, unlabeled, labeled, n=6)
    np.testing.assert_array_equal(a, b)
    c = make_strategy(name, seed=99).query(inputs, unlabeled, labeled, n=6, rng=7)
    d = make_strategy(name, seed=5).query(inputs, unlabeled, labeled, n=6, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(c, d)


def test_random_sampler_depends_on_the_seed(inputs):
    unlabeled, labeled = _split()
    picks = {tuple(RandomSampler(seed=s).query(inputs, unlabeled, labeled, n=6)) for s in range(5)}
    assert len(picks) == 5


@pytest.mark.parametrize("name", ALL)
def test_n_larger_than_available_returns_all_available(name, inputs):
    unlabeled = np.array([4, 8, 15, 16])
    picks = make_strategy(name).query(inputs, unlabeled, np.array([0]), n=50)
    assert sorted(picks.tolist()) == unlabeled.tolist()


@pytest.mark.parametrize("name", ALL)
def test_last_scores_cover_the_pool(name, inputs):
    unlabeled, labeled = _split()
    strategy = make_strategy(name)
    assert strategy.last_scores_ is None
    picks = strategy.query(inputs, unlabeled, labeled, n=5)
    scores = strategy.last_scores_
    assert scores.shape == (N_POOL,)
    assert np.isnan(scores[labeled]).all() and np.isfinite(scores[unlabeled]).all()
    # the picked rows are among the highest-utility rows (diverse re-orders within its candidates)
    if name != "diverse":
        assert scores[picks].min() >= np.sort(scores[unlabeled])[-5]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("unlabeled", "labeled", "match"),
    [
        ([1, 2, N_POOL], [0], "outside the pool"),
        ([1, 2, -1], [0], "outside the pool"),
        ([1, 2, 2], [0], "duplicate"),
        ([1, 2, 3], [3], "share rows"),
        ([1.5, 2], [0], "integer pool rows"),
    ],
)
def test_bad_indices_are_named(name, inputs, unlabeled, labeled, match):
    with pytest.raises(QueryInputError, match=match):
        make_strategy(name).query(inputs, np.array(unlabeled), np.array(labeled), n=2)


@pytest.mark.parametrize("name", ALL)
def test_n_must_be_positive(name, inputs):
    with pytest.raises(QueryInputError, match="n must be >= 1"):
        make_strategy(name).query(inputs, np.arange(5), np.array([], dtype=int), n=0)


# --------------------------------------------------------------- each rule


def test_uncertainty_picks_scores_nearest_the_threshold():
    scores = np.arange(20, dtype=float)
    inputs = QueryInputs(scores=scores, threshold=10.2)
    picks = UncertaintySampler().query(inputs, np.arange(20), np.array([], dtype=int), n=3)
    assert picks.tolist() == [10, 11, 9]  # distances 0.2, 0.8, 1.2


def test_uncertainty_distance_is_in_robust_units():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
    strategy = UncertaintySampler()
    strategy.query(QueryInputs(scores=scores, threshold=2.5), np.arange(5), np.array([], dtype=int), n=1)
    scale = robust_scale(scores)
    np.testing.assert_allclose(strategy.last_scores_, -np.abs(scores - 2.5) / scale)
    assert scale == pytest.approx(1.4826)  # MAD of [0,1,2,3,100] is 1; the 100 does not inflate it


def test_uncertainty_prefers_head_probabilities_nearest_half():
    scores = np.arange(6, dtype=float)  # nearest threshold 0.0 would be row 0
    probas = np.array([0.99, 0.02, 0.45, 0.7, 0.51, 0.2])
    inputs = QueryInputs(scores=scores, threshold=0.0, probas=probas)
    picks = UncertaintySampler().query(inputs, np.arange(6), np.array([], dtype=int), n=2)
    assert picks.tolist() == [4, 2]


def test_uncertainty_without_threshold_says_what_to_pass():
    with pytest.raises(QueryInputError, match="threshold_"):
        UncertaintySampler().query(QueryInputs(scores=np.ones(4)), np.arange(4), np.array([], dtype=int))


def test_topk_picks_the_highest_unlabelled_scores():
    scores = np.array([5.0, 9.0, 1.0, 8.0, 7.0, 3.0])
    picks = TopKSampler().query(QueryInputs(scores=scores), np.array([0, 2, 3, 4, 5]), np.array([1]), n=3)
    assert picks.tolist() == [3, 4, 0]


def _duplicates_pool() -> tuple[QueryInputs, np.ndarray]:
    """100 rows: 10 near-copies of one bot nearest the threshold, 20 distinct borderline rows, 70 far."""
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(100, 16)).astype(np.float32)
    bot = rng.normal(size=16).astype(np.float32)
    dup = np.arange(10)
    emb[dup] = bot + 1e-3 * rng.normal(size=(10, 16)).astype(np.float32)
    scores = np.concatenate([
        1.0 + 0.01 * rng.normal(size=10),  # the bot copies: right at the threshold
        1.0 + rng.uniform(0.05, 0.5, size=20) * rng.choice([-1, 1], size=20),  # other borderline
        1.0 + rng.uniform(2.0, 5.0, size=70),  # confident
    ])
    return QueryInputs(scores=scores, threshold=1.0, embeddings=emb), dup


def test_diverse_batch_holds_at_most_one_copy_of_a_duplicated_bot():
    inputs, dup = _duplicates_pool()
    unlabeled, labeled = np.arange(100), np.array([], dtype=int)
    plain = UncertaintySampler().query(inputs, unlabeled, labeled, n=5)
    assert np.isin(plain, dup).sum() >= 3  # uncertainty alone asks about the same bot again and again
    strategy = DiverseSampler(candidate_factor=5)
    diverse = strategy.query(inputs, unlabeled, labeled, n=5)
    assert np.isin(diverse, dup).sum() <= 1
    assert len(strategy.last_candidates_) == 25 and np.isin(diverse, strategy.last_candidates_).all()


def test_diverse_skips_patterns_already_labelled():
    inputs, dup = _duplicates_pool()
    labeled = dup[:1]
    unlabeled = np.setdiff1d(np.arange(100), labeled)
    picks = DiverseSampler(candidate_factor=5).query(inputs, unlabeled, labeled, n=5)
    assert not np.isin(picks, dup).any()
    picks = DiverseSampler(candidate_factor=5, cover_labeled=False).query(inputs, unlabeled, labeled, n=5)
    assert np.isin(picks, dup).sum() == 1


def test_diverse_needs_embeddings():
    with pytest.raises(QueryInputError, match="embeddings"):
        DiverseSampler().query(QueryInputs(scores=np.ones(5), threshold=1.0), np.arange(5), np.array([], int))


def test_faiss_neighbour_search_matches_numpy_reference():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(50, 12)).astype(np.float32), rng.normal(size=(30, 12)).astype(np.float32)
    np.testing.assert_allclose(
        nearest_sq_distances(q, r, use_faiss=True), nearest_sq_distances(q, r, use_faiss=False), rtol=1e-4
    )


def test_inputs_are_validated():
    with pytest.raises(QueryInputError, match="disagree on the pool size"):
        QueryInputs(scores=np.ones(5), embeddings=np.ones((4, 2)))
    with pytest.raises(QueryInputError, match=r"non-finite.*row 2"):
        QueryInputs(scores=np.array([0.0, 1.0, np.nan]))
    with pytest.raises(QueryInputError, match=r"probas must lie in \[0, 1\]"):
        QueryInputs(probas=np.array([0.5, 1.5]))


def test_factory_names_valid_choices():
    with pytest.raises(QueryInputError, match=r"unknown query strategy 'margin'.*uncertainty"):
        make_strategy("margin")
    with pytest.raises(QueryInputError, match="'topk'"):
        make_strategy("topk", candidate_factor=3)
    strategy = strategy_from_config(QueryConfig(strategy="diverse", candidate_factor=3), seed=4)
    assert isinstance(strategy, DiverseSampler) and strategy.candidate_factor == 3 and strategy.seed == 4
