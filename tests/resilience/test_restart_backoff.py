"""Restart backoff, with an in-memory pool whose workers die as soon as they start."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.settings import Settings
from steadyframe.supervisor import Dispatcher, WorkerPool, WorkerSlot
from steadyframe.supervisor.pool import ExitCause, PoolEvent, WorkerExited


class DyingPool(WorkerPool):
    """Every spawned worker 'segfaults' at once; spawn times are recorded."""

    def __init__(self) -> None:
        self.spawned_at: list[float] = []
        self._pending: list[PoolEvent] = []
        self._wake = threading.Event()

    def slots(self) -> list[WorkerSlot]:
        return [WorkerSlot("w0")]

    def spawn(self, worker_id: str) -> None:
        self.spawned_at.append(time.monotonic())
        self._pending.append(PoolEvent(worker_id, WorkerExited(ExitCause.CRASHED, "crashed with SIGSEGV")))

    def send(self, worker_id: str, message: object) -> bool:
        return False

    def wait(self, timeout: float) -> list[PoolEvent]:
        if not self._pending:
            self._wake.wait(timeout)
            self._wake.clear()
        events, self._pending = self._pending, []
        return events

    def interrupt(self) -> None:
        self._wake.set()

    def kill(self, worker_id: str, *, dump_stacks: bool = False) -> None:
        return None

    def close(self, timeout: float) -> None:
        return None


def test_a_worker_that_keeps_dying_is_restarted_with_growing_delays(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, device="cpu")
    pool = DyingPool()
    dispatcher = Dispatcher(settings, SqliteJobStore(settings.jobs_db), pool=pool)
    dispatcher.start()
    deadline = time.monotonic() + 20
    while len(pool.spawned_at) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    dispatcher.stop()
    gaps = [b - a for a, b in zip(pool.spawned_at, pool.spawned_at[1:])][:3]
    assert len(gaps) == 3
    assert gaps[0] >= 0.4 and gaps[1] >= 0.9 and gaps[2] >= 1.9  # 0.5 s, 1 s, 2 s
    assert dispatcher.stats().restarts["crash"] >= 3
    assert not dispatcher.is_ready()
