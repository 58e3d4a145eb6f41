"""Logging set-up and progress bars for long work.

Library code logs through ``logging.getLogger(__name__)`` and shows progress
with :func:`progress`, which is silent when logging is quieter than INFO or when
``ANOMALY_SSL_NO_PROGRESS`` is set (tests, CI logs).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at emit time.

    (click's test runner swaps ``sys.stderr`` per invocation and closes it after.)
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbosity: int = 0) -> None:
    """Configure the root logger for the CLI: 0 = INFO, 1+ = DEBUG, -1 = WARNING."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_anomaly_ssl", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler._anomaly_ssl = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "httpx", "httpcore", "matplotlib", "numba", "PIL", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress_enabled() -> bool:
    """Whether progress bars should be drawn."""
    if os.environ.get("ANOMALY_SSL_NO_PROGRESS"):
        return False
    return logging.getLogger("anomaly_ssl").getEffectiveLevel() <= logging.INFO


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm progress bar on stderr that respects :func:`progress_enabled`."""
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
