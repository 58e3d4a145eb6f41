"""PyOD detectors behind the anomaly-ssl detector contract.

PyOD already scores "higher = more anomalous"; the adapter adds our input
checks, our threshold rule (computed by :mod:`.threshold` from the training
scores, not PyOD's), a fixed ``random_state`` and pickle-free state: the state
holds the training features and the parameters, and loading *refits* the PyOD
model with the same seed.  All supported algorithms are deterministic given
the seed, so save -> load gives identical scores; loading verifies this against
the stored training scores and raises :class:`~anomaly_ssl.errors.ModelError`
if it does not hold.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np

from ..errors import ConfigError, DependencyError, ModelError
from .base import BaseDetector

#: algorithm name -> (module, class) in pyod.models
PYOD_ALGORITHMS: dict[str, tuple[str, str]] = {
    "iforest": ("pyod.models.iforest", "IForest"),
    "ecod": ("pyod.models.ecod", "ECOD"),
    "copod": ("pyod.models.copod", "COPOD"),
    "hbos": ("pyod.models.hbos", "HBOS"),
    "knn": ("pyod.models.knn", "KNN"),
    "lof": ("pyod.models.lof", "LOF"),
    "pca": ("pyod.models.pca", "PCA"),
    "ocsvm": ("pyod.models.ocsvm", "OCSVM"),
}


class PyODDetector(BaseDetector):
    """A PyOD model with our score convention, threshold and state.

    Parameters
    ----------
    algorithm : str
        One of :data:`PYOD_ALGORITHMS` (``iforest``, ``ecod``, ``copod``, ``hbos``,
        ``knn``, ``lof``, ``pca``, ``ocsvm``).
    random_state : int
        Seed passed to algorithms that take one.
    contamination, threshold, threshold_quantile, threshold_z
        See :class:`~anomaly_ssl.detectors.base.BaseDetector`.
    **params
        Keyword arguments of the PyOD class (e.g. ``n_estimators=200``).

    Attributes
    ----------
    model_ : pyod.models.base.BaseDetector
        The fitted PyOD model.
    """

    def __init__(
        self,
        algorithm: str = "iforest",
        random_state: int = 0,
        contamination: float = 0.03,
        threshold: str = "contamination",
        threshold_quantile: float = 0.99,
        threshold_z: float = 3.5,
        **params: Any,
    ) -> None:
        super().__init__(contamination, threshold, threshold_quantile, threshold_z)
        self.algorithm = algorithm
        self.random_state = random_state
        self.params = params

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, the PyOD keyword arguments included."""
        return {**super().get_params(), **self.params}

    def _check_params(self) -> None:
        if self.algorithm not in PYOD_ALGORITHMS:
            raise ConfigError(
                f"unknown PyOD algorithm {self.algorithm!r}; choose one of {sorted(PYOD_ALGORITHMS)}"
            )
        self._model_class()  # fails early on a missing pyod

    def _model_class(self) -> type:
        module, name = PYOD_ALGORITHMS[self.algorithm]
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise DependencyError(
                f"PyOD detector {self.algorithm!r} needs pyod: pip install pyod ({exc})"
            ) from None

    def _make_model(self) -> Any:
        cls = self._model_class()
        accepted = inspect.signature(cls.__init__).parameters
        unknown = set(self.params) - set(accepted)
        if unknown:
            raise ConfigError(
                f"PyOD {cls.__name__} has no parameter(s) {sorted(unknown)}; "
                f"valid: {sorted(p for p in accepted if p != 'self')}"
            )
        kwargs = dict(self.params)
        kwargs.setdefault("contamination", min(self.contamination, 0.5))
        if "random_state" in accepted:
            kwargs.setdefault("random_state", self.random_state)
        return cls(**kwargs)

    def _fit(self, X: np.ndarray) -> np.ndarray:
        self._X_train = X
        self.model_ = self._make_model()
        self.model_.fit(X)
        return np.asarray(self.model_.decision_scores_, dtype=np.float64)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model_.decision_function(X), dtype=np.float64)

    def _get_state_arrays(self) -> tuple[dict, dict]:
        return {"X_train": self._X_train}, {"refit_on_load": True}

    def _set_state_arrays(self, arrays: dict, meta: dict) -> None:
        X = np.ascontiguousarray(arrays["X_train"], dtype=np.float64)
        scores = self._fit(X)
        self._refit_scores = scores

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PyODDetector:
        """Rebuild by refitting on the stored training features (same seed)."""
        self = super().from_state(state)
        assert isinstance(self, PyODDetector)
        if not np.allclose(self._refit_scores, self.decision_scores_, rtol=1e-9, atol=1e-12):
            raise ModelError(
                f"PyOD {self.algorithm!r} refit did not reproduce the saved training scores; "
                "the pyod/scikit-learn version probably changed: fit the detector again"
            )
        return self
