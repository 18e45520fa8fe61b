"""A local two-node Ray cluster (every process on 127.0.0.1, no dashboard, no usage stats) and
dispatchers whose workers are Ray actors on it. One cluster per test module: Ray is slow to start
on a 2-core machine. Each node gets its own data folder (its own models, inputs and outputs),
as separate machines would: nothing is shared with the server's data folder but through Ray.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# ray.init("127.0.0.1:PORT") otherwise swaps the loopback address for this machine's own IP.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from steadyframe.jobs.base import JobRecord  # noqa: E402
from steadyframe.jobs.sqlite import SqliteJobStore  # noqa: E402
from steadyframe.settings import Settings  # noqa: E402
from steadyframe.supervisor import Dispatcher  # noqa: E402
from steadyframe.supervisor import events as ev  # noqa: E402
from steadyframe.supervisor.ray_pool import RayPool  # noqa: E402

SYNTHETIC = "steadyframe.testing.synthetic_runner:run_job"
ENGINE = "steadyframe.engine:run_job"
READY_TIMEOUT_S = 240.0
JOB_TIMEOUT_S = 240.0
OBJECT_STORE_BYTES = 96 * 2**20
# Node deaths noticed in about 3 s instead of Ray's default of tens of seconds.
HEAD_SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3, "health_check_timeout_ms": 1000}


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class LocalCluster:
    """``ray.cluster_utils.Cluster``: a head node and a second node, one CPU (one worker) each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.node_dirs: list[Path] = []
        with _env(STEADYFRAME_DATA_DIR=str(self._node_dir())):
            self.cluster = Cluster(
                initialize_head=True,
                head_node_args=dict(
                    num_cpus=1,
                    node_ip_address="127.0.0.1",
                    include_dashboard=False,
                    object_store_memory=OBJECT_STORE_BYTES,
                    _system_config=HEAD_SYSTEM_CONFIG,
                ),
            )
        self.second = self.add_node()
        ray.init(address=self.cluster.address, namespace="steadyframe", log_to_driver=False)

    def _node_dir(self) -> Path:
        path = self.root / f"node{len(self.node_dirs)}"
        self.node_dirs.append(path)
        return path

    def add_node(self) -> Any:
        with _env(STEADYFRAME_DATA_DIR=str(self._node_dir())):
            return self.cluster.add_node(
                num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=OBJECT_STORE_BYTES
            )

    def remove_node(self, node: Any) -> None:
        self.cluster.remove_node(node, allow_graceful=False)

    def shutdown(self) -> None:
        ray.shutdown()
        self.cluster.shutdown()


class RayHarness:
    """A dispatcher on a RayPool, its store, and the waits the tests need."""

    def __init__(self, settings: Settings, runner: str) -> None:
        self.settings = settings
        self.store = SqliteJobStore(settings.jobs_db)
        self.events: list[ev.DispatcherEvent] = []
        self.pool = RayPool(settings, runner=runner)
        self.dispatcher = Dispatcher(settings, self.store, pool=self.pool, on_event=self.events.append)

    def start(self, workers: int = 2) -> "RayHarness":
        self.dispatcher.start()
        self.wait_idle(workers)
        return self

    def wait_idle(self, count: int = 1, timeout: float = READY_TIMEOUT_S, *, not_pids: set[int] = frozenset()) -> list[Any]:
        """Wait until ``count`` workers are idle (none with a pid in ``not_pids``); -> their infos."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            idle = [w for w in self.dispatcher.workers() if w.state == "idle" and w.pid not in not_pids]
            if len(idle) >= count:
                return idle
            time.sleep(0.1)
        raise AssertionError(f"not {count} idle workers after {timeout} s: {self.dispatcher.workers()}")

    def submit(self, spec: dict[str, Any]) -> str:
        job, _ = self.store.submit(spec)
        self.dispatcher.wake()
        return job.id

    def wait_terminal(self, job_id: str, timeout: float = JOB_TIMEOUT_S) -> JobRecord:
        return self.wait_for(job_id, lambda r: r.status.terminal, "to end", timeout)

    def wait_for(self, job_id: str, predicate: Callable[[JobRecord], bool], what: str, timeout: float = JOB_TIMEOUT_S) -> JobRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.store.get(job_id)
            if record is not None and predicate(record):
                return record
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} never came {what}: {self.store.get(job_id)}")

    def run(self, spec: dict[str, Any], timeout: float = JOB_TIMEOUT_S) -> JobRecord:
        return self.wait_terminal(self.submit(spec), timeout)

    def worker(self, worker_id: str) -> Any:
        return next(w for w in self.dispatcher.workers() if w.id == worker_id)

    def worker_running(self, job_id: str) -> Any:
        return next(w for w in self.dispatcher.workers() if w.job_id == job_id)

    def of(self, kind: type, job_id: str | None = None) -> list[Any]:
        return [e for e in list(self.events) if isinstance(e, kind) and (job_id is None or getattr(e, "job_id", None) == job_id)]

    def stop(self) -> None:
        self.dispatcher.stop(timeout=15)
        self.store.close()


def ray_settings(data_dir: Path, **overrides: Any) -> Settings:
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


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("ray-nodes"))
    try:
        yield local
    finally:
        local.shutdown()
