"""The dispatcher with real spawned workers (synthetic runner: real torch work, no model files).

Every stage x fault kind on the real engine is in test_fault_matrix.py; this file covers the
dispatcher's own behaviour: requeue, external kills, cancel, recycling after N jobs, stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from steadyframe.logs import find_error
from steadyframe.stages import Stage

from .conftest import Harness

# A job long enough to be caught mid-run: 200 denoise steps over 1024 "frames".
LONG_JOB = {"prompt": "a long one", "steps": 200, "num_frames": 1024}
# Any tolerance well below the ballast proves the ballast was freed; the rest is allocator noise.
BALLAST_MB = 300
RSS_TOLERANCE_MB = 150


def _assert_logged_with_traceback(harness: Harness, error_id: str, fragment: str) -> None:
    lines = find_error(harness.settings.logs_dir, error_id)
    assert lines, f"no log line carries {error_id}"
    assert any(fragment in (line.get("traceback") or "") for line in lines), lines


def test_a_job_runs_and_its_progress_reaches_the_store(synthetic: Harness) -> None:
    record = synthetic.run({"prompt": "a cat", "steps": 3})
    assert record.status == "succeeded", record.error
    assert record.result is not None and os.path.exists(record.result["video_path"])
    assert record.progress.stage == Stage.SAVE and record.progress.step == record.progress.total
    stats = synthetic.dispatcher.stats()
    assert stats.stage_seconds_count["denoise"] >= 1 and stats.jobs_finished["succeeded"] >= 1
    info = synthetic.dispatcher.workers()[0]
    assert info.state == "idle" and info.rss_mb > 0 and info.jobs_done >= 1 and info.device == "cpu"
    assert info.loaded_models == ["synthetic-4"]


@pytest.mark.parametrize("stage,kind,expected", [("denoise", "oom", "out_of_memory"), ("save", "error", "internal")])
def test_a_failing_stage_ends_the_job_with_its_kind_and_memory_returns(
    synthetic: Harness, stage: str, kind: str, expected: str
) -> None:
    synthetic.wait_ready()
    pid = synthetic.worker_pid()
    before = synthetic.summed_rss_mb()
    record = synthetic.run(
        {"prompt": "x", "fault": {"stage": stage, "kind": kind, "ballast_mb": BALLAST_MB}}
    )
    assert record.status == "failed" and record.error is not None
    assert record.error.kind == expected and record.error.stage == stage
    assert record.error.error_id.startswith("err-") and "/" not in record.error.message
    _assert_logged_with_traceback(synthetic, record.error.error_id, "Traceback (most recent call last)")
    assert synthetic.summed_rss_mb() - before < RSS_TOLERANCE_MB
    assert synthetic.worker_pid() == pid  # a plain failure does not cost a worker restart
    assert synthetic.run({"prompt": "next"}).status == "succeeded"


def test_out_of_memory_at_level_zero_is_recovered_by_the_next_memory_level(synthetic: Harness) -> None:
    record = synthetic.run(
        {"prompt": "x", "fault": {"stage": "decode", "kind": "oom", "ballast_mb": 100, "only_at_level": 0}}
    )
    assert record.status == "succeeded", record.error
    assert record.result is not None and record.result["memory_level"] == 1
    assert synthetic.dispatcher.stats().oom_recoveries >= 1


def test_an_invalid_spec_fails_as_invalid_input_without_a_restart(synthetic: Harness) -> None:
    pid = synthetic.wait_ready()
    record = synthetic.run({"prompt": "x", "steps": 0})
    assert record.status == "failed" and record.error is not None and record.error.kind == "invalid_input"
    assert "steps" in record.error.message
    assert synthetic.worker_pid() == pid


def test_cancelling_a_running_job_stops_it_at_the_next_step(synthetic: Harness) -> None:
    pid = synthetic.wait_ready()
    job_id = synthetic.submit(LONG_JOB)
    synthetic.wait_status(job_id, "running")
    synthetic.store.request_cancel(job_id)
    synthetic.dispatcher.wake()
    record = synthetic.wait_terminal(job_id)
    assert record.status == "cancelled"
    assert synthetic.wait_ready() == pid  # it stopped on its own: no kill needed


def test_cancelling_a_queued_job_is_immediate(synthetic: Harness) -> None:
    synthetic.wait_ready()
    running = synthetic.submit(LONG_JOB)
    queued = synthetic.submit({"prompt": "never runs"})
    after = synthetic.store.request_cancel(queued)
    assert after is not None and after.status == "cancelled"
    synthetic.store.request_cancel(running)
    synthetic.dispatcher.wake()
    assert synthetic.wait_terminal(running).status == "cancelled"


def test_a_crash_is_requeued_once_then_fails_as_worker_lost(harness_factory) -> None:
    harness = harness_factory(max_attempts=2)
    first_pid = harness.worker_pid()
    record = harness.run({"prompt": "x", "fault": {"stage": "decode", "kind": "crash", "ballast_mb": 50}})
    assert record.status == "failed" and record.error is not None
    assert record.error.kind == "worker_lost" and record.attempt == 2
    assert "SIGSEGV" in record.error.message and record.error.stage == "decode"
    # the log line holds what the worker's faulthandler wrote as it died
    _assert_logged_with_traceback(harness, record.error.error_id, "Segmentation fault")
    assert harness.dispatcher.stats().restarts.get("crash") == 2
    harness.wait_ready(not_pid=first_pid)
    assert harness.run({"prompt": "after the crash"}).status == "succeeded"


def test_an_external_sigkill_of_the_worker_is_survived_and_the_job_rerun(harness_factory) -> None:
    harness = harness_factory()
    pid = harness.worker_pid()
    job_id = harness.submit(LONG_JOB)
    harness.wait_status(job_id, "running")
    os.kill(pid, signal.SIGKILL)
    record = harness.wait_terminal(job_id)
    assert record.status == "succeeded" and record.attempt == 1
    assert harness.worker_pid() != pid


def test_a_frozen_idle_worker_is_replaced_and_the_next_job_runs(harness_factory) -> None:
    harness = harness_factory(worker_silence_timeout_s=3.0)
    pid = harness.wait_ready()
    os.kill(pid, signal.SIGSTOP)  # frozen: alive, but its heartbeat thread says nothing
    try:
        new_pid = harness.wait_ready(not_pid=pid)
    finally:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGCONT)  # let a survivor die normally
    assert new_pid != pid
    assert harness.dispatcher.stats().restarts.get("silent") == 1
    assert harness.run({"prompt": "next"}).status == "succeeded"


def test_a_job_that_ignores_cancel_is_killed_after_the_grace_period(harness_factory) -> None:
    harness = harness_factory(stall_timeout_s=60.0, cancel_grace_s=1.0)
    pid = harness.worker_pid()
    job_id = harness.submit({"prompt": "x", "fault": {"stage": "denoise", "kind": "hang"}})
    harness.wait_status(job_id, "running")
    time.sleep(0.5)  # let it reach the hang
    harness.store.request_cancel(job_id)
    harness.dispatcher.wake()
    assert harness.wait_terminal(job_id, timeout=30).status == "cancelled"
    harness.wait_ready(not_pid=pid)


def test_workers_are_recycled_after_n_jobs(harness_factory) -> None:
    harness = harness_factory(recycle_after_jobs=2)
    pid = harness.worker_pid()
    assert harness.run({"prompt": "one"}).status == "succeeded"
    assert harness.worker_pid() == pid
    assert harness.run({"prompt": "two"}).status == "succeeded"
    assert harness.wait_ready(not_pid=pid) != pid
    assert harness.dispatcher.stats().recycles.get("jobs") == 1


def test_stop_ends_every_worker_and_can_be_called_twice(harness_factory) -> None:
    harness = harness_factory(slots=2)
    deadline = time.monotonic() + 120
    while sum(w.state == "idle" for w in harness.dispatcher.workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [w.pid for w in harness.dispatcher.workers()]
    assert len(set(pids)) == 2 and None not in pids
    harness.dispatcher.stop(timeout=10)
    harness.dispatcher.stop(timeout=10)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not harness.dispatcher.is_ready()


def test_a_clean_stop_puts_the_running_job_back_in_the_queue_without_spending_an_attempt(harness_factory) -> None:
    harness = harness_factory()
    job_id = harness.submit({"prompt": "x", "fault": {"stage": "denoise", "kind": "hang"}})
    harness.wait_status(job_id, "running")
    harness.dispatcher.stop(timeout=10)
    record = harness.store.get(job_id)
    assert record is not None and record.status == "queued" and record.attempt == 0


def test_importing_the_supervisor_and_store_does_not_import_torch() -> None:
    code = (
        "import sys, steadyframe.supervisor, steadyframe.supervisor.local, steadyframe.jobs.sqlite, "
        "steadyframe.taxonomy, steadyframe.logs, steadyframe.worker.messages; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
