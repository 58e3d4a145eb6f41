"""A managed local Label Studio server: install into its own venv, start, stop, status.

Label Studio pins its SDK, Django and other packages exactly, so it lives in a
virtual environment of its own (default ``~/.cache/anomaly-ssl/label-studio-venv``,
or ``$ANOMALY_SSL_LS_VENV``), created with ``python -m venv`` and pip on first
use.  :class:`LabelStudioServer` starts it detached (own session, output to
``DATA_DIR/server.log``) on 127.0.0.1 with a data directory, an admin account
and a random legacy API token created non-interactively, waits until
``GET /health`` answers, and records pid/port/url in ``DATA_DIR/server.json``.
The token and the admin password are kept only in ``0600`` files in the data
directory (``api_token``, ``admin_password``) and never logged; the CLI prints
the token once on ``start`` as an ``export`` hint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anomaly_ssl.io import atomic_write_text

from .errors import LabelStudioServerError

log = logging.getLogger(__name__)

#: the Label Studio version installed into the managed venv
LABEL_STUDIO_VERSION = "1.23.2"
#: environment variable overriding the venv location
VENV_ENV = "ANOMALY_SSL_LS_VENV"
DEFAULT_USERNAME = "admin@anomaly-ssl.local"
STATE_FILE = "server.json"
TOKEN_FILE = "api_token"
PASSWORD_FILE = "admin_password"
LOG_FILE = "server.log"
_MARKER = ".anomaly-ssl-label-studio"
#: variables Label Studio would read as settings (it falls back from LABEL_STUDIO_X to plain X)
_STRAY_VARS = ("HOST", "USERNAME", "PASSWORD", "PORT", "USER_TOKEN")
_QUIET_VARS = {
    "LABEL_STUDIO_SENTRY_DSN": "",
    "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
    "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
    "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
}


def default_venv_dir(environ: dict[str, str] | None = None) -> Path:
    """``$ANOMALY_SSL_LS_VENV``, else ``$XDG_CACHE_HOME/anomaly-ssl/label-studio-venv`` (``~/.cache``)."""
    env = os.environ if environ is None else environ
    if env.get(VENV_ENV):
        return Path(env[VENV_ENV]).expanduser()
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "anomaly-ssl" / "label-studio-venv"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: make sure the pid was not reused by another program
        with contextlib.suppress(OSError):
            text = cmdline.read_bytes().replace(b"\0", b" ")
            return b"label-studio" in text or b"label_studio" in text
    return True


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    os.chmod(path, 0o600)


@dataclass
class ServerState:
    """What ``server.json`` records about a started server (no secrets)."""

    pid: int
    port: int
    url: str
    username: str
    data_dir: str
    started_at: float
    version: str = LABEL_STUDIO_VERSION


@dataclass
class ServerStatus:
    """The answer of :meth:`LabelStudioServer.status`."""

    running: bool
    healthy: bool
    url: str | None
    pid: int | None
    data_dir: str


class LabelStudioServer:
    """A Label Studio server managed by anomaly-ssl.

    Parameters
    ----------
    data_dir : str or Path
        Database, media, credentials, log and state live here (``.label-studio``).
    port : int
        Port on 127.0.0.1; 0 picks a free one at start.
    venv_dir : str or Path, optional
        The server's virtual environment (see :func:`default_venv_dir`).
    host : str
        Interface to listen on; keep 127.0.0.1 unless annotators connect from elsewhere.
    username : str
        The admin account (an e-mail address) created on the first start.
    start_timeout_s : float
        How long to wait for ``/health`` (the first start migrates a database: ~30 s).
    """

    def __init__(
        self,
        data_dir: str | Path = ".label-studio",
        port: int = 8080,
        venv_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        username: str = DEFAULT_USERNAME,
        start_timeout_s: float = 600.0,
        version: str = LABEL_STUDIO_VERSION,
    ) -> None:
        if not 0 <= port <= 65535:
            raise LabelStudioServerError(f"--port must be in [0, 65535], got {port}")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = int(port)
        self.venv_dir = Path(venv_dir).expanduser().resolve() if venv_dir else default_venv_dir()
        self.host = host
        self.username = username
        self.start_timeout_s = float(start_timeout_s)
        self.version = version
        self._started_here = False

    # -------------------------------------------------------------- paths
    @property
    def executable(self) -> Path:
        """The ``label-studio`` command inside the venv."""
        return self.venv_dir / ("Scripts" if os.name == "nt" else "bin") / "label-studio"

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    @property
    def token_path(self) -> Path:
        return self.data_dir / TOKEN_FILE

    @property
    def password_path(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    # -------------------------------------------------------------- install
    def installed_version(self) -> str | None:
        """The Label Studio version installed in the venv, or None when it is missing or broken.

        Asks the venv's Python for the package metadata and whether the
        ``label_studio`` package can be found (about a second, where
        ``label-studio version`` boots Django and takes much longer).
        """
        python = self.executable.parent / "python"
        if not self.executable.exists() or not python.exists():
            return None
        probe = (
            "import importlib.metadata as m, importlib.util as u; "
            "assert u.find_spec('label_studio') is not None; print(m.version('label-studio'))"
        )
        try:
            proc = subprocess.run(
                [str(python), "-c", probe], capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.debug("probing %s failed: %s", python, exc)
            return None
        if proc.returncode != 0:
            return None
        return proc.stdout.strip() or None

    def ensure_installed(self) -> Path:
        """Install ``label-studio==VERSION`` into the venv unless it is there; return the command.

        Takes about a minute and 1 GB the first time; later calls only check a
        marker file (or, for a venv made elsewhere, the package metadata).
        """
        marker = self.venv_dir / _MARKER
        if self.executable.exists() and marker.exists():
            return self.executable
        found = self.installed_version()
        if found is not None:
            if found != self.version:
                log.warning(
                    "Label Studio %s found in %s (anomaly-ssl is tested with %s)",
                    found,
                    self.venv_dir,
                    self.version,
                )
            marker.write_text(found + "\n", encoding="utf-8")
            return self.executable
        if self.venv_dir.exists() and any(self.venv_dir.iterdir()):
            if not (self.venv_dir / "pyvenv.cfg").exists():
                raise LabelStudioServerError(
                    f"{self.venv_dir} exists but is not a virtual environment; remove it or choose "
                    f"another with --venv / ${VENV_ENV}"
                )
            log.info("repairing the Label Studio venv %s", self.venv_dir)
        self._install()
        found = self.installed_version()
        if found is None:
            raise LabelStudioServerError(
                f"installed label-studio=={self.version} into {self.venv_dir}, but the package cannot "
                f"be found there; see {self.venv_dir / 'install.log'}"
            )
        marker.write_text(found + "\n", encoding="utf-8")
        log.info("Label Studio %s is ready in %s", found, self.venv_dir)
        return self.executable

    def _install(self) -> None:
        self.venv_dir.parent.mkdir(parents=True, exist_ok=True)
        install_log = self.venv_dir.parent / f"{self.venv_dir.name}-install.log"
        log.info(
            "installing label-studio==%s into %s (about a minute, ~1 GB; log: %s)",
            self.version,
            self.venv_dir,
            install_log,
        )
        steps = [
            [sys.executable, "-m", "venv", str(self.venv_dir)],
            [str(self.venv_dir / "bin" / "python"), "-m", "pip", "install", f"label-studio=={self.version}"],
        ]
        with open(install_log, "w", encoding="utf-8") as out:
            for cmd in steps:
                out.write("$ " + " ".join(cmd) + "\n")
                out.flush()
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                assert proc.stdout is not None
                for line in proc.stdout:
                    out.write(line)
                    if line.startswith(("Collecting label-studio", "Installing collected", "Successfully")):
                        log.info("pip: %s", line.strip()[:160])
                    else:
                        log.debug("pip: %s", line.rstrip())
                if proc.wait() != 0:
                    raise LabelStudioServerError(
                        f"installing Label Studio failed ({' '.join(cmd[-2:])} exited {proc.returncode}); "
                        f"last lines of {install_log}:\n{_tail(install_log, 15)}"
                    )
        with contextlib.suppress(OSError):
            shutil.copy(install_log, self.venv_dir / "install.log")

    # -------------------------------------------------------------- run
    def _environment(
        self, data_dir: Path, token: str | None = None, password: str | None = None
    ) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if k not in _STRAY_VARS and not k.startswith("VIRTUAL_ENV")
        }
        env.update(_QUIET_VARS)
        env["LABEL_STUDIO_BASE_DATA_DIR"] = str(data_dir)
        env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] = "true"
        env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] = "true"
        env["PATH"] = f"{self.executable.parent}{os.pathsep}{env.get('PATH', '')}"
        if token is not None and password is not None:
            env["LABEL_STUDIO_USERNAME"] = self.username
            env["LABEL_STUDIO_PASSWORD"] = password
            env["LABEL_STUDIO_USER_TOKEN"] = token
        return env

    def read_state(self) -> ServerState | None:
        """The recorded state, or None when no server was started from this data dir."""
        try:
            return ServerState(**json.loads(self.state_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def api_key(self) -> str:
        """The admin's legacy API token (read from the ``0600`` file in the data dir)."""
        try:
            return self.token_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LabelStudioServerError(
                f"no API token in {self.token_path}; start the server with `anomaly-ssl label-studio "
                "start` first, or use a Personal Access Token from the UI"
            ) from exc

    def password(self) -> str:
        """The admin's password (from the ``0600`` file in the data dir)."""
        try:
            return self.password_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LabelStudioServerError(f"no admin password in {self.password_path}") from exc

    def _credentials(self) -> tuple[str, str]:
        fresh = not (self.data_dir / "label_studio.sqlite3").exists()
        if self.token_path.exists() and self.password_path.exists():
            return self.api_key(), self.password()
        if not fresh:
            raise LabelStudioServerError(
                f"{self.data_dir} holds a Label Studio database but no {TOKEN_FILE}/{PASSWORD_FILE}; "
                "use a new --data-dir, or start label-studio yourself and pass --url with your own key"
            )
        token, password = secrets.token_hex(20), secrets.token_urlsafe(18)
        _write_secret(self.token_path, token)
        _write_secret(self.password_path, password)
        return token, password

    def healthy(self, url: str, timeout_s: float = 2.0) -> bool:
        """Whether ``GET url/health`` answers ``{"status": "UP"}``."""
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as resp:
                return resp.status == 200 and b"UP" in resp.read()
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def start(self) -> ServerState:
        """Start the server (installing it first if needed) and wait until it is healthy.

        When a server from this data directory is already running and healthy,
        its state is returned and nothing new is started.
        """
        state = self.read_state()
        if state is not None and _pid_alive(state.pid):
            if self.healthy(state.url):
                log.info("Label Studio is already running at %s (pid %d)", state.url, state.pid)
                return state
            raise LabelStudioServerError(
                f"a Label Studio server from {self.data_dir} (pid {state.pid}) runs but {state.url}/health "
                "does not answer (still starting?); wait, or stop it with `anomaly-ssl label-studio stop`"
            )
        self.ensure_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_port(self.host)
        if _port_in_use(self.host, port):
            raise LabelStudioServerError(
                f"port {port} on {self.host} is already in use; "
                "choose another with --port (0 = any free port)"
            )
        token, password = self._credentials()
        cmd = [
            str(self.executable),
            "start",
            "--no-browser",
            "--internal-host",
            self.host,
            "--port",
            str(port),
        ]
        url = f"http://{self.host}:{port}"
        log.info("starting Label Studio at %s (data: %s, log: %s)", url, self.data_dir, self.log_path)
        with open(self.log_path, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                env=self._environment(self.data_dir, token, password),
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = ServerState(proc.pid, port, url, self.username, str(self.data_dir), time.time(), self.version)
        atomic_write_text(self.state_path, json.dumps(asdict(state), indent=2) + "\n")
        self._wait_healthy(proc, url)
        self._started_here = True
        return state

    def _wait_healthy(self, proc: subprocess.Popen[bytes], url: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.state_path.unlink(missing_ok=True)
                raise LabelStudioServerError(
                    f"Label Studio exited with code {proc.returncode} during start-up; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self.healthy(url):
                log.info("Label Studio is up at %s (pid %d)", url, proc.pid)
                return
            time.sleep(0.5)
        self._kill_group(proc.pid, timeout_s=10.0)
        self.state_path.unlink(missing_ok=True)
        raise LabelStudioServerError(
            f"Label Studio did not become healthy at {url}/health within {self.start_timeout_s:g} s; "
            f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    @staticmethod
    def _kill_group(pid: int, timeout_s: float) -> None:
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)  # the server started its own session: pgid == pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # reap it when we are its parent
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)

    def stop(self, timeout_s: float = 15.0) -> bool:
        """Stop the server started from this data dir (SIGTERM, then SIGKILL); False if none ran."""
        state = self.read_state()
        if state is None:
            return False
        running = _pid_alive(state.pid)
        if running:
            log.info("stopping Label Studio (pid %d)", state.pid)
            self._kill_group(state.pid, timeout_s)
        self.state_path.unlink(missing_ok=True)
        self._started_here = False
        return running

    def status(self) -> ServerStatus:
        """Whether the recorded server process runs and answers ``/health``."""
        state = self.read_state()
        if state is None:
            return ServerStatus(False, False, None, None, str(self.data_dir))
        running = _pid_alive(state.pid)
        return ServerStatus(
            running, running and self.healthy(state.url), state.url, state.pid, str(self.data_dir)
        )

    def __enter__(self) -> LabelStudioServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._started_here:
            self.stop()
