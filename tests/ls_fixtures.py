"""Pytest fixtures for a real Label Studio server, shared by the whole test session.

Wire them in ``tests/conftest.py`` with
``from ls_fixtures import label_studio_server, label_studio_project  # noqa: F401``.

The server runs from the venv in ``$ANOMALY_SSL_LS_VENV`` (else the default cache,
``~/.cache/anomaly-ssl/label-studio-venv``; create it with ``anomaly-ssl
label-studio install``) on a free port of 127.0.0.1 with a temporary data dir;
the first start takes about 30 s, so one server serves every test.  Without the
venv the tests skip locally but **fail** when ``CI`` is set, so CI can never
pass by silently skipping them.  Tests using these fixtures should carry
``@pytest.mark.labelstudio``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from active_learning.errors import ActiveLearningError, LabelStudioServerError
from active_learning.ls_client import LabelStudioClient
from active_learning.ls_mapping import render_label_config
from active_learning.ls_server import VENV_ENV, LabelStudioServer, default_venv_dir
from anomaly_ssl.config import LabelStudioConfig

__all__ = ["RunningLabelStudio", "label_studio_project", "label_studio_server", "require_server_venv"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@dataclass
class RunningLabelStudio:
    """A started server: where it is and how to log in (tests only)."""

    url: str
    api_key: str
    username: str
    password: str
    data_dir: Path
    server: LabelStudioServer

    def client(self, **kwargs: Any) -> LabelStudioClient:
        """A client for this server with the admin's key (fast retries for tests)."""
        kwargs.setdefault("backoff_s", 0.05)
        kwargs.setdefault("timeout_s", 60.0)
        return LabelStudioClient(self.url, self.api_key, **kwargs)


def require_server_venv() -> Path:
    """The server venv; skip (locally) or fail (``CI`` set) when it is missing."""
    venv = default_venv_dir()
    server = LabelStudioServer(venv_dir=venv)
    if server.executable.exists() and server.installed_version() is not None:
        return venv
    message = (
        f"no Label Studio server venv at {venv}: run `anomaly-ssl label-studio install` "
        f"(or set {VENV_ENV} to an existing one)"
    )
    if _in_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")  # pragma: no cover


@pytest.fixture(scope="session")
def label_studio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLabelStudio]:
    """Start one real Label Studio server for the test session; stop it afterwards."""
    venv = require_server_venv()
    data_dir = tmp_path_factory.mktemp("label-studio")
    server = LabelStudioServer(data_dir, port=0, venv_dir=venv, start_timeout_s=600)
    try:
        state = server.start()
    except LabelStudioServerError as exc:
        pytest.fail(f"could not start the Label Studio test server: {exc}", pytrace=False)
    try:
        yield RunningLabelStudio(
            url=state.url,
            api_key=server.api_key(),
            username=state.username,
            password=server.password(),
            data_dir=data_dir,
            server=server,
        )
    finally:
        assert server.stop(), "the Label Studio test server was not running at teardown"
        assert not server.status().running


@pytest.fixture
def label_studio_project(label_studio_server: RunningLabelStudio) -> Iterator[tuple[LabelStudioClient, int]]:
    """A fresh project with the real labeling config: ``(client, project_id)``; deleted afterwards."""
    client = label_studio_server.client()
    title = f"test-{uuid.uuid4().hex[:10]}"
    project_id = client.get_or_create_project(title, render_label_config(LabelStudioConfig().taxonomy))
    yield client, project_id
    with contextlib.suppress(ActiveLearningError):
        client.delete_project(project_id)
