"""Errors of the active-learning core (strategies, pool, label store, query log, head).

Every error a caller can cause derives from :class:`ActiveLearningError` and
from the builtin it refines, so callers can catch either (``except ValueError``
keeps working).  Messages say what was wrong, where (file, line, index, option)
and how to fix it.

The root, ``ActiveLearningError``, lives in :mod:`active_learning.errors` (one
exception root per package) and is re-exported here.
"""

from __future__ import annotations

from .errors import ActiveLearningError

__all__ = [
    "ActiveLearningError",
    "EmptyPoolError",
    "HeadError",
    "HeadNotFittedError",
    "LabelStoreError",
    "MissingDependencyError",
    "OneClassError",
    "PoolExhaustedError",
    "PoolUpdateError",
    "QueryInputError",
    "QueryLogError",
]


class EmptyPoolError(ActiveLearningError, ValueError):
    """A query was made on a pool with no rows at all."""


class PoolExhaustedError(ActiveLearningError, ValueError):
    """A query was made but no unlabelled row is left to pick from."""


class PoolUpdateError(ActiveLearningError, ValueError):
    """``Pool.update`` (or a state change) got inconsistent indices or labels."""


class QueryInputError(ActiveLearningError, ValueError):
    """A strategy got inputs of the wrong shape, with NaNs, or lacking a required array."""


class LabelStoreError(ActiveLearningError, ValueError):
    """The label store file is corrupt or a record to append is invalid."""


class QueryLogError(ActiveLearningError, ValueError):
    """The query log is corrupt, or a sequence would be sent to annotators twice."""


class OneClassError(ActiveLearningError, ValueError):
    """The head cannot be trained: the labels contain only one class."""


class HeadError(ActiveLearningError, ValueError):
    """Head inputs have the wrong shape, or a saved head file is invalid."""


class HeadNotFittedError(ActiveLearningError, AttributeError):
    """The head was used before ``fit`` (or ``load``)."""


class MissingDependencyError(ActiveLearningError, ImportError):
    """An optional dependency is not installed; the message names the extra."""
