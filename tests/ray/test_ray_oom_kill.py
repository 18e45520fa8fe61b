"""A Ray actor killed by its node's kernel OOM killer: the job fails as out_of_memory (not a bare
"killed", not retried at the same level), naming the node, and the next job succeeds.

The kill is real: each idle actor is moved into a memory cgroup of its own with a small limit
(root and a writable memory controller needed, else skipped), and the job's injected ballast
crosses it. The head cannot read the node's counters; the node's reading comes back with the
actor's last words and is compared with the one its Ready carried.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from steadyframe.supervisor import events as ev

from .conftest import SYNTHETIC, LocalCluster, RayHarness, ray_settings

LIMIT_MB = 320  # new charges only (cgroup v1 leaves a moved process's pages where they were)
BALLAST_MB = 1536
V1_MEMORY, V2_ROOT = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")


class LimitedCgroup:
    """A memory cgroup with a limit, made by this test and removed by it (v1 or v2)."""

    def __init__(self, limit_mb: int) -> None:
        name = f"steadyframe-test-{uuid.uuid4().hex[:8]}"
        limit = str(limit_mb * 2**20)
        if (V1_MEMORY / "memory.limit_in_bytes").exists():
            self.path = V1_MEMORY / name
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(limit)
        else:
            self.path = V2_ROOT / name
            self.path.mkdir()
            (self.path / "memory.max").write_text(limit)
            (self.path / "memory.swap.max").write_text("0")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.path.rmdir()
                return
            except OSError:  # still has a process in it (an actor the harness is stopping)
                time.sleep(0.2)


def _memory_cgroups_writable() -> bool:
    if os.geteuid() != 0:
        return False
    if (V1_MEMORY / "memory.limit_in_bytes").exists():
        return os.access(V1_MEMORY, os.W_OK)
    controllers = V2_ROOT / "cgroup.subtree_control"
    return controllers.exists() and "memory" in controllers.read_text().split() and os.access(V2_ROOT, os.W_OK)


pytestmark = pytest.mark.skipif(not _memory_cgroups_writable(), reason="needs root and a writable memory cgroup")


def test_an_actor_killed_by_its_nodes_oom_killer_fails_the_job_as_out_of_memory_and_the_next_succeeds(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    harness = RayHarness(ray_settings(tmp_path / "server", max_attempts=3), SYNTHETIC).start(workers=2)
    cgroups: list[LimitedCgroup] = []
    try:
        for info in harness.wait_idle(2):  # whichever runs the job is in a cgroup it cannot outgrow
            cgroups.append(LimitedCgroup(LIMIT_MB))
            cgroups[-1].add(info.pid)
        fault = {"stage": "denoise", "kind": "error", "at_step": 1, "ballast_mb": BALLAST_MB}
        record = harness.run({"prompt": "too much", "steps": 3, "fault": fault})
        assert record.status == "failed" and record.error is not None
        assert record.error.kind == "out_of_memory", record.error
        assert "out-of-memory killer" in record.error.message and "on node 127.0.0.1" in record.error.message
        assert "--memory" in (record.error.advice or "")
        assert record.attempt == 0 and not harness.of(ev.JobRequeued, record.id)  # not retried blindly
        ended = [e for e in harness.of(ev.WorkerEnded) if e.job_id == record.id]
        assert len(ended) == 1
        again = harness.run({"prompt": "a small one", "steps": 2})
        assert again.status == "succeeded", again.error
    finally:
        harness.stop()
        for cgroup in cgroups:
            cgroup.remove()
