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


GRID = [0.25, 0.5, 0.75, 1.0]


def test_choose_blend_follows_the_labels_evidence():
    """``auto`` keeps the head alone where it ranks the labels better, leans on the rank where that does."""
    from active_learning.finetune import choose_blend

    rng = np.random.default_rng(0)
    y = (rng.uniform(size=200) < 0.3).astype(np.int64)
    good = np.clip(0.5 + 0.4 * (2 * y - 1) + 0.15 * rng.normal(size=200), 0.001, 0.999)
    noise = rng.uniform(0.001, 0.999, size=200)
    # the head separates the labels, the unsupervised rank is noise: the head alone
    w, source, cv = choose_blend("auto", GRID, y, good, noise)
    assert w == 1.0 and source.startswith("auto: best out-of-fold PR-AUC over 200 labels")
    assert set(cv) == {"0.25", "0.5", "0.75", "1"} and cv["1"] == max(cv.values()) > cv["0.25"]
    # the head's out-of-fold guesses are noise, the unsupervised rank separates: the lowest weight
    w, _, cv = choose_blend("auto", GRID, y, noise, good)
    assert w == 0.25 and cv["0.25"] == max(cv.values()) > cv["1"]
    # equally good (both perfect): ties go to the larger weight
    perfect = np.where(y == 1, 0.9, 0.1)
    assert choose_blend("auto", GRID, y, perfect, perfect)[0] == 1.0
    # a fixed weight is used as given; no cross-validation: the head alone
    assert choose_blend(0.3, GRID, y, noise, good) == (0.3, "finetune.blend", None)
    w, source, cv = choose_blend("auto", GRID, y, None, good)
    assert (w, cv) == (1.0, None) and "too few labels" in source


def _biased_pool(seed: int = 0):
    """A pool whose boundary band misleads: a ring of look-alike anomalies (embedding
    column 0 high) scores *lower* than the borderline normals, while the loud anomalies
    score highest of all.  Returns embeddings, unsupervised ranks, labels, band rows."""
    rng = np.random.default_rng(seed)
    n = 4000
    X = rng.normal(size=(n, 8)).astype(np.float32)
    s = rng.normal(size=n)
    y = np.zeros(n, dtype=int)
    loud = np.argsort(-s)[:60]  # the top-scored rows are the loud anomalies
    y[loud] = 1
    ring = rng.choice(np.setdiff1d(np.arange(n), loud), 60, replace=False)
    y[ring] = 1
    s[ring] = rng.uniform(1.0, 1.4, size=60)  # the ring scores just below the borderline normals
    X[ring, 0] += 3.0
    band = np.flatnonzero((s > 1.0) & (s < 2.0))
    return X, rank_scores(s), y, band


def test_offset_head_corrects_the_prior_without_inverting_it():
    from active_learning.head import rank_logit

    X, r, y, band = _biased_pool()
    picks = np.random.default_rng(1).choice(band, 60, replace=False)  # labels only near the boundary
    extra = r[:, None]
    free = AnomalyHead(seed=0, cv_folds=2).fit(X[picks], y[picks], extra[picks])
    anchored = AnomalyHead(seed=0, cv_folds=2, prior_labels=100.0).fit(
        X[picks], y[picks], extra[picks], offset=rank_logit(r[picks]),
        feature_stats=(np.r_[X.mean(0), r.mean()], np.r_[X.std(0), r.std()]),
    )  # fmt: skip
    p_free = free.predict_proba(X, extra)
    p_anch = anchored.predict_proba(X, extra, offset=rank_logit(r))
    auc_prior, auc_free, auc_anch = (roc_auc_score(y, v) for v in (r, p_free, p_anch))
    # the labels taught the head about the ring, and the loud anomalies kept their rank
    assert auc_anch > auc_prior + 0.02, (auc_prior, auc_anch)
    assert auc_anch > auc_free + 0.05, (auc_free, auc_anch)


def test_offset_is_required_once_fitted_with_one(tmp_path):
    from active_learning.head import rank_logit

    X, r, y, _ = _biased_pool()
    head = AnomalyHead(**QUICK, prior_labels=10.0).fit(X[:500], y[:500], offset=rank_logit(r[:500]))
    with pytest.raises(HeadError, match="fitted with an offset"):
        head.predict_proba(X[:5])
    with pytest.raises(HeadError, match="one value per row"):
        head.predict_proba(X[:5], offset=np.zeros(4))
    head.save(tmp_path / "h.safetensors")
    again = AnomalyHead.load(tmp_path / "h.safetensors")
    off = rank_logit(r[:50])
    expected = head.predict_proba(X[:50], offset=off)
    np.testing.assert_array_equal(again.predict_proba(X[:50], offset=off), expected)
    with pytest.raises(HeadError, match="feature_stats must have width 8"):
        AnomalyHead(**QUICK).fit(X[:100], y[:100], feature_stats=(np.zeros(3), np.ones(3)))


def test_prior_labels_shrinks_towards_the_offset():
    from active_learning.head import rank_logit

    X, r, _labels, _band = _biased_pool()
    rows = np.arange(40)
    y_noise = np.random.default_rng(3).integers(0, 2, size=40)  # labels carrying no information
    strong = AnomalyHead(**QUICK, prior_labels=1e4).fit(X[rows], y_noise, offset=rank_logit(r[rows]))
    p = strong.predict_proba(X, offset=rank_logit(r))
    # a prior worth 10,000 labels keeps the ranking the offset's (Spearman ~ 1)
    corr = np.corrcoef(np.argsort(np.argsort(p)), np.argsort(np.argsort(r)))[0, 1]
    assert corr > 0.99, corr
    weak = AnomalyHead(**QUICK, weight_decay=0.0).fit(X[rows], y_noise, offset=rank_logit(r[rows]))
    corr_weak = np.corrcoef(np.argsort(np.argsort(weak.predict_proba(X, offset=rank_logit(r)))),
                            np.argsort(np.argsort(r)))[0, 1]  # fmt: skip
    assert corr_weak < corr
