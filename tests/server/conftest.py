"""Fixtures for the serving tests: a real server subprocess, in-process apps, tiny media files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from steadyframe.testing.serve import free_port
from steadyframe.jobs.base import JobStatus
from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.server.app import create_app
from steadyframe.settings import Settings

LOOPBACK_URL = "http://127.0.0.1"  # the Host the request guard answers to (TestClient's default is "testserver")
STARTUP_TIMEOUT_S = 180.0  # the worker imports torch + diffusers and builds the tiny model on a busy 2-core box
JOB_TIMEOUT_S = 120.0


@dataclass
class LiveServer:
    """A ``steadyframe serve`` subprocess on 127.0.0.1 with its own data directory."""

    url: str
    pid: int
    data_dir: Path
    log_path: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def submit(self, **spec: Any) -> str:
        with self.client() as http:
            response = http.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def wait_for(self, job_id: str, *, timeout: float = JOB_TIMEOUT_S, until: Any = None) -> dict[str, Any]:
        """Poll the job until ``until(job)`` (default: it is terminal); returns the job JSON."""
        check = until or (lambda job: JobStatus(job["status"]).terminal)
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while True:
                job = http.get(f"/v1/jobs/{job_id}").json()
                if check(job):
                    return job
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")
                time.sleep(0.1)


def _stop_process_tree(pid: int) -> None:
    """SIGTERM the server (it stops its workers), then SIGKILL whatever of its tree is left, by PID."""
    try:
        parent = psutil.Process(pid)
        children = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    parent.send_signal(signal.SIGTERM)
    try:
        parent.wait(timeout=30)
    except psutil.TimeoutExpired:
        parent.kill()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()


def start_server(data_dir: Path, *, log_dir: Path | None = None, **env_overrides: str) -> Iterator[LiveServer]:
    """A server on ``data_dir``; its stdout log in ``log_dir`` (default: the data dir itself)."""
    port = free_port()
    env = {
        **os.environ,
        "STEADYFRAME_DATA_DIR": str(data_dir),
        "STEADYFRAME_HOST": "127.0.0.1",
        "STEADYFRAME_PORT": str(port),
        "STEADYFRAME_FAULT_INJECTION": "1",
        "STEADYFRAME_CANCEL_GRACE_S": "10",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        **env_overrides,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = (log_dir or data_dir) / "serve-stdout.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "steadyframe.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(url=f"http://127.0.0.1:{port}", pid=process.pid, data_dir=data_dir, log_path=log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready in {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield server
    finally:
        _stop_process_tree(process.pid)
        process.wait(timeout=5)


@pytest.fixture(scope="module")
def server_factory() -> Iterator[Callable[..., LiveServer]]:
    """Start extra servers with their own settings (``start(data_dir, STEADYFRAME_X="...")``); all are
    stopped when the module ends."""
    running: list[Iterator[LiveServer]] = []

    def start(data_dir: Path, *, log_dir: Path | None = None, **env_overrides: str) -> LiveServer:
        server = start_server(data_dir, log_dir=log_dir, **env_overrides)
        running.append(server)
        return next(server)

    yield start
    for server in reversed(running):
        server.close()  # runs start_server's cleanup: stops the process tree


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server (fault injection on) shared by every test of this xdist worker."""
    yield from start_server(tmp_path_factory.mktemp("live-server"))


@pytest.fixture
def idle_app(tmp_path: Path) -> Iterator[tuple[TestClient, SqliteJobStore, Settings]]:
    """An in-process app whose dispatcher never starts: jobs stay queued, limits are small."""
    from steadyframe.supervisor import Dispatcher

    settings = Settings(data_dir=tmp_path / "data", max_queue=2, max_upload_mb=0.05, max_prompt_chars=100)
    store = SqliteJobStore(settings.jobs_db)
    app = create_app(settings, store=store, dispatcher=Dispatcher(settings, store))
    with TestClient(app, base_url=LOOPBACK_URL) as client:
        yield client, store, settings
    store.close()


def _gradient(width: int, height: int, shift: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([(x + shift) % 256 + 0 * y, (y + 2 * shift) % 256 + 0 * x, (x + y) / 2 + 0 * x], axis=2)
    return rgb.astype(np.uint8)


@pytest.fixture(scope="session")
def png_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "input.png"
    Image.fromarray(_gradient(96, 64, 0)).save(path)
    return path


@pytest.fixture(scope="session")
def mp4_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-frame 96×64 H.264 clip at 8 fps, written with PyAV."""
    import av

    path = tmp_path_factory.mktemp("media") / "input.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index in range(12):
            frame = av.VideoFrame.from_ndarray(_gradient(96, 64, index * 10), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
