"""Jobs per minute with one worker and with two workers on two Ray nodes, and the time from an
actor's death to its replacement being ready, in one run on a local Ray cluster (127.0.0.1 only).

    python bench/cluster.py                 # 8 tiny-model jobs per phase
    python bench/cluster.py --jobs 12 --steps 4

Phase 1: a one-node cluster (one worker actor) runs N jobs. Phase 2: a second node joins (the pool
follows it: a second actor) and the same N jobs run on both. Then one actor's process is SIGKILLed
and the time until the dispatcher sees its replacement's Ready is measured. Each node has its own
data folder (own tiny model, nothing shared with the server but Ray's object store).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep ray.init on the loopback address
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from steadyframe.jobs.sqlite import SqliteJobStore  # noqa: E402
from steadyframe.settings import Settings  # noqa: E402
from steadyframe.supervisor import Dispatcher  # noqa: E402
from steadyframe.supervisor import events as ev  # noqa: E402
from steadyframe.supervisor.ray_pool import RayPool  # noqa: E402

STORE_BYTES = 96 * 2**20


def _node(cluster: Cluster | None, data_dir: Path, head: bool = False) -> object:
    os.environ["STEADYFRAME_DATA_DIR"] = str(data_dir)  # the node's raylet (and its actors) inherit it
    try:
        args = dict(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=STORE_BYTES)
        if head:
            return Cluster(initialize_head=True, head_node_args=dict(args, include_dashboard=False))
        assert cluster is not None
        return cluster.add_node(**args)
    finally:
        os.environ.pop("STEADYFRAME_DATA_DIR", None)


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def _idle(dispatcher: Dispatcher) -> list:  # type: ignore[type-arg]
    return [w for w in dispatcher.workers() if w.state == "idle"]


def _phase(store: SqliteJobStore, dispatcher: Dispatcher, jobs: int, steps: int) -> float:
    """Run ``jobs`` jobs at once; -> jobs per minute from the first submit to the last end."""
    start = time.monotonic()
    ids = [store.submit({"prompt": f"bench {i}", "steps": steps, "seed": i})[0].id for i in range(jobs)]
    dispatcher.wake()
    _wait(lambda: all(store.get(i).status.terminal for i in ids), 1800, "the jobs")  # type: ignore[union-attr]
    elapsed = time.monotonic() - start
    failed = [store.get(i) for i in ids if store.get(i).status != "succeeded"]  # type: ignore[union-attr]
    if failed:
        raise SystemExit(f"{len(failed)} job(s) did not succeed: {failed[0]}")
    return jobs / elapsed * 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs per phase")
    parser.add_argument("--steps", type=int, default=2, help="denoise steps per tiny-model job")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="steadyframe-bench-cluster-"))
    cluster = _node(None, root / "node0", head=True)
    assert isinstance(cluster, Cluster)
    ray.init(address=cluster.address, namespace="steadyframe", log_to_driver=False)
    settings = Settings(data_dir=root / "server", device="cpu", log_to_stderr=False)
    store = SqliteJobStore(settings.jobs_db)
    ready_at: dict[str, float] = {}
    lock = threading.Lock()

    def on_event(event: ev.DispatcherEvent) -> None:
        if isinstance(event, ev.WorkerReady):
            with lock:
                ready_at[event.worker_id] = time.monotonic()

    dispatcher = Dispatcher(settings, store, pool=RayPool(settings), on_event=on_event)
    try:
        dispatcher.start()
        _wait(lambda: len(_idle(dispatcher)) == 1, 600, "the first worker")
        _phase(store, dispatcher, 2, args.steps)  # warm: the node builds its tiny model once
        one = _phase(store, dispatcher, args.jobs, args.steps)

        _node(cluster, root / "node1")
        _wait(lambda: len(_idle(dispatcher)) == 2, 600, "the second node's worker")
        _phase(store, dispatcher, 2, args.steps)  # warm the second node too
        two = _phase(store, dispatcher, args.jobs, args.steps)

        victim = _idle(dispatcher)[0]
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)  # the pid the actor reported; same machine here
        _wait(lambda: ready_at.get(victim.id, 0) > killed_at, 600, "the replacement actor")
        replaced = ready_at[victim.id] - killed_at
    finally:
        dispatcher.stop(timeout=15)
        store.close()
        ray.shutdown()
        cluster.shutdown()

    print(f"| workers | nodes | jobs | jobs/min |\n|---|---|---|---|")
    print(f"| 1 | 1 | {args.jobs} | {one:.1f} |")
    print(f"| 2 | 2 | {args.jobs} | {two:.1f} |")
    print(f"\nratio (2 workers / 1 worker): {two / one:.2f}")
    print(f"actor SIGKILLed -> replacement ready: {replaced:.1f} s")


if __name__ == "__main__":
    main()
