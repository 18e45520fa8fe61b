"""The seed's story, measured on our image: a job that outgrows the container's memory limit.

    python bench/container_oom.py [--image steadyframe:local] [--memory 3g] [--ballast-mb 4096]
                                  [--jobs 3] [--markdown out.md]

Starts the image (as `make test-container` builds it) with a memory limit and no swap, runs one
job to warm it, records the container's memory cgroup (read on the host) idle, submits a job
whose injected ballast exceeds the limit, and records the peak, the memory once a worker is
ready again, swap, container restarts, worker restarts, what the user was told, and whether
the next ``--jobs`` jobs succeed. Memory is the cgroup's anonymous memory (process RSS, what a
ballast grows) and its whole usage (page cache included), in MiB.
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx

from steadyframe.testing.container import Container

OOM_RESTARTS = 'steadyframe_worker_restarts_total{reason="oom_killed"}'


def _metric(container: Container, name: str) -> float:
    """Sum of a Prometheus counter's samples from /metrics (0 when absent)."""
    with container.client() as http:
        text = http.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="steadyframe:local")
    parser.add_argument("--memory", default="3g")
    parser.add_argument("--ballast-mb", type=int, default=4096)
    parser.add_argument("--jobs", type=int, default=3, help="jobs run after the OOM kill")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()

    box = Container(args.image, memory_limit=args.memory)
    rows: dict[str, str] = {}
    try:
        began = time.monotonic()
        box.start()
        box.wait_healthy()
        rows["start to healthy"] = f"{time.monotonic() - began:.0f} s"
        warm = box.wait_job(box.submit(prompt="warm up", steps=2))
        assert warm["status"] == "succeeded", warm
        time.sleep(3)
        idle = box.memory()
        job_id = box.submit(
            prompt="too much",
            steps=4,
            fault={"stage": "denoise", "kind": "error", "at_step": 1, "ballast_mb": args.ballast_mb},
        )
        job = box.wait_job(job_id)
        failed_at = time.monotonic()
        killed = box.memory()
        started = box.inspect()["State"]["StartedAt"]
        probe_errors = 0
        while True:  # until a new worker is ready
            try:
                if httpx.get(f"{box.url}/readyz", timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                probe_errors += 1  # counted, not hidden: the server should answer all along
            time.sleep(0.2)
        ready_again_s = time.monotonic() - failed_at
        box.wait_healthy()
        time.sleep(3)
        after = box.memory()
        next_ok = sum(box.wait_job(box.submit(prompt=f"next {i}", steps=2))["status"] == "succeeded" for i in range(args.jobs))
        error = job.get("error") or {}
        rows.update(
            {
                "memory limit": f"{idle.limit_mb:.0f} MiB" if idle.limit_mb else "none",
                "idle (anon / usage)": f"{idle.anon_mb:.0f} / {idle.usage_mb:.0f} MiB",
                "peak (cgroup max usage)": f"{killed.peak_mb:.0f} MiB",
                "after the error, worker ready (anon / usage)": f"{after.anon_mb:.0f} / {after.usage_mb:.0f} MiB",
                "after - idle (anon)": f"{after.anon_mb - idle.anon_mb:+.0f} MiB",
                "swap used": f"{max(idle.swap_mb, killed.swap_mb, after.swap_mb):.0f} MiB",
                "kernel OOM kills": str(killed.oom_kills - idle.oom_kills),
                "container restarts": str(box.restart_count()),
                "server process the same (StartedAt unchanged)": str(box.inspect()["State"]["StartedAt"] == started),
                "/readyz connection errors while the worker restarted": str(probe_errors),
                "container running / health": f"{box.running()} / {box.health()}",
                "worker restarts (oom_killed)": f"{_metric(box, OOM_RESTARTS):.0f}",
                "ready again after the error (/readyz)": f"{ready_again_s:.1f} s",
                "job status / attempts": f"{job['status']} / {job['attempt'] + 1}",
                "error visible to the user": f"{error.get('kind')}: {error.get('message')}",
                "advice": str(error.get("advice")),
                f"next {args.jobs} jobs succeeded": f"{next_ok}/{args.jobs}",
            }
        )
    finally:
        box.remove()
    lines = [f"steadyframe image {args.image}, --memory {args.memory}, ballast {args.ballast_mb} MB", ""]
    lines += ["| measure | steadyframe |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows.items()]
    print("\n".join(lines))
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
