"""anomaly-ssl: self-supervised anomaly detection for event sequences.

Pretrain a masked-event Transformer on unlabelled sequences, score every
sequence (kNN/density on embeddings, masked-event surprise, PyOD detectors),
and sharpen the detector with a few labels gathered in Label Studio.

The public API (imported lazily, so ``import anomaly_ssl`` stays fast)::

    from anomaly_ssl import load_config, simulate_shop, load_sequences, pretrain
    from anomaly_ssl import load_run, score_file, score_table, evaluate_scores, build_report

The active-learning loop lives in the :mod:`active_learning` package.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Config": ".config",
    "load_config": ".config_loader",
    "simulate_shop": ".data.simulator",
    "inject_anomalies": ".data.simulator",
    "load_sequences": ".data",
    "read_labels": ".data",
    "Vocabulary": ".data",
    "inspect_data": ".data",
    "pretrain": ".pretrain",
    "pretrain_encoded": ".pretrain",
    "load_model": ".pretrain",
    "load_run": ".pipeline",
    "score_file": ".pipeline",
    "score_table": ".pipeline",
    "fit_run_detectors": ".pipeline",
    "SequenceScorer": ".scoring",
    "evaluate_scores": ".evaluate",
    "evaluate_files": ".evaluate",
    "build_report": ".report",
    "RunDir": ".run",
    "AnomalySSLError": ".errors",
    "DataError": ".errors",
    "ConfigError": ".errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'anomaly_ssl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
