"""Quality floors on planted anomalies (PyOD's roc_floor idea), and on the HDFS contaminated pool.

Every detector is fitted on a pool that *contains* its anomalies, as in
production, and judged on its training scores.  The clustered-anomaly cases
show the failure of plain kNN (anomalies are each other's neighbours) and
check that the contamination-robust variants fix it.
"""

from __future__ import annotations

import csv
from pathlib import Path

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
    event_count_matrix,
)
from anomaly_ssl.evaluate import average_precision, roc_auc

D = 8


def _scattered_pool(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """500 Gaussian inliers around (3, ..., 3) and 15 scattered outliers (3%)."""
    rng = np.random.default_rng(seed)
    inliers = 3.0 + rng.normal(size=(500, D))
    direction = rng.normal(size=(15, D))
    outliers = 3.0 + 6.0 * direction / np.linalg.norm(direction, axis=1, keepdims=True) * np.sqrt(D) / 2
    X = np.vstack([inliers, outliers]).astype(np.float32)
    return X, np.r_[np.zeros(500), np.ones(15)].astype(int)


def _clustered_pool(noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1000 inliers in 3 clusters; 40 anomalies as (near-)copies of one far point (a bot farm)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=5.0, size=(3, D))
    inliers = centers[rng.integers(0, 3, 1000)] + rng.normal(size=(1000, D))
    farm = 12.0 * np.ones(D) + noise * rng.normal(size=(40, D))
    X = np.vstack([inliers, farm]).astype(np.float32)
    return X, np.r_[np.zeros(1000), np.ones(40)].astype(int)


@pytest.mark.parametrize(
    "make",
    [
        lambda: KNNDetector(k=10),
        lambda: KNNDetector(k=10, metric="l2", aggregate="kth", reference_trim=0.05),
        lambda: DensityDetector(k=10),
        lambda: DensityDetector(k=10, metric="l2", reference_trim=0.05),
        lambda: PyODDetector("iforest"),
        lambda: PyODDetector("ecod"),
        lambda: PyODDetector("copod"),
        lambda: PyODDetector("lof", n_neighbors=20),
    ],
    ids=["knn", "knn_l2_trim", "density", "density_l2_trim", "iforest", "ecod", "copod", "pyod_lof"],
)
def test_roc_floor_on_scattered_outliers(make):
    X, y = _scattered_pool()
    assert roc_auc(make().fit(X).decision_scores_, y) >= 0.9


def test_scalar_detector_roc_floor():
    rng = np.random.default_rng(1)
    stats = np.abs(rng.normal(size=(515, 3)))
    stats[500:] += 4.0  # e.g. masked-event surprise of anomalous sequences
    y = np.r_[np.zeros(500), np.ones(15)]
    assert roc_auc(ScalarDetector().fit(stats).decision_scores_, y) >= 0.9
    assert roc_auc(ScalarDetector(aggregate="max").fit(stats).decision_scores_, y) >= 0.9


def _encode(seqs: list[list[int]]) -> EncodedSequences:
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    return EncodedSequences(np.array([str(i) for i in range(len(seqs))]), offsets,
                            {"event": np.concatenate(seqs).astype(np.int32)})


def test_ngram_detector_roc_floor_on_rare_transitions():
    rng = np.random.default_rng(2)
    normal = [[N_SPECIAL + (s + i) % 6 for i in range(int(rng.integers(6, 20)))]
              for s in rng.integers(0, 6, 600)]
    odd = []
    for _ in range(20):  # a normal cycle with two events swapped somewhere
        seq = [N_SPECIAL + i % 6 for i in range(12)]
        j = int(rng.integers(1, 10))
        seq[j], seq[j + 1] = seq[j + 1], seq[j]
        odd.append(seq)
    y = np.r_[np.zeros(600), np.ones(20)]
    det = NGramDetector(n=2).fit(_encode(normal + odd))
    assert roc_auc(det.decision_scores_, y) >= 0.9


# --------------------------------------------------------- clustered anomalies (bot farm)


def test_plain_knn_fails_on_clustered_anomalies_and_robust_knn_succeeds():
    X, y = _clustered_pool()
    plain = KNNDetector(k=10, metric="l2", min_cluster_size=0).fit(X)
    assert roc_auc(plain.decision_scores_, y) < 0.7, "the test case no longer shows the failure mode"
    robust = KNNDetector(k=10, metric="l2", min_cluster_size=0.05).fit(X)
    assert roc_auc(robust.decision_scores_, y) >= 0.95
    assert average_precision(robust.decision_scores_, y) >= 0.9
    # scoring a new member of the farm: no support from the (small) farm either
    assert robust.decision_function(X[-1:])[0] > robust.threshold_


def test_min_cluster_size_must_exceed_the_group():
    X, y = _clustered_pool()
    too_small = KNNDetector(k=10, metric="l2", min_cluster_size=20).fit(X)  # the farm has 40
    assert roc_auc(too_small.decision_scores_, y) < 0.7


def test_near_identical_anomalies_need_duplicate_radius():
    X, y = _clustered_pool(noise=0.01)
    exact_only = KNNDetector(k=10, metric="l2", min_cluster_size=0.05).fit(X)
    assert roc_auc(exact_only.decision_scores_, y) < 0.7
    radius = KNNDetector(k=10, metric="l2", min_cluster_size=0.05, duplicate_radius=0.5).fit(X)
    assert roc_auc(radius.decision_scores_, y) >= 0.95


def test_reference_mask_from_a_first_stage_detector():
    X, y = _clustered_pool(noise=0.01)
    first = PyODDetector("iforest").fit(X).decision_scores_
    mask = first < np.quantile(first, 0.9)  # the 10% most suspicious are no reference
    assert y[~mask].sum() == 40, "first stage should flag the whole farm"
    det = KNNDetector(k=10, metric="l2", min_cluster_size=0).fit(X, reference_mask=mask)
    assert roc_auc(det.decision_scores_, y) >= 0.95
    assert det.reference_size_ == mask.sum()


def test_robust_density_on_clustered_anomalies():
    X, y = _clustered_pool()
    plain = DensityDetector(k=10, metric="l2", min_cluster_size=0).fit(X)
    robust = DensityDetector(k=10, metric="l2", min_cluster_size=0.05, reference_trim=0.05).fit(X)
    assert roc_auc(plain.decision_scores_, y) < 0.7
    assert roc_auc(robust.decision_scores_, y) >= 0.9


def test_ensemble_quality_on_mixed_inputs():
    X, y = _clustered_pool()
    stats = np.random.default_rng(3).normal(size=(len(y), 1))
    stats[y == 1] += 3.0
    ens = EnsembleDetector(
        {"knn": KNNDetector(k=10, metric="l2", min_cluster_size=0.05), "surprise": ScalarDetector()}
    ).fit({"knn": X, "surprise": stats})
    assert roc_auc(ens.decision_scores_, y) >= 0.95


# ------------------------------------------------------------- HDFS, protocol 2 (real data)


@pytest.fixture(scope="module")
def hdfs_pool(shared_data: Path):
    path = shared_data / "hdfs" / "hdfs_2pct_sequences.csv"
    if not path.exists():
        pytest.skip(f"HDFS sample not found at {path}")
    seqs, labels = [], []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            seqs.append([int(t) + N_SPECIAL - 1 for t in row["event_ids"].split()])  # template 1 -> id 5
            labels.append(int(row["label"]))
    encoded = _encode(seqs)
    n_events = max(max(s) for s in seqs) + 1
    return encoded, event_count_matrix(encoded, n_events, log=True), np.array(labels)


@pytest.mark.shared_data
def test_hdfs_contaminated_pool_robust_knn_beats_plain_knn(hdfs_pool):
    """Protocol 2: fit on all 11,501 blocks (3% anomalous) without labels, evaluate with labels."""
    _, counts, y = hdfs_pool
    plain = KNNDetector(k=10, min_cluster_size=0).fit(counts).decision_scores_
    robust = KNNDetector(k=10, min_cluster_size=0.01, reference_trim=0.05).fit(counts).decision_scores_
    density = DensityDetector(k=10, min_cluster_size=0.01, reference_trim=0.05).fit(counts).decision_scores_
    assert average_precision(plain, y) < 0.45  # measured 0.33: repeated anomalies support each other
    assert average_precision(robust, y) >= 0.7  # measured 0.78
    assert roc_auc(robust, y) >= 0.97  # measured 0.989
    assert average_precision(density, y) >= 0.65  # measured 0.78


@pytest.mark.shared_data
def test_hdfs_contaminated_pool_ensemble(hdfs_pool):
    encoded, counts, y = hdfs_pool
    ens = EnsembleDetector(
        {
            "knn": KNNDetector(k=10, reference_trim=0.05),
            "iforest": PyODDetector("iforest", random_state=0),
            "ngram": NGramDetector(n=2),
        }
    ).fit({"knn": counts, "iforest": counts, "ngram": encoded})
    assert average_precision(ens.decision_scores_, y) >= 0.75  # measured 0.82
    assert roc_auc(ens.decision_scores_, y) >= 0.98


@pytest.mark.parametrize("cls", [KNNDetector, DensityDetector])
def test_pruned_exact_index_gives_the_flat_index_scores(cls):
    """Pruned search is exact: kNN and density scores equal those over a flat index."""
    rng = np.random.default_rng(4)
    centers = rng.normal(scale=8.0, size=(150, 6))
    X = (centers[rng.integers(0, 150, 6000)] + rng.normal(size=(6000, 6))).astype(np.float32)
    Q = (centers[rng.integers(0, 150, 500)] + rng.normal(size=(500, 6))).astype(np.float32)
    flat = cls(k=10, metric="l2", index_kind="flat").fit(X)
    pruned = cls(k=10, metric="l2", index_kind="pruned").fit(X)
    assert pruned._graph.index.kind_ == "pruned" and flat._graph.index.kind_ == "flat"
    np.testing.assert_allclose(pruned.decision_scores_, flat.decision_scores_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pruned.decision_function(Q), flat.decision_function(Q), rtol=1e-4, atol=1e-4)
