"""The REST API against a real server process, its dispatcher and a tiny-model worker."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from steadyframe.logs import find_error

if TYPE_CHECKING:  # fixtures arrive by name; the import is for readers and type checkers only
    from conftest import LiveServer

pytestmark = pytest.mark.slow

CONTRACT_ROUTES = {
    ("post", "/v1/uploads"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{job_id}"),
    ("get", "/v1/jobs/{job_id}/events"),
    ("post", "/v1/jobs/{job_id}/cancel"),
    ("get", "/v1/jobs/{job_id}/video"),
    ("get", "/v1/jobs/{job_id}/gif"),
    ("get", "/v1/models"),
    ("get", "/v1/system"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}


def read_sse(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs until the stream ends."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data += line.split(":", 1)[1].strip()
        elif line == "" and data:
            events.append((name, json.loads(data)))
            name, data = "message", ""
    return events


def test_openapi_publishes_every_contract_route(live_server: LiveServer) -> None:
    with live_server.client() as http:
        schema = http.get("/openapi.json").json()
    published = {(method, path) for path, ops in schema["paths"].items() for method in ops}
    assert CONTRACT_ROUTES <= published
    job_fields = schema["components"]["schemas"]["JobView"]["properties"]
    assert {
        "id",
        "status",
        "attempt",
        "progress",
        "created_at",
        "started_at",
        "finished_at",
        "spec",
        "result",
        "error",
    } <= set(job_fields)


def test_probes_answer_when_a_worker_is_ready(live_server: LiveServer) -> None:
    with live_server.client() as http:
        assert http.get("/healthz").text == "ok"
        assert http.get("/readyz").status_code == 200


def test_t2v_job_streams_progress_then_one_terminal_event_and_serves_its_files(live_server: LiveServer) -> None:
    job_id = live_server.submit(prompt="a red fox running through snow", steps=2, seed=1234)
    with live_server.client() as http:
        with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = read_sse(response)
        names = [name for name, _ in events]
        assert names[-1] == "succeeded" and names.count("succeeded") == 1
        assert set(names[:-1]) == {"progress"} and len(names) >= 2
        stages = [data["progress"]["stage"] for name, data in events if name == "progress"]
        assert "denoise" in stages or "decode" in stages or "save" in stages
        job = events[-1][1]
        result = job["result"]
        assert result["seed"] == 1234
        assert result["frames"] > 0 and result["fps"] > 0 and result["width"] > 0 and result["height"] > 0
        assert result["memory_level"] == 0 and result["test_noise"] is True
        assert job["started_at"] >= job["created_at"] and job["finished_at"] >= job["started_at"]

        video = http.get(result["video_url"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        assert video.content[4:8] == b"ftyp"
        gif = http.get(result["gif_url"], params={"download": 1})
        assert gif.status_code == 200 and gif.content[:6] in (b"GIF89a", b"GIF87a")
        assert gif.headers["content-disposition"].startswith("attachment")
        assert "/" not in json.dumps(job["spec"]).replace("/v1", "")  # no machine paths in the spec view


def test_events_of_a_finished_job_is_just_the_terminal_event(live_server: LiveServer) -> None:
    job_id = live_server.submit(prompt="a boat", steps=1)
    live_server.wait_for(job_id)
    with live_server.client() as http, http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        events = read_sse(response)
    assert [name for name, _ in events] == ["succeeded"]


def test_cancel_of_a_running_job_stops_it_before_its_last_step(live_server: LiveServer) -> None:
    job_id = live_server.submit(prompt="a long slow pan over mountains", steps=200, num_frames=17)
    running = live_server.wait_for(
        job_id,
        until=lambda j: j["status"] == "running" and j["progress"]["stage"] == "denoise" and j["progress"]["step"] >= 1,
    )
    with live_server.client() as http:
        assert http.get(f"/v1/jobs/{job_id}/video").status_code == 404  # no file until it exists
        response = http.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 202
    final = live_server.wait_for(job_id)
    assert final["status"] == "cancelled"
    assert final["result"] is None
    assert running["progress"]["total"] == 200 and final["progress"]["step"] < 200
    with live_server.client() as http:
        assert http.get(f"/v1/jobs/{job_id}/video").status_code == 404
        # the worker is free again: the next job runs
        next_id = live_server.submit(prompt="after the cancel", steps=1)
    assert live_server.wait_for(next_id)["status"] == "succeeded"


def test_failed_job_carries_kind_message_advice_and_an_error_id_found_in_the_log(live_server: LiveServer) -> None:
    job_id = live_server.submit(
        prompt="this one breaks", steps=2, fault={"stage": "denoise", "kind": "error", "at_step": 1}
    )
    job = live_server.wait_for(job_id)
    assert job["status"] == "failed" and job["result"] is None
    error = job["error"]
    assert error["kind"] == "internal" and error["stage"] == "denoise"
    assert error["message"] and error["advice"] and error["error_id"].startswith("err-")
    assert "Traceback" not in error["message"] and "traceback" not in error
    logged = find_error(live_server.data_dir / "logs", error["error_id"])
    assert any("Traceback" in (line.get("traceback") or "") for line in logged)


def test_upload_image_then_image_to_video_job(live_server: LiveServer, png_file: Path) -> None:
    with live_server.client() as http:
        response = http.post(
            "/v1/uploads", files={"file": ("whatever.bin", png_file.read_bytes(), "application/octet-stream")}
        )
        assert response.status_code == 201, response.text
        upload = response.json()
        assert upload["kind"] == "image" and (upload["width"], upload["height"]) == (96, 64)
        job_id = live_server.submit(mode="i2v", prompt="the picture comes alive", image_upload=upload["id"], steps=1)
    job = live_server.wait_for(job_id, timeout=180)
    assert job["status"] == "succeeded", job
    assert job["spec"]["image_upload"] == upload["id"] and "image_path" not in job["spec"]


def test_upload_video_then_video_to_video_job(live_server: LiveServer, mp4_file: Path) -> None:
    with live_server.client() as http:
        response = http.post("/v1/uploads", files={"file": ("clip", mp4_file.read_bytes())})
        assert response.status_code == 201, response.text
        upload = response.json()
        assert upload["kind"] == "video" and upload["frames"] >= 10 and (upload["width"], upload["height"]) == (96, 64)
        job_id = live_server.submit(mode="v2v", prompt="make it snow", video_upload=upload["id"], strength=0.6, steps=2)
    job = live_server.wait_for(job_id)
    assert job["status"] == "succeeded", job
    assert job["spec"]["strength"] == 0.6


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"plain text is not media", 415),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 422),  # looks like a PNG, does not decode
        (b"", 422),
    ],
)
def test_upload_rejects_what_is_not_a_readable_image_or_video(
    live_server: LiveServer, content: bytes, status: int
) -> None:
    with live_server.client() as http:
        response = http.post("/v1/uploads", files={"file": ("x.png", content, "image/png")})
    assert response.status_code == status
    body = response.json()
    assert body["detail"] and body["advice"]


def test_invalid_specs_get_422_with_the_fields_named(live_server: LiveServer, png_file: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "upscale": 3}, "upscale"),
        ({"prompt": "x", "colour": "blue"}, "colour"),
        ({"prompt": "x", "mode": "i2v"}, "image_upload"),
        ({"prompt": "x", "mode": "v2v", "video_upload": "0" * 32}, "video_upload"),
        ({"prompt": "x", "strength": 0.5}, "strength"),
        ({"prompt": "x", "mode": "spin"}, "mode"),
    ]
    with live_server.client() as http:
        for body, field in cases:
            response = http.post("/v1/jobs", json=body)
            assert response.status_code == 422, body
            assert isinstance(response.json()["detail"], str), body
            locs = [err["loc"] for err in response.json()["errors"]]
            assert any(field in [str(part) for part in loc] for loc in locs), (body, locs)


def test_idempotency_key_returns_the_same_job_and_refuses_a_different_body(live_server: LiveServer) -> None:
    body = {"prompt": "once only", "steps": 1, "seed": 5}
    with live_server.client() as http:
        first = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-42"})
        again = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-42"})
        other = http.post("/v1/jobs", json={**body, "seed": 6}, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 202 and again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409 and other.json()["advice"]
    live_server.wait_for(first.json()["id"])


def test_history_is_newest_first_and_filters_by_status(live_server: LiveServer) -> None:
    first = live_server.submit(prompt="history one", steps=1)
    second = live_server.submit(prompt="history two", steps=1)
    live_server.wait_for(second)
    with live_server.client() as http:
        jobs = http.get("/v1/jobs", params={"limit": 2}).json()["jobs"]
        assert [j["id"] for j in jobs] == [second, first]
        succeeded = http.get("/v1/jobs", params={"status": "succeeded", "limit": 500}).json()["jobs"]
        assert succeeded and all(j["status"] == "succeeded" for j in succeeded)
        assert http.get("/v1/jobs", params={"status": "lost"}).status_code == 422
        assert http.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_unknown_job_is_404_on_every_job_route(live_server: LiveServer) -> None:
    with live_server.client() as http:
        for method, path in (
            ("GET", "/v1/jobs/nope"),
            ("GET", "/v1/jobs/nope/events"),
            ("POST", "/v1/jobs/nope/cancel"),
            ("GET", "/v1/jobs/nope/video"),
            ("GET", "/v1/jobs/nope/gif"),
        ):
            response = http.request(method, path)
            assert response.status_code == 404, path
            assert "nope" in response.json()["detail"]


def test_models_lists_families_what_is_present_and_what_is_loaded(live_server: LiveServer) -> None:
    live_server.wait_for(live_server.submit(prompt="warm the model", steps=1))
    with live_server.client() as http:
        models = http.get("/v1/models").json()
    families = {f["name"]: f for f in models["families"]}
    assert {"CogVideoX-2b", "CogVideoX-5b", "CogVideoX-5b-I2V", "CogVideoX1.5-5b", "CogVideoX1.5-5b-I2V"} <= set(
        families
    )
    assert families["tiny-t2v"]["present"] is True and families["tiny-t2v"]["loaded"] is True
    assert families["CogVideoX-5b"]["present"] is False and families["CogVideoX-5b"]["loaded"] is False
    assert all(str(live_server.data_dir) not in m for m in models["loaded"])


def test_system_reports_memory_of_server_and_workers(live_server: LiveServer) -> None:
    with live_server.client() as http:
        system = http.get("/v1/system").json()
    roles = {p["role"]: p for p in system["processes"]}
    assert roles["server"]["pid"] == live_server.pid and roles["server"]["rss_mb"] > 10
    worker = roles["worker"]
    assert worker["state"] in ("idle", "busy") and worker["pid"] and worker["rss_mb"] > 10
    assert worker["vram_allocated_mb"] is not None and worker["vram_reserved_mb"] is not None
    assert worker["node"] == socket.gethostname() and worker["device"] == "cpu"  # where it runs
    assert system["ready"] is True and system["swap_total_mb"] >= 0 and system["ram_available_mb"] > 0


def test_server_process_never_loads_torch(live_server: LiveServer) -> None:
    maps = Path(f"/proc/{live_server.pid}/maps").read_text()
    assert "libtorch" not in maps and "torch/_C" not in maps
    with live_server.client() as http:
        worker_pid = next(p["pid"] for p in http.get("/v1/system").json()["processes"] if p["role"] == "worker")
    assert "libtorch" in Path(f"/proc/{worker_pid}/maps").read_text()  # the check above can see torch
