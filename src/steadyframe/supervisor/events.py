"""Lifecycle events the dispatcher publishes: workers, jobs and models, as small frozen dataclasses.

Subscribe with ``Dispatcher(..., on_event=callback)`` or ``dispatcher.subscribe(callback)``.
Callbacks run on the dispatcher's thread after it has released its lock, in the order things
happened; they must be quick (hand work to a queue) and may call ``dispatcher.workers()``.
An exception in a callback is logged and dropped: it never reaches the dispatcher.
See docs/architecture.md "Lifecycle events".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from steadyframe.worker.messages import MemoryFigures


def _now() -> float:
    return time.time()


@dataclass(frozen=True, kw_only=True)
class DispatcherEvent:
    """Every event: which worker, and when (``time.time()``, seconds since the epoch)."""

    worker_id: str
    at: float = field(default_factory=_now)


# --- workers -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WorkerStarted(DispatcherEvent):
    """The pool was asked to start the worker (a process or an actor is on its way)."""

    node: str
    restart: bool  # False for its first start, True for every later one


@dataclass(frozen=True, kw_only=True)
class WorkerReady(DispatcherEvent):
    node: str
    device: str
    pid: int
    memory: MemoryFigures


@dataclass(frozen=True, kw_only=True)
class WorkerEnded(DispatcherEvent):
    """The worker's process or actor is gone. ``cause`` is ``supervisor.pool.ExitCause``'s value;
    ``planned`` names why the dispatcher ended it ("recycle:jobs", "stall", ...) or is None."""

    node: str
    cause: str
    description: str
    planned: str | None
    job_id: str | None  # the job it was running, if any


@dataclass(frozen=True, kw_only=True)
class WorkerRecycled(DispatcherEvent):
    """The dispatcher ends a healthy-looking worker on purpose after a job (its WorkerEnded follows)."""

    reason: str  # "device_error", "memory", "jobs"
    excess_mb: float


@dataclass(frozen=True, kw_only=True)
class WorkerRestarting(DispatcherEvent):
    """The worker will be started again in ``delay_s`` seconds."""

    reason: str  # "crash", "node_lost", "spawn_failed", or the planned reason
    delay_s: float


@dataclass(frozen=True, kw_only=True)
class MemorySampled(DispatcherEvent):
    """A worker's memory as its heartbeat (about once a second), Ready or job end reported it."""

    memory: MemoryFigures
    job_id: str | None


@dataclass(frozen=True, kw_only=True)
class ModelLoaded(DispatcherEvent):
    model: str  # the worker's loaded-model key


@dataclass(frozen=True, kw_only=True)
class ModelUnloaded(DispatcherEvent):
    model: str


# --- jobs ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobStarted(DispatcherEvent):
    job_id: str
    attempt: int  # 0 for the first run


@dataclass(frozen=True, kw_only=True)
class JobStageChanged(DispatcherEvent):
    job_id: str
    stage: str


@dataclass(frozen=True, kw_only=True)
class JobSucceeded(DispatcherEvent):
    job_id: str
    memory_level: int
    stage_seconds: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class JobFailed(DispatcherEvent):
    job_id: str
    kind: str  # an ErrorKind value
    error_id: str
    stage: str | None


@dataclass(frozen=True, kw_only=True)
class JobRequeued(DispatcherEvent):
    """The job's worker died under it; it waits for another run (attempt ``attempt``)."""

    job_id: str
    attempt: int
    error_id: str


@dataclass(frozen=True, kw_only=True)
class JobCancelled(DispatcherEvent):
    job_id: str
    forced: bool  # True when its worker had to be killed after the grace period


EventCallback = Callable[[DispatcherEvent], None]
