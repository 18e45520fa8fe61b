"""Pulls in real processes against the loopback Hub: a server killed mid-pull resumes at its next
start, a job waits for its model's download (longer than the stall timeout) and then runs, the CLI
pull draws a byte bar and survives Ctrl-C, and the browser's Models tab shows the bar growing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from steadyframe.catalog import catalog, entry_state
from steadyframe.settings import Settings
from steadyframe.testing.local_hub import LocalHub

from .conftest import CATALOG, REPO, Server, hub_env, start_server, stop_server, wait_until, wanted_bytes

pytestmark = pytest.mark.slow

LIVE_CATALOG = {**CATALOG, "hub-tiny-main": {"source": REPO + "@main", "family": "tiny-t2v"}}
JOB_TIMEOUT_S = 240.0


def _stable_bytes(read, *, quiet_s: float = 0.6) -> int:
    """Wait until ``read()`` stops changing for ``quiet_s`` (everything sent has reached the disk)."""
    last = read()
    while True:
        time.sleep(quiet_s)
        now = read()
        if now == last:
            return int(now)
        last = now


def _on_disk(data_dir: Path, name: str):
    settings = Settings(data_dir=data_dir, models=LIVE_CATALOG)
    return entry_state(catalog(settings)[name], settings)


def test_a_pull_cut_by_killing_the_server_resumes_at_the_next_start_and_no_byte_is_sent_twice(
    hub: LocalHub, tiny_repo: Path, tmp_path: Path
) -> None:
    total = wanted_bytes(tiny_repo)
    hub.bytes_per_second = 150_000  # about seven seconds
    data_dir = tmp_path / "data"
    env = hub_env(data_dir, hub, STEADYFRAME_MODELS=json.dumps(LIVE_CATALOG))
    server = start_server(env, tmp_path / "serve-1.log")
    try:
        with server.client() as http:
            assert http.post("/v1/models/hub-tiny/pull").status_code == 202
        wait_until(lambda: (server.model("hub-tiny").get("download") or {}).get("bytes_done", 0) > total // 3,
                   what="a third of the model")  # fmt: skip
        hub.pause()  # what the hub has sent reaches the disk; then the server dies at once
        _stable_bytes(lambda: server.model("hub-tiny")["download"]["bytes_done"])
        sent_before = hub.stats.bytes_for(REPO)
    finally:
        stop_server(server, kill=True)
    state = _on_disk(data_dir, "hub-tiny")
    assert state.state == "absent" and state.partial_bytes == sent_before < total  # resumable, not present
    hub.resume()
    restarted = start_server(env, tmp_path / "serve-2.log")
    try:
        wait_until(lambda: restarted.model("hub-tiny")["state"] == "present", timeout=120, what="present")
    finally:
        stop_server(restarted)
    assert hub.stats.bytes_for(REPO) == total  # the restart fetched only what the first run had not
    resumed = [r for r in hub.stats.requests if r[0] == "GET" and r[2] and r[2] != "bytes=0-"]
    assert resumed, "the restarted pull did not ask for the rest of a file"
    assert "resumed at server start" in (tmp_path / "serve-2.log").read_text()


@pytest.fixture(scope="module")
def module_hub(tiny_repo: Path) -> Iterator[LocalHub]:
    with LocalHub() as served:
        served.add_repo(REPO, tiny_repo)
        yield served


@pytest.fixture(scope="module")
def live(module_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server whose stall timeout (3 s) is far shorter than a throttled pull."""
    folder = tmp_path_factory.mktemp("live-pulls")
    env = hub_env(folder / "data", module_hub, STEADYFRAME_MODELS=json.dumps(LIVE_CATALOG), STEADYFRAME_STALL_TIMEOUT_S="3")
    server = start_server(env, folder / "serve.log")
    yield server
    stop_server(server)


def test_a_job_for_an_absent_model_waits_shows_the_download_then_succeeds_past_the_stall_timeout(
    live: Server, module_hub: LocalHub, tiny_repo: Path
) -> None:
    module_hub.bytes_per_second = 150_000  # about seven seconds: over twice the stall timeout
    with live.client() as http:
        response = http.post("/v1/jobs", json={"prompt": "a fox in the snow", "model": "hub-tiny", "steps": 1})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        seen: list[int] = []
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while True:
            job = http.get(f"/v1/jobs/{job_id}").json()
            if job["waiting"] is not None:
                assert job["status"] == "queued" and job["waiting"]["reason"] == "waiting for the model download"
                assert job["progress"]["stage"] == "download"
                seen.append(job["progress"]["step"])
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, f"job did not finish: {job}\n{live.log()}"
            time.sleep(0.2)
    module_hub.bytes_per_second = None
    assert job["status"] == "succeeded", (job, live.log())
    assert job["result"]["test_noise"] is True
    assert len(set(seen)) >= 3 and seen == sorted(seen)  # the download's bytes grew while it waited
    assert live.model("hub-tiny")["state"] == "present"


@pytest.mark.browser
def test_the_models_tab_pulls_with_a_live_bar_until_present(live: Server, module_hub: LocalHub, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from steadyframe.testing.serve import CHROMIUM, CHROMIUM_ARGS

    module_hub.bytes_per_second = 60_000  # about fifteen seconds: the bar moves several times even on a busy machine
    readings: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"{live.url}/ui/")
        page.get_by_role("tab", name="Models").click()
        expect(page.locator("#models-table")).to_contain_text("hub-tiny-main", timeout=60_000)
        picker = page.locator("#models-pick input")
        picker.click()
        picker.fill("hub-tiny-main")
        page.get_by_role("option", name="hub-tiny-main", exact=True).click()
        page.locator("#models-pull").click()
        card = page.locator("#models-progress")
        deadline = time.monotonic() + 90
        while "present" not in (text := card.inner_text()):
            if match := re.search(r"downloading ([\d.,]+) MB of", text):
                readings.append(float(match[1].replace(",", "")))
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        expect(card).to_contain_text("MB on disk")
        page.screenshot(path=str(tmp_path / "models-tab.png"))
        browser.close()
    module_hub.bytes_per_second = None
    assert len(set(readings)) >= 3 and readings == sorted(readings), readings
    assert live.model("hub-tiny-main")["state"] == "present"


def test_the_cli_pull_draws_a_byte_bar_survives_ctrl_c_and_resumes(
    hub: LocalHub, tiny_repo: Path, tmp_path: Path
) -> None:
    total = wanted_bytes(tiny_repo)
    hub.bytes_per_second = 150_000
    data_dir = tmp_path / "data"
    env = hub_env(data_dir, hub)
    command = [sys.executable, "-m", "steadyframe.cli", "pull", "hub-tiny"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _on_disk(data_dir, "hub-tiny").partial_bytes > total // 3, what="a third on disk")
        hub.pause()
        _stable_bytes(lambda: _on_disk(data_dir, "hub-tiny").partial_bytes)
        first.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    hub.resume()
    assert first.returncode == 130, stderr.decode()
    assert "Run the same command again to continue" in stderr.decode()
    interrupted = _on_disk(data_dir, "hub-tiny")
    assert interrupted.state == "absent" and 0 < interrupted.partial_bytes < total
    listing = subprocess.run([sys.executable, "-m", "steadyframe.cli", "models"], env=env, capture_output=True, text=True)
    assert re.search(r"^hub-tiny\s+tiny-t2v\s.*\bpartial\b", listing.stdout, re.M), listing.stdout
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "hub-tiny: present" in second.stdout
    bar = second.stderr.replace("\r", "\n")
    assert "hub-tiny" in bar and "100%" in bar and re.search(r"\d(\.\d+)?[kM]i?B", bar), bar
    assert _on_disk(data_dir, "hub-tiny").state == "present"
    assert hub.stats.bytes_for(REPO) == total  # Ctrl-C lost nothing that had arrived
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already present" in again.stdout
    assert os.environ.get("HF_HUB_OFFLINE", "1") == "1"  # the tests' own process stayed offline
