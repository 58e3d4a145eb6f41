"""The supervised head: learns planted boundaries, class weighting, CV threshold, save/load, blend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from active_learning.al_errors import HeadError, HeadNotFittedError, OneClassError
from active_learning.head import (
    AnomalyHead,
    HeadNet,
    blend,
    f1_optimal_threshold,
    rank_scores,
    stratified_folds,
)
from anomaly_ssl.config import FinetuneConfig

#: for tests where only the mechanics matter, not the fit quality
QUICK = {"epochs": 60, "cv_folds": 2}


def _planted(n: int, seed: int, d: int = 16, pos_rate: float = 0.25, noise: float = 0.3):
    """y = 1 where a fixed random direction is large (plus noise): a linear boundary."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(123).normal(size=d)  # same boundary for train and test
    X = rng.normal(size=(n, d)).astype(np.float32)
    margin = X @ w / np.linalg.norm(w) + noise * rng.normal(size=n)
    y = (margin > np.quantile(margin, 1 - pos_rate)).astype(int)
    return X, y


@pytest.mark.parametrize("hidden", [0, 16])
def test_learns_a_planted_linear_boundary(hidden):
    X, y = _planted(200, seed=0)
    Xte, yte = _planted(400, seed=1)
    head = AnomalyHead(hidden=hidden, seed=0, cv_folds=2).fit(X, y)
    auc = roc_auc_score(yte, head.predict_proba(Xte))
    assert auc >= 0.9, auc


def test_shuffled_labels_give_no_skill():
    # the control that shows the AUC floor above can fail
    X, y = _planted(200, seed=0)
    Xte, yte = _planted(400, seed=1)
    head = AnomalyHead(seed=0, cv_folds=2).fit(X, np.random.default_rng(5).permutation(y))
    assert roc_auc_score(yte, head.predict_proba(Xte)) < 0.75


def test_extra_features_carry_the_unsupervised_score():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)).astype(np.float32)  # embeddings hold no signal
    score = rng.normal(size=300)
    y = (score + 0.3 * rng.normal(size=300) > 0.8).astype(int)
    head = AnomalyHead(seed=0, cv_folds=2).fit(X[:150], y[:150], extra=score[:150, None])
    assert roc_auc_score(y[150:], head.predict_proba(X[150:], extra=score[150:, None])) >= 0.9
    with pytest.raises(HeadError, match="k=1 extra columns, got d=8, k=0"):
        head.predict_proba(X)


def _rare(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.02).astype(int)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    X[y == 1, :2] += 1.5
    return X, y


def test_class_weighting_matters_on_two_percent_positives():
    X, y = _rare(800, seed=0)
    Xte, yte = _rare(2000, seed=1)
    assert 8 <= y.sum() <= 25
    recall = {}
    for weighting in ("balanced", None):
        proba = AnomalyHead(class_weight=weighting, cv_folds=2, seed=0).fit(X, y).predict_proba(Xte)
        recall[weighting] = ((proba >= 0.5) & (yte == 1)).sum() / yte.sum()
    # unweighted, P(anomaly) of a 2 % class almost never reaches 0.5
    assert recall["balanced"] >= 0.6 and recall[None] <= 0.2, recall


def test_one_class_raises_a_clear_error():
    X = np.random.default_rng(0).normal(size=(13, 4)).astype(np.float32)
    with pytest.raises(OneClassError, match=r"all 13 labels are normal.*unsupervised score"):
        AnomalyHead().fit(X, np.zeros(13, int))
    with pytest.raises(OneClassError, match="anomaly"):
        AnomalyHead().fit(X, np.ones(13, int))


def test_works_from_a_handful_of_labels():
    X, y = _planted(200, seed=2, pos_rate=0.5)
    idx = np.r_[np.flatnonzero(y == 1)[:3], np.flatnonzero(y == 0)[:10]]
    head = AnomalyHead(cv_folds=5, seed=0).fit(X[idx], y[idx])
    assert head.threshold_source_.startswith("cv (3-fold")  # folds reduced to the 3 anomalies
    assert 0.0 < head.threshold_ < 1.0 and head.cv_oof_proba_.shape == (13,)
    idx1 = np.r_[np.flatnonzero(y == 1)[:1], np.flatnonzero(y == 0)[:10]]
    head1 = AnomalyHead(seed=0, **QUICK).fit(X[idx1], y[idx1])
    assert head1.threshold_ == 0.5 and head1.threshold_source_.startswith("default")
    assert head1.predict(X).shape == (200,)


def test_fit_is_seeded():
    X, y = _planted(100, seed=3)
    a = AnomalyHead(hidden=8, seed=4, **QUICK).fit(X, y).predict_proba(X)
    b = AnomalyHead(hidden=8, seed=4, **QUICK).fit(X, y).predict_proba(X)
    c = AnomalyHead(hidden=8, seed=5, **QUICK).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("hidden", [0, 8])
def test_save_load_gives_identical_probabilities(tmp_path, hidden):
    X, y = _planted(120, seed=4)
    extra = np.random.default_rng(0).normal(size=(120, 2))
    head = AnomalyHead(hidden=hidden, seed=1, **QUICK).fit(X, y, extra=extra)
    path = tmp_path / "RUN" / "head.safetensors"
    head.save(path)
    loaded = AnomalyHead.load(path)
    np.testing.assert_array_equal(head.predict_proba(X, extra), loaded.predict_proba(X, extra))
    assert loaded.threshold_ == head.threshold_ and loaded.hidden == hidden
    assert [p.name for p in path.parent.iterdir()] == ["head.safetensors"]  # no temp left


def test_load_rejects_foreign_files(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(HeadError, match="not an anomaly-ssl head file"):
        AnomalyHead.load(bad)
    with pytest.raises(HeadError, match="no head file"):
        AnomalyHead.load(tmp_path / "missing.safetensors")


def test_unfitted_and_bad_inputs():
    with pytest.raises(HeadNotFittedError, match="call fit"):
        AnomalyHead().predict_proba(np.zeros((2, 3)))
    with pytest.raises(HeadError, match="3 rows of X but 2 labels"):
        AnomalyHead().fit(np.zeros((3, 2)), [0, 1])
    with pytest.raises(HeadError, match=r"non-finite.*row 1"):
        AnomalyHead().fit(np.array([[0.0], [np.inf]]), [0, 1])


def test_head_net_takes_embedding_and_extra():
    net = HeadNet(embed_dim=6, n_extra=2, hidden=4)
    net.reset_parameters(torch.Generator().manual_seed(0))
    out = net(torch.randn(5, 6), torch.randn(5, 2))
    assert out.shape == (5,)
    assert set(dict(net.named_buffers())) == {"feature_mean", "feature_std"}


def test_from_config():
    head = AnomalyHead.from_config(FinetuneConfig(epochs=7, cv_folds=3), seed=2)
    assert (head.epochs, head.cv_folds, head.seed) == (7, 3, 2)


def test_f1_optimal_threshold_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    threshold, f1 = f1_optimal_threshold(y, p)
    # calling {0.8, 0.4, 0.35} anomalous: tp 2, fp 1 -> F1 0.8; cut halfway to 0.1
    assert f1 == pytest.approx(0.8) and threshold == pytest.approx(0.225)


def test_f1_threshold_never_splits_ties():
    y = np.array([1, 0, 0, 1])
    p = np.array([0.5, 0.5, 0.5, 0.9])
    threshold, _ = f1_optimal_threshold(y, p)
    assert threshold > 0.5 or threshold < 0.5


def test_stratified_folds_spread_each_class():
    y = np.r_[np.ones(3, int), np.zeros(10, int)]
    folds = stratified_folds(y, 3, np.random.default_rng(0))
    assert sorted(folds[y == 1].tolist()) == [0, 1, 2]
    assert np.bincount(folds[y == 0]).tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])


def test_rank_scores():
    r = rank_scores(np.array([3.0, 1.0, 2.0, 2.0]))
    np.testing.assert_allclose(r, [0.875, 0.125, 0.5, 0.5])
    assert rank_scores(np.array([100.0]), reference=np.arange(10.0))[0] == pytest.approx(0.95)


def test_blend_keeps_novel_anomalies_visible():
    p = np.array([0.05, 0.6, 0.02, 0.95])  # novel type, head-positive, labelled-normal pattern, known type
    r = np.array([0.999, 0.5, 0.6, 0.9])
    final = blend(p, r, 0.7)
    assert final[0] > final[1] > final[2]  # the extreme unsupervised outlier is not buried by the head
    assert final[3] == final.max()
    linear = 0.7 * p + 0.3 * r
    assert linear[0] < linear[1]  # what the linear blend would have done
    np.testing.assert_allclose(blend(p, r, 1.0), p)
    np.testing.assert_allclose(blend(p, r, 0.0), r)
    with pytest.raises(HeadError, match="rank_scores"):
        blend(p, r * 10, 0.5)
    with pytest.raises(HeadError, match=r"finetune.blend"):
        blend(p, r, 1.5)
