"""Fixtures for the resilience suite: dispatchers with real spawned workers, and helpers.

Spawning a worker imports torch (and, for the engine, diffusers): seconds. So dispatchers are
module-scoped where a case leaves the worker reusable, and the synthetic runner (torch only)
drives every test that does not need the real engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from steadyframe.jobs.base import JobRecord
from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.oom_kill import OomKillWatch
from steadyframe.settings import Settings
from steadyframe.supervisor import Dispatcher, WorkerSlot
from steadyframe.supervisor.local import LocalProcessPool

SYNTHETIC = "steadyframe.testing.synthetic_runner:run_job"
READY_TIMEOUT_S = 180.0  # a cold worker start on a busy 2-core machine
JOB_TIMEOUT_S = 180.0


class Harness:
    """A dispatcher, its store and settings, with the waits every test needs."""

    def __init__(self, settings: Settings, runner: str, slots: int = 1) -> None:
        self.settings = settings
        self.store = SqliteJobStore(settings.jobs_db)
        # blind to this machine's OOM-kill counters: tests/ray OOM-kills an actor for real, which
        # would make an external SIGKILL here (test_dispatcher) look like the kernel's
        blind = OomKillWatch(root=settings.data_dir / "no-cgroup", proc=settings.data_dir / "no-proc")
        pool = LocalProcessPool(settings, [WorkerSlot(f"w{i}") for i in range(slots)], runner=runner, oom_watch=blind)
        self.dispatcher = Dispatcher(settings, self.store, pool=pool)

    def start(self) -> "Harness":
        self.dispatcher.start()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, *, not_pid: int | None = None) -> int:
        """Wait until a worker is idle (and, with ``not_pid``, is a new process); -> its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for info in self.dispatcher.workers():
                if info.state == "idle" and info.pid is not None and info.pid != not_pid:
                    return info.pid
            time.sleep(0.05)
        raise AssertionError(f"no ready worker after {timeout} s: {self.dispatcher.workers()}")

    def submit(self, spec: dict[str, Any]) -> str:
        job, _ = self.store.submit(spec)
        self.dispatcher.wake()
        return job.id

    def wait_terminal(self, job_id: str, timeout: float = JOB_TIMEOUT_S) -> JobRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.store.get(job_id)
            assert record is not None
            if record.status.terminal:
                return record
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not finished after {timeout} s: {self.store.get(job_id)}")

    def run(self, spec: dict[str, Any], timeout: float = JOB_TIMEOUT_S) -> JobRecord:
        return self.wait_terminal(self.submit(spec), timeout)

    def wait_status(self, job_id: str, status: str, timeout: float = JOB_TIMEOUT_S) -> JobRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.store.get(job_id)
            if record is not None and record.status == status and (status != "running" or record.progress.stage):
                return record
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} never reached {status}: {self.store.get(job_id)}")

    def worker_pid(self) -> int:
        pids = [w.pid for w in self.dispatcher.workers() if w.pid is not None]
        assert pids, self.dispatcher.workers()
        return pids[0]

    def summed_rss_mb(self) -> float:
        """RSS of this (supervisor) process plus every live worker process, MB."""
        total = psutil.Process().memory_info().rss
        for info in self.dispatcher.workers():
            if info.pid is not None:
                try:
                    total += psutil.Process(info.pid).memory_info().rss
                except psutil.NoSuchProcess:
                    pass
        return total / 2**20

    def stop(self) -> None:
        self.dispatcher.stop(timeout=15)
        self.store.close()


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        data_dir=data_dir,
        device="cpu",
        fault_injection=True,
        stall_timeout_s=10.0,
        cancel_grace_s=3.0,
        rss_tolerance_mb=200.0,
        max_attempts=2,
        log_level="INFO",
    )
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def harness_factory(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Function-scoped dispatchers (for tests that change settings or kill things)."""
    made: list[Harness] = []

    def _make(runner: str = SYNTHETIC, slots: int = 1, **overrides: Any) -> Harness:
        harness = Harness(make_settings(tmp_path / f"data{len(made)}", **overrides), runner, slots)
        made.append(harness)
        return harness.start()

    yield _make
    for harness in made:
        harness.stop()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One synthetic-runner dispatcher shared by a module's cases."""
    harness = Harness(make_settings(tmp_path_factory.mktemp("synthetic")), SYNTHETIC).start()
    yield harness
    harness.stop()
