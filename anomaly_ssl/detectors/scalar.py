"""A detector for precomputed per-sequence anomaly statistics.

Some scores are computed elsewhere and are already "higher = more anomalous",
e.g. the masked-event surprise of the Transformer (mean / max / top-k negative
log-likelihood per sequence).  :class:`ScalarDetector` turns such columns into
a detector with the common contract: with one column the score is the value
itself; with several, each column is robustly standardised on the training
rows (median / MAD) and the columns are averaged or maxed.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, DataError
from .base import BaseDetector, check_matrix
from .threshold import robust_scale


class ScalarDetector(BaseDetector):
    """Scores from precomputed statistics ``X`` (n, m) or (n,), higher = more anomalous.

    Parameters
    ----------
    columns : list of int, optional
        Columns of ``X`` to use (default: all).
    aggregate : {'mean', 'max'}
        How several standardised columns are combined.
    contamination, threshold, threshold_quantile, threshold_z
        See :class:`~anomaly_ssl.detectors.base.BaseDetector`.

    Attributes
    ----------
    center_, scale_ : ndarray of float64, shape (n_used_columns,)
        Training median and robust scale per used column (identity for one column).
    """

    def __init__(
        self,
        columns: list[int] | None = None,
        aggregate: Literal["mean", "max"] = "mean",
        contamination: float = 0.03,
        threshold: str = "contamination",
        threshold_quantile: float = 0.99,
        threshold_z: float = 3.5,
    ) -> None:
        super().__init__(contamination, threshold, threshold_quantile, threshold_z)
        self.columns = columns
        self.aggregate = aggregate

    def _check_params(self) -> None:
        if self.aggregate not in ("mean", "max"):
            raise ConfigError(f"ScalarDetector: aggregate must be 'mean' or 'max', got {self.aggregate!r}")

    def _validate(self, X: Any, fitting: bool) -> np.ndarray:
        arr = np.asarray(X) if not isinstance(X, dict) else X
        if isinstance(arr, np.ndarray) and arr.ndim == 1:
            arr = arr[:, None]
        n_features = None if fitting else getattr(self, "n_features_in_", None)
        arr = check_matrix(arr, "X", n_features)
        if fitting:
            self.n_features_in_ = arr.shape[1]
        cols = list(range(arr.shape[1])) if self.columns is None else list(self.columns)
        if not cols or any(not 0 <= c < arr.shape[1] for c in cols):
            raise DataError(
                f"ScalarDetector: columns {self.columns} out of range for {arr.shape[1]} column(s)"
            )
        return arr[:, cols]

    def _fit(self, X: np.ndarray) -> np.ndarray:
        if X.shape[1] == 1:
            self.center_, self.scale_ = np.zeros(1), np.ones(1)
        else:
            stats = [robust_scale(X[:, j]) for j in range(X.shape[1])]
            self.center_ = np.array([c for c, _ in stats])
            self.scale_ = np.array([s for _, s in stats])
        return self._score(X)

    def _score(self, X: np.ndarray) -> np.ndarray:
        z = (X - self.center_) / self.scale_  # (n, m)
        return z.max(axis=1) if self.aggregate == "max" else z.mean(axis=1)

    def _get_state_arrays(self) -> tuple[dict, dict]:
        return {"center": self.center_, "scale": self.scale_}, {}

    def _set_state_arrays(self, arrays: dict, meta: dict) -> None:
        self.center_ = np.asarray(arrays["center"], dtype=np.float64)
        self.scale_ = np.asarray(arrays["scale"], dtype=np.float64)
