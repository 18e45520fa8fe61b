"""What steadyframe holds when nobody uses it, measured in one run on this machine.

1. ``steadyframe serve`` with a warm worker after one job (model loaded): RSS of server + worker;
2. the same server once its worker exited after idling (scale to zero): RSS of the server alone;
3. the seed's shape, one process with Gradio, torch and the pipeline loaded (the tiny model here);
4. the cold start: the next job's worker start and its whole time from submission.

    python bench/idle.py [--idle-exit-s 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import psutil

from steadyframe.testing.serve import OFFLINE_ENV, start_serve, stop_serve

_MB = 2**20
SEED_SHAPE = textwrap.dedent(
    """
    import os, psutil, gradio as gr, torch
    from steadyframe.engine.loading import load_pipeline, locate_weights
    from steadyframe.families import resolve_model
    from steadyframe.settings import Settings
    settings = Settings(data_dir=os.environ["BENCH_DATA"], device="cpu")
    ref = resolve_model(None, settings)
    pipe = load_pipeline(ref, locate_weights(ref, settings), mode="t2v", device="cpu", memory_level=0)
    with gr.Blocks() as demo:
        gr.Textbox()
    print(psutil.Process().memory_info().rss / 2**20)
    """
)


def _tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / _MB


def _workers(client: httpx.Client) -> list[dict]:
    return [p for p in client.get("/v1/system").json()["processes"] if p["role"] == "worker"]


def _run_job(client: httpx.Client) -> tuple[float, dict]:
    started = time.perf_counter()
    job_id = client.post("/v1/jobs", json={"prompt": "a red ball rolling", "steps": 2}).json()["id"]
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.1)
    assert job["status"] == "succeeded", job
    return time.perf_counter() - started, job


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-exit-s", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sf-bench-idle-") as tmp:
        server, url = start_serve(Path(tmp), {"STEADYFRAME_WORKER_IDLE_EXIT_S": str(args.idle_exit_s)})
        try:
            client = httpx.Client(base_url=url, timeout=30)
            _run_job(client)  # loads the model
            time.sleep(1.5)  # a heartbeat or two after the job
            warm = _tree_rss_mb(server.pid)
            _wait(lambda: all(w["state"] == "parked" for w in _workers(client)), 120, "the worker to exit")
            time.sleep(1.0)
            alone = _tree_rss_mb(server.pid)
            wall, job = _run_job(client)
            cold = (job.get("result") or {}).get("timings", {}).get("worker_start")
        finally:
            stop_serve(server, timeout_s=60)
        seed = float(
            subprocess.run([sys.executable, "-c", SEED_SHAPE], env={**os.environ, **OFFLINE_ENV, "BENCH_DATA": tmp}, check=True,
                           capture_output=True, text=True).stdout.split()[-1]
        )  # fmt: skip
    print(f"{'what':<44} {'RSS MB':>8}")
    print(f"{'server + warm worker (model loaded)':<44} {warm:>8.0f}")
    print(f"{'server alone (worker exited after idling)':<44} {alone:>8.0f}")
    print(f"{'seed shape: gradio + torch + pipeline, 1 proc':<44} {seed:>8.0f}")
    print(f"server alone / seed shape: {alone / seed:.2f}x")
    print(f"cold start: worker ready in {cold if cold is not None else float('nan'):.1f} s, first job done in {wall:.1f} s")


if __name__ == "__main__":
    main()
