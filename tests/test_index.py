"""Vector index: faiss agrees with the exact numpy reference; self-exclusion; recall; persistence."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_ssl.device import faiss_num_gpus
from anomaly_ssl.errors import ConfigError, DataError, NotFittedError
from anomaly_ssl.index import NumpyIndex, VectorIndex

pytest.importorskip("faiss")


def _data(n: int = 400, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _clustered(n: int = 6000, d: int = 16, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(20, d))
    return (centers[rng.integers(0, 20, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_faiss_flat_matches_numpy_reference(metric, exclude_self):
    X = _data()
    Q = X if exclude_self else _data(50, seed=5)
    Df, If = VectorIndex(metric=metric, kind="flat").build(X).search(Q, 7, exclude_self=exclude_self)
    Dn, In = NumpyIndex(metric=metric).build(X).search(Q, 7, exclude_self=exclude_self)
    assert Df.dtype == np.float32 and If.dtype == np.int64 and Df.shape == (len(Q), 7)
    np.testing.assert_array_equal(If, In)
    np.testing.assert_allclose(Df, Dn, atol=1e-4)
    assert (np.diff(Df, axis=1) >= -1e-6).all(), "distances must be ascending"


def _many_clusters(n: int, seed: int = 1, d: int = 8) -> np.ndarray:
    """200 tight clusters: each under 1% of the set, so the pruning bound has room to work."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(scale=6.0, size=(200, d))
    return (centers[rng.integers(0, 200, n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


def _assert_exact_up_to_ties(X, Q, metric, I_found, D_ref, I_ref, exclude_self):
    """Same neighbours as the reference; where ids differ, their exact distances must tie."""
    same = (I_found == I_ref).all(axis=1)
    assert same.mean() > 0.99, f"only {same.mean():.2%} of rows identical"
    X64, Q64 = X.astype(np.float64), Q.astype(np.float64)
    for r in np.flatnonzero(~same):
        if metric == "cosine":
            u = X64[I_found[r]] / np.linalg.norm(X64[I_found[r]], axis=1, keepdims=True)
            dist = 1.0 - u @ (Q64[r] / np.linalg.norm(Q64[r]))
        else:
            dist = np.linalg.norm(X64[I_found[r]] - Q64[r], axis=1)
        assert not exclude_self or r not in I_found[r]
        np.testing.assert_allclose(np.sort(dist), D_ref[r], rtol=0, atol=1e-6)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_pruned_search_is_exact_and_prunes(metric, exclude_self):
    X = _many_clusters(8000)
    Q = X if exclude_self else _many_clusters(300, seed=9)
    idx = VectorIndex(metric=metric, kind="pruned").build(X)
    Dp, Ip = idx.search(Q, 12, exclude_self=exclude_self)
    Dn, In = NumpyIndex(metric=metric).build(X).search(Q, 12, exclude_self=exclude_self)
    assert idx.kind_ == "pruned" and idx.recall_ == 1.0
    _assert_exact_up_to_ties(X, Q, metric, Ip, Dn, In, exclude_self)
    np.testing.assert_allclose(Dp, Dn, atol=1e-4)
    stats = idx.pruned_stats_
    # the bound must actually skip lists on clustered data (else this is slow flat search)
    assert stats["flat_share"] < 0.5 and stats["scanned_share"] < 0.5, stats


def test_pruned_search_falls_back_to_flat_where_the_bound_cannot_prune():
    X = _data(4000, 32)  # isotropic noise: every list may hold a near neighbour
    idx = VectorIndex(metric="l2", kind="pruned").build(X)
    _, Ip = idx.search(X, 5, exclude_self=True)
    _, In = NumpyIndex("l2").build(X).search(X, 5, exclude_self=True)
    np.testing.assert_array_equal(Ip, In)
    assert idx.pruned_stats_["flat_share"] > 0.5


def test_pruned_search_with_far_queries_and_large_k_is_exact():
    X = _clustered(5000, d=8)
    rng = np.random.default_rng(3)
    Q = rng.normal(scale=30.0, size=(200, 8)).astype(np.float32)  # far from every cluster
    for k in (1, 60):
        _, Ip = VectorIndex(metric="l2", kind="pruned").build(X).search(Q, k)
        _, In = NumpyIndex("l2").build(X).search(Q, k)
        np.testing.assert_array_equal(Ip, In)


def test_auto_picks_pruned_search_for_mid_sized_sets_on_the_cpu():
    X = _clustered(3000)
    assert VectorIndex(kind="auto", pruned_min=2000).build(X).kind_ == "pruned"
    assert VectorIndex(kind="auto", pruned_min=4000).build(X).kind_ == "flat"
    with pytest.raises(ConfigError, match="no GPU pruned"):
        VectorIndex(kind="pruned", gpu=True).build(X)


def test_distances_are_euclidean_and_one_minus_cosine():
    X = _data(60, 5)
    q = X[:3]
    D, nbr = NumpyIndex("l2").build(X).search(q, 4)
    np.testing.assert_allclose(D, np.linalg.norm(X[nbr] - q[:, None, :], axis=2), rtol=1e-5, atol=1e-5)
    D, nbr = VectorIndex("cosine").build(X).search(q, 4)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos = np.einsum("md,mkd->mk", unit[:3], unit[nbr])
    np.testing.assert_allclose(D, 1.0 - cos, atol=1e-5)


@pytest.mark.parametrize(
    "make", [VectorIndex, NumpyIndex, lambda metric: VectorIndex(metric, kind="pruned")]
)
def test_exclude_self_removes_own_id_but_keeps_duplicates(make):
    X = _data(100, 4)
    X[10] = X[11] = X[12] = X[0]  # four identical rows tie at distance 0
    D, nbr = make(metric="l2").build(X).search(X, 3, exclude_self=True)
    assert not (nbr == np.arange(len(X))[:, None]).any(), "a row returned itself"
    for i in (0, 10, 11, 12):
        assert set(nbr[i]) == {0, 10, 11, 12} - {i}
        np.testing.assert_allclose(D[i], 0.0, atol=1e-3)


def test_ivf_recall_is_checked_and_tuned(caplog):
    X = _clustered()
    idx = VectorIndex(metric="l2", kind="ivf", seed=0, recall_sample=300).build(X)
    assert idx.kind_ == "ivf" and idx.nprobe_ is not None and idx.recall_ >= 0.95
    _, approx = idx.search(X[:300], 10)
    _, exact = NumpyIndex("l2").build(X).search(X[:300], 10)
    hits = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(approx, exact)])
    assert hits >= 0.9


def test_hnsw_recall_is_checked():
    X = _clustered(3000)
    idx = VectorIndex(metric="cosine", kind="hnsw", recall_sample=200).build(X)
    assert idx.kind_ == "hnsw" and idx.ef_search_ is not None and idx.recall_ >= 0.95


def test_auto_switches_to_ivf_above_exact_max():
    X = _clustered(3000)
    assert VectorIndex(kind="auto", exact_max=10_000).build(X).kind_ == "flat"
    assert VectorIndex(kind="auto", exact_max=1000, recall_sample=100).build(X).kind_ == "ivf"


@pytest.mark.parametrize("kind", ["flat", "pruned", "ivf"])
def test_save_load_round_trip(tmp_path, kind):
    X = _clustered(3000)
    idx = VectorIndex(metric="cosine", kind=kind, recall_sample=100).build(X)
    idx.save(tmp_path / "emb.faiss")
    assert (tmp_path / "emb.faiss.json").exists()
    back = VectorIndex.load(tmp_path / "emb.faiss")
    D1, I1 = idx.search(X[:50], 5)
    D2, I2 = back.search(X[:50], 5)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    assert back.kind_ == kind and back.recall_ == idx.recall_
    _, I3 = VectorIndex.from_bytes(idx.to_bytes(), idx.meta()).search(X[:50], 5)
    np.testing.assert_array_equal(I1, I3)


def test_input_checks_have_clear_errors():
    X = _data(50, 4)
    idx = VectorIndex().build(X)
    with pytest.raises(DataError, match="3 features but the index was built with 4"):
        idx.search(np.zeros((2, 3)), 2)
    bad = X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(DataError, match=r"NaN or inf.*row 7"):
        VectorIndex().build(bad)
    with pytest.raises(DataError, match="2-D"):
        idx.search(np.zeros(4), 2)
    with pytest.raises(DataError, match="1 <= k <= 49"):
        idx.search(X, 50, exclude_self=True)
    with pytest.raises(DataError, match="indexed set itself"):
        idx.search(X[:5], 2, exclude_self=True)
    with pytest.raises(NotFittedError, match="build"):
        NumpyIndex().search(X, 2)
    with pytest.raises(ConfigError, match="metric"):
        VectorIndex(metric="dot").build(X)
    with pytest.raises(ConfigError, match="no GPU hnsw"):
        VectorIndex(kind="hnsw", gpu=True).build(X)


def test_non_contiguous_float64_input_is_accepted():
    X = np.asfortranarray(_data(80, 6).astype(np.float64))
    _, I1 = VectorIndex().build(X).search(X[::2], 3)
    _, I2 = VectorIndex().build(np.ascontiguousarray(X, dtype=np.float32)).search(X[::2], 3)
    np.testing.assert_array_equal(I1, I2)


@pytest.mark.skipif(faiss_num_gpus() > 0, reason="checks the no-GPU error")
def test_forcing_gpu_without_one_is_an_error_not_a_fallback():
    with pytest.raises(ConfigError, match="no GPU"):
        VectorIndex(gpu=True).build(_data(20, 4))


@pytest.mark.gpu
@pytest.mark.skipif(faiss_num_gpus() == 0, reason="needs faiss with a GPU")
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_gpu_index_matches_cpu(kind, tmp_path):
    X = _clustered(4000)
    cpu = VectorIndex(metric="l2", kind=kind, recall_sample=200).build(X)
    gpu = VectorIndex(metric="l2", kind=kind, recall_sample=200, gpu=True).build(X)
    _, Ic = cpu.search(X[:100], 5)
    _, Ig = gpu.search(X[:100], 5)
    agree = np.mean([len(np.intersect1d(a, b)) / 5 for a, b in zip(Ic, Ig)])
    assert agree >= (0.999 if kind == "flat" else 0.9)
    gpu.save(tmp_path / "g.faiss")  # written in CPU form
    assert VectorIndex.load(tmp_path / "g.faiss").search(X[:5], 5)[1].shape == (5, 5)


@pytest.mark.gpu
@pytest.mark.skipif(faiss_num_gpus() == 0, reason="needs faiss with a GPU")
def test_pruned_index_loads_on_the_gpu_as_flat(tmp_path):
    X = _many_clusters(6000)
    cpu = VectorIndex(metric="cosine", kind="pruned").build(X)
    cpu.save(tmp_path / "p.faiss")
    gpu = VectorIndex.load(tmp_path / "p.faiss", gpu=True)
    assert gpu.kind_ == "flat"
    _, Ic = cpu.search(X[:200], 5)
    _, Ig = gpu.search(X[:200], 5)
    assert (Ic == Ig).all(axis=1).mean() >= 0.99
