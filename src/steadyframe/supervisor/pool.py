"""The worker pool interface the dispatcher depends on: local processes or Ray actors.

A pool starts, messages and kills workers by id and reports what they say and how they ended.
It decides nothing: restarts, timeouts and job bookkeeping belong to the dispatcher. Nothing
here speaks of pids, exit codes or signals: a pool describes an end in words and one cause.
See docs/architecture.md "Worker pools".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from steadyframe.worker.messages import FromWorker, ToWorker

if TYPE_CHECKING:
    from steadyframe.settings import Settings


@dataclass(frozen=True)
class WorkerSlot:
    """A place one worker runs: its id, the machine (``node``) and, locally, the GPU it owns.

    ``gpu_index`` None = CPU or a device the backend assigns (Ray gives an actor its GPU).
    """

    worker_id: str
    gpu_index: int | None = None
    node: str = ""


class ExitCause(StrEnum):
    """Why a worker ended, as far as its pool can tell."""

    EXITED = "exited"  # ended by itself (a clean shutdown, an exit status, a failed start)
    CRASHED = "crashed"  # died of a fault of its own: segfault, abort, bus error...
    KILLED = "killed"  # ended from outside: by us (kill), by SIGKILL, by ray.kill
    NODE_LOST = "node_lost"  # its machine left the cluster or stopped answering
    OOM_KILLED = "oom_killed"  # the kernel's OOM killer ended it (SIGKILL while its OOM-kill count rose)


@dataclass(frozen=True)
class WorkerExited:
    """A worker ended. ``description`` continues "The worker ..." in plain words ("was killed by
    SIGKILL", "crashed with SIGSEGV", "was lost with its node 10.0.0.7"); ``last_words`` holds the
    Python stacks it wrote as it died or when asked before a kill, when the pool could get them.
    ``memory_limit`` (with OOM_KILLED) names the limit the kernel enforced, in words for a user."""

    cause: ExitCause
    description: str
    last_words: str | None = None
    memory_limit: str | None = None

    def describe(self) -> str:
        return self.description


@dataclass(frozen=True)
class PoolEvent:
    worker_id: str
    message: FromWorker | WorkerExited


class WorkerPool(ABC):
    """Backend-agnostic handle on workers; every method is called from the dispatcher's thread
    (``interrupt`` from any thread). No method may block for long: a slow machine must never
    stall the dispatcher."""

    @abstractmethod
    def slots(self) -> list[WorkerSlot]:
        """The workers this pool can run now. Fixed for a local pool; a cluster's set follows its
        nodes (the dispatcher reconciles it on every tick, so this must be cheap)."""

    @abstractmethod
    def spawn(self, worker_id: str) -> None:
        """Start the worker of slot ``worker_id``; its ``Ready`` message, or its exit, follows."""

    @abstractmethod
    def send(self, worker_id: str, message: ToWorker) -> bool:
        """Deliver a message; False when the worker is gone (its exit event follows)."""

    @abstractmethod
    def wait(self, timeout: float) -> list[PoolEvent]:
        """Messages and exits from any worker, waiting at most ``timeout`` s (less after ``interrupt``)."""

    @abstractmethod
    def interrupt(self) -> None:
        """Make a ``wait`` in progress return now (thread-safe)."""

    @abstractmethod
    def kill(self, worker_id: str, *, dump_stacks: bool = False) -> None:
        """End the worker at once. Its ``WorkerExited`` always follows, even when the backend cannot
        confirm the end (then after a bounded wait). ``dump_stacks`` first asks it for its threads'
        stacks, which arrive as that event's ``last_words``."""

    @abstractmethod
    def close(self, timeout: float) -> None:
        """Stop every worker: ask politely, then kill whatever is left after ``timeout``."""


def default_pool(settings: Settings) -> WorkerPool:
    """Ray actors when ``settings.ray_address`` is set, else local processes (ray never imported)."""
    if settings.ray_address:
        from steadyframe.supervisor.ray_pool import RayPool

        return RayPool(settings, address=settings.ray_address)
    from steadyframe.supervisor.local import LocalProcessPool
    from steadyframe.supervisor.slots import default_slots

    return LocalProcessPool(settings, default_slots(settings))
