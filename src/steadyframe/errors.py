"""Error kinds and the exceptions the product raises on purpose (no torch import).

Raise these where the cause is known; ``steadyframe.taxonomy.classify`` turns any exception,
ours or a library's, into a kind with a user message and advice.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    OUT_OF_MEMORY = "out_of_memory"
    DEVICE_ERROR = "device_error"
    INVALID_INPUT = "invalid_input"
    MODEL_UNAVAILABLE = "model_unavailable"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    DISK_FULL = "disk_full"
    INTERNAL = "internal"


class SteadyframeError(Exception):
    """An error whose kind and user-facing text are known where it is raised.

    ``message`` is shown to users as is, so it must never hold a path or a traceback;
    ``advice`` optionally overrides the kind's default advice.
    """

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, advice: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice


class InvalidInputError(SteadyframeError):
    """Bad prompt, image, video or parameter: fail fast, nothing loaded, 4xx at the API."""

    kind = ErrorKind.INVALID_INPUT


class ModelUnavailableError(SteadyframeError):
    """Missing or unreadable weights; the message names the model id or file name."""

    kind = ErrorKind.MODEL_UNAVAILABLE


class DiskFullError(SteadyframeError):
    """A write failed because the disk (or the user's quota) is full; nothing half-written is kept."""

    kind = ErrorKind.DISK_FULL


class JobCancelled(SteadyframeError):
    """The job's cancel flag was seen at a step boundary."""

    kind = ErrorKind.CANCELLED

    def __init__(self, message: str = "The job was cancelled.") -> None:
        super().__init__(message)
