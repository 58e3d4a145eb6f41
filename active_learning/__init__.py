"""Active learning for anomaly-ssl: spend each scarce label where it teaches most.

Query strategies pick borderline, diverse sequences from a run's scores; Label
Studio (a managed local server or your own) collects annotators' judgements;
the labels train a classification head blended into the score.  Public API
(imported lazily)::

    from active_learning import LabelStudioServer, LabelStudioClient
    from active_learning import query_labels, sync_labels, finetune_run, answer_pending
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ActiveLearningError": ".errors",
    "OneClassError": ".al_errors",
    "PoolExhaustedError": ".al_errors",
    "EmptyPoolError": ".al_errors",
    "LabelStudioServer": ".ls_server",
    "LabelStudioClient": ".ls_client",
    "query_labels": ".loop",
    "sync_labels": ".loop",
    "finetune_run": ".finetune",
    "load_rescorer": ".finetune",
    "answer_pending": ".oracle",
    "truth_from_labels": ".oracle",
    "LabelStore": ".label_store",
    "QueryLog": ".query_log",
    "AnomalyHead": ".head",
    "make_strategy": ".strategies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'active_learning' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
