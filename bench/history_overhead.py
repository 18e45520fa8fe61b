"""What the memory timeline's sampling costs the server: CPU time per minute, side by side with the
whole server process's CPU time over the same minutes.

    python bench/history_overhead.py                    # default interval (2 s), 120 s idle
    python bench/history_overhead.py --sample-s 0.5 --seconds 300

Starts its own server (built-in tiny model), lets it sit idle with its worker up for ``--seconds``,
then reads the sampler's own CPU time (``sampling`` in ``GET /v1/system/history``, measured with
``time.thread_time`` around each sample) and the server process's CPU time (psutil) over the window.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timeline_screenshot import start_server  # noqa: E402

from steadyframe.testing.serve import stop_serve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="steadyframe-history-cost-"))
    process, url = start_server(data_dir, args.sample_s)
    try:
        server = psutil.Process(process.pid)
        with httpx.Client(base_url=url, timeout=30) as http:
            time.sleep(5)  # past start-up work
            before = http.get("/v1/system/history").json()["sampling"]
            cpu_before = sum(server.cpu_times()[:2])
            time.sleep(args.seconds)
            after = http.get("/v1/system/history").json()
            cpu_after = sum(server.cpu_times()[:2])
        minutes = (after["sampling"]["running_s"] - before["running_s"]) / 60
        sampler_ms = (after["sampling"]["cpu_s"] - before["cpu_s"]) * 1000 / minutes
        server_ms = (cpu_after - cpu_before) * 1000 / minutes
        samples = len(after["samples"])
        print(f"interval {args.sample_s} s, {minutes:.1f} min idle, {samples} samples kept")
        print(f"{'what':<34}{'CPU ms per minute':>20}")
        print(f"{'sampler thread':<34}{sampler_ms:>20.1f}")
        print(f"{'whole server process':<34}{server_ms:>20.1f}")
        print(f"{'sampler share of one core':<34}{sampler_ms / 60_000 * 100:>19.3f}%")
    finally:
        stop_serve(process)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
