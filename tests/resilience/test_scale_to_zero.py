"""Scale to zero: an idle worker exits after ``worker_idle_exit_s``; the next job starts one and its
start shows in the job's timings; ``0`` keeps a warm worker for ever."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil

from .conftest import Harness


def _wait_parked(harness: Harness, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        infos = harness.dispatcher.workers()
        if all(info.state == "parked" and info.pid is None for info in infos):
            return
        time.sleep(0.1)
    raise AssertionError(f"workers never parked: {harness.dispatcher.workers()}")


def test_an_idle_worker_exits_and_the_next_job_starts_one(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(worker_idle_exit_s=1.0)
    first_pid = harness.worker_pid()
    _wait_parked(harness)
    assert not psutil.pid_exists(first_pid) or psutil.Process(first_pid).status() == psutil.STATUS_ZOMBIE
    assert harness.dispatcher.is_ready()  # /readyz: a job submitted now is accepted and will run
    assert harness.dispatcher.stats().restarts == {}  # exiting when idle is not a restart

    record = harness.run({"prompt": "wake up", "steps": 2})

    assert record.status == "succeeded", record.error
    assert record.result is not None and record.result["timings"]["worker_start"] > 0
    assert harness.worker_pid() != first_pid
    _wait_parked(harness)  # and it goes again once idle


def test_zero_keeps_a_warm_worker(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(worker_idle_exit_s=0.0, keep_alive_s=0.5)
    pid = harness.worker_pid()
    time.sleep(2.5)
    assert [(w.state, w.pid) for w in harness.dispatcher.workers()] == [("idle", pid)]
    record = harness.run({"prompt": "still warm", "steps": 1})
    assert record.status == "succeeded" and "worker_start" not in (record.result or {}).get("timings", {})
