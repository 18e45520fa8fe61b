"""Which worker pool the server gets: local processes unless a Ray address is set; without it,
ray is never imported (not by the supervisor, not by the app, not by `steadyframe serve --help`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from steadyframe.settings import Settings
from steadyframe.supervisor.local import LocalProcessPool
from steadyframe.supervisor.pool import default_pool


def test_without_a_ray_address_the_pool_is_local_and_ray_is_never_imported(tmp_path: Path) -> None:
    code = f"""
import sys
from steadyframe.settings import Settings
from steadyframe.server.app import create_app
from steadyframe.supervisor import Dispatcher
from steadyframe.jobs.sqlite import SqliteJobStore
settings = Settings(data_dir={str(tmp_path)!r}, device="cpu")
dispatcher = Dispatcher(settings, SqliteJobStore(settings.jobs_db))
create_app(settings, store=dispatcher.store, dispatcher=dispatcher)
assert type(dispatcher.pool).__name__ == "LocalProcessPool", dispatcher.pool
assert "ray" not in sys.modules, "ray was imported"
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_default_pool_is_local_without_a_ray_address(tmp_path: Path) -> None:
    assert isinstance(default_pool(Settings(data_dir=tmp_path, device="cpu")), LocalProcessPool)


def test_the_ray_address_comes_from_the_environment_or_the_serve_flag(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STEADYFRAME_RAY_ADDRESS", "10.0.0.5:6379")
    assert Settings(data_dir=tmp_path).ray_address == "10.0.0.5:6379"
    out = subprocess.run(
        [sys.executable, "-m", "steadyframe.cli", "serve", "--help"], capture_output=True, text=True, timeout=120
    )
    assert "--ray-address" in out.stdout
