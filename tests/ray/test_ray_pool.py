"""Workers as Ray actors on a local two-node cluster (synthetic runner: real torch work, no model
files): placement on both nodes, progress, files back through the object store, cancel, an actor
SIGKILLed mid-job and a node removed mid-job (requeued, succeeding elsewhere, never twice at once),
and nodes joining. Shares one cluster and one dispatcher; the node-removal case runs last."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from steadyframe.supervisor import events as ev

from .conftest import SYNTHETIC, LocalCluster, RayHarness, ray_settings

LONG_JOB = {"prompt": "a long one", "steps": 200, "num_frames": 1024}


@pytest.fixture(scope="module")
def harness(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHarness]:
    settings = ray_settings(tmp_path_factory.mktemp("server"), max_attempts=3)
    h = RayHarness(settings, SYNTHETIC).start(workers=2)
    yield h
    h.stop()


def _never_twice_at_once(h: RayHarness, job_id: str) -> None:
    """Each run of the job started only after the worker of the run before had ended."""
    timeline = [e for e in h.events if getattr(e, "job_id", None) == job_id or isinstance(e, ev.WorkerEnded)]
    running: str | None = None
    for event in timeline:
        if isinstance(event, ev.JobStarted) and event.job_id == job_id:
            assert running is None, f"job {job_id} started on {event.worker_id} while running on {running}"
            running = event.worker_id
        elif isinstance(event, ev.WorkerEnded) and event.worker_id == running:
            running = None
        elif isinstance(event, ev.JobSucceeded | ev.JobFailed | ev.JobCancelled) and event.job_id == job_id:
            running = None


def test_jobs_run_on_both_nodes_with_progress_and_files_coming_back(harness: RayHarness, cluster: LocalCluster) -> None:
    infos = harness.wait_idle(2)
    assert len({w.node for w in infos}) == 2 and all("127.0.0.1" in w.node for w in infos)
    first, second = harness.submit({"prompt": "one", "steps": 3}), harness.submit({"prompt": "two", "steps": 3})
    records = [harness.wait_terminal(first), harness.wait_terminal(second)]
    assert [r.status for r in records] == ["succeeded", "succeeded"], [r.error for r in records]
    assert {r.worker_id for r in records} == {w.id for w in infos}  # one each: both nodes work
    server_outputs = harness.settings.outputs_dir
    for record in records:
        assert record.result is not None
        for key in ("video_path", "gif_path", "sidecar_path"):
            if not record.result[key]:
                continue  # the synthetic runner writes only its video
            path = Path(record.result[key])
            assert path.parent == server_outputs / record.id and path.stat().st_size > 0
        stages = [e.stage for e in harness.of(ev.JobStageChanged, record.id)]
        assert stages[0] == "load" and "denoise" in stages and stages[-1] == "save"
    for node_dir in cluster.node_dirs:  # the nodes keep nothing of a finished job
        assert not any((node_dir / "outputs" / r.id).exists() for r in records)


def test_cancel_reaches_a_job_running_on_a_remote_actor(harness: RayHarness) -> None:
    harness.wait_idle(2)
    job_id = harness.submit(LONG_JOB)
    harness.wait_for(job_id, lambda r: r.progress.stage == "denoise" and r.progress.step >= 1, "to denoise")
    pid = harness.worker_running(job_id).pid
    harness.store.request_cancel(job_id)
    harness.dispatcher.wake()
    record = harness.wait_terminal(job_id, timeout=60)
    assert record.status == "cancelled"
    assert not harness.of(ev.WorkerEnded)  or all(e.job_id != job_id for e in harness.of(ev.WorkerEnded))
    assert pid in {w.pid for w in harness.wait_idle(2)}  # it stopped by itself: the same actor goes on


def test_sigkill_of_an_actors_process_mid_job_requeues_it_onto_another_worker(harness: RayHarness) -> None:
    harness.wait_idle(2)
    job_id = harness.submit(LONG_JOB | {"steps": 60})
    harness.wait_for(job_id, lambda r: r.progress.stage == "denoise" and r.progress.step >= 1, "to denoise")
    victim = harness.worker_running(job_id)
    os.kill(victim.pid, signal.SIGKILL)  # the pid the actor reported in Ready
    record = harness.wait_terminal(job_id)
    assert record.status == "succeeded" and record.attempt == 1, record.error
    ended = [e for e in harness.of(ev.WorkerEnded) if e.job_id == job_id]
    assert len(ended) == 1 and ended[0].worker_id == victim.id and ended[0].planned is None
    requeued = harness.of(ev.JobRequeued, job_id)
    assert len(requeued) == 1 and requeued[0].attempt == 1
    starts = harness.of(ev.JobStarted, job_id)
    assert [s.attempt for s in starts] == [0, 1]
    _never_twice_at_once(harness, job_id)
    harness.wait_idle(2, not_pids={victim.pid})  # its slot got a fresh actor


def test_a_frozen_actor_never_blocks_the_dispatcher_and_is_replaced(harness: RayHarness) -> None:
    """SIGSTOP an idle actor's process: it cannot answer its poll, its stack request or anything.
    The dispatcher keeps answering at once; the silence timeout ends the actor; a new one takes over."""
    original = harness.dispatcher.settings
    harness.dispatcher.settings = original.model_copy(update={"worker_silence_timeout_s": 3.0})
    try:
        victim = harness.wait_idle(2)[0]
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            slowest = 0.0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                started = time.monotonic()
                states = {w.id: w for w in harness.dispatcher.workers()}
                harness.dispatcher.is_ready()
                slowest = max(slowest, time.monotonic() - started)
                if states[victim.id].pid not in (None, victim.pid) and states[victim.id].state == "idle":
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"the frozen actor was not replaced: {harness.dispatcher.workers()}")
        finally:
            try:
                os.kill(victim.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert slowest < 0.5  # reads never waited on the frozen node
        ended = [e for e in harness.of(ev.WorkerEnded) if e.worker_id == victim.id and e.planned == "silent"]
        assert len(ended) == 1
    finally:
        harness.dispatcher.settings = original


def test_recycling_replaces_the_actor(harness: RayHarness) -> None:
    original = harness.dispatcher.settings
    harness.dispatcher.settings = original.model_copy(update={"recycle_after_jobs": 1})
    try:
        pids = {w.pid for w in harness.wait_idle(2)}
        record = harness.run({"prompt": "recycle me", "steps": 2})
        assert record.status == "succeeded"
        recycled = [e for e in harness.of(ev.WorkerRecycled) if e.worker_id == record.worker_id]
        assert recycled and recycled[-1].reason == "jobs"
    finally:
        harness.dispatcher.settings = original
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        slot = harness.worker(record.worker_id)
        if slot.state == "idle" and slot.pid not in pids:
            break  # a new actor in the same slot
        time.sleep(0.1)
    else:
        raise AssertionError(f"the recycled slot got no new actor: {harness.dispatcher.workers()}")


def test_removing_a_node_mid_job_requeues_it_and_a_joining_node_gets_a_worker(
    harness: RayHarness, cluster: LocalCluster
) -> None:
    harness.wait_idle(2)
    second = cluster.second.node_id[:8]
    # One long job per worker; the one on the second node loses its node, the other is cancelled
    # to free the head node's worker for the rerun.
    first_id, other_id = harness.submit(LONG_JOB), harness.submit(LONG_JOB)
    for job_id in (first_id, other_id):
        harness.wait_for(job_id, lambda r: r.progress.stage == "denoise" and r.progress.step >= 1, "to denoise")
    records = {j: harness.store.get(j) for j in (first_id, other_id)}
    job_id = next(j for j, r in records.items() if second in (r.worker_id or ""))  # type: ignore[union-attr]
    blocker = next(j for j in records if j != job_id)
    lost_worker, head_worker = records[job_id].worker_id, records[blocker].worker_id  # type: ignore[union-attr]
    cluster.remove_node(cluster.second)
    harness.wait_for(job_id, lambda r: r.attempt == 1, "requeued", timeout=120)
    harness.store.request_cancel(blocker)  # a helper: cancelled, or done already
    harness.dispatcher.wake()
    assert harness.wait_terminal(blocker).status in ("cancelled", "succeeded")
    record = harness.wait_terminal(job_id)
    assert record.status == "succeeded" and record.attempt == 1 and record.worker_id == head_worker, record.error
    ended = [e for e in harness.of(ev.WorkerEnded) if e.job_id == job_id]
    assert len(ended) == 1 and ended[0].cause == "node_lost" and ended[0].worker_id == lost_worker
    assert "lost with its node" in ended[0].description
    _never_twice_at_once(harness, job_id)
    deadline = time.monotonic() + 60
    while lost_worker in {w.id for w in harness.dispatcher.workers()} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lost_worker not in {w.id for w in harness.dispatcher.workers()}  # its slot left with the node
    joined = cluster.add_node()
    cluster.second = joined
    new_ids = [w.id for w in harness.wait_idle(2) if joined.node_id[:8] in w.id]
    assert new_ids and lost_worker not in new_ids  # the new node's slot got a worker
