"""Limits and queue rules, in process, with a dispatcher that never starts (jobs stay queued)."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi.testclient import TestClient

from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.settings import Settings

LOOPBACK_URL = "http://127.0.0.1"  # the Host the request guard answers to (TestClient's default is "testserver")
IdleApp = tuple[TestClient, SqliteJobStore, Settings]


def test_full_queue_answers_429_with_retry_after_but_replays_a_known_key(idle_app: IdleApp) -> None:
    client, _, _ = idle_app
    keyed = client.post("/v1/jobs", json={"prompt": "one"}, headers={"Idempotency-Key": "k1"})
    second = client.post("/v1/jobs", json={"prompt": "two"})
    assert keyed.status_code == 202 and second.status_code == 202
    assert (keyed.json()["position"], second.json()["position"]) == (0, 1)
    rejected = client.post("/v1/jobs", json={"prompt": "three"})
    assert rejected.status_code == 429
    assert int(rejected.headers["Retry-After"]) > 0 and rejected.json()["advice"]
    replay = client.post("/v1/jobs", json={"prompt": "one"}, headers={"Idempotency-Key": "k1"})
    assert replay.status_code == 202 and replay.json()["id"] == keyed.json()["id"]


def test_cancel_of_a_queued_job_is_immediate_and_frees_its_queue_place(idle_app: IdleApp) -> None:
    client, _, _ = idle_app
    ids = [client.post("/v1/jobs", json={"prompt": f"job {i}"}).json()["id"] for i in range(2)]
    response = client.post(f"/v1/jobs/{ids[0]}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{ids[1]}").json()["position"] == 0
    assert client.post("/v1/jobs", json={"prompt": "fits again"}).status_code == 202
    # cancelling a finished job leaves it as it is
    assert client.post(f"/v1/jobs/{ids[0]}/cancel").json()["status"] == "cancelled"


def test_prompt_length_and_fault_are_bounded_by_settings(idle_app: IdleApp) -> None:
    client, _, settings = idle_app
    too_long = client.post("/v1/jobs", json={"prompt": "x" * (settings.max_prompt_chars + 1)})
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["loc"] == ["body", "prompt"]
    fault = client.post("/v1/jobs", json={"prompt": "x", "fault": {"stage": "denoise", "kind": "oom"}})
    assert fault.status_code == 422
    assert "fault injection is not enabled" in fault.json()["errors"][0]["msg"]


def test_upload_over_the_size_limit_is_413_and_leaves_nothing(idle_app: IdleApp, png_file: Path) -> None:
    client, _, settings = idle_app
    big = png_file.read_bytes() + b"\x00" * int(settings.max_upload_mb * 1024 * 1024)
    response = client.post("/v1/uploads", files={"file": ("big.png", big)})
    assert response.status_code == 413 and response.json()["advice"]
    assert list(settings.uploads_dir.iterdir()) == []


def test_upload_declared_too_large_is_refused_before_its_body_is_read(idle_app: IdleApp) -> None:
    client, _, settings = idle_app
    sent: list[int] = []

    def body():
        for _ in range(1000):  # 64 MB if it were all read; the guard answers after the headers
            sent.append(1)
            yield b"\x00" * 65536

    declared = str(64 * 1024 * 1024)
    response = client.post(
        "/v1/uploads",
        content=body(),
        headers={"Content-Length": declared, "Content-Type": "multipart/form-data; boundary=x"},
    )
    assert response.status_code == 413 and response.json()["advice"]
    assert len(sent) < 1000


def test_upload_over_the_pixel_limit_is_422(tmp_path: Path) -> None:
    from PIL import Image

    from steadyframe.server.app import create_app
    from steadyframe.supervisor import Dispatcher

    settings = Settings(data_dir=tmp_path / "data", max_image_pixels=1000)
    store = SqliteJobStore(settings.jobs_db)
    image = tmp_path / "wide.png"
    Image.new("RGB", (100, 20)).save(image)
    with TestClient(create_app(settings, store=store, dispatcher=Dispatcher(settings, store)), base_url=LOOPBACK_URL) as client:
        response = client.post("/v1/uploads", files={"file": ("wide.png", image.read_bytes())})
    assert response.status_code == 422 and "pixels" in response.json()["detail"]


def test_readyz_is_503_until_a_worker_is_ready(idle_app: IdleApp) -> None:
    client, _, _ = idle_app
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/system").json()["ready"] is False


def test_output_routes_never_serve_a_file_outside_the_jobs_folder(idle_app: IdleApp, tmp_path: Path) -> None:
    client, store, settings = idle_app
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"\x00\x00\x00\x18ftypisom not yours")
    job_id = client.post("/v1/jobs", json={"prompt": "x"}).json()["id"]
    assert store.claim_next("test-worker") is not None
    store.finish_succeeded(
        job_id,
        {
            "video_path": str(secret), "gif_path": str(settings.outputs_dir / job_id / ".." / "x.gif"),
            "sidecar_path": "", "seed": 1, "frames": 1, "fps": 8.0, "width": 16, "height": 16, "duration_s": 0.1,
        },
    )  # fmt: skip
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{job_id}/video").status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/gif").status_code == 404


def test_a_bug_in_a_route_answers_500_with_an_error_id_that_is_logged(idle_app: IdleApp, monkeypatch) -> None:
    client, store, _ = idle_app
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("steadyframe.server").addHandler(handler)

    def broken(*args, **kwargs):
        raise RuntimeError("store exploded")

    monkeypatch.setattr(store, "list", broken)
    client_no_raise = TestClient(client.app, base_url=LOOPBACK_URL, raise_server_exceptions=False)
    response = client_no_raise.get("/v1/jobs")
    assert response.status_code == 500
    body = response.json()
    logging.getLogger("steadyframe.server").removeHandler(handler)
    assert "error id err-" in body["detail"] and "exploded" not in body["detail"]
    error_id = body["detail"].split("error id ")[1].rstrip(")")
    assert any(getattr(r, "error_id", None) == error_id and "store exploded" in r.traceback for r in records)


def test_a_spec_the_model_cannot_run_is_422_and_queues_nothing(idle_app: IdleApp) -> None:
    client, store, _ = idle_app
    frames = client.post("/v1/jobs", json={"prompt": "a boat", "num_frames": 50})  # tiny 1.0: 8N+1, at most 17
    assert frames.status_code == 422, frames.text
    assert "frame" in frames.json()["errors"][0]["msg"] and frames.json()["advice"]
    weights = client.post("/v1/jobs", json={"prompt": "a boat", "upscale": 2})  # no upscaler weights installed
    assert weights.status_code == 422, weights.text
    assert "RealESRGAN" in weights.json()["errors"][0]["msg"]
    assert "/" not in weights.json()["errors"][0]["msg"].split("http")[0]  # names the file, not a path
    assert store.list() == []
