"""Put detector scores on a common scale, learnt from training scores only.

Ensemble members produce scores in unrelated units (distances, density ratios,
negative log-likelihoods).  :class:`ScoreNormalizer` maps each onto a common
scale using its *training* scores: ``robust_z`` is ``(s - median) / (1.4826 *
MAD)`` (with a floor on the MAD, optionally clipped), ``rank`` the empirical
CDF of the training scores (mid-rank for ties, in [0, 1]).  Both keep the
"higher = more anomalous" direction.

Ranks compare with a small tolerance (:data:`RANK_RTOL` of the training score
range, at least :data:`RANK_ATOL`): pools with many identical sequences have large blocks of tied training
scores, and a new copy of such a sequence computed in a different batch differs
by float noise (1e-7); without the tolerance it would jump from the middle of
the block to above all of it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import ConfigError, DataError, NotFittedError
from .threshold import robust_scale

NormalizeMethod = Literal["robust_z", "rank"]

#: scores closer than this share of the training score range count as ties when ranking ...
RANK_RTOL = 1e-5
#: ... and never closer than this (float32 noise of distances and log-likelihoods)
RANK_ATOL = 1e-6


class ScoreNormalizer:
    """Fit on training scores, transform any scores onto the same scale.

    Parameters
    ----------
    method : {'robust_z', 'rank'}
    clip : float or None
        ``robust_z`` only: clip z-scores to ``[-clip, clip]`` so one member's
        extreme values cannot dominate a mean.  ``None`` = no clipping.
    """

    def __init__(self, method: NormalizeMethod = "robust_z", clip: float | None = 10.0) -> None:
        if method not in ("robust_z", "rank"):
            raise ConfigError(f"normalize must be 'robust_z' or 'rank', got {method!r}")
        if clip is not None and clip <= 0:
            raise ConfigError(f"normalize clip must be > 0 or None, got {clip}")
        self.method = method
        self.clip = clip

    def fit(self, train_scores: np.ndarray) -> ScoreNormalizer:
        """Learn the scale from training scores (float, shape (n,)); returns ``self``."""
        s = _check_scores(train_scores, "training scores")
        if self.method == "robust_z":
            self.center_, self.scale_ = robust_scale(s)
        else:
            self.sorted_ = np.sort(s)
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Normalised scores, float64 shape (n,)."""
        if not hasattr(self, "center_") and not hasattr(self, "sorted_"):
            raise NotFittedError("ScoreNormalizer is not fitted; call fit(train_scores) first")
        s = _check_scores(scores, "scores")
        if self.method == "robust_z":
            z = (s - self.center_) / self.scale_
            return np.clip(z, -self.clip, self.clip) if self.clip is not None else z
        ref = self.sorted_
        tol = max(RANK_RTOL * float(ref[-1] - ref[0]), RANK_ATOL)
        lo = np.searchsorted(ref, s - tol, side="left")
        hi = np.searchsorted(ref, s + tol, side="right")
        return (lo + hi) / (2.0 * len(ref))

    def get_state(self) -> dict:
        """Arrays and parameters needed to rebuild this normaliser."""
        if self.method == "robust_z":
            arrays = {"center_scale": np.array([self.center_, self.scale_], dtype=np.float64)}
        else:
            arrays = {"sorted": self.sorted_}
        return {"params": {"method": self.method, "clip": self.clip}, "arrays": arrays}

    @classmethod
    def from_state(cls, state: dict) -> ScoreNormalizer:
        """Inverse of :meth:`get_state`."""
        self = cls(**state["params"])
        arrays = state["arrays"]
        if self.method == "robust_z":
            self.center_, self.scale_ = (float(v) for v in arrays["center_scale"])
        else:
            self.sorted_ = np.asarray(arrays["sorted"], dtype=np.float64)
        return self


def robust_zscore(scores: np.ndarray, reference: np.ndarray, clip: float | None = None) -> np.ndarray:
    """``(scores - median(reference)) / robust_scale(reference)``, float64 (n,)."""
    return ScoreNormalizer("robust_z", clip).fit(reference).transform(scores)


def _check_scores(scores: np.ndarray, what: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise DataError(f"{what} must be a non-empty 1-D array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise DataError(f"{what} hold NaN or inf (first at position {int(np.argmin(np.isfinite(s)))})")
    return s
