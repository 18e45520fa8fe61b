"""Kill the whole supervisor (SIGKILL) with jobs queued and one running: nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from steadyframe.jobs.sqlite import SqliteJobStore

SCRIPT = Path(__file__).with_name("supervisor_process.py")
LONG_JOB = {"prompt": "long", "steps": 200, "num_frames": 1024}


def _start(data_dir: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(SCRIPT), str(data_dir)], stdout=subprocess.PIPE, text=True, env=env)


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigkill_of_the_supervisor_loses_no_job_and_runs_none_twice(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    long_id = store.submit(LONG_JOB)[0].id
    short_ids = [store.submit({"prompt": f"short {i}", "steps": 2})[0].id for i in range(3)]

    first = _start(tmp_path)
    try:
        _wait_for(lambda: (r := store.get(long_id)) is not None and r.progress.stage == "denoise", 120, "long job")
        workers = [p for p in psutil.Process(first.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 1
        worker_pid = workers[0].pid
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # The orphaned worker dies with its supervisor, so it cannot race the next one.
        _wait_for(lambda: _gone(worker_pid), 15, "orphaned worker to exit")
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    running = store.get(long_id)
    assert running is not None and running.status == "running"  # as the dead server left it

    second = _start(tmp_path)
    try:
        ids = [long_id, *short_ids]
        _wait_for(lambda: all(store.get(i).status.terminal for i in ids), 180, "every job to finish")  # type: ignore[union-attr]
        records = [store.get(i) for i in ids]
        assert [r.status for r in records] == ["succeeded"] * 4, [r.error for r in records]  # type: ignore[union-attr]
        assert records[0].attempt == 1 and all(r.attempt == 0 for r in records[1:])  # type: ignore[union-attr]
        assert all(Path(r.result["video_path"]).exists() for r in records)  # type: ignore[index,union-attr]
    finally:
        children = psutil.Process(second.pid).children(recursive=True)
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        for child in children:
            _wait_for(lambda: _gone(child.pid), 15, "worker to stop with the server")
