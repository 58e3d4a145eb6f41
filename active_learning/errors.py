"""Exception hierarchy of the active-learning package.

Every error a caller can cause derives from :class:`ActiveLearningError` and from
the builtin exception it refines, so callers can catch either.  The Label Studio
errors say which server, which project and what to do (start a server, set the
API key's environment variable, re-create the project); none of them ever
contains the API key itself.
"""

from __future__ import annotations


class ActiveLearningError(Exception):
    """Root of all active-learning errors."""

    #: process exit code the CLI uses for this kind of error
    exit_code: int = 1


class LabelStudioError(ActiveLearningError, RuntimeError):
    """Label Studio answered with an error, or a task/annotation is malformed."""


class LabelStudioUnreachable(LabelStudioError, ConnectionError):  # noqa: N818 (name in the public API)
    """No Label Studio server answers at the configured URL."""


class LabelStudioTimeoutError(LabelStudioError, TimeoutError):
    """Label Studio did not answer in time, even after the configured retries."""


class LabelStudioAuthError(LabelStudioError, PermissionError):
    """The server rejected the API key (HTTP 401/403) or no key was given."""


class ProjectNotFound(LabelStudioError, LookupError):  # noqa: N818 (name in the public API)
    """The Label Studio project does not exist (any more) on the server."""


class LabelStudioServerError(ActiveLearningError, RuntimeError):
    """The managed Label Studio server could not be installed, started or stopped."""


class TaskMappingError(ActiveLearningError, ValueError):
    """A record cannot be turned into a task, or an export cannot be parsed."""
