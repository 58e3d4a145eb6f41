"""Anomaly detectors with one contract: ``fit(X) -> self``, ``decision_function`` (higher = more anomalous).

The detectors work on numpy feature matrices (Transformer embeddings, event-count
vectors, per-sequence statistics) except :class:`NGramDetector`, which takes
:class:`~anomaly_ssl.data.encoded.EncodedSequences`, and :class:`EnsembleDetector`,
which takes a dict of member inputs.  :func:`save_detector` / :func:`load_detector`
store any of them without pickle (safetensors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import BaseDetector, load_state, save_state
from .counts import event_count_columns, event_count_matrix
from .density import DensityDetector
from .ensemble import EnsembleDetector
from .knn import KNNDetector
from .ngram import NGramDetector
from .normalize import ScoreNormalizer
from .pyod_adapter import PyODDetector
from .scalar import ScalarDetector
from .threshold import compute_threshold

#: detector class name -> class, for loading saved states
DETECTOR_CLASSES: dict[str, type[BaseDetector]] = {
    cls.__name__: cls
    for cls in (KNNDetector, DensityDetector, PyODDetector, ScalarDetector, NGramDetector, EnsembleDetector)
}


def detector_from_state(state: dict[str, Any]) -> BaseDetector:
    """Rebuild any built-in detector from its :meth:`~BaseDetector.get_state` output."""
    name = state.get("class")
    if name not in DETECTOR_CLASSES:
        raise ModelError(f"unknown detector class {name!r} in saved state; known: {sorted(DETECTOR_CLASSES)}")
    return DETECTOR_CLASSES[name].from_state(state)


def save_detector(detector: BaseDetector, path: str | Path) -> None:
    """Save a fitted detector to a safetensors file (atomic, no pickle)."""
    save_state(detector.get_state(), path)


def load_detector(path: str | Path) -> BaseDetector:
    """Load a detector written by :func:`save_detector`."""
    return detector_from_state(load_state(path))


__all__ = [
    "DETECTOR_CLASSES",
    "BaseDetector",
    "DensityDetector",
    "EnsembleDetector",
    "KNNDetector",
    "NGramDetector",
    "PyODDetector",
    "ScalarDetector",
    "ScoreNormalizer",
    "compute_threshold",
    "detector_from_state",
    "event_count_columns",
    "event_count_matrix",
    "load_detector",
    "save_detector",
]
