"""The supervised anomaly head trained on annotators' labels, and the score blend.

:class:`AnomalyHead` is a class-weighted logistic regression (or a one-hidden-layer
MLP) in torch on each labelled sequence's embedding **plus** its unsupervised
scores (``extra`` features, e.g. the ensemble score and per-detector normalised
scores), standardised with statistics of the labelled rows, with L2 weight
decay and a seeded, full-batch, CPU fit.  Its decision threshold comes from
stratified k-fold out-of-fold probabilities (the F1-maximising cut), with
0.5 as the fallback when a class has fewer than two labels.  The network itself
is :class:`HeadNet`, an ``nn.Module`` taking ``(embedding, extra)`` so an
encoder can be fine-tuned under it.  Saved as one safetensors file (weights and
standardisation buffers) with the JSON settings in its metadata: no pickle.
:func:`blend` mixes the head's probability with the unsupervised rank so that
anomaly types nobody has labelled yet stay visible.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anomaly_ssl.io import atomic_write_with

from .al_errors import HeadError, HeadNotFittedError, OneClassError

logger = logging.getLogger(__name__)

_META_KEY = "anomaly_ssl_head"
_FORMAT_VERSION = 1


class HeadNet(nn.Module):
    """``(embedding, extra) -> logit``: standardise, then linear (or 1-hidden-layer MLP).

    Parameters
    ----------
    embed_dim : int
        Embedding width ``d``.
    n_extra : int
        Number of extra (unsupervised score) features ``k``; may be 0.
    hidden : int
        Hidden units; 0 = logistic regression.
    """

    def __init__(self, embed_dim: int, n_extra: int = 0, hidden: int = 0) -> None:
        super().__init__()
        self.embed_dim, self.n_extra, self.hidden = embed_dim, n_extra, hidden
        width = embed_dim + n_extra
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_std", torch.ones(width))
        skip = nn.utils.skip_init  # weights are set by reset_parameters with an explicit generator
        if hidden > 0:
            self.body: nn.Module = nn.Sequential(skip(nn.Linear, width, hidden), nn.ReLU(),
                                                 skip(nn.Linear, hidden, 1))  # fmt: skip
        else:
            self.body = skip(nn.Linear, width, 1)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Zero init for logistic regression (convex), uniform ±1/sqrt(fan_in) for the MLP."""
        for module in self.body.modules():
            if isinstance(module, nn.Linear):
                with torch.no_grad():
                    if self.hidden > 0:
                        bound = 1.0 / np.sqrt(module.in_features)
                        module.weight.uniform_(-bound, bound, generator=generator)
                    else:
                        module.weight.zero_()
                    module.bias.zero_()

    def set_standardization(self, features: torch.Tensor) -> None:
        """Fit the feature mean/std buffers on ``features`` (n, d + k); constant columns get std 1."""
        self.feature_mean.copy_(features.mean(dim=0))
        std = features.std(dim=0, unbiased=False)
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def features(self, embedding: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Concatenate ``embedding`` (n, d) and ``extra`` (n, k) into (n, d + k)."""
        return embedding if extra is None or extra.shape[1] == 0 else torch.cat([embedding, extra], dim=1)

    def set_standardization_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Use given feature mean/std (e.g. of the whole unlabelled pool), width d + k."""
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        std_t = torch.as_tensor(np.asarray(std, dtype=np.float32))
        if mean_t.shape != self.feature_mean.shape or std_t.shape != self.feature_std.shape:
            raise HeadError(
                f"feature_stats must have width {self.feature_mean.shape[0]} (embedding + extra), "
                f"got {tuple(mean_t.shape)} and {tuple(std_t.shape)}"
            )
        self.feature_mean.copy_(mean_t)
        self.feature_std.copy_(torch.where(std_t > 1e-6, std_t, torch.ones_like(std_t)))

    def forward(
        self, embedding: torch.Tensor, extra: torch.Tensor | None = None, offset: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits of P(anomaly), shape (n,); ``offset`` (n,) is added to them (a fixed prior logit)."""
        x = (self.features(embedding, extra) - self.feature_mean) / self.feature_std  # (n, d + k)
        logits = self.body(x).squeeze(-1)  # (n, 1) -> (n,)
        return logits if offset is None else logits + offset

    def l2_penalty(self) -> torch.Tensor:
        """Sum of squared weights (biases excluded)."""
        return sum((m.weight**2).sum() for m in self.body.modules() if isinstance(m, nn.Linear))


class AnomalyHead:
    """P(anomaly) from embeddings and unsupervised scores, learnt from labels.

    Parameters
    ----------
    hidden : int
        Hidden units (0 = logistic regression, the default for few labels).
    epochs, lr, weight_decay : int, float, float
        Full-batch Adam steps, learning rate, and a constant L2 strength ``λ₀``.
    prior_labels : float
        L2 strength that shrinks with the number of labels ``n``:
        ``loss = weighted mean BCE + (λ₀ + prior_labels / n) / 2 · ||W||²``, the
        MAP estimate under a Gaussian prior worth about ``prior_labels`` labels.
        With an ``offset`` (the unsupervised score's logit) this keeps the head
        close to the unsupervised ranking until labels outweigh the prior, so a
        few labels picked near the boundary cannot turn the ranking upside down.
    class_weight : {"balanced", None}
        ``balanced`` weighs each class by ``n / (2 n_class)`` so a 2 % anomaly
        class counts as much as the normal one.
    cv_folds : int
        Stratified folds for the threshold (reduced to the smaller class size).
    default_threshold : float
        Threshold used when the smaller class has fewer than 2 labels.
    seed : int
    fit_threads : int, optional
        torch CPU threads while fitting (restored afterwards).  1 by default:
        label-sized problems are far too small to gain from threads, and on a
        busy machine torch's thread synchronisation makes each tiny step up to
        100x slower.  ``None`` leaves torch's setting alone.
    """

    def __init__(
        self,
        hidden: int = 0,
        epochs: int = 200,
        lr: float = 1e-2,
        weight_decay: float = 1e-3,
        prior_labels: float = 0.0,
        class_weight: str | None = "balanced",
        cv_folds: int = 5,
        default_threshold: float = 0.5,
        seed: int = 0,
        fit_threads: int | None = 1,
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.prior_labels = prior_labels
        self.class_weight = class_weight
        self.cv_folds = cv_folds
        self.default_threshold = default_threshold
        self.seed = seed
        self.fit_threads = fit_threads

    @classmethod
    def from_config(cls, finetune_config: Any, seed: int = 0, **overrides: Any) -> AnomalyHead:
        """Build from a :class:`~anomaly_ssl.config.FinetuneConfig`."""
        params = {
            "epochs": finetune_config.epochs,
            "lr": finetune_config.lr,
            "weight_decay": finetune_config.weight_decay,
            "prior_labels": finetune_config.prior_labels,
            "cv_folds": finetune_config.cv_folds,
            "seed": seed,
        }
        params.update(overrides)
        return cls(**params)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        extra: np.ndarray | None = None,
        offset: np.ndarray | None = None,
        feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> AnomalyHead:
        """Train on labelled rows and choose the threshold by cross-validation.

        Parameters
        ----------
        X : ndarray of float, shape (n, d)
            Embeddings of the labelled sequences.
        y : ndarray of int, shape (n,)
            0 normal / 1 anomaly.
        extra : ndarray of float, shape (n, k), optional
            Unsupervised scores as extra features (same columns at predict time).
        offset : ndarray of float, shape (n,), optional
            A fixed logit added to the head's output (e.g. the logit of the
            unsupervised rank): the head then learns a *correction* of that prior.
            Required again at predict time.
        feature_stats : (mean, std), each ndarray of shape (d + k,), optional
            Standardise features with these (e.g. the whole unlabelled pool's)
            instead of the labelled rows' own statistics, which are biased when
            the labels were chosen by a query strategy.

        Raises
        ------
        OneClassError
            All labels are the same class; keep using the unsupervised score.
        HeadError
            Shapes disagree, values are not finite, or labels are not 0/1.
        """
        if self.class_weight not in ("balanced", None):
            raise HeadError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")
        emb, ext = self._check_inputs(X, extra, fitted=False)
        off = self._check_offset(offset, len(emb))
        labels = np.asarray(y).reshape(-1)
        if len(labels) != len(emb):
            raise HeadError(f"fit got {len(emb)} rows of X but {len(labels)} labels")
        if not np.isin(labels, (0, 1)).all():
            raise HeadError("labels must be 0 (normal) or 1 (anomaly)")
        n_pos, n_neg = int(labels.sum()), int(len(labels) - labels.sum())
        if n_pos == 0 or n_neg == 0:
            only = "anomaly (1)" if n_pos else "normal (0)"
            raise OneClassError(
                f"all {len(labels)} labels are {only}; the head needs at least one normal and one "
                "anomalous label; keep ranking by the unsupervised score until both are labelled"
            )
        self.embed_dim_, self.n_extra_ = emb.shape[1], ext.shape[1]
        self.n_pos_, self.n_neg_ = n_pos, n_neg
        self.uses_offset_ = off is not None
        self.feature_stats_ = None
        if feature_stats is not None:
            mean, std = (np.asarray(a, dtype=np.float32).reshape(-1) for a in feature_stats)
            self.feature_stats_ = (mean, std)
        with _torch_threads(self.fit_threads):
            self.net_ = self._train(emb, ext, labels.astype(np.float32), off)
            self._choose_threshold(emb, ext, labels, off)
        logger.info(
            "head fitted on %d labels (%d anomalies); threshold %.3f (%s)",
            len(labels), n_pos, self.threshold_, self.threshold_source_,
        )  # fmt: skip
        return self

    def _train(self, emb: np.ndarray, ext: np.ndarray, y: np.ndarray, off: np.ndarray | None) -> HeadNet:
        gen = torch.Generator().manual_seed(self.seed)
        net = HeadNet(emb.shape[1], ext.shape[1], self.hidden)
        net.reset_parameters(gen)
        e, x, t = torch.from_numpy(emb), torch.from_numpy(ext), torch.from_numpy(y)
        o = None if off is None else torch.from_numpy(off)
        if self.feature_stats_ is not None:
            net.set_standardization_stats(*self.feature_stats_)
        else:
            net.set_standardization(net.features(e, x))
        decay = self.weight_decay + self.prior_labels / len(y)
        if self.class_weight == "balanced":
            n, n_pos = len(y), float(y.sum())
            w = torch.where(t > 0.5, n / (2.0 * n_pos), n / (2.0 * (n - n_pos)))
        else:
            w = torch.ones_like(t)
        w = w / w.sum()
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        net.train()
        for _ in range(self.epochs):
            opt.zero_grad()
            logits = net(e, x, o)  # (n,)
            # BCE with logits written out: torch's fused kernel is pathologically slow
            # multi-threaded on small CPU tensors (tens of ms per call on a busy 2-core box)
            bce = nn.functional.softplus(logits) - logits * t
            loss = (w * bce).sum() + 0.5 * decay * net.l2_penalty()
            loss.backward()
            opt.step()
        net.eval()
        return net

    def _choose_threshold(
        self, emb: np.ndarray, ext: np.ndarray, y: np.ndarray, off: np.ndarray | None
    ) -> None:
        folds = min(self.cv_folds, self.n_pos_, self.n_neg_)
        self.cv_oof_proba_: np.ndarray | None = None
        self.cv_f1_: float | None = None
        if folds < 2:
            self.threshold_ = float(self.default_threshold)
            self.threshold_source_ = f"default (a class has {min(self.n_pos_, self.n_neg_)} label)"
            return
        fold_of = stratified_folds(y, folds, np.random.default_rng(self.seed))
        oof = np.empty(len(y), dtype=np.float64)
        for f in range(folds):
            test = fold_of == f
            train_off, test_off = (None, None) if off is None else (off[~test], off[test])
            net = self._train(emb[~test], ext[~test], y[~test].astype(np.float32), train_off)
            oof[test] = _proba(net, emb[test], ext[test], test_off)
        self.cv_oof_proba_ = oof
        self.threshold_, self.cv_f1_ = f1_optimal_threshold(y, oof)
        self.threshold_source_ = f"cv ({folds}-fold out-of-fold F1 {self.cv_f1_:.3f})"

    # -------------------------------------------------------------- predict
    def predict_proba(
        self, X: np.ndarray, extra: np.ndarray | None = None, offset: np.ndarray | None = None
    ) -> np.ndarray:
        """P(anomaly) per row, float64, shape (n,).

        Parameters
        ----------
        X : ndarray of float, shape (n, d)
        extra : ndarray of float, shape (n, k), optional
            The same extra feature columns as at fit time.
        offset : ndarray of float, shape (n,), optional
            The prior logit, required when the head was fitted with one.
        """
        emb, ext = self._check_inputs(X, extra, fitted=True)
        off = self._check_offset(offset, len(emb))
        if (off is not None) != self.uses_offset_:
            need = "with an offset; pass it" if self.uses_offset_ else "without an offset"
            raise HeadError(f"this head was fitted {need} (offset= in predict_proba)")
        return _proba(self.net_, emb, ext, off)

    def predict(
        self, X: np.ndarray, extra: np.ndarray | None = None, offset: np.ndarray | None = None
    ) -> np.ndarray:
        """1 where P(anomaly) >= ``threshold_``, else 0; int64, shape (n,)."""
        return (self.predict_proba(X, extra, offset) >= self.threshold_).astype(np.int64)

    @staticmethod
    def _check_offset(offset: np.ndarray | None, n: int) -> np.ndarray | None:
        if offset is None:
            return None
        off = np.ascontiguousarray(offset, dtype=np.float32).reshape(-1)
        if len(off) != n:
            raise HeadError(f"offset must have one value per row ({n}), got {len(off)}")
        if not np.isfinite(off).all():
            first = int(np.argwhere(~np.isfinite(off))[0, 0])
            raise HeadError(f"offset has non-finite values (first at row {first})")
        return off

    def _check_inputs(
        self, X: np.ndarray, extra: np.ndarray | None, fitted: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        if fitted and not hasattr(self, "net_"):
            raise HeadNotFittedError("AnomalyHead is not fitted; call fit(X, y) or AnomalyHead.load(path)")
        emb = np.ascontiguousarray(X, dtype=np.float32)
        if emb.ndim != 2:
            raise HeadError(f"X must be 2-D (n, d) embeddings, got shape {emb.shape}")
        if extra is None:
            ext = np.zeros((len(emb), 0), np.float32)
        else:
            ext = np.ascontiguousarray(extra, np.float32)
        if ext.ndim == 1:
            ext = ext[:, None]
        if ext.ndim != 2 or len(ext) != len(emb):
            raise HeadError(f"extra must be (n, k) with n = {len(emb)} rows of X, got shape {ext.shape}")
        for name, arr in (("X", emb), ("extra", ext)):
            if not np.isfinite(arr).all():
                row = int(np.argwhere(~np.isfinite(arr))[0, 0])
                raise HeadError(f"{name} has non-finite values (first at row {row}); fill or drop them")
        if fitted and (emb.shape[1], ext.shape[1]) != (self.embed_dim_, self.n_extra_):
            raise HeadError(
                f"head was fitted on d={self.embed_dim_} embedding and k={self.n_extra_} extra columns, "
                f"got d={emb.shape[1]}, k={ext.shape[1]}"
            )
        return emb, ext

    # ------------------------------------------------------------ save/load
    def save(self, path: str | Path) -> None:
        """Write weights + settings to one safetensors file, atomically (no pickle)."""
        from safetensors.torch import save_file

        if not hasattr(self, "net_"):
            raise HeadNotFittedError("cannot save an unfitted AnomalyHead")
        params = ("hidden", "epochs", "lr", "weight_decay", "prior_labels", "class_weight", "cv_folds",
                  "default_threshold", "seed", "fit_threads")  # fmt: skip
        meta = {
            "format_version": _FORMAT_VERSION,
            "params": {k: getattr(self, k) for k in params},
            "embed_dim": self.embed_dim_,
            "n_extra": self.n_extra_,
            "n_pos": self.n_pos_,
            "n_neg": self.n_neg_,
            "threshold": self.threshold_,
            "threshold_source": self.threshold_source_,
            "cv_f1": self.cv_f1_,
            "uses_offset": self.uses_offset_,
        }
        tensors = {k: v.detach().contiguous() for k, v in self.net_.state_dict().items()}
        header = {_META_KEY: json.dumps(meta)}
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))

    @classmethod
    def load(cls, path: str | Path) -> AnomalyHead:
        """Read a head written by :meth:`save`; :class:`HeadError` if the file is not one."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise HeadError(f"no head file at {path}; train one with `anomaly-ssl finetune`")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})[_META_KEY])
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as exc:
            raise HeadError(f"{path} is not an anomaly-ssl head file ({exc})") from exc
        if meta.get("format_version") != _FORMAT_VERSION:
            raise HeadError(f"{path}: head format {meta.get('format_version')} is not {_FORMAT_VERSION}")
        head = cls(**meta["params"])
        net = HeadNet(meta["embed_dim"], meta["n_extra"], meta["params"]["hidden"])
        try:
            net.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise HeadError(f"{path}: weights do not match the saved settings ({exc})") from exc
        head.net_ = net.eval()
        head.embed_dim_, head.n_extra_ = meta["embed_dim"], meta["n_extra"]
        head.n_pos_, head.n_neg_ = meta["n_pos"], meta["n_neg"]
        head.threshold_, head.threshold_source_ = float(meta["threshold"]), meta["threshold_source"]
        head.cv_f1_, head.cv_oof_proba_ = meta["cv_f1"], None
        head.uses_offset_, head.feature_stats_ = bool(meta.get("uses_offset", False)), None
        return head

    def __repr__(self) -> str:
        return f"AnomalyHead(hidden={self.hidden}, epochs={self.epochs}, class_weight={self.class_weight!r})"


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads, then restore the previous setting."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _proba(net: HeadNet, emb: np.ndarray, ext: np.ndarray, off: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        o = None if off is None else torch.from_numpy(off)
        return torch.sigmoid(net(torch.from_numpy(emb), torch.from_numpy(ext), o)).double().numpy()


def rank_logit(rank: np.ndarray) -> np.ndarray:
    """``log(r / (1 − r))`` of ranks in (0, 1), float64 (the head's prior offset)."""
    r = np.clip(np.asarray(rank, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    return np.log(r / (1.0 - r))


def stratified_folds(y: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold number per row, shape (n,), int64: each class spread evenly over ``folds`` folds."""
    fold_of = np.empty(len(y), dtype=np.int64)
    offset = 0
    for cls in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == cls))
        fold_of[rows] = (np.arange(len(rows)) + offset) % folds
        offset += len(rows)  # continue the cycle so small folds fill evenly across classes
    return fold_of


def f1_optimal_threshold(y: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    """The probability cut that maximises F1 on ``(y, proba)``.

    Candidate cuts lie between consecutive distinct probabilities; the chosen cut
    is the midpoint below the lowest probability still called an anomaly (so
    small shifts do not flip it); among equal F1 the highest cut wins.

    Parameters
    ----------
    y : ndarray of int, shape (n,)
    proba : ndarray of float, shape (n,)

    Returns
    -------
    (threshold, f1) : tuple of float
    """
    order = np.argsort(-proba, kind="stable")
    p, t = proba[order], y[order].astype(np.float64)
    tp, fp = np.cumsum(t), np.cumsum(1.0 - t)  # predicted positive = first i + 1 rows
    f1 = 2.0 * tp / (tp + fp + t.sum())
    group_end = np.append(p[1:] != p[:-1], True)  # a cut can only fall between distinct values
    f1 = np.where(group_end, f1, -1.0)
    i = int(np.argmax(f1))
    lower = p[i + 1] if i + 1 < len(p) else 0.0
    return float((p[i] + lower) / 2.0), float(f1[i])


def rank_scores(scores: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Anomaly scores as mid-ranks in (0, 1): the share of ``reference`` scored lower.

    Parameters
    ----------
    scores : ndarray of float, shape (n,)
    reference : ndarray of float, shape (m,), optional
        Scores defining the scale (e.g. training scores); ``None`` = ``scores`` themselves.

    Returns
    -------
    ndarray of float64, shape (n,)
        ``(#lower + #equal / 2) / m`` clipped to ``[0.5/m, 1 − 0.5/m]``, so never exactly 0 or 1.
    """
    s = np.asarray(scores, dtype=np.float64)
    ref = np.sort(s if reference is None else np.asarray(reference, dtype=np.float64))
    m = len(ref)
    if m == 0:
        return np.full(len(s), 0.5)
    mid = (np.searchsorted(ref, s, "left") + np.searchsorted(ref, s, "right")) / 2.0
    return np.clip(mid / m, 0.5 / m, 1.0 - 0.5 / m)


def blend(head_proba: np.ndarray, unsup_score_rank: np.ndarray, weight: float) -> np.ndarray:
    """Combine the head's P(anomaly) with the unsupervised rank into one score.

    ``final = 1 − (1 − p)^w · (1 − r)^(1 − w)``: a weighted geometric mean of the
    two *normality* estimates, turned back into an anomaly score.  It equals
    ``p`` at ``w = 1`` and ``r`` at ``w = 0`` and grows with either input.
    Unlike the linear ``w·p + (1 − w)·r`` it keeps anomaly types nobody has
    labelled yet visible: as the unsupervised rank approaches 1 the product goes
    to 0 whatever the head says (with ``w = 0.7`` a top-0.1 % sequence the head
    gives p = 0.05 still scores ≈ 0.87, while the linear blend caps it at ≈ 0.33,
    below everything the head believes in), whereas in the bulk (moderate r)
    the head's p dominates and labelled false-positive patterns are demoted.

    Parameters
    ----------
    head_proba : ndarray of float, shape (n,)
        P(anomaly) from :class:`AnomalyHead`, in [0, 1].
    unsup_score_rank : ndarray of float, shape (n,)
        Unsupervised score as a rank in [0, 1] (see :func:`rank_scores`).
    weight : float
        ``w`` in [0, 1] (``FinetuneConfig.blend``).

    Returns
    -------
    ndarray of float64, shape (n,), in [0, 1]; higher = more anomalous.
    """
    p = np.asarray(head_proba, dtype=np.float64)
    r = np.asarray(unsup_score_rank, dtype=np.float64)
    if p.shape != r.shape:
        raise HeadError(f"blend: head_proba {p.shape} and unsup_score_rank {r.shape} differ in shape")
    if not 0.0 <= weight <= 1.0:
        raise HeadError(f"blend weight must be in [0, 1] (finetune.blend), got {weight}")
    for name, arr in (("head_proba", p), ("unsup_score_rank", r)):
        if not (np.isfinite(arr).all() and (arr >= 0).all() and (arr <= 1).all()):
            raise HeadError(f"blend: {name} must be finite and in [0, 1]; rank raw scores with rank_scores")
    return 1.0 - np.power(1.0 - p, weight) * np.power(1.0 - r, 1.0 - weight)
