"""Label Studio client fault handling, against an in-memory fake SDK and a stub HTTP server.

The fake stores projects and tasks like the server and can fail any call, before
or after doing its work (a timeout after the server stored an import is the
nasty case: the retry must not duplicate tasks).  The stub HTTP server checks
the real SDK + httpx path: 5xx retried, 401 not, a silent server times out, a
closed port is unreachable.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from label_studio_sdk.core.api_error import ApiError

from active_learning.errors import (
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioTimeoutError,
    LabelStudioUnreachable,
    ProjectNotFound,
    TaskMappingError,
)
from active_learning.ls_client import LabelStudioClient
from active_learning.ls_server import free_port
from anomaly_ssl.config import LabelStudioConfig

KEY = "sekrit-0123456789abcdef"
URL = "http://ls.test:8080"


class FakeSDK:
    """Just enough of ``label_studio_sdk.LabelStudio`` for the client, in memory."""

    def __init__(self) -> None:
        self.projects_db: dict[int, str] = {}
        self.tasks_db: dict[int, dict] = {}
        self.ids = itertools.count(1)
        self.calls: Counter[str] = Counter()
        self.failures: dict[str, list[tuple[Exception, bool]]] = {}
        ns = SimpleNamespace
        self.projects = ns(
            list=self._op("projects.list", self._list_projects),
            create=self._op("projects.create", self._create_project),
            get=self._op("projects.get", self._get_project),
            delete=self._op("projects.delete", self._delete_project),
            import_tasks=self._op("import_tasks", self._import),
            exports=ns(download_sync=self._op("export", self._export)),
        )
        self.tasks = ns(
            list=self._op("tasks.list", self._list_tasks), delete=self._op("tasks.delete", self._delete_task)
        )
        self.views = ns(create=self._op("views.create", lambda **kw: ns(id=1)))
        self.users = ns(whoami=self._op("whoami", lambda: ns(id=1, email="admin@x", username="")))
        self.versions = ns(get=self._op("version", lambda: ns(release="1.23.2")))

    def fail(self, name: str, exc: Exception, *, after: bool = False, times: int = 1) -> None:
        """Make the next ``times`` calls of ``name`` raise ``exc`` (after doing the work if ``after``)."""
        self.failures.setdefault(name, []).extend([(exc, after)] * times)

    def _op(self, name, fn):
        def call(*args, **kwargs):
            self.calls[name] += 1
            pending = self.failures.get(name)
            exc, after = pending.pop(0) if pending else (None, False)
            if exc is not None and not after:
                raise exc
            out = fn(*args, **kwargs)
            if exc is not None:
                raise exc
            return out

        return call

    def _need(self, project_id):
        if project_id not in self.projects_db:
            raise ApiError(status_code=404, body={"detail": "No Project matches the given query."})

    def _list_projects(self, title=None):
        return [SimpleNamespace(id=i, title=t) for i, t in self.projects_db.items() if title in t]

    def _create_project(self, title, **kwargs):
        pid = next(self.ids)
        self.projects_db[pid] = title
        return SimpleNamespace(id=pid)

    def _get_project(self, pid):
        self._need(pid)
        return SimpleNamespace(id=pid)

    def _delete_project(self, pid):
        self._need(pid)
        del self.projects_db[pid]
        self.tasks_db = {k: t for k, t in self.tasks_db.items() if t["project"] != pid}

    def _import(self, pid, request, return_task_ids):
        self._need(pid)
        ids = []
        for task in request:
            tid = next(self.ids)
            self.tasks_db[tid] = {
                "project": pid,
                "data": task["data"],
                "meta": task.get("meta", {}),
                "annotations": [],
            }
            ids.append(tid)
        return SimpleNamespace(task_ids=ids, task_count=len(ids))

    def _list_tasks(self, project, **kwargs):
        self._need(project)
        return [
            SimpleNamespace(id=i, meta=t["meta"], total_annotations=len(t["annotations"]))
            for i, t in self.tasks_db.items()
            if t["project"] == project
        ]

    def _delete_task(self, tid):
        del self.tasks_db[int(tid)]

    def _export(self, pid, export_type):
        self._need(pid)
        tasks = [
            {"id": i, "data": t["data"], "annotations": t["annotations"]}
            for i, t in self.tasks_db.items()
            if t["project"] == pid and t["annotations"]
        ]
        yield json.dumps(tasks).encode()

    def keys_in(self, pid):
        return sorted(t["data"]["task_key"] for t in self.tasks_db.values() if t["project"] == pid)


def _client(sdk, **kwargs):
    sleeps: list[float] = []
    kwargs.setdefault("retries", 3)
    client = LabelStudioClient(URL, KEY, backoff_s=1.0, sdk=sdk, sleep=sleeps.append, **kwargs)
    return client, sleeps


def _tasks(n, prefix="s"):
    return [{"data": {"task_key": f"{prefix}{i}", "html": "<b>x</b>"}} for i in range(n)]


def test_retries_5xx_with_exponential_backoff_then_succeeds():
    sdk = FakeSDK()
    sdk.fail("whoami", ApiError(status_code=502, body="bad gateway"), times=2)
    client, sleeps = _client(sdk)
    assert client.check()["user"] == "admin@x"
    assert sleeps == [1.0, 2.0] and sdk.calls["whoami"] == 3


def test_gives_up_on_5xx_after_the_retries():
    sdk = FakeSDK()
    sdk.fail("whoami", ApiError(status_code=503, body={"detail": "busy"}), times=10)
    client, sleeps = _client(sdk, retries=2)
    with pytest.raises(LabelStudioError, match=r"HTTP 503: busy \(after 3 attempts\)"):
        client.check()
    assert sleeps == [1.0, 2.0]


def test_client_errors_are_not_retried():
    sdk = FakeSDK()
    sdk.fail(
        "projects.create", ApiError(status_code=400, body={"validation_errors": {"label_config": ["bad"]}})
    )
    client, sleeps = _client(sdk)
    with pytest.raises(LabelStudioError, match=r"HTTP 400.*label_config"):
        client.get_or_create_project("p", "<View/>")
    assert sleeps == [] and sdk.calls["projects.create"] == 1


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_names_the_variable_but_never_the_key(status):
    sdk = FakeSDK()
    sdk.fail("whoami", ApiError(status_code=status, body={"detail": "Invalid token."}))
    client = LabelStudioClient(URL, KEY, sdk=sdk, api_key_env="MY_LS_KEY", sleep=lambda s: None)
    with pytest.raises(LabelStudioAuthError, match="rejected the API key from MY_LS_KEY") as info:
        client.check()
    assert KEY not in str(info.value) and "LEGACY_API_TOKEN" in str(info.value)
    assert sdk.calls["whoami"] == 1
    assert KEY not in repr(client)


def test_missing_key_says_which_variable_to_set():
    with pytest.raises(LabelStudioAuthError, match="set LABEL_STUDIO_API_KEY"):
        LabelStudioClient.from_config(LabelStudioConfig(), environ={})
    client = LabelStudioClient.from_config(
        LabelStudioConfig(timeout_s=5, retries=1), environ={"LABEL_STUDIO_API_KEY": "k"}, backoff_s=0.0
    )
    assert (client.timeout_s, client.retries, client.backoff_s) == (5.0, 1, 0.0)


def test_unreachable_and_timeout_after_retries():
    sdk = FakeSDK()
    sdk.fail("whoami", httpx.ConnectError("refused"), times=10)
    client, sleeps = _client(sdk, retries=2)
    with pytest.raises(
        LabelStudioUnreachable, match=rf"cannot reach Label Studio at {URL}.*label-studio start"
    ):
        client.check()
    assert len(sleeps) == 2
    sdk = FakeSDK()
    sdk.fail("projects.list", httpx.ReadTimeout("slow"), times=10)
    client, _ = _client(sdk, retries=1)
    with pytest.raises(LabelStudioTimeoutError, match="did not answer within 60 s"):
        client.find_project("p")


def test_import_is_idempotent_and_chunked():
    sdk = FakeSDK()
    client, _ = _client(sdk, chunk_size=2)
    pid = client.get_or_create_project("proj", "<View/>")
    assert client.get_or_create_project("proj", "<View/>") == pid
    first = client.import_tasks(pid, _tasks(5))
    assert sdk.calls["import_tasks"] == 3
    again = client.import_tasks(pid, _tasks(7))
    assert again[:5] == first and len(set(again)) == 7
    assert sdk.keys_in(pid) == sorted(f"s{i}" for i in range(7))
    assert all(t["meta"]["task_key"] == t["data"]["task_key"] for t in sdk.tasks_db.values())


def test_timeout_after_the_server_stored_the_tasks_leaves_no_duplicates():
    sdk = FakeSDK()
    client, sleeps = _client(sdk, chunk_size=3)
    pid = client.get_or_create_project("proj", "<View/>")
    # the 2nd chunk is stored by the server but the answer times out; the 3rd gets a 500 before storing
    sdk.failures["import_tasks"] = [
        (None, False),
        (httpx.ReadTimeout("slow"), True),
        (ApiError(status_code=500, body="oops"), False),
    ]
    ids = client.import_tasks(pid, _tasks(8))
    assert len(set(ids)) == 8 and sdk.keys_in(pid) == sorted(f"s{i}" for i in range(8))
    assert len(sleeps) == 2
    assert client.import_tasks(pid, _tasks(8)) == ids  # a rerun changes nothing


def test_rerun_after_a_crash_removes_unannotated_duplicates_only():
    sdk = FakeSDK()
    client, _ = _client(sdk)
    pid = client.get_or_create_project("proj", "<View/>")
    # a crashed earlier run imported s0 twice and s1 twice; one s1 copy got an annotation
    for key in ("s0", "s0", "s1", "s1"):
        sdk._import(pid, [{"data": {"task_key": key}, "meta": {"task_key": key}}], True)
    s1_ids = sorted(i for i, t in sdk.tasks_db.items() if t["data"]["task_key"] == "s1")
    sdk.tasks_db[s1_ids[1]]["annotations"].append({"id": 1})
    ids = client.import_tasks(pid, _tasks(3))
    assert sdk.keys_in(pid) == ["s0", "s1", "s2"]
    assert ids[1] == s1_ids[1]  # the annotated copy is kept: no label is lost


def test_import_rejects_tasks_without_unique_keys():
    client, _ = _client(FakeSDK())
    with pytest.raises(TaskMappingError, match=r"task 1 has no data\.task_key"):
        client.import_tasks(1, [{"data": {"task_key": "a"}}, {"data": {}}])
    with pytest.raises(TaskMappingError, match=r"repeat a data\.task_key"):
        client.import_tasks(1, [{"data": {"task_key": "a"}}, {"data": {"task_key": "a"}}])


def test_deleted_project_is_reported_as_such():
    sdk = FakeSDK()
    client, sleeps = _client(sdk)
    pid = client.get_or_create_project("proj", "<View/>")
    client.delete_project(pid)
    assert not client.project_exists(pid)
    with pytest.raises(ProjectNotFound, match=rf"project {pid} does not exist on {URL}.*run the query again"):
        client.import_tasks(pid, _tasks(1))
    with pytest.raises(ProjectNotFound):
        client.export_annotated(pid)
    assert sleeps == []


def test_export_falls_back_to_paging_when_the_endpoint_is_missing(monkeypatch):
    sdk = FakeSDK()
    client, _ = _client(sdk)
    pid = client.get_or_create_project("proj", "<View/>")
    sdk.fail("export", ApiError(status_code=405, body="use async export"))
    monkeypatch.setattr(client, "_export_by_paging", lambda p: [{"id": 1, "paged": p}])
    assert client.export_annotated(pid) == [{"id": 1, "paged": pid}]


# --------------------------------------------------------- real HTTP, stub server


class _Stub(BaseHTTPRequestHandler):
    script: list[tuple[int, dict]] = []
    delay_s = 0.0
    seen_auth: list[str] = []

    def do_GET(self):
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        if self.delay_s:
            time.sleep(self.delay_s)
        status, body = self.script.pop(0) if self.script else (200, {"id": 1, "email": "a@x"})
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that timed out and hung up is expected here


@pytest.fixture
def stub_server():
    handler = type("Handler", (_Stub,), {"script": [], "delay_s": 0.0, "seen_auth": []})
    httpd = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_real_http_retries_5xx_and_sends_a_legacy_token(stub_server):
    url, handler = stub_server
    handler.script[:] = [(503, {"detail": "starting"}), (500, {"detail": "boom"})]
    client = LabelStudioClient(url, KEY, retries=2, backoff_s=0.01)
    assert client.check()["user"] == "a@x"
    assert handler.seen_auth[:3] == [f"Token {KEY}"] * 3


def test_real_http_401_is_an_auth_error_without_retries(stub_server):
    url, handler = stub_server
    handler.script[:] = [(401, {"detail": "Invalid token."})]
    with pytest.raises(LabelStudioAuthError, match="HTTP 401: Invalid token"):
        LabelStudioClient(url, "wrong", retries=3, backoff_s=0.01).check()
    assert len(handler.seen_auth) == 1


def test_real_http_silent_server_times_out(stub_server):
    url, handler = stub_server
    handler.delay_s = 1.0
    with pytest.raises(LabelStudioTimeoutError, match=r"within 0\.2 s"):
        LabelStudioClient(url, KEY, timeout_s=0.2, retries=0).check()


def test_real_http_closed_port_is_unreachable():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LabelStudioUnreachable, match=r"cannot reach Label Studio at http://127\.0\.0\.1"):
        LabelStudioClient(url, KEY, retries=1, backoff_s=0.01).check()


# ------------------------------------------- managed server, fake label-studio executable

_FAKE_LABEL_STUDIO = '''#!{python}
"""Stands in for `label-studio start`: records its argv/env, then serves /health (or fails)."""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
with open(os.path.join(os.getcwd(), "fake-env.json"), "w") as fh:
    json.dump({{"argv": args, "env": dict(os.environ)}}, fh)
if os.environ.get("FAKE_LS_FAIL"):
    print("boom: database is locked", flush=True)
    sys.exit(3)
if os.environ.get("FAKE_LS_HANG"):
    time.sleep(60)
port = int(args[args.index("--port") + 1])
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b'{{"status": "UP"}}')
    def log_message(self, *a):
        pass
HTTPServer((args[args.index("--internal-host") + 1], port), H).serve_forever()
'''


@pytest.fixture
def fake_venv(tmp_path):
    import sys

    from active_learning.ls_server import _MARKER

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    exe = venv / "bin" / "label-studio"
    exe.write_text(_FAKE_LABEL_STUDIO.format(python=sys.executable))
    exe.chmod(0o755)
    (venv / _MARKER).write_text("1.23.2\n")
    return venv


def test_managed_server_start_status_stop(fake_venv, tmp_path, monkeypatch):
    from active_learning.ls_server import LabelStudioServer

    for name in ("HOST", "USERNAME", "PASSWORD", "PORT", "USER_TOKEN"):
        monkeypatch.setenv(name, "stray")
    server = LabelStudioServer(tmp_path / "data", port=0, venv_dir=fake_venv, start_timeout_s=60)
    with server:
        state = server.read_state()
        assert state.url.startswith("http://127.0.0.1:") and server.status().healthy
        assert server.start().pid == state.pid  # idempotent: the running server is reused
        recorded = json.loads((tmp_path / "data" / "fake-env.json").read_text())
        argv, env = recorded["argv"], recorded["env"]
        assert argv == ["start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(state.port)]
        assert not {"HOST", "USERNAME", "PASSWORD", "PORT", "USER_TOKEN"} & set(env)
        assert env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path / "data")
        assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
        assert env["LABEL_STUDIO_USER_TOKEN"] == server.api_key() and len(server.api_key()) == 40
        assert env["LABEL_STUDIO_PASSWORD"] == server.password()
        assert env["LABEL_STUDIO_COLLECT_ANALYTICS"] == "false"
        state_text = server.state_path.read_text()
        assert server.api_key() not in state_text and server.password() not in state_text
        assert server.token_path.stat().st_mode & 0o777 == 0o600
        assert server.password_path.stat().st_mode & 0o777 == 0o600
    assert not server.status().running and server.read_state() is None
    assert not server.stop()  # nothing left to stop


def test_managed_server_reports_a_crash_with_the_log_tail(fake_venv, tmp_path, monkeypatch):
    from active_learning.errors import LabelStudioServerError
    from active_learning.ls_server import LabelStudioServer

    monkeypatch.setenv("FAKE_LS_FAIL", "1")
    server = LabelStudioServer(tmp_path / "data", port=0, venv_dir=fake_venv)
    with pytest.raises(LabelStudioServerError, match=r"exited with code 3(.|\n)*database is locked"):
        server.start()
    assert server.read_state() is None


def test_managed_server_times_out_and_kills_the_process(fake_venv, tmp_path, monkeypatch):
    from active_learning.errors import LabelStudioServerError
    from active_learning.ls_server import LabelStudioServer

    monkeypatch.setenv("FAKE_LS_HANG", "1")
    server = LabelStudioServer(tmp_path / "data", port=0, venv_dir=fake_venv, start_timeout_s=1.0)
    with pytest.raises(LabelStudioServerError, match=r"did not become healthy .* within 1 s"):
        server.start()
    assert server.read_state() is None


def test_managed_server_refuses_a_busy_port(fake_venv, tmp_path):
    import socket

    from active_learning.errors import LabelStudioServerError
    from active_learning.ls_server import LabelStudioServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = LabelStudioServer(tmp_path / "data", port=port, venv_dir=fake_venv)
        with pytest.raises(LabelStudioServerError, match=f"port {port} .* already in use"):
            server.start()


def test_venv_location_and_cli(fake_venv, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from active_learning.ls_server import default_venv_dir
    from anomaly_ssl.cli import cli

    assert default_venv_dir({"ANOMALY_SSL_LS_VENV": "/x/venv"}) == Path("/x/venv")
    assert default_venv_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/anomaly-ssl/label-studio-venv")
    monkeypatch.setenv("ANOMALY_SSL_LS_VENV", str(fake_venv))
    runner = CliRunner()
    data = str(tmp_path / "data")
    result = runner.invoke(cli, ["label-studio", "start", "--port", "0", "--data-dir", data])
    try:
        assert result.exit_code == 0, result.output
        assert "export LABEL_STUDIO_API_KEY=" in result.output and "label_studio.url=" in result.output
        result = runner.invoke(cli, ["label-studio", "status", "--data-dir", data])
        assert result.exit_code == 0 and "healthy" in result.output
    finally:
        result = runner.invoke(cli, ["label-studio", "stop", "--data-dir", data])
    assert result.exit_code == 0 and "stopped" in result.output
    result = runner.invoke(cli, ["label-studio", "status", "--data-dir", data])
    assert result.exit_code == 1 and "not running" in result.output


def test_a_server_that_is_not_label_studio_is_named(stub_server):
    url, handler = stub_server
    handler.script[:] = [(200, "<html>welcome to nginx</html>"), (200, '"just a string"')]
    for _ in range(2):
        with pytest.raises(LabelStudioError, match="not Label Studio's API"):
            LabelStudioClient(url, KEY, retries=0).check()
