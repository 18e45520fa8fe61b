"""Fixtures for the catalog and pull tests: the tiny model served by a loopback Hub, settings and
servers pointed at it, and a ``steadyframe serve`` subprocess that can be killed and restarted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from steadyframe.settings import Settings
from steadyframe.testing.serve import free_port
from steadyframe.testing.local_hub import LocalHub

REPO = "steadyframe/tiny-t2v"
GATED_REPO = "steadyframe/gated-tiny"
TOKEN = "sf-test-token"
CATALOG = {
    "hub-tiny": {"source": REPO, "family": "tiny-t2v"},
    "gated-tiny": {"source": GATED_REPO, "family": "tiny-t2v"},
}
# Files the hub serves that a pull must not fetch: a duplicate .bin beside .safetensors, a README.
DECOYS = ("transformer/diffusion_pytorch_model.bin", "README.md")


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in tiny-t2v model as a Hub repo folder (built in a subprocess: no torch here)."""
    root = tmp_path_factory.getbasetemp()
    shared = (root.parent if root.name.startswith("popen-gw") else root) / "steadyframe-builtin-models"
    shared = Path(os.environ.get("STEADYFRAME_TEST_BUILTIN_DIR", shared))  # reuse a build across runs
    shared.mkdir(exist_ok=True)
    code = (
        "from pathlib import Path; from steadyframe.engine.tiny_models import ensure_tiny_model; "
        "from steadyframe.families import FAMILIES; "
        f"ensure_tiny_model(FAMILIES['tiny-t2v'], Path({str(shared / 'tiny-t2v')!r}))"
    )
    if not (shared / "tiny-t2v" / "steadyframe-builtin.json").is_file():
        subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
    repo = tmp_path_factory.mktemp("hub") / "tiny-t2v"
    shutil.copytree(shared / "tiny-t2v", repo)
    (repo / "steadyframe-builtin.json").unlink()  # served like a real model, not as a built-in
    shutil.copyfile(repo / "transformer" / "diffusion_pytorch_model.safetensors", repo / DECOYS[0])
    (repo / DECOYS[1]).write_text("# tiny test model\n")
    return repo


def wanted_bytes(repo: Path) -> int:
    """What a pull should fetch: every file but the decoys."""
    return sum(p.stat().st_size for p in repo.rglob("*") if p.is_file() and p.relative_to(repo).as_posix() not in DECOYS)


@pytest.fixture
def hub(tiny_repo: Path) -> Iterator[LocalHub]:
    with LocalHub() as served:
        served.add_repo(REPO, tiny_repo)
        served.add_repo(GATED_REPO, tiny_repo, token=TOKEN)
        yield served


@pytest.fixture
def online(hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    """This process's huggingface_hub talks to the local hub (and is not offline)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return hub


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", models=CATALOG, device="cpu", pull_reserve_mb=0)


# --- a real server process -----------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0)

    def model(self, name: str) -> dict[str, Any]:
        with self.client() as http:
            response = http.get(f"/v1/models/{name}")
            assert response.status_code == 200, f"GET /v1/models/{name}: {response.status_code} {response.text}"
            return dict(response.json())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def hub_env(data_dir: Path, hub: LocalHub, **extra: str) -> dict[str, str]:
    import json

    return {
        **os.environ,
        "STEADYFRAME_DATA_DIR": str(data_dir),
        "STEADYFRAME_MODELS": json.dumps(CATALOG),
        "STEADYFRAME_PULL_RESERVE_MB": "0",
        "STEADYFRAME_DEVICE": "cpu",
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "GRADIO_ANALYTICS_ENABLED": "False",
        **extra,
    }


def start_server(env: dict[str, str], log_path: Path, *, ready: str = "/healthz", timeout: float = 180.0) -> Server:
    """``steadyframe serve`` on a free loopback port; returns once ``ready`` answers 200."""
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "steadyframe.cli", "serve", "--port", str(port)],
            env={**env, "STEADYFRAME_PORT": str(port), "STEADYFRAME_HOST": "127.0.0.1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + ready, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise AssertionError(f"server not ready in {timeout} s:\n{server.log()}")
        time.sleep(0.2)


def stop_server(server: Server, *, kill: bool = False) -> None:
    """SIGKILL (a crash) or SIGTERM the server, then whatever is left of its tree, by PID."""
    try:
        parent = psutil.Process(server.pid)
        children = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    parent.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        parent.wait(timeout=30)
    except psutil.TimeoutExpired:
        parent.kill()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()
    server.process.wait(timeout=5)


def wait_until(check: Any, *, timeout: float = 60.0, every: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
