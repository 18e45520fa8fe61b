"""A real ``steadyframe serve`` process for tests and benches (loopback, a free port), and the one
way they launch Debian's Chromium. No torch here."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}

# Centres of the memory chart's drawn points of the traces whose name starts with a prefix (plotly
# keeps each trace's data on its SVG group, so a marker is found by what it means, not where it is).
TRACE_POINTS_JS = """prefix => {
    const centres = [];
    for (const trace of document.querySelectorAll('#memory-timeline .scatterlayer .trace')) {
        const data = trace.__data__ && trace.__data__[0] && trace.__data__[0].trace;
        if (!data || !String(data.name).startsWith(prefix)) continue;
        for (const point of trace.querySelectorAll('.point')) {
            const box = point.getBoundingClientRect();
            if (box.width > 0 || box.height > 0) centres.push([box.x + box.width / 2, box.y + box.height / 2]);
        }
    }
    return centres;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(data_dir: Path, env: dict[str, str] | None = None, *, timeout_s: float = 300.0) -> tuple[subprocess.Popen[bytes], str]:
    """``steadyframe serve`` on 127.0.0.1 with ``data_dir`` and extra ``STEADYFRAME_*`` ``env``, its
    output in ``data_dir/serve.log``; returns once ``/readyz`` answers -> (process, base URL)."""
    port = free_port()
    full_env = {**os.environ, **OFFLINE_ENV, "STEADYFRAME_DATA_DIR": str(data_dir), "STEADYFRAME_HOST": "127.0.0.1",
                "STEADYFRAME_PORT": str(port), **(env or {})}  # fmt: skip
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen([sys.executable, "-m", "steadyframe.cli", "serve"], env=full_env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early, see {data_dir / 'serve.log'}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_serve(process)
    raise RuntimeError(f"server not ready in {timeout_s:.0f} s, see {data_dir / 'serve.log'}")


def stop_serve(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM (the server stops its workers), then SIGKILL if it does not end in time; by PID only."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)
