"""Label-free decision thresholds computed from training scores only.

A detector's threshold is a function of its own training scores (never of test
scores or labels): ``contamination`` takes the ``(1 - c)`` quantile, so about a
share ``c`` of training sequences is flagged; ``quantile`` takes a given
quantile; ``mad`` takes ``median + z * 1.4826 * MAD``, which does not need a
guess of the anomaly rate.  Points are flagged when ``score > threshold``.
Duplicated sequences produce blocks of tied scores; when such a block straddles
the quantile, it is flagged as a whole or not at all, whichever leaves the
flagged share closer to the target (a plain quantile would never flag a group of
identical anomalies larger than ``c * n``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import ConfigError, DataError

ThresholdMethod = Literal["contamination", "quantile", "mad"]
#: consistency constant of the MAD for normal data
MAD_SCALE = 1.4826


def check_threshold_params(
    method: str, contamination: float, quantile: float, z: float
) -> None:
    """Raise :class:`ConfigError` on invalid threshold settings."""
    if method not in ("contamination", "quantile", "mad"):
        raise ConfigError(f"threshold must be 'contamination', 'quantile' or 'mad', got {method!r}")
    if not 0.0 < contamination <= 0.5:
        raise ConfigError(f"contamination must be in (0, 0.5], got {contamination}")
    if not 0.0 < quantile < 1.0:
        raise ConfigError(f"threshold_quantile must be in (0, 1), got {quantile}")
    if z <= 0:
        raise ConfigError(f"threshold_z must be > 0, got {z}")


def robust_scale(scores: np.ndarray) -> tuple[float, float]:
    """Median and a robust standard deviation of ``scores`` (never zero).

    The scale is ``1.4826 * MAD``; when more than half the scores are tied
    (MAD = 0, common with duplicated sequences) it falls back to the mean
    absolute deviation from the median (times sqrt(pi/2)), then to 1.

    Parameters
    ----------
    scores : ndarray of float, shape (n,)

    Returns
    -------
    (median, scale) : tuple of float
    """
    s = np.asarray(scores, dtype=np.float64)
    med = float(np.median(s))
    dev = np.abs(s - med)
    scale = MAD_SCALE * float(np.median(dev))
    tiny = 1e-12 * max(1.0, abs(med))
    if scale <= tiny:
        scale = float(np.sqrt(np.pi / 2) * dev.mean())
    if scale <= tiny:
        scale = 1.0
    return med, scale


def compute_threshold(
    train_scores: np.ndarray,
    method: ThresholdMethod = "contamination",
    contamination: float = 0.03,
    quantile: float = 0.99,
    z: float = 3.5,
) -> float:
    """Threshold from training scores; ``score > threshold`` is flagged anomalous.

    Parameters
    ----------
    train_scores : ndarray of float, shape (n,)
        Scores of the training set (higher = more anomalous).
    method : {'contamination', 'quantile', 'mad'}
        ``contamination``: the ``1 - contamination`` quantile; ``quantile``: the
        ``quantile`` quantile; ``mad``: ``median + z * robust scale``.

    Returns
    -------
    float
    """
    check_threshold_params(method, contamination, quantile, z)
    s = np.asarray(train_scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise DataError(f"training scores must be a non-empty 1-D array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise DataError("training scores hold NaN or inf; the detector produced invalid scores")
    if method == "contamination":
        return quantile_threshold(s, 1.0 - contamination)
    if method == "quantile":
        return quantile_threshold(s, quantile)
    med, scale = robust_scale(s)
    return med + z * scale


def quantile_threshold(scores: np.ndarray, q: float) -> float:
    """The ``q`` quantile of ``scores``, moved below a tied block when that flags closer to ``1 - q``.

    Parameters
    ----------
    scores : ndarray of float64, shape (n,)
    q : float
        Quantile in (0, 1); about ``(1 - q) * n`` scores should exceed the result.
    """
    t = float(np.quantile(scores, q))
    n_tied = int(np.count_nonzero(scores == t))
    below = scores[scores < t]
    if n_tied < 2 or below.size == 0:
        return t
    target = (1.0 - q) * len(scores)
    n_above = int(np.count_nonzero(scores > t))
    if abs(n_above + n_tied - target) < abs(n_above - target):
        return float((below.max() + t) / 2.0)  # flag the tied block too
    return t
