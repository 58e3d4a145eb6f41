"""The detector contract (PyOD / scikit-learn vocabulary) and its shared checks.

Every detector stores its parameters in the constructor and does the work in
``fit(X, y=None) -> self``; ``decision_function(X)`` returns float64 scores of
shape (n,), higher = more anomalous; after ``fit`` it exposes
``decision_scores_`` (training scores; for neighbour methods each training
point's self-match is excluded), ``threshold_`` (from training scores only, see
:mod:`.threshold`) and ``labels_`` (0/1, ``score > threshold_``).  Scoring
methods raise :class:`~anomaly_ssl.errors.NotFittedError` before ``fit`` and
:class:`~anomaly_ssl.errors.DataError` on inputs of the wrong shape or with
non-finite values.  State is saved without pickle: :meth:`BaseDetector.get_state`
returns nested dicts of numpy arrays and JSON-able values, which
:meth:`BaseDetector.save` writes as one safetensors file (arrays as tensors,
everything else as JSON in its metadata).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import DataError, ModelError, NotFittedError
from ..io import atomic_write_bytes
from .threshold import check_threshold_params, compute_threshold

STATE_FORMAT = "anomaly_ssl.detector/1"


def check_matrix(X: Any, name: str = "X", n_features: int | None = None, dtype=np.float64) -> np.ndarray:
    """Check a feature matrix and return it as a C-contiguous array of ``dtype``.

    Raises
    ------
    DataError
        If ``X`` is not a non-empty 2-D numeric array with finite values and, when
        given, ``n_features`` columns.
    """
    if isinstance(X, dict) or not hasattr(X, "__len__"):
        raise DataError(f"{name} must be a 2-D array (n_samples, n_features), got {type(X).__name__}")
    try:
        arr = np.asarray(X, dtype=dtype)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric, got {type(X).__name__}") from None
    if arr.ndim != 2:
        raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {arr.shape}); pass at least one row and one column")
    if n_features is not None and arr.shape[1] != n_features:
        raise DataError(
            f"{name} has {arr.shape[1]} features but the detector was fitted on {n_features}; "
            "use the same feature extraction for training and scoring"
        )
    finite = np.isfinite(arr)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise DataError(f"{name} holds NaN or inf values (first at row {row}); clean or impute them first")
    return np.ascontiguousarray(arr)


class BaseDetector:
    """Base class: threshold handling, fitted checks, parameters and state.

    Subclasses implement ``_validate(X, fitting)``, ``_fit(X, **kw) -> train
    scores``, ``_score(X) -> scores``, ``_get_state_arrays()`` and
    ``_set_state_arrays(arrays, meta)``.

    Parameters
    ----------
    contamination : float
        Expected share of anomalies in the training set, in (0, 0.5].
    threshold : {'contamination', 'quantile', 'mad'}
        How ``threshold_`` is computed from the training scores.
    threshold_quantile : float
        Quantile used by ``threshold='quantile'``.
    threshold_z : float
        Robust z used by ``threshold='mad'``.
    """

    #: attributes that exist only after ``fit``
    _fitted_attr: ClassVar[str] = "decision_scores_"

    def __init__(
        self,
        contamination: float = 0.03,
        threshold: str = "contamination",
        threshold_quantile: float = 0.99,
        threshold_z: float = 3.5,
    ) -> None:
        self.contamination = contamination
        self.threshold = threshold
        self.threshold_quantile = threshold_quantile
        self.threshold_z = threshold_z

    # ------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for p in inspect.signature(init).parameters.values():
                variadic = p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                if p.name != "self" and not variadic and p.name not in names:
                    names.append(p.name)
        return names

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-able for the built-in detectors)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({inner})"

    # ------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> BaseDetector:
        """Fit on unlabelled training data (``y`` is ignored); returns ``self``."""
        check_threshold_params(self.threshold, self.contamination, self.threshold_quantile, self.threshold_z)
        self._check_params()
        data = self._validate(X, fitting=True)
        scores = self._fit(data, **fit_params)
        self._set_training_scores(scores)
        return self

    def _set_training_scores(self, scores: np.ndarray) -> None:
        s = np.asarray(scores, dtype=np.float64)
        assert s.ndim == 1, "training scores must be 1-D"
        self.decision_scores_ = s
        self.threshold_ = compute_threshold(
            s, self.threshold, self.contamination, self.threshold_quantile, self.threshold_z
        )
        self.labels_ = (s > self.threshold_).astype(np.int64)

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X)`` and return ``labels_`` (int64, shape (n,))."""
        return self.fit(X, y).labels_

    # ---------------------------------------------------------------- score
    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_state`) has run."""
        return hasattr(self, self._fitted_attr)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X) before scoring")

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly scores of ``X``, float64 shape (n,), higher = more anomalous."""
        self._check_fitted()
        data = self._validate(X, fitting=False)
        return np.asarray(self._score(data), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """1 where ``decision_function(X) > threshold_``, else 0 (int64, shape (n,))."""
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    # ------------------------------------------------------------ subclass hooks
    def _check_params(self) -> None:
        """Raise ConfigError on invalid constructor parameters."""

    def _validate(self, X: Any, fitting: bool) -> Any:
        n_features = None if fitting else getattr(self, "n_features_in_", None)
        arr = check_matrix(X, "X", n_features)
        if fitting:
            self.n_features_in_ = arr.shape[1]
        return arr

    def _fit(self, X: Any, **fit_params: Any) -> np.ndarray:
        raise NotImplementedError

    def _score(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def _get_state_arrays(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(arrays, meta) describing the learnt state beyond the training scores."""
        return {}, {}

    def _set_state_arrays(self, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        """Restore what :meth:`_get_state_arrays` returned."""

    # ---------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        """Learnt state as nested dicts of numpy arrays and JSON-able values (no pickle)."""
        self._check_fitted()
        arrays, meta = self._get_state_arrays()
        return {
            "format": STATE_FORMAT,
            "class": type(self).__name__,
            "params": self.get_params(),
            "n_features_in": getattr(self, "n_features_in_", None),
            "decision_scores": self.decision_scores_,
            "threshold": float(self.threshold_),
            "meta": meta,
            "arrays": arrays,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BaseDetector:
        """Rebuild a fitted detector from :meth:`get_state` output."""
        if state.get("format") != STATE_FORMAT:
            raise ModelError(
                f"not a detector state (format {state.get('format')!r}, expected {STATE_FORMAT})"
            )
        if state["class"] != cls.__name__:
            raise ModelError(f"state is for {state['class']}, not {cls.__name__}; use load_detector()")
        self = cls(**state["params"])
        if state.get("n_features_in") is not None:
            self.n_features_in_ = int(state["n_features_in"])
        self._set_state_arrays(state["arrays"], state["meta"])
        self.decision_scores_ = np.asarray(state["decision_scores"], dtype=np.float64)
        self.threshold_ = float(state["threshold"])
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)
        return self

    def save(self, path: str | Path) -> None:
        """Write :meth:`get_state` to a safetensors file, atomically."""
        save_state(self.get_state(), path)


# --------------------------------------------------------------- state files


def _split_arrays(obj: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    """Replace every ndarray in a nested dict/list by a reference into ``arrays``."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise ModelError(f"state entry {prefix!r} is an object array; store it as JSON (a list)")
        arrays[prefix] = np.ascontiguousarray(obj)
        return {"__array__": prefix}
    if isinstance(obj, dict):
        return {
            str(k): _split_arrays(v, arrays, f"{prefix}/{k}" if prefix else str(k)) for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_split_arrays(v, arrays, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _join_arrays(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays) for v in obj]
    return obj


def state_to_bytes(state: dict[str, Any]) -> bytes:
    """Serialise a detector state to safetensors bytes (JSON skeleton in the metadata)."""
    from safetensors.numpy import save

    arrays: dict[str, np.ndarray] = {}
    skeleton = _split_arrays(state, arrays, "")
    return save(arrays, metadata={"anomaly_ssl_state": json.dumps(skeleton)})


def state_from_bytes(data: bytes) -> dict[str, Any]:
    """Inverse of :func:`state_to_bytes`."""
    from safetensors.numpy import load

    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    meta = header.get("__metadata__") or {}
    if "anomaly_ssl_state" not in meta:
        raise ModelError("this safetensors file holds no anomaly-ssl detector state")
    arrays = load(data)
    return _join_arrays(json.loads(meta["anomaly_ssl_state"]), arrays)


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Write a detector state to ``path`` (safetensors), atomically."""
    atomic_write_bytes(path, state_to_bytes(state))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"detector file {path} does not exist")
    return state_from_bytes(path.read_bytes())
