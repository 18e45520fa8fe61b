"""An in-memory worker pool for dispatcher tests that need no process: scripted workers, instant.

Each spawned worker says Ready at once; a RunJob is answered by ``on_run`` (default: JobDone).
Faults can be armed: ``kill_fails``/``spawn_fails`` raise from the pool call that many times.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from steadyframe.supervisor import WorkerPool, WorkerSlot
from steadyframe.supervisor.pool import ExitCause, PoolEvent, WorkerExited
from steadyframe.worker.messages import (
    CancelJob,
    FromWorker,
    JobDone,
    JobFailed,
    MemoryFigures,
    Progress,
    Ready,
    RunJob,
    ToWorker,
)

MEMORY = MemoryFigures(rss_mb=100.0, baseline_rss_mb=100.0, loaded_models=("tiny",))


def done(job: RunJob) -> list[FromWorker]:
    return [
        Progress(job.job_id, "denoise", 1, 1),
        JobDone(job.job_id, {"video_path": "/nowhere/video.mp4", "memory_level": 0}, MEMORY, {"denoise": 0.1}),
    ]


class FakePool(WorkerPool):
    def __init__(self, count: int = 1, on_run: Callable[[RunJob], list[FromWorker]] = done) -> None:
        self._slots = [WorkerSlot(f"f{i}", node="fake-node") for i in range(count)]
        self.on_run = on_run
        self.alive: set[str] = set()
        self.spawns: list[str] = []
        self.kills: list[str] = []
        self.sent: list[tuple[str, Any]] = []
        self.kill_fails = 0
        self.spawn_fails = 0
        self.silent_kills = False  # kill() ends the worker but its exit is never reported
        self._pending: list[PoolEvent] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._next_pid = 1000

    def push(self, worker_id: str, message: FromWorker | WorkerExited) -> None:
        with self._lock:
            self._pending.append(PoolEvent(worker_id, message))
        self._wake.set()

    def die(self, worker_id: str, cause: ExitCause = ExitCause.CRASHED, words: str = "crashed with SIGSEGV") -> None:
        self.alive.discard(worker_id)
        self.push(worker_id, WorkerExited(cause, words, "Fatal Python error: Segmentation fault"))

    def set_slots(self, ids: list[str]) -> None:
        with self._lock:
            self._slots = [WorkerSlot(i, node="fake-node") for i in ids]

    def slots(self) -> list[WorkerSlot]:
        with self._lock:
            return list(self._slots)

    def spawn(self, worker_id: str) -> None:
        if self.spawn_fails:
            self.spawn_fails -= 1
            raise RuntimeError("injected spawn failure")
        self.spawns.append(worker_id)
        self.alive.add(worker_id)
        self._next_pid += 1
        self.push(worker_id, Ready(worker_id, self._next_pid, "cpu", MEMORY))

    def send(self, worker_id: str, message: ToWorker) -> bool:
        if worker_id not in self.alive:
            return False
        self.sent.append((worker_id, message))
        if isinstance(message, RunJob):
            for reply in self.on_run(message):
                self.push(worker_id, reply)
        elif isinstance(message, CancelJob):
            self.push(
                worker_id,
                JobFailed(message.job_id, "cancelled", "cancelled", "", "none", "denoise", "", MEMORY),
            )
        return True

    def wait(self, timeout: float) -> list[PoolEvent]:
        if not self._pending:
            self._wake.wait(timeout)
        self._wake.clear()
        with self._lock:
            events, self._pending = self._pending, []
        return events

    def interrupt(self) -> None:
        self._wake.set()

    def kill(self, worker_id: str, *, dump_stacks: bool = False) -> None:
        if self.kill_fails:
            self.kill_fails -= 1
            raise RuntimeError("injected kill failure")
        self.kills.append(worker_id)
        if worker_id in self.alive:
            self.alive.discard(worker_id)
            if not self.silent_kills:
                self.push(worker_id, WorkerExited(ExitCause.KILLED, "was killed by SIGKILL", "in faults.py" if dump_stacks else None))

    def close(self, timeout: float) -> None:
        self.alive.clear()
