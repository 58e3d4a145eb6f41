"""The Label Studio adapter: the only module that talks to ``label_studio_sdk``.

:class:`LabelStudioClient` wraps the 2.x SDK client (``LabelStudio(base_url,
api_key)``, which exchanges Personal Access Tokens for short-lived Bearer tokens
and sends legacy tokens as ``Token``) behind a few operations the active-learning
loop needs, and turns transport and HTTP failures into the typed errors of
:mod:`active_learning.errors`.  Connection errors, timeouts and 5xx/429 answers
are retried with exponential backoff; other 4xx answers are not.  Task imports
are idempotent: every task carries a stable ``task_key`` (in ``data`` and
``meta``), keys already in the project are skipped, and after an uncertain
failure (a timeout mid-push) the project is re-listed before retrying, so a
rerun never creates duplicate tasks.  The API key is only ever sent to the
configured server and never logged or put in a message.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from .errors import (
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioTimeoutError,
    LabelStudioUnreachable,
    ProjectNotFound,
    TaskMappingError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: environment variable holding the key unless the config names another
DEFAULT_API_KEY_ENV = "LABEL_STUDIO_API_KEY"
_PAGE = 500
#: the first Data Manager tab of a new project: most anomalous first, no raw HTML column
_DEFAULT_VIEW: dict[str, Any] = {
    "title": "By anomaly score",
    "type": "list",
    "target": "tasks",
    "ordering": ["-tasks:predictions_score"],
    "hiddenColumns": {
        "explore": [
            "tasks:data.html", "tasks:data.task_key", "tasks:data.model_version", "tasks:inner_id",
            "tasks:annotations_results", "tasks:annotations_ids", "tasks:predictions_results",
            "tasks:predictions_model_versions", "tasks:file_upload", "tasks:storage_filename",
            "tasks:created_at", "tasks:updated_at", "tasks:updated_by", "tasks:draft_exists",
        ],
        "labeling": [
            "tasks:data.html", "tasks:data.task_key", "tasks:data.model_version", "tasks:data.entity",
            "tasks:data.threshold", "tasks:data.model_says", "tasks:data.n_events", "tasks:inner_id",
            "tasks:completed_at", "tasks:cancelled_annotations", "tasks:total_predictions",
            "tasks:annotators", "tasks:annotations_results", "tasks:annotations_ids",
            "tasks:predictions_score", "tasks:predictions_model_versions", "tasks:predictions_results",
            "tasks:file_upload", "tasks:storage_filename", "tasks:created_at", "tasks:updated_at",
            "tasks:updated_by", "tasks:avg_lead_time", "tasks:draft_exists",
        ],
    },
}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _detail(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("detail", "validation_errors", "message", "error"):
            if body.get(key):
                value = body[key]
                return value if isinstance(value, str) else json.dumps(value)[:500]
    return str(body)[:500]


class LabelStudioClient:
    """A thin, retrying adapter over the Label Studio SDK.

    Parameters
    ----------
    url : str
        Server base URL, e.g. ``http://127.0.0.1:8080``.
    api_key : str
        A Personal Access Token or a legacy API token.  Never logged.
    timeout_s : float
        Per-request timeout in seconds (raise it for imports of many thousands of tasks).
    retries : int
        Extra attempts after a connection error, timeout or 5xx/429 answer.
    backoff_s : float
        First retry delay; it doubles on every further attempt (capped at 30 s).
    chunk_size : int
        Tasks per import request.
    api_key_env : str
        Name of the environment variable the key came from (for error messages).
    sdk : object, optional
        A pre-built SDK client (tests).
    sleep : callable
        ``time.sleep`` replacement (tests).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout_s: float = 60.0,
        retries: int = 3,
        *,
        backoff_s: float = 1.0,
        chunk_size: int = 500,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        sdk: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise LabelStudioError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        if not api_key:
            raise LabelStudioAuthError(
                f"no Label Studio API key: set {api_key_env} (Account & Settings -> Personal Access "
                "Token in the UI, or the token `anomaly-ssl label-studio start` printed)"
            )
        if retries < 0 or timeout_s <= 0 or chunk_size < 1:
            raise LabelStudioError("retries must be >= 0, timeout_s > 0 and chunk_size >= 1")
        self.url = url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.chunk_size = int(chunk_size)
        self.api_key_env = api_key_env
        self._api_key = api_key
        self._sleep = sleep
        self._sdk = sdk

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r}, timeout_s={self.timeout_s}, retries={self.retries})"

    @classmethod
    def from_config(
        cls, cfg: Any, environ: Mapping[str, str] | None = None, **kwargs: Any
    ) -> LabelStudioClient:
        """Build a client from a :class:`~anomaly_ssl.config.LabelStudioConfig` and the environment."""
        env = os.environ if environ is None else environ
        params: dict[str, Any] = {
            "timeout_s": cfg.timeout_s,
            "retries": cfg.retries,
            "api_key_env": cfg.api_key_env,
        }
        params.update(kwargs)
        return cls(cfg.url, env.get(cfg.api_key_env, ""), **params)

    # ------------------------------------------------------------ plumbing
    @property
    def sdk(self) -> Any:
        """The underlying ``label_studio_sdk.LabelStudio`` client (created on first use)."""
        if self._sdk is None:
            try:
                from label_studio_sdk import LabelStudio
                from label_studio_sdk.core.api_error import ApiError
            except ImportError as exc:  # pragma: no cover - a declared dependency
                raise LabelStudioError(
                    "label-studio-sdk is not installed: pip install 'label-studio-sdk>=2,<3'"
                ) from exc
            try:
                # our own retry loop decides what is safe to retry, so the SDK's is off
                self._sdk = LabelStudio(
                    base_url=self.url, api_key=self._api_key, timeout=self.timeout_s, max_retries=0
                )
            except ApiError as exc:  # an expired or malformed JWT is rejected up front
                raise self._auth_error(exc.status_code, exc.body) from None
        return self._sdk

    def _auth_error(self, status: int | None, body: Any) -> LabelStudioAuthError:
        return LabelStudioAuthError(
            f"Label Studio at {self.url} rejected the API key from {self.api_key_env} "
            f"(HTTP {status}: {_detail(body)}). Set {self.api_key_env} to a Personal Access Token "
            "(Account & Settings in the UI) or a legacy token; legacy tokens only work when the "
            "organisation enables them (LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true on the server's "
            "first start, as `anomaly-ssl label-studio start` does)"
        )

    def _call(
        self, what: str, fn: Callable[[], T], project_id: int | None = None, retries: int | None = None
    ) -> T:
        """Run ``fn`` with retries; translate failures into :mod:`active_learning.errors`."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            try:
                return fn()
            except ApiError as exc:
                status = exc.status_code or 0
                if status in (401, 403):
                    raise self._auth_error(status, exc.body) from None
                if status == 404 and project_id is not None:
                    raise ProjectNotFound(
                        f"Label Studio project {project_id} does not exist on {self.url} (deleted?) while "
                        f"trying to {what}; run the query again to create a new project (labels already "
                        "synced stay in the label store)"
                    ) from None
                if 200 <= status < 300:  # the SDK could not parse a successful answer
                    raise LabelStudioError(
                        f"{self.url} answered the request to {what} with something that is not Label "
                        f"Studio's API ({_detail(exc.body)[:120]!r}); check label_studio.url / --url"
                    ) from None
                transient = status >= 500 or status == 429
                if not transient or attempt >= retries:
                    error = LabelStudioError(
                        f"Label Studio at {self.url} failed to {what}: HTTP {status}: {_detail(exc.body)}"
                        + (f" (after {attempt + 1} attempts)" if transient else "")
                    )
                    error.status_code = status  # type: ignore[attr-defined]
                    raise error from None
                reason: str = f"HTTP {status}"
            except httpx.TimeoutException as exc:
                if attempt >= retries:
                    raise LabelStudioTimeoutError(
                        f"Label Studio at {self.url} did not answer within {self.timeout_s:g} s while "
                        f"trying to {what} ({attempt + 1} attempts); raise label_studio.timeout_s or check "
                        "the server's load. Re-running is safe: imports skip tasks already there"
                    ) from exc
                reason = type(exc).__name__
            except httpx.TransportError as exc:
                if attempt >= retries:
                    raise LabelStudioUnreachable(
                        f"cannot reach Label Studio at {self.url} to {what} ({type(exc).__name__} after "
                        f"{attempt + 1} attempts). Start a local server with `anomaly-ssl label-studio "
                        "start`, or point label_studio.url (--url) at a running one"
                    ) from exc
                reason = type(exc).__name__
            except (TypeError, ValueError, KeyError) as exc:  # the SDK could not parse the answer
                raise LabelStudioError(
                    f"{self.url} answered the request to {what} with something that is not Label "
                    f"Studio's API ({type(exc).__name__}: {str(exc)[:200]}); check label_studio.url / --url"
                ) from exc
            self._backoff(what, reason, attempt, retries)
            attempt += 1

    def _backoff(self, what: str, reason: str, attempt: int, retries: int) -> None:
        delay = min(self.backoff_s * 2**attempt, 30.0)
        log.warning(
            "Label Studio: %s failed (%s); retry %d/%d in %.1f s", what, reason, attempt + 1, retries, delay
        )
        self._sleep(delay)

    # ------------------------------------------------------------ operations
    def check(self) -> dict[str, Any]:
        """Check the server answers and accepts the key; return ``{"url", "user", "version"}``."""
        user = self._call("check the API key", lambda: self.sdk.users.whoami())
        version = None
        try:
            version = self._call("read the server version", lambda: self.sdk.versions.get())
            version = getattr(version, "release", None)
        except LabelStudioError:
            pass
        return {
            "url": self.url,
            "user": getattr(user, "email", None) or getattr(user, "username", None),
            "version": version,
        }

    def find_project(self, title: str) -> int | None:
        """The id of the oldest project titled exactly ``title``, or None."""
        projects = self._call("list projects", lambda: list(self.sdk.projects.list(title=title)))
        ids = sorted(int(p.id) for p in projects if p.title == title)
        return ids[0] if ids else None

    def get_or_create_project(
        self,
        title: str,
        label_config: str,
        description: str = "",
        *,
        annotators_per_task: int = 1,
        prelabel: bool = False,
    ) -> int:
        """Return the id of the project titled ``title``, creating it with ``label_config`` if absent.

        A new project gets a Data Manager tab sorted by prediction score (highest
        anomaly score first) that hides the bulky HTML column; each task is
        offered to ``annotators_per_task`` annotators; with ``prelabel=False``
        the model's verdict is shown in the view but not pre-selected (so it
        does not anchor the annotator).  An existing project is returned as is
        (its config and annotations are kept).
        """
        found = self.find_project(title)
        if found is not None:
            return found
        if annotators_per_task < 1:
            raise LabelStudioError(f"annotators_per_task must be >= 1, got {annotators_per_task}")
        project = self._call(
            f"create project {title!r}",
            lambda: self.sdk.projects.create(
                title=title,
                label_config=label_config,
                description=description,
                maximum_annotations=annotators_per_task,
                overlap_cohort_percentage=100,
                show_collab_predictions=prelabel,
            ),
        )
        project_id = int(project.id)
        self._call(
            "create the Data Manager tab",
            lambda: self.sdk.views.create(project=project_id, data=_DEFAULT_VIEW),
            project_id=project_id,
        )
        log.info("created Label Studio project %d %r at %s", project_id, title, self.url)
        return project_id

    def project_exists(self, project_id: int) -> bool:
        """Whether project ``project_id`` exists on the server."""
        try:
            self._call("read the project", lambda: self.sdk.projects.get(project_id), project_id=project_id)
        except ProjectNotFound:
            return False
        return True

    def delete_project(self, project_id: int) -> None:
        """Delete a project with its tasks and annotations."""
        self._call("delete the project", lambda: self.sdk.projects.delete(project_id), project_id=project_id)

    def existing_tasks(self, project_id: int) -> dict[str, list[tuple[int, int]]]:
        """``task_key -> [(task id, number of annotations), ...]`` for tasks imported by this client."""

        def fetch() -> list[Any]:
            pager = self.sdk.tasks.list(
                project=project_id, fields="task_only", include="id,meta,total_annotations", page_size=_PAGE
            )
            return list(pager)

        out: dict[str, list[tuple[int, int]]] = {}
        for task in self._call("list tasks", fetch, project_id=project_id):
            key = (getattr(task, "meta", None) or {}).get("task_key")
            if key is not None:
                out.setdefault(str(key), []).append((int(task.id), int(task.total_annotations or 0)))
        return out

    def _remove_duplicates(
        self, project_id: int, existing: dict[str, list[tuple[int, int]]]
    ) -> dict[str, int]:
        """Keep one task per key (the oldest, or any with annotations); return ``key -> id``."""
        keep: dict[str, int] = {}
        for key, tasks in existing.items():
            tasks = sorted(tasks, key=lambda t: (t[1] == 0, t[0]))
            keep[key] = tasks[0][0]
            for task_id, n_ann in tasks[1:]:
                if n_ann:
                    log.warning(
                        "task key %r has two annotated tasks (%d, %d); keeping both", key, keep[key], task_id
                    )
                    continue
                log.info("removing duplicate task %d (key %r)", task_id, key)
                self._call(
                    "delete a duplicate task",
                    lambda t=task_id: self.sdk.tasks.delete(str(t)),
                    project_id=project_id,
                )
        return keep

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import tasks (with predictions) idempotently; return their task ids in input order.

        Each task needs a unique ``data.task_key``.  Tasks whose key is already in
        the project are not imported again (their existing id is returned), so a
        rerun after a crash or a timeout leaves no duplicates.
        """
        keys = []
        for i, task in enumerate(tasks):
            key = (task.get("data") or {}).get("task_key")
            if not key:
                raise TaskMappingError(
                    f"task {i} has no data.task_key; build tasks with ls_mapping.build_task"
                )
            keys.append(str(key))
        if len(set(keys)) != len(keys):
            raise TaskMappingError("tasks to import repeat a data.task_key; each sequence must appear once")
        ids = self._remove_duplicates(project_id, self.existing_tasks(project_id))
        todo = [
            {**task, "meta": {**(task.get("meta") or {}), "task_key": key}}
            for task, key in zip(tasks, keys)
            if key not in ids
        ]
        if len(todo) < len(tasks):
            log.info(
                "%d of %d tasks are already in project %d; importing %d",
                len(tasks) - len(todo),
                len(tasks),
                project_id,
                len(todo),
            )
        for chunk in _chunks(todo, self.chunk_size):
            ids.update(self._import_chunk(project_id, list(chunk)))
        return [ids[key] for key in keys]

    def _import_chunk(self, project_id: int, chunk: list[dict[str, Any]]) -> dict[str, int]:
        """Import one chunk; after an uncertain failure re-list the project before retrying.

        A timeout or a 5xx may come after the server stored the tasks, so the
        retry imports only the keys that did not arrive.
        """
        found: dict[str, int] = {}
        attempt = 0
        while True:
            try:
                response = self._call(
                    "import tasks",
                    lambda c=chunk: self.sdk.projects.import_tasks(
                        project_id, request=c, return_task_ids=True
                    ),
                    project_id=project_id,
                    retries=0,
                )
            except (LabelStudioTimeoutError, LabelStudioUnreachable, LabelStudioError) as exc:
                status = getattr(exc, "status_code", 0)
                uncertain = isinstance(exc, (LabelStudioTimeoutError, LabelStudioUnreachable)) or (
                    status >= 500 or status == 429
                )
                if not uncertain or isinstance(exc, ProjectNotFound) or attempt >= self.retries:
                    raise
                self._backoff(f"import of {len(chunk)} tasks", type(exc).__name__, attempt, self.retries)
                attempt += 1
                present = self._remove_duplicates(project_id, self.existing_tasks(project_id))
                found.update(
                    {
                        t["meta"]["task_key"]: present[t["meta"]["task_key"]]
                        for t in chunk
                        if t["meta"]["task_key"] in present
                    }
                )
                chunk = [t for t in chunk if t["meta"]["task_key"] not in found]
                if not chunk:
                    return found
                continue
            task_ids = list(getattr(response, "task_ids", None) or [])
            if len(task_ids) != len(chunk):
                raise LabelStudioError(
                    f"Label Studio imported {len(task_ids)} of {len(chunk)} tasks into project {project_id} "
                    "without an error; re-run the push (it skips tasks already there)"
                )
            found.update({t["meta"]["task_key"]: int(i) for t, i in zip(chunk, task_ids)})
            return found

    def export_annotated(self, project_id: int) -> list[dict[str, Any]]:
        """All annotated tasks of a project as Label Studio JSON export dicts.

        Uses the synchronous JSON export; where the server has no such endpoint
        (Enterprise answers 404/405) it pages through the task list instead.
        """

        def download() -> list[dict[str, Any]]:
            raw = b"".join(self.sdk.projects.exports.download_sync(project_id, export_type="JSON"))
            return json.loads(raw or b"[]")

        try:
            return self._call("export annotations", download, project_id=project_id)
        except ProjectNotFound:
            if not self.project_exists(project_id):
                raise
        except LabelStudioError as exc:
            if getattr(exc, "status_code", 0) != 405:
                raise
        log.info("JSON export unavailable on %s; paging through tasks instead", self.url)
        return self._export_by_paging(project_id)

    def _export_by_paging(self, project_id: int) -> list[dict[str, Any]]:
        def fetch() -> list[dict[str, Any]]:
            pager = self.sdk.tasks.list(project=project_id, fields="all", page_size=_PAGE)
            return [t.model_dump(mode="json") for t in pager]

        tasks = self._call("page through tasks", fetch, project_id=project_id)
        return [t for t in tasks if t.get("annotations")]

    def create_annotation(
        self,
        task_id: int,
        result: list[dict[str, Any]],
        *,
        completed_by: int | None = None,
        was_cancelled: bool = False,
        lead_time: float | None = None,
    ) -> int:
        """Add an annotation to a task as an annotator would; return its id (not retried)."""
        kwargs: dict[str, Any] = {"result": result, "was_cancelled": was_cancelled}
        if completed_by is not None:
            kwargs["completed_by"] = completed_by
        if lead_time is not None:
            kwargs["lead_time"] = lead_time
        ann = self._call(
            f"annotate task {task_id}", lambda: self.sdk.annotations.create(id=task_id, **kwargs)
        )
        return int(ann.id)

    def annotators(self) -> dict[int, str]:
        """``user id -> e-mail`` (or username) of the organisation's users."""
        users = self._call("list users", lambda: list(self.sdk.users.list()))
        return {int(u.id): str(u.email or u.username or u.id) for u in users}

    def create_user(self, email: str, password: str | None = None) -> int:
        """Create an annotator account (an admin's key is needed); return the user id."""
        kwargs: dict[str, Any] = {"username": email.split("@")[0], "email": email}
        if password is not None:
            kwargs["password"] = password
        user = self._call(f"create user {email}", lambda: self.sdk.users.create(**kwargs))
        return int(user.id)
