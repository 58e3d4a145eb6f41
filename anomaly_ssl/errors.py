"""Exception hierarchy of anomaly-ssl.

Every error a user can cause derives from :class:`AnomalySSLError` and from the
builtin exception it refines, so callers can catch either.  Messages say what
was wrong, where (file, column, row, option) and how to fix it; the CLI prints
them as one line and exits non-zero without a traceback.
"""

from __future__ import annotations


class AnomalySSLError(Exception):
    """Root of all anomaly-ssl errors."""

    #: process exit code the CLI uses for this kind of error
    exit_code: int = 1


class ConfigError(AnomalySSLError, ValueError):
    """A configuration key, value or file is invalid (usage error, exit 2)."""

    exit_code = 2


class DataError(AnomalySSLError, ValueError):
    """Input data is missing, malformed or inconsistent with the configuration."""


class ModelError(AnomalySSLError, ValueError):
    """A model configuration or checkpoint is invalid."""


class RunDirError(AnomalySSLError, FileNotFoundError):
    """A run directory is missing, incomplete or from an incompatible version."""


class NotFittedError(AnomalySSLError, AttributeError):
    """A detector or model was used before ``fit``."""


class DependencyError(AnomalySSLError, ImportError):
    """An optional dependency is not installed; the message names the extra."""
