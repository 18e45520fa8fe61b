"""The kernel's OOM killer as a failure of its own: oom_score_adj, the OOM-kill counters of fake
cgroup trees (v1 and v2 layouts), and a real worker SIGKILLed while the counter rises.

The real kernel OOM kill in a memory-limited container is tests/container/test_image.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steadyframe import oom_kill
from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.supervisor import Dispatcher, WorkerSlot
from steadyframe.supervisor.local import LocalProcessPool

from .conftest import READY_TIMEOUT_S, SYNTHETIC, make_settings

GIB = 1024**3


def _fake_proc(tmp_path: Path, cgroup_lines: str, *, vmstat_kills: int = 0, ram_kib: int = 24 * 1024 * 1024) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup_lines)
    (proc / "vmstat").write_text(f"nr_free_pages 100\noom_kill {vmstat_kills}\n")
    (proc / "meminfo").write_text(f"MemTotal:       {ram_kib} kB\nMemFree:        1000 kB\n")
    return proc


def _v2_tree(tmp_path: Path, *, leaf_max: str = "max", parent_max: str = str(3 * GIB), kills: int = 0) -> Path:
    root = tmp_path / "cgroup"
    leaf = root / "system.slice" / "app.scope"
    leaf.mkdir(parents=True)
    (root / "system.slice" / "memory.max").write_text(parent_max + "\n")
    (leaf / "memory.max").write_text(leaf_max + "\n")
    (leaf / "memory.events").write_text(f"low 0\nhigh 0\nmax 4\noom 1\noom_kill {kills}\n")
    (leaf / "memory.current").write_text(str(800 * 1024**2))
    (leaf / "memory.peak").write_text(str(int(2.9 * GIB)))
    (leaf / "memory.swap.current").write_text("0")
    (leaf / "memory.stat").write_text(f"anon {600 * 1024**2}\nfile {200 * 1024**2}\n")
    return root


def _v1_container_tree(tmp_path: Path, *, limit: int, kills: int = 0) -> Path:
    """As a Docker container sees cgroup v1: its own memory cgroup mounted at .../memory."""
    root = tmp_path / "cgroup"
    memory = root / "memory"
    memory.mkdir(parents=True)
    (memory / "memory.oom_control").write_text(f"oom_kill_disable 0\nunder_oom 0\noom_kill {kills}\n")
    (memory / "memory.limit_in_bytes").write_text(str(limit))
    (memory / "memory.usage_in_bytes").write_text(str(900 * 1024**2))
    (memory / "memory.max_usage_in_bytes").write_text(str(3 * GIB))
    (memory / "memory.stat").write_text(f"rss 1\ntotal_rss {700 * 1024**2}\ntotal_swap 0\nhierarchical_memory_limit {limit}\n")
    return root


V1_LINES = "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n"


def test_a_v2_cgroup_is_found_from_proc_and_its_lowest_limit_and_counters_are_read(tmp_path: Path) -> None:
    root = _v2_tree(tmp_path, kills=2)
    proc = _fake_proc(tmp_path, "0::/system.slice/app.scope\n")
    cgroup = oom_kill.memory_cgroup(root=root, proc=proc)
    assert cgroup is not None and cgroup.version == 2
    assert cgroup.path == root / "system.slice" / "app.scope"
    assert cgroup.limit() == 3 * GIB  # the leaf says "max"; its parent's limit binds
    figures = cgroup.figures()
    assert figures.oom_kills == 2 and figures.anon == 600 * 1024**2 and figures.usage == 800 * 1024**2
    assert figures.peak == int(2.9 * GIB) and figures.swap == 0 and figures.limit == 3 * GIB


def test_a_v1_container_cgroup_mounted_at_the_root_is_used_and_a_huge_limit_means_none(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, V1_LINES)
    limited = oom_kill.memory_cgroup(root=_v1_container_tree(tmp_path / "a", limit=3 * GIB, kills=1), proc=proc)
    assert limited is not None and limited.version == 1 and limited.path.name == "memory"
    assert limited.limit() == 3 * GIB and limited.oom_kills() == 1
    assert limited.figures().anon == 700 * 1024**2
    unlimited = oom_kill.memory_cgroup(root=_v1_container_tree(tmp_path / "b", limit=9223372036854771712), proc=proc)
    assert unlimited is not None and unlimited.limit() is None


def test_the_limit_is_named_in_words_or_the_machines_ram_when_there_is_none(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, V1_LINES, ram_kib=16 * 1024 * 1024)
    limited = oom_kill.memory_cgroup(root=_v1_container_tree(tmp_path / "a", limit=3 * GIB), proc=proc)
    assert "memory limit of 3.0 GiB" in oom_kill.describe_limit(limited, proc=proc)
    unlimited = oom_kill.memory_cgroup(root=_v1_container_tree(tmp_path / "b", limit=1 << 62), proc=proc)
    assert oom_kill.describe_limit(unlimited, proc=proc) == "this machine's 16.0 GiB of RAM (no memory limit is set)"
    advice = oom_kill.kernel_oom_advice("the memory limit of 3.0 GiB")
    assert "3.0 GiB" in advice and "mem_limit" in advice


def test_the_watch_claims_a_kill_once_and_falls_back_to_the_system_counter(tmp_path: Path) -> None:
    root = _v2_tree(tmp_path)
    proc = _fake_proc(tmp_path, "0::/system.slice/app.scope\n")
    watch = oom_kill.OomKillWatch(root=root, proc=proc)
    assert watch.sources == ["cgroup", "system"] and watch.claim() is False
    (root / "system.slice" / "app.scope" / "memory.events").write_text("oom 1\noom_kill 1\n")
    assert watch.claim() is True
    assert watch.claim() is False  # consumed: an old kill never explains a later death
    # No cgroup to read (not Linux cgroups, or hidden): the system's count still tells.
    bare = oom_kill.OomKillWatch(root=tmp_path / "nowhere", proc=proc)
    assert bare.sources == ["system"] and bare.claim() is False
    (proc / "vmstat").write_text("oom_kill 5\n")
    assert bare.claim() is True and bare.claim() is False


def test_no_proc_or_cgroup_files_mean_nothing_is_known_and_nothing_claimed(tmp_path: Path) -> None:
    watch = oom_kill.OomKillWatch(root=tmp_path / "x", proc=tmp_path / "y")
    assert watch.sources == [] and watch.claim() is False
    assert oom_kill.describe_limit(None, proc=tmp_path / "y") == "this machine's RAM"


def test_a_worker_is_made_the_kernels_first_choice() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert oom_kill.expose_worker(child.pid) == oom_kill.WORKER_OOM_SCORE_ADJ
        assert Path(f"/proc/{child.pid}/oom_score_adj").read_text().strip() == "1000"
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start an unprivileged child from a known score")
def test_an_unprivileged_server_keeps_its_score_when_it_may_not_lower_it() -> None:
    """proc(5): going below the minimum a privileged process set needs CAP_SYS_RESOURCE; the
    server then keeps 0 (its workers' 1000 protects it) and does not fail."""

    read_end, write_end = os.pipe()
    pid = os.fork()  # a child that only writes /proc files, then leaves: no exec needed as nobody
    if pid == 0:
        code = 1
        try:
            Path("/proc/self/oom_score_adj").write_text("0")  # privileged: also sets the minimum to 0
            os.setuid(65534)
            os.write(write_end, str(oom_kill.protect_server()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    result = os.read(read_end, 64).decode()
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == "0"


@pytest.mark.slow
def test_a_worker_sigkilled_while_the_oom_count_rises_fails_its_job_as_out_of_memory_naming_the_limit(
    tmp_path: Path,
) -> None:
    """A real worker, a fake cgroup: the kernel's kill is SIGKILL plus a risen counter. The job
    fails as out_of_memory (not worker_lost), is not rerun, and the restarted worker runs the next job."""
    root = _v1_container_tree(tmp_path, limit=3 * GIB)
    proc = _fake_proc(tmp_path, V1_LINES)
    watch = oom_kill.OomKillWatch(root=root, proc=proc)
    settings = make_settings(tmp_path / "data", max_attempts=3)
    store = SqliteJobStore(settings.jobs_db)
    pool = LocalProcessPool(settings, [WorkerSlot("w0")], runner=SYNTHETIC, oom_watch=watch)
    dispatcher = Dispatcher(settings, store, pool=pool)
    dispatcher.start()
    try:
        pid = _wait_idle(dispatcher)
        job, _ = store.submit({"prompt": "too big", "steps": 200, "num_frames": 1024})
        dispatcher.wake()
        _until(lambda: (r := store.get(job.id)) is not None and r.progress.step > 0, "the job to make progress")
        (root / "memory" / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
        os.kill(pid, signal.SIGKILL)
        _until(lambda: store.get(job.id).status.terminal, "the job to end")  # type: ignore[union-attr]
        record = store.get(job.id)
        assert record is not None and record.status == "failed" and record.error is not None
        assert record.error.kind == "out_of_memory" and record.attempt == 0
        assert "out-of-memory killer" in record.error.message and "3.0 GiB" in record.error.message
        assert "3.0 GiB" in record.error.advice and "mem_limit" in record.error.advice
        assert dispatcher.stats().restarts.get("oom_killed") == 1
        _wait_idle(dispatcher, not_pid=pid)
        # The kill is consumed: the restarted worker's next job runs normally.
        after, _ = store.submit({"prompt": "fits", "steps": 2})
        dispatcher.wake()
        _until(lambda: store.get(after.id).status.terminal, "the next job")  # type: ignore[union-attr]
        assert store.get(after.id).status == "succeeded"  # type: ignore[union-attr]
    finally:
        dispatcher.stop(timeout=10)
        store.close()


def _until(predicate, what: str, timeout: float = READY_TIMEOUT_S) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_idle(dispatcher: Dispatcher, *, not_pid: int | None = None) -> int:
    found: list[int] = []

    def idle() -> bool:
        for info in dispatcher.workers():
            if info.state == "idle" and info.pid is not None and info.pid != not_pid:
                found.append(info.pid)
                return True
        return False

    _until(idle, "an idle worker")
    return found[0]


def test_readings_compare_only_the_counters_both_hold() -> None:
    """A Ray head compares an actor's Ready reading with a node task's: cgroups are keyed by their
    folder, so a task in another cgroup never reads as a rise (or hides one) there."""
    before = {"system": 3, "cgroup:/a": 1}
    assert oom_kill.counts_rose(before, {"system": 4, "cgroup:/b": 0})
    assert not oom_kill.counts_rose(before, {"system": 3, "cgroup:/b": 9})
    assert oom_kill.counts_rose(before, {"system": 3, "cgroup:/a": 2})
    assert not oom_kill.counts_rose({}, {"system": 9})  # no baseline: nothing is claimed
    reading = oom_kill.node_oom_reading()
    assert set(reading) == {"counts", "limit"} and isinstance(reading["limit"], str)
