"""The UI's named endpoints, driven through gradio_client against the real server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

if TYPE_CHECKING:
    from conftest import LiveServer

pytestmark = pytest.mark.slow

# generate_t2v(prompt, negative, model, preset, seed, steps, guidance, frames, upscale, interpolate, fault)
DEFAULTS: dict[str, Any] = {
    "negative": "", "model": "server default", "preset": "balanced", "seed": -1, "steps": 1,
    "guidance": None, "frames": None, "upscale": 1, "interpolate": 1, "fault": "",
}  # fmt: skip


@pytest.fixture(scope="module")
def ui(live_server: LiveServer) -> Client:
    return Client(f"{live_server.url}/ui/", verbose=False, download_files=False)


def t2v(ui: Client, prompt: str, **options: Any) -> tuple[Any, ...]:
    args = {**DEFAULTS, **options}
    return ui.predict(prompt, *args.values(), api_name="/generate_t2v")


def job_id_in(panel: str) -> str:
    return panel.split("sf-job-id'>", 1)[1].split("<", 1)[0]


def test_generate_t2v_returns_the_video_downloads_and_the_seed(ui: Client, live_server: LiveServer) -> None:
    panel, video, mp4, gif, seed = t2v(ui, "a lighthouse at dusk", seed=77, steps=2)
    assert "succeeded" in panel and seed == "77"
    assert mp4["visible"] is True and mp4["value"]["orig_name"].endswith(".mp4")
    assert gif["visible"] is True and gif["value"]["orig_name"].endswith(".gif")
    assert str(live_server.data_dir) not in video["path"]  # served from a per-job copy, never the data dir
    with live_server.client() as http:
        job = http.get(f"/v1/jobs/{job_id_in(panel)}").json()
        assert job["status"] == "succeeded" and job["result"]["seed"] == 77
        played = http.get(video["url"])
        assert played.status_code == 200 and played.content == http.get(job["result"]["video_url"]).content
        assert http.get(gif["value"]["url"]).content[:3] == b"GIF"


def test_a_failed_job_raises_app_error_with_message_advice_and_error_id(ui: Client, live_server: LiveServer) -> None:
    with pytest.raises(AppError) as caught:
        t2v(ui, "this will fail", fault='{"stage": "denoise", "kind": "error", "at_step": 1}')
    text = str(caught.value)
    assert "error id err-" in text
    with live_server.client() as http:
        failed = http.get("/v1/jobs", params={"status": "failed", "limit": 5}).json()["jobs"]
    error = next(j["error"] for j in failed if j["spec"]["prompt"] == "this will fail")
    assert error["error_id"] in text and error["advice"] in text and error["message"] in text


def test_invalid_input_raises_app_error_before_any_job(ui: Client, live_server: LiveServer) -> None:
    with live_server.client() as http:
        before = len(http.get("/v1/jobs", params={"limit": 500}).json()["jobs"])
    with pytest.raises(AppError, match="prompt is empty"):
        t2v(ui, "   ")
    with pytest.raises(AppError, match="fault"):
        t2v(ui, "bad fault", fault="{not json")
    with live_server.client() as http:
        assert len(http.get("/v1/jobs", params={"limit": 500}).json()["jobs"]) == before


def test_cancel_stops_the_running_job_in_the_store(live_server: LiveServer) -> None:
    ui = Client(f"{live_server.url}/ui/", verbose=False, download_files=False)  # own session: own job state
    job = ui.submit("a very long take", *{**DEFAULTS, "steps": 200, "frames": 17}.values(), api_name="/generate_t2v")
    deadline = time.monotonic() + 120
    job_id = None
    while job_id is None:
        assert time.monotonic() < deadline, "the job never started"
        outputs = job.outputs()
        if outputs and "denoising" in outputs[-1][0]:
            job_id = job_id_in(outputs[-1][0])
        time.sleep(0.1)
    panel = ui.predict(api_name="/cancel")
    assert job_id in panel
    final_panel = job.result(timeout=120)[0]
    assert "Cancelled" in final_panel
    final = live_server.wait_for(job_id)
    assert final["status"] == "cancelled" and final["progress"]["step"] < 200


def test_i2v_and_v2v_endpoints_upload_their_input(ui: Client, png_file: Path, mp4_file: Path) -> None:
    options = list(DEFAULTS.values())
    panel = ui.predict(handle_file(str(png_file)), "the image moves", *options, api_name="/generate_i2v")[0]
    assert "succeeded" in panel
    two_steps = list({**DEFAULTS, "steps": 2}.values())  # strength 0.5 of one step would run no step at all
    panel = ui.predict(handle_file(str(mp4_file)), 0.5, "the clip changes", *two_steps, api_name="/generate_v2v")[0]
    assert "succeeded" in panel


def test_history_lists_jobs_and_open_job_shows_a_result(ui: Client) -> None:
    panel = t2v(ui, "to reopen later")[0]
    job_id = job_id_in(panel)
    table, picker = ui.predict(False, api_name="/history")  # all jobs: a script has no browser storage
    assert job_id in [row[0] for row in table["data"]]
    reopened = ui.predict(job_id, api_name="/open_job")
    assert job_id in reopened[0] and "succeeded" in reopened[0] and reopened[4]


def test_system_endpoint_shows_server_and_worker_memory(ui: Client) -> None:
    rows, summary, models = ui.predict(api_name="/system")
    names = [row[0] for row in rows["data"]]
    assert "server" in names and len(names) >= 2
    assert "Workers ready: yes" in summary


def test_a_ui_job_counts_against_its_clients_queue_quota(ui: Client, live_server: LiveServer) -> None:
    """The UI's jobs are filed under the same client key as the API's (here: the loopback address)."""
    import sqlite3

    panel, *_ = t2v(ui, "a quota check")
    with sqlite3.connect(live_server.data_dir / "jobs.sqlite3") as conn:
        (client,) = conn.execute("SELECT client FROM jobs WHERE id = ?", (job_id_in(panel),)).fetchone()
    assert client == "addr:127.0.0.1"
