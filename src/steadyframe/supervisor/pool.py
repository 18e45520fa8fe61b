"""The worker pool interface the dispatcher depends on (local processes now, Ray actors later).

A pool starts, messages and kills workers by id and reports what they say and when they die.
It decides nothing: restarts, timeouts and job bookkeeping belong to the dispatcher.
"""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass

from steadyframe.worker.messages import FromWorker, ToWorker


@dataclass(frozen=True)
class WorkerSlot:
    """A place a worker runs: its id and the GPU it owns (None = CPU or the default device)."""

    worker_id: str
    gpu_index: int | None = None


@dataclass(frozen=True)
class WorkerExited:
    """A worker process ended; ``exitcode`` negative means killed by that signal (POSIX)."""

    exitcode: int | None

    @property
    def signal_name(self) -> str | None:
        if self.exitcode is None or self.exitcode >= 0:
            return None
        try:
            return signal.Signals(-self.exitcode).name
        except ValueError:
            return f"signal {-self.exitcode}"

    def describe(self) -> str:
        """Plain words: "killed by SIGKILL" / "exited with code 1"."""
        if self.signal_name:
            return f"killed by {self.signal_name}"
        return f"exited with code {self.exitcode}"


@dataclass(frozen=True)
class PoolEvent:
    worker_id: str
    message: FromWorker | WorkerExited


class WorkerPool(ABC):
    """Backend-agnostic handle on worker processes; every method is called from one thread."""

    @abstractmethod
    def slots(self) -> list[WorkerSlot]:
        """The workers this pool runs (fixed for its life)."""

    @abstractmethod
    def spawn(self, worker_id: str) -> int | None:
        """Start the worker for ``worker_id``; returns its pid when the backend has one."""

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
        """End the worker at once (SIGKILL or the backend's equivalent); its exit event follows.

        ``dump_stacks`` first asks it to write its threads' stacks (see ``last_words``).
        """

    def last_words(self, worker_id: str, pid: int | None) -> str | None:
        """What a dead worker wrote about its end (Python stacks at a crash or a dump); None if nothing."""
        return None

    @abstractmethod
    def pid(self, worker_id: str) -> int | None: ...

    @abstractmethod
    def close(self, timeout: float) -> None:
        """Stop every worker: ask politely, then kill whatever is left after ``timeout``."""
