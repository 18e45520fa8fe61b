"""The dispatcher's per-worker state machine, its exception safety and its lifecycle events,
driven by an in-memory pool (no processes: each case takes well under a second)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from steadyframe.jobs.base import JobError, JobRecord, JobStatus
from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.settings import Settings
from steadyframe.supervisor import Dispatcher, ExitCause, InvalidTransition, WorkerState
from steadyframe.supervisor import dispatcher as dispatcher_module
from steadyframe.supervisor import events as ev
from steadyframe.worker.messages import Progress, RunJob

from .fake_pool import FakePool, done


def _wait(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class FlakyStore(SqliteJobStore):
    """A job store whose named methods raise the next ``fail[name]`` times they are called."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fail: dict[str, int] = {}

    def _maybe_fail(self, name: str) -> None:
        if self.fail.get(name):
            self.fail[name] -= 1
            raise RuntimeError(f"injected store failure in {name}")

    def requeue_or_fail(self, job_id: str, error: JobError, *, max_attempts: int) -> JobStatus:
        self._maybe_fail("requeue_or_fail")
        return super().requeue_or_fail(job_id, error, max_attempts=max_attempts)

    def finish_succeeded(self, job_id: str, result: dict[str, Any]) -> None:
        self._maybe_fail("finish_succeeded")
        super().finish_succeeded(job_id, result)


class Rig:
    def __init__(self, tmp_path: Path, pool: FakePool, **overrides: Any) -> None:
        self.settings = Settings(data_dir=tmp_path, device="cpu", **overrides)
        self.store = FlakyStore(self.settings.jobs_db)
        self.pool = pool
        self.events: list[ev.DispatcherEvent] = []
        self.dispatcher = Dispatcher(self.settings, self.store, pool=pool, on_event=self.events.append)

    def submit(self, spec: dict[str, Any] | None = None) -> str:
        job, _ = self.store.submit(spec or {"prompt": "x"})
        self.dispatcher.wake()
        return job.id

    def terminal(self, job_id: str, timeout: float = 20.0) -> JobRecord:
        _wait(lambda: self.store.get(job_id).status.terminal, f"job {job_id} to end", timeout)  # type: ignore[union-attr]
        record = self.store.get(job_id)
        assert record is not None
        return record

    def states(self) -> dict[str, str]:
        return {w.id: w.state for w in self.dispatcher.workers()}

    def of(self, kind: type) -> list[Any]:
        return [e for e in list(self.events) if isinstance(e, kind)]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(pool: FakePool | None = None, **overrides: Any) -> Rig:
        r = Rig(tmp_path / f"d{len(made)}", pool or FakePool(), **overrides)
        made.append(r)
        r.dispatcher.start()
        _wait(r.dispatcher.is_ready, "a ready worker")
        return r

    yield make
    for r in made:
        r.dispatcher.stop(timeout=5)
        r.store.close()


def test_a_transition_outside_the_table_fails_loudly(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, device="cpu")
    dispatcher = Dispatcher(settings, SqliteJobStore(settings.jobs_db), pool=FakePool())
    worker = dispatcher._workers["f0"]
    assert worker.state == WorkerState.ABSENT
    with pytest.raises(InvalidTransition, match="absent -> busy"):
        dispatcher._transition(worker, WorkerState.BUSY)
    dispatcher._transition(worker, WorkerState.STARTING)
    with pytest.raises(InvalidTransition, match="starting -> busy"):
        dispatcher._transition(worker, WorkerState.BUSY)
    assert worker.state == WorkerState.STARTING  # a refused change changes nothing


def test_an_exception_while_handling_a_workers_exit_does_not_wedge_it(rig: Callable[..., Rig]) -> None:
    """The store fails while the dispatcher records a dead worker's job: the worker is still
    restarted (not left stopping) and the job is requeued on a later tick and then succeeds."""
    pool = FakePool(on_run=lambda job: [Progress(job.job_id, "denoise", 1, 10)])  # runs until it dies
    r = rig(pool, max_attempts=3)
    job_id = r.submit()
    _wait(lambda: r.states()["f0"] == "busy", "the job to start")
    r.store.fail["requeue_or_fail"] = 1
    pool.on_run = done
    pool.die("f0")
    record = r.terminal(job_id)
    assert record.status == "succeeded" and record.attempt == 1
    assert len(pool.spawns) == 2 and r.dispatcher._thread.is_alive()  # type: ignore[union-attr]
    _wait(lambda: r.states()["f0"] == "idle", "the new worker to be idle")


def test_an_exception_while_recording_a_success_requeues_the_job_and_keeps_the_worker(rig: Callable[..., Rig]) -> None:
    r = rig(max_attempts=3)
    r.store.fail["finish_succeeded"] = 1
    record = r.terminal(r.submit())
    assert record.status == "succeeded" and record.attempt == 1  # ran again after the lost record
    assert pool_spawns(r) == 1 and r.states()["f0"] == "idle"


def pool_spawns(r: Rig) -> int:
    return len(r.pool.spawns)


def test_a_kill_that_raises_is_asked_again_and_the_timeout_is_recorded_with_stacks(rig: Callable[..., Rig]) -> None:
    pool = FakePool(on_run=lambda job: [Progress(job.job_id, "denoise", 1, 10)])
    r = rig(pool, stall_timeout_s=0.5)
    pool.kill_fails = 2
    record = r.terminal(r.submit())
    assert record.status == "failed" and record.error is not None and record.error.kind == "timeout"
    assert "in faults.py" in (record.error.traceback or "")  # the stacks the kill asked for
    assert len(pool.kills) == 1 and r.dispatcher.stats().restarts["stall"] == 1
    _wait(lambda: r.states()["f0"] == "idle", "the replacement")


def test_a_worker_whose_exit_never_comes_is_taken_for_gone(rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatcher_module, "STOP_CONFIRM_S", 0.5)
    pool = FakePool()
    r = rig(pool, recycle_after_jobs=1)
    pool.silent_kills = True
    assert r.terminal(r.submit()).status == "succeeded"
    _wait(lambda: len(pool.spawns) == 2, "a replacement after the unconfirmed stop")
    ended = r.of(ev.WorkerEnded)
    assert ended and ended[0].planned == "recycle:jobs" and "did not confirm" in ended[0].description


def test_a_spawn_that_raises_is_retried_with_backoff(tmp_path: Path) -> None:
    pool = FakePool()
    pool.spawn_fails = 2
    settings = Settings(data_dir=tmp_path, device="cpu")
    dispatcher = Dispatcher(settings, SqliteJobStore(settings.jobs_db), pool=pool)
    dispatcher.start()
    try:
        _wait(dispatcher.is_ready, "a worker after two failed starts")
        assert dispatcher.stats().restarts["spawn_failed"] == 2
    finally:
        dispatcher.stop(timeout=5)


def test_a_failing_observer_does_not_hurt_the_dispatcher_and_events_tell_the_story(rig: Callable[..., Rig]) -> None:
    pool = FakePool(on_run=lambda job: [Progress(job.job_id, "denoise", 1, 10)])
    r = rig(pool, max_attempts=2)

    def broken(event: ev.DispatcherEvent) -> None:
        raise RuntimeError("observer bug")

    r.dispatcher.subscribe(broken)
    seen_workers: list[int] = []
    unsubscribe = r.dispatcher.subscribe(lambda e: seen_workers.append(len(r.dispatcher.workers())))  # may read back
    job_id = r.submit()
    _wait(lambda: r.of(ev.JobStageChanged), "the job's first stage")
    pool.on_run = done
    pool.die("f0")
    assert r.terminal(job_id).status == "succeeded"
    _wait(lambda: r.of(ev.JobSucceeded), "the success event")
    unsubscribe()
    kinds = [type(e).__name__ for e in r.events if not isinstance(e, ev.MemorySampled)]
    assert kinds[:3] == ["WorkerStarted", "ModelLoaded", "WorkerReady"]
    assert kinds[kinds.index("JobStarted") :].count("JobStarted") == 2
    ended = r.of(ev.WorkerEnded)[0]
    assert ended.cause == ExitCause.CRASHED and ended.job_id == job_id and ended.planned is None
    requeued = r.of(ev.JobRequeued)[0]
    assert requeued.job_id == job_id and requeued.attempt == 1
    restarting = r.of(ev.WorkerRestarting)[0]
    assert restarting.reason == "crash" and restarting.delay_s == pytest.approx(0.5)
    assert [e.restart for e in r.of(ev.WorkerStarted)] == [False, True]
    assert r.of(ev.ModelUnloaded)[0].model == "tiny"  # its models went with it
    assert r.of(ev.MemorySampled) and all(e.at > 0 for e in r.events)
    assert seen_workers and r.dispatcher._thread.is_alive()  # type: ignore[union-attr]


def test_the_set_of_workers_follows_the_pool(rig: Callable[..., Rig]) -> None:
    pool = FakePool()
    r = rig(pool)
    pool.set_slots(["f0", "f1"])
    r.dispatcher.wake()
    _wait(lambda: r.states().get("f1") == "idle", "the new slot's worker")
    assert {w.node for w in r.dispatcher.workers()} == {"fake-node"}
    pool.set_slots(["f0"])
    r.dispatcher.wake()
    time.sleep(0.3)
    assert "f1" in r.states()  # alive: stays until its exit is seen
    pool.die("f1", ExitCause.NODE_LOST, "was lost with its node")
    _wait(lambda: "f1" not in r.states(), "the gone slot's record to go")
    assert r.dispatcher.stats().restarts["node_lost"] == 1
    assert r.terminal(r.submit()).status == "succeeded"


def test_a_late_message_from_a_worker_taken_for_gone_is_ignored(rig: Callable[..., Rig]) -> None:
    from steadyframe.worker.messages import JobDone

    from .fake_pool import MEMORY

    pool = FakePool(on_run=lambda job: [])
    r = rig(pool)
    job_id = r.submit()
    _wait(lambda: r.states()["f0"] == "busy", "the job to start")
    pool.on_run = done
    pool.die("f0")
    pool.push("f0", JobDone(job_id, {}, MEMORY))  # arrives after its death: must not end the rerun
    record = r.terminal(job_id)
    assert record.status == "succeeded" and record.attempt == 1
    assert isinstance(pool.sent[-1][1], RunJob)
