"""The detector contract, checked for every detector (scikit-learn's parametrize_with_checks idea).

Each case gives a detector and its kind of input: a training pool, a test set
whose last rows are planted outliers, and an invalid input.  Also: the
threshold rule and the score normaliser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from anomaly_ssl.data.encoded import N_SPECIAL, EncodedSequences
from anomaly_ssl.detectors import (
    DensityDetector,
    EnsembleDetector,
    KNNDetector,
    NGramDetector,
    PyODDetector,
    ScalarDetector,
    ScoreNormalizer,
    compute_threshold,
    detector_from_state,
    load_detector,
    save_detector,
)
from anomaly_ssl.errors import ConfigError, DataError, ModelError, NotFittedError

N_OUT = 5  # planted outliers at the end of every test set


@dataclass
class Case:
    make: Callable[[], Any]
    train: Any
    test: Any
    bad: Any  # an input with NaN / wrong shape / wrong type


def _gauss(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    """Inliers around (3, ..., 3): a cluster in both Euclidean and cosine geometry."""
    return (3.0 + np.random.default_rng(seed).normal(size=(n, d))).astype(np.float32)


def _matrix_data():
    train = _gauss(300)
    rng = np.random.default_rng(1)
    signs = np.where(np.arange(6) % 2 == 0, 1.0, -1.0) * np.sign(rng.normal(size=(N_OUT, 1)))
    outliers = rng.normal(size=(N_OUT, 6)) * 0.3 + 7.0 * signs  # away from the inliers' direction
    test = np.vstack([_gauss(40, seed=2), outliers]).astype(np.float32)
    bad = train[:5].copy()
    bad[2, 3] = np.nan
    return train, test, bad


def _stats_data():
    rng = np.random.default_rng(3)
    train = np.abs(rng.normal(size=(300, 3)))
    test = np.vstack([np.abs(rng.normal(size=(40, 3))), 6 + rng.random((N_OUT, 3))])
    return train, test, train[:4, :2]  # wrong number of columns


def _encode(seqs: list[list[int]]) -> EncodedSequences:
    lengths = np.array([len(s) for s in seqs])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    events = np.concatenate(seqs).astype(np.int32) if len(seqs) else np.zeros(0, np.int32)
    return EncodedSequences(np.array([f"s{i}" for i in range(len(seqs))]), offsets, {"event": events})


def _cycle(rng: np.random.Generator, length: int) -> list[int]:
    start = int(rng.integers(0, 4))
    return [N_SPECIAL + (start + i) % 4 for i in range(length)]


def _sequence_data():
    rng = np.random.default_rng(4)
    train = _encode([_cycle(rng, int(rng.integers(5, 15))) for _ in range(200)])
    normal = [_cycle(rng, int(rng.integers(5, 15))) for _ in range(40)]
    odd = [list(N_SPECIAL + rng.permutation(8)[:6]) for _ in range(N_OUT)]
    return train, _encode(normal + odd), np.zeros((3, 4))


MATRIX = _matrix_data()
STATS = _stats_data()
SEQS = _sequence_data()


def _ensemble_case() -> Case:
    def make():
        members = {"knn": KNNDetector(k=5), "stats": ScalarDetector(), "ngram": NGramDetector()}
        return EnsembleDetector(members)

    train = {"knn": MATRIX[0][:200], "stats": STATS[0][:200], "ngram": SEQS[0]}  # 200 rows each
    test = {"knn": MATRIX[1], "stats": STATS[1], "ngram": SEQS[1]}  # planted outliers last in each
    return Case(make, train, test, {"knn": MATRIX[1]})  # bad: members missing


CASES: dict[str, Case] = {
    "knn_cosine": Case(lambda: KNNDetector(k=5), *MATRIX),
    "knn_l2_kth_trim": Case(
        lambda: KNNDetector(k=5, aggregate="kth", metric="l2", reference_trim=0.05, trim_iterations=2),
        *MATRIX,
    ),
    "knn_ivf": Case(lambda: KNNDetector(k=5, metric="l2", index_kind="ivf", min_cluster_size=0), *MATRIX),
    "knn_pruned": Case(lambda: KNNDetector(k=5, metric="l2", index_kind="pruned"), *MATRIX),
    "knn_radius": Case(lambda: KNNDetector(k=5, min_cluster_size=20, duplicate_radius=0.05), *MATRIX),
    "density": Case(lambda: DensityDetector(k=8, reference_trim=0.05), *MATRIX),
    "density_l2_self": Case(lambda: DensityDetector(k=8, metric="l2", trim_by="self"), *MATRIX),
    "iforest": Case(lambda: PyODDetector("iforest", random_state=0, n_estimators=50), *MATRIX),
    "ecod": Case(lambda: PyODDetector("ecod"), *MATRIX),
    "pyod_knn": Case(lambda: PyODDetector("knn", n_neighbors=5), *MATRIX),
    "scalar_mean": Case(lambda: ScalarDetector(), *STATS),
    "scalar_max_cols": Case(lambda: ScalarDetector(columns=[0, 2], aggregate="max"), *STATS),
    "ngram": Case(lambda: NGramDetector(n=2), *SEQS),
    "ngram_topk": Case(lambda: NGramDetector(n=3, aggregate="topk", topk=2), *SEQS),
    "ensemble": _ensemble_case(),
}


@pytest.fixture(params=sorted(CASES), ids=sorted(CASES))
def case(request) -> Case:
    return CASES[request.param]


def _n(x: Any) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def test_fit_returns_self_and_sets_training_attributes(case):
    det = case.make()
    assert not det.is_fitted
    assert det.fit(case.train) is det
    n = _n(case.train)
    s = det.decision_scores_
    assert s.shape == (n,) and s.dtype == np.float64 and np.isfinite(s).all()
    assert det.labels_.dtype == np.int64 and set(np.unique(det.labels_)) <= {0, 1}
    np.testing.assert_array_equal(det.labels_, (s > det.threshold_).astype(int))
    # the threshold comes from the training scores only
    assert det.threshold_ == pytest.approx(compute_threshold(s, "contamination", det.contamination))
    assert det.labels_.mean() <= det.contamination + 1e-9


def test_scores_and_predictions_on_new_data(case):
    det = case.make().fit(case.train)
    scores = det.decision_function(case.test)
    m = _n(case.test)
    assert scores.shape == (m,) and scores.dtype == np.float64 and np.isfinite(scores).all()
    pred = det.predict(case.test)
    assert pred.dtype == np.int64 and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, (scores > det.threshold_).astype(int))


def test_higher_scores_mean_more_anomalous(case):
    scores = case.make().fit(case.train).decision_function(case.test)
    inliers, planted = scores[:-N_OUT], scores[-N_OUT:]
    assert planted.min() > np.median(inliers), f"planted {planted} vs inlier median {np.median(inliers)}"
    assert planted.mean() > np.quantile(inliers, 0.9)


def test_scoring_before_fit_raises_not_fitted(case):
    det = case.make()
    with pytest.raises(NotFittedError, match="not fitted"):
        det.decision_function(case.test)
    with pytest.raises(NotFittedError, match="not fitted"):
        det.predict(case.test)
    with pytest.raises(NotFittedError):
        det.get_state()


def test_bad_input_raises_data_error(case):
    det = case.make().fit(case.train)
    with pytest.raises(DataError, match=r"NaN|features|EncodedSequences|member|column"):
        det.decision_function(case.bad)


def test_state_round_trip_gives_identical_scores(case, tmp_path):
    det = case.make().fit(case.train)
    expected = det.decision_function(case.test)
    back = detector_from_state(det.get_state())
    assert type(back) is type(det)
    np.testing.assert_array_equal(back.decision_function(case.test), expected)
    np.testing.assert_array_equal(back.decision_scores_, det.decision_scores_)
    assert back.threshold_ == det.threshold_
    save_detector(det, tmp_path / "det.safetensors")
    loaded = load_detector(tmp_path / "det.safetensors")
    np.testing.assert_array_equal(loaded.decision_function(case.test), expected)
    np.testing.assert_array_equal(loaded.predict(case.test), det.predict(case.test))


def test_constructor_only_stores_params(case):
    det = case.make()
    params = det.get_params()
    assert not any(k.endswith("_") for k in vars(det) if not k.startswith("_"))
    clone = type(det)(**params)
    assert clone.get_params().keys() == params.keys()


# ------------------------------------------------------------------ specific checks


def test_training_scores_exclude_the_self_match():
    X = _gauss(200)
    det = KNNDetector(k=1, metric="l2", min_cluster_size=0).fit(X)
    assert (det.decision_scores_ > 0).all(), "a training point was its own nearest neighbour"
    # scoring the same points as new data finds each one itself at distance 0
    np.testing.assert_allclose(det.decision_function(X), 0.0, atol=1e-3)


def test_exact_duplicates_are_neighbours_in_plain_knn():
    X = _gauss(100)
    X[1] = X[0]
    det = KNNDetector(k=1, metric="l2", min_cluster_size=0).fit(X)
    assert det.decision_scores_[0] == pytest.approx(0.0, abs=1e-6)
    assert det.decision_scores_[1] == pytest.approx(0.0, abs=1e-6)


def test_invalid_params_are_config_errors():
    X = _gauss(50)
    with pytest.raises(ConfigError, match="reference_trim"):
        KNNDetector(reference_trim=0.7).fit(X)
    with pytest.raises(ConfigError, match="aggregate"):
        KNNDetector(aggregate="median").fit(X)
    with pytest.raises(ConfigError, match="contamination"):
        KNNDetector(contamination=0.0).fit(X)
    with pytest.raises(ConfigError, match="unknown PyOD algorithm 'foo'"):
        PyODDetector("foo").fit(X)
    with pytest.raises(ConfigError, match="no parameter"):
        PyODDetector("ecod", n_trees=3).fit(X)
    with pytest.raises(ConfigError, match="not a detector"):
        EnsembleDetector({"a": np.zeros(3)}).fit({"a": X})
    with pytest.raises(ConfigError, match="weights name"):
        EnsembleDetector({"a": ScalarDetector()}, weights={"b": 1.0}).fit({"a": X})


def test_reference_mask_checks():
    X = _gauss(50)
    with pytest.raises(DataError, match=r"boolean array of shape \(50,\)"):
        KNNDetector(k=3).fit(X, reference_mask=np.ones(49, bool))
    with pytest.raises(DataError, match="at least 4 reference points"):
        KNNDetector(k=3).fit(X, reference_mask=np.arange(50) < 2)


def test_ensemble_contributions_sum_to_score_and_prefitted_members():
    knn = KNNDetector(k=5).fit(MATRIX[0][:300])
    stats = ScalarDetector().fit(STATS[0])
    ens = EnsembleDetector({"knn": knn, "stats": stats}, fit_members=False, weights={"knn": 3.0}).fit()
    feats = {"knn": MATRIX[1], "stats": STATS[1]}
    parts = ens.contributions(feats)
    np.testing.assert_allclose(sum(parts.values()), ens.decision_function(feats))
    # knn carries 3/4 of the weight
    z = ens.member_scores(feats)
    np.testing.assert_allclose(parts["knn"], 0.75 * z["knn"])
    with pytest.raises(DataError, match="different numbers of rows"):
        EnsembleDetector({"knn": knn, "s": ScalarDetector().fit(STATS[0][:10])}, fit_members=False).fit()
    with pytest.raises(DataError, match="not fitted"):
        EnsembleDetector({"knn": KNNDetector()}, fit_members=False).fit()


def test_pyod_refit_mismatch_is_detected():
    det = PyODDetector("iforest", n_estimators=20).fit(MATRIX[0])
    state = det.get_state()
    state["decision_scores"] = state["decision_scores"] + 1.0
    with pytest.raises(ModelError, match="did not reproduce"):
        detector_from_state(state)


def test_load_rejects_foreign_state():
    state = ScalarDetector().fit(STATS[0]).get_state()
    with pytest.raises(ModelError, match="not KNNDetector"):
        KNNDetector.from_state(state)
    state["class"] = "Pickle"
    with pytest.raises(ModelError, match="unknown detector class"):
        detector_from_state(state)


# --------------------------------------------------------------- threshold / normalise


def test_threshold_rules():
    s = np.arange(1000, dtype=float)
    assert compute_threshold(s, "contamination", 0.1) == pytest.approx(np.quantile(s, 0.9))
    assert compute_threshold(s, "quantile", quantile=0.99) == pytest.approx(np.quantile(s, 0.99))
    med, mad = 499.5, 250.0
    assert compute_threshold(s, "mad", z=2.0) == pytest.approx(med + 2.0 * 1.4826 * mad)
    ties = np.r_[np.zeros(900), np.arange(100.0)]  # MAD = 0 falls back to a positive scale
    assert compute_threshold(ties, "mad") > 0
    # a block of identical top scores larger than c * n is flagged as a whole, not dropped
    farm = np.r_[np.random.default_rng(0).random(960), np.full(40, 5.0)]
    t = compute_threshold(farm, "contamination", 0.03)
    assert (farm > t).sum() == 40
    # ... but a huge tie at the cut is not flagged wholesale
    lows = np.r_[np.linspace(-2, -1, 50), np.zeros(850), np.linspace(1, 2, 100)]
    assert (lows > compute_threshold(lows, "contamination", 0.2)).sum() == 100
    with pytest.raises(ConfigError, match="threshold must be"):
        compute_threshold(s, "best_f1")
    with pytest.raises(DataError, match="NaN"):
        compute_threshold(np.array([1.0, np.nan]))


def test_normalizer_robust_z_and_rank():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 2.0, 20001)
    z = ScoreNormalizer("robust_z", clip=None).fit(train)
    assert z.transform(np.array([5.0]))[0] == pytest.approx(0.0, abs=0.05)
    assert z.transform(np.array([9.0]))[0] == pytest.approx(2.0, abs=0.1)
    assert ScoreNormalizer("robust_z", clip=3.0).fit(train).transform(np.array([1e6]))[0] == 3.0
    r = ScoreNormalizer("rank").fit(np.array([1.0, 2.0, 2.0, 3.0]))
    np.testing.assert_allclose(r.transform(np.array([0.0, 2.0, 3.0, 9.0])), [0.0, 0.5, 0.875, 1.0])
    back = ScoreNormalizer.from_state(z.get_state())
    np.testing.assert_array_equal(back.transform(train[:10]), z.transform(train[:10]))
    with pytest.raises(NotFittedError):
        ScoreNormalizer().transform(train)
    with pytest.raises(ConfigError, match="normalize must be"):
        ScoreNormalizer("minmax")
