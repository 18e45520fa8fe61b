"""The data folder under stress: a disk that fills up mid-job, a damaged jobs database, a stale lock.

The disk-full test mounts a real 32 MB tmpfs as the data folder (needs root or CAP_SYS_ADMIN; skipped
with the reason otherwise) and fills it from outside while the job denoises, so the failing writes are
the product's own (PyAV/PIL writing the video, SQLite writing the job table)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from steadyframe.jobs.sqlite import open_job_store
from steadyframe.server import data_lock

if TYPE_CHECKING:  # fixtures arrive by name; the import is for readers and type checkers only
    from conftest import LiveServer

DAMAGED = b"this is not an SQLite database, it is what a bad disk left behind\n" * 64


# --- fast, in process -------------------------------------------------------------------------------


def test_a_damaged_database_is_moved_aside_and_a_new_table_started(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(DAMAGED)
    store, warning = open_job_store(path)
    try:
        assert warning is not None and "moved to jobs.sqlite3.corrupt-" in warning
        kept = [p for p in tmp_path.iterdir() if p.name.startswith("jobs.sqlite3.corrupt-")]
        assert len(kept) == 1 and kept[0].read_bytes() == DAMAGED  # kept, byte for byte
        record, created = store.submit({"prompt": "x"})
        assert created and store.get(record.id) is not None
    finally:
        store.close()
    again, warning = open_job_store(path)  # the new table is healthy: no warning next time
    again.close()
    assert warning is None


def test_a_stale_lock_from_a_killed_server_is_taken_over(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import os, signal, sys; from pathlib import Path; from steadyframe.server import data_lock; "
            "data_lock.acquire(Path(sys.argv[1]), port=4242); print('held', flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.wait(timeout=30)
    assert json.loads((tmp_path / data_lock.LOCK_NAME).read_text())["port"] == 4242  # the dead server's words
    data_lock.acquire(tmp_path, port=5151)
    try:
        assert json.loads((tmp_path / data_lock.LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        data_lock.release(tmp_path)


def test_a_live_holder_is_named_and_not_waited_for(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time; from pathlib import Path; from steadyframe.server import data_lock; "
            "data_lock.acquire(Path(sys.argv[1]), port=4242); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(data_lock.DataFolderBusy) as caught:
            data_lock.acquire(tmp_path, port=5151)
        assert time.monotonic() - started < 1.0
        assert f"pid {holder.pid}" in caught.value.message and "port 4242" in caught.value.message
        assert caught.value.advice and "STEADYFRAME_DATA_DIR" in caught.value.advice
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)


# --- a real server on a small disk ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mount_point = tmp_path_factory.mktemp("small-disk")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)  # detach even if still busy


@pytest.fixture(scope="module")
def small_disk_server(small_disk: Path, server_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    """A server whose data folder is the 32 MB tmpfs, started on a damaged jobs database.

    ``small_disk`` comes first so it is set up before, and torn down after, the server factory."""
    data_dir = small_disk / "data"
    data_dir.mkdir()
    (data_dir / "jobs.sqlite3").write_bytes(DAMAGED)
    return server_factory(data_dir, log_dir=tmp_path_factory.mktemp("small-disk-log"))



def _wait(http: httpx.Client, job_id: str, until: Any, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")
        time.sleep(0.2)


def _fill(path: Path) -> int:
    """Write ``path`` until the disk refuses a single byte more. -> bytes written."""
    written = 0
    with path.open("wb", buffering=0) as filler:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\xff" * size
            while True:
                try:
                    filler.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
                written += size
    return written


@pytest.mark.slow
def test_a_damaged_database_at_start_is_kept_and_the_server_warns(small_disk_server: LiveServer) -> None:
    data_dir = small_disk_server.data_dir
    kept = [p for p in data_dir.iterdir() if p.name.startswith("jobs.sqlite3.corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes() == DAMAGED
    with small_disk_server.client() as http:
        warnings = http.get("/v1/system").json()["warnings"]
        assert any(kept[0].name in w and "damaged" in w for w in warnings), warnings
        job = http.post("/v1/jobs", json={"prompt": "the new table works", "steps": 1}).json()
        assert _wait(http, job["id"], lambda j: j["status"] in ("succeeded", "failed"))["status"] == "succeeded"
    assert kept[0].name in small_disk_server.log_path.read_text()


@pytest.mark.slow
def test_a_disk_that_fills_mid_job_gives_disk_full_and_the_next_job_runs_once_space_is_back(
    small_disk_server: LiveServer,
) -> None:
    filler = small_disk_server.data_dir.parent / "filler.bin"
    with small_disk_server.client() as http:
        job_id = http.post("/v1/jobs", json={"prompt": "fills the disk", "steps": 40}).json()["id"]
        _wait(http, job_id, lambda j: j["status"] == "running" and j["progress"]["stage"] == "denoise")
        try:
            assert _fill(filler) > 0
            kept_back = f"job {job_id} ended but the disk is full"
            # The store may not take the outcome either; then the dispatcher keeps it until space is back.
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                job = http.get(f"/v1/jobs/{job_id}").json()
                if job["status"] != "running" or kept_back in small_disk_server.log_path.read_text():
                    break
                time.sleep(0.3)
            else:
                raise AssertionError(f"the job never ended on the full disk: {job}")
            assert http.get("/healthz").status_code == 200  # the server keeps serving
            assert http.get("/v1/system").status_code == 200
            while_full = http.post("/v1/jobs", json={"prompt": "while full", "steps": 1})
            assert while_full.status_code in (202, 507), while_full.text
            assert isinstance(while_full.json().get("detail", ""), str)
        finally:
            filler.unlink(missing_ok=True)
        failed = _wait(http, job_id, lambda j: j["status"] != "running", timeout=60)
        assert failed["status"] == "failed" and failed["error"]["kind"] == "disk_full", failed
        assert "space" in failed["error"]["advice"]
        leftovers = list((small_disk_server.data_dir / "outputs" / job_id).glob("*")) if (
            small_disk_server.data_dir / "outputs" / job_id
        ).exists() else []
        assert not [p for p in leftovers if p.suffix in (".mp4", ".gif") or ".tmp" in p.name], leftovers
        after = http.post("/v1/jobs", json={"prompt": "after space is back", "steps": 1}).json()["id"]
        assert _wait(http, after, lambda j: j["status"] in ("succeeded", "failed"))["status"] == "succeeded"
