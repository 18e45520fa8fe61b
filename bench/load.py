"""Load test of the REST API: a few hundred concurrent submissions while status is polled.

    python bench/load.py                      # starts its own server (built-in tiny model, queue cap 40)
    python bench/load.py --jobs 500 --queue 60
    python bench/load.py --url http://127.0.0.1:7860 --token ...   # an already running server

Reports accepted/rejected submissions, status-call latency percentiles and whether every accepted
job reached a terminal state. Jobs are cheap (1 denoise step, 9 frames) so the queue, not the model,
is what is measured; the queue cap makes part of the burst answer 429.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from steadyframe.testing.serve import start_serve, stop_serve

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Tally:
    submit_codes: Counter[int] = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)
    status_latency_ms: list[float] = field(default_factory=list)
    status_errors: int = 0
    final: dict[str, str] = field(default_factory=dict)


def start_server(queue_cap: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    data_dir = Path(tempfile.mkdtemp(prefix="steadyframe-load-"))
    env = {"STEADYFRAME_MAX_QUEUE": str(queue_cap), "STEADYFRAME_LOG_LEVEL": "WARNING"}
    process, url = start_serve(data_dir, env)
    return process, url, data_dir


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def submit_all(client: httpx.AsyncClient, jobs: int, concurrency: int, tally: Tally) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            body = {"prompt": f"load test {index}", "steps": 1, "num_frames": 9, "seed": index}
            try:
                response = await client.post("/v1/jobs", json=body, headers={"Idempotency-Key": f"load-{index}"})
            except httpx.HTTPError:
                tally.submit_codes[0] += 1
                return
            tally.submit_codes[response.status_code] += 1
            if response.status_code == 202:
                tally.accepted.append(response.json()["id"])

    await asyncio.gather(*(one(i) for i in range(jobs)))


async def poll_until_done(
    client: httpx.AsyncClient, tally: Tally, pollers: int, stop: asyncio.Event, deadline: float
) -> None:
    """Pollers cycle over the accepted jobs not yet terminal, timing each status call."""

    async def poller(offset: int) -> None:
        index = offset
        while time.monotonic() < deadline:
            pending = [j for j in tally.accepted if j not in tally.final]
            if not pending:
                if stop.is_set():
                    return
                await asyncio.sleep(0.05)
                continue
            job_id = pending[index % len(pending)]
            index += pollers
            started = time.perf_counter()
            try:
                response = await client.get(f"/v1/jobs/{job_id}")
            except httpx.HTTPError:
                tally.status_errors += 1
                continue
            tally.status_latency_ms.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                tally.status_errors += 1
                continue
            status = response.json()["status"]
            if status in TERMINAL:
                tally.final[job_id] = status
            await asyncio.sleep(0.02)

    await asyncio.gather(*(poller(i) for i in range(pollers)))


async def run(url: str, token: str | None, jobs: int, concurrency: int, pollers: int, timeout_s: float) -> Tally:
    tally = Tally()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=concurrency + pollers)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:
        stop = asyncio.Event()
        polling = asyncio.create_task(poll_until_done(client, tally, pollers, stop, time.monotonic() + timeout_s))
        await submit_all(client, jobs, concurrency, tally)
        stop.set()
        await polling
    return tally


def report(tally: Tally, jobs: int, wall_s: float) -> bool:
    accepted = len(tally.accepted)
    rejected = tally.submit_codes.get(429, 0)
    others = {code: n for code, n in tally.submit_codes.items() if code not in (202, 429)}
    outcomes = Counter(tally.final.values())
    all_terminal = accepted > 0 and len(tally.final) == accepted
    lat = tally.status_latency_ms
    rows = [
        ("jobs submitted", f"{jobs}"),
        ("accepted (202)", f"{accepted}"),
        ("rejected (429 queue full)", f"{rejected}"),
        ("other submit answers", ", ".join(f"{c}: {n}" for c, n in sorted(others.items())) or "none"),
        ("status calls", f"{len(lat)} ({tally.status_errors} errors)"),
        (
            "status latency p50 / p95 / p99",
            f"{percentile(lat, 50):.1f} / {percentile(lat, 95):.1f} / {percentile(lat, 99):.1f} ms",
        ),
        ("status latency max", f"{max(lat) if lat else float('nan'):.1f} ms"),
        ("accepted jobs terminal", f"{len(tally.final)} / {accepted} ({dict(outcomes)})"),
        ("every accepted job terminal", "yes" if all_terminal else "NO"),
        ("wall time", f"{wall_s:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    return all_terminal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server; default: start one with the built-in tiny model")
    parser.add_argument("--token", default=os.environ.get("STEADYFRAME_API_TOKEN"))
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=100, help="submissions in flight at once")
    parser.add_argument("--pollers", type=int, default=8, help="concurrent status pollers")
    parser.add_argument("--queue", type=int, default=40, help="queue cap of the server this script starts")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up waiting for terminal states after this")
    args = parser.parse_args()

    process = None
    url = args.url
    if url is None:
        process, url, data_dir = start_server(args.queue)
        print(f"server {url} (pid {process.pid}, data {data_dir}, queue cap {args.queue})")
    started = time.monotonic()
    try:
        tally = asyncio.run(run(url, args.token, args.jobs, args.concurrency, args.pollers, args.timeout))
    finally:
        if process is not None:
            stop_serve(process, timeout_s=60)
    ok = report(tally, args.jobs, time.monotonic() - started)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
