"""``/v1/models`` and jobs for absent models, in-process (the dispatcher never starts a worker)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.server.app import create_app
from steadyframe.settings import Settings
from steadyframe.testing.local_hub import LocalHub

from .conftest import CATALOG, REPO, wanted_bytes


class IdleDispatcher:
    """Never runs a job: what the tests watch is the queue and the pulls."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def is_ready(self) -> bool:
        return False

    def workers(self) -> list:
        return []


@pytest.fixture
def app_client(settings: Settings) -> Iterator[tuple[TestClient, SqliteJobStore]]:
    store = SqliteJobStore(settings.jobs_db)
    with TestClient(create_app(settings, store=store, dispatcher=IdleDispatcher()), base_url="http://127.0.0.1") as client:
        yield client, store
    store.close()


def _model(client: TestClient, name: str) -> dict:
    response = client.get(f"/v1/models/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _wait(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def test_the_catalog_lists_every_model_with_state_size_and_memory(app_client, online: LocalHub) -> None:
    client, _ = app_client
    body = client.get("/v1/models").json()
    models = {m["name"]: m for m in body["models"]}
    assert {"tiny-t2v", "CogVideoX-5b", "hub-tiny", "gated-tiny"} <= set(models)
    hub_tiny = models["hub-tiny"]
    assert hub_tiny["state"] == "absent" and hub_tiny["family"] == "tiny-t2v" and hub_tiny["task"] == "t2v"
    assert hub_tiny["source"] == REPO and hub_tiny["pull_command"] == "steadyframe pull hub-tiny"
    assert models["CogVideoX-5b"]["source"] == "THUDM/CogVideoX-5b" and models["CogVideoX-5b"]["loaded"] is False
    assert "families" in body  # the family rules stay listed


def test_pull_answers_202_streams_byte_progress_and_ends_present(
    app_client, online: LocalHub, tiny_repo: Path
) -> None:
    client, _ = app_client
    online.bytes_per_second = 400_000
    response = client.post("/v1/models/hub-tiny/pull")
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == "/v1/models/hub-tiny/events"
    assert response.json()["state"] == "downloading"
    events: list[tuple[str, dict]] = []
    with client.stream("GET", "/v1/models/hub-tiny/events") as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((str(name), json.loads(line.split(":", 1)[1])))
    total = wanted_bytes(tiny_repo)
    progress = [data["download"]["bytes_done"] for event, data in events if event == "progress"]
    assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] < total
    assert all(data["download"]["bytes_total"] == total for event, data in events if event == "progress")
    assert events[-1][0] == "present"
    final = _model(client, "hub-tiny")
    assert final["state"] == "present" and final["size_on_disk_mb"] > 0.9 and final["memory_needed_mb"]
    assert client.post("/v1/models/hub-tiny/pull").status_code == 200  # already here: nothing to do
    deleted = client.delete("/v1/models/hub-tiny")
    assert deleted.status_code == 200 and deleted.json()["state"] == "absent"
    assert not (online and (Path(client.app.state.ctx.settings.resolved_models_dir) / "steadyframe--tiny-t2v").exists())


def test_a_job_for_an_absent_model_waits_with_the_download_as_progress_then_is_released(
    app_client, online: LocalHub, tiny_repo: Path
) -> None:
    client, store = app_client
    online.bytes_per_second = 300_000
    response = client.post("/v1/jobs", json={"prompt": "a fox", "model": "hub-tiny", "steps": 1})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    job = _wait(lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["progress"]["step"] > 0 and j)
    assert job["status"] == "queued" and job["waiting"]["model"] == "hub-tiny"
    assert job["waiting"]["reason"] == "waiting for the model download"
    assert job["progress"]["stage"] == "download" and job["progress"]["total"] == wanted_bytes(tiny_repo)
    assert store.claim_next("w0") is None  # a worker is never handed a job whose model is not here
    _wait(lambda: _model(client, "hub-tiny")["state"] == "present")
    _wait(lambda: client.get(f"/v1/jobs/{job_id}").json()["waiting"] is None)
    assert store.claim_next("w0").id == job_id


def test_offline_or_without_auto_pull_a_job_for_an_absent_model_fails_at_submit_with_the_pull_command(
    tmp_path: Path, hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    for offline, auto_pull in ((True, True), (False, False)):
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        settings = Settings(data_dir=tmp_path / f"d{offline}", models=CATALOG, auto_pull=auto_pull)
        store = SqliteJobStore(settings.jobs_db)
        with TestClient(create_app(settings, store=store, dispatcher=IdleDispatcher()), base_url="http://127.0.0.1") as client:
            response = client.post("/v1/jobs", json={"prompt": "a fox", "model": "hub-tiny"})
            assert response.status_code == 422, response.text
            body = response.json()
            assert "steadyframe pull hub-tiny" in body["advice"]
            assert "not downloaded" in body["errors"][0]["msg"]
            assert store.list() == []
            if offline:
                pulled = client.post("/v1/models/hub-tiny/pull")
                assert pulled.status_code == 409 and "offline" in pulled.json()["detail"]
        store.close()
    assert hub.stats.requests == []


BAD_MODELS = ["a" * 300, "~nosuchuser", "🎬", "CogVideoX-2b\u202e", "../../etc/passwd", "/etc", "/nope", "THUDM/CogVideoX-5b", "x/y"]


def test_paths_repo_ids_and_odd_strings_from_the_api_are_422_naming_no_path(app_client) -> None:
    client, store = app_client
    answers = set()
    for model in BAD_MODELS:
        response = client.post("/v1/jobs", json={"prompt": "a fox", "model": model})
        assert response.status_code == 422, (model, response.text)
        text = response.text
        assert "not one this server offers" in text and "hub-tiny" in text
        assert "/etc" not in text and "nosuchuser" not in text and str(client.app.state.ctx.settings.data_dir) not in text
        answers.add(text)
    assert len(answers) == 1  # /etc (exists) and /nope (does not) get the same answer: no oracle
    assert store.list() == []


def test_too_little_disk_is_507_before_any_byte(tmp_path: Path, online: LocalHub) -> None:
    settings = Settings(data_dir=tmp_path / "data", models=CATALOG, pull_reserve_mb=10**9)
    store = SqliteJobStore(settings.jobs_db)
    with TestClient(create_app(settings, store=store, dispatcher=IdleDispatcher()), base_url="http://127.0.0.1") as client:
        response = client.post("/v1/models/hub-tiny/pull")
        assert response.status_code == 507, response.text
        assert response.json()["detail"].startswith("Not enough disk space to pull hub-tiny")
        job = client.post("/v1/jobs", json={"prompt": "a fox", "model": "hub-tiny"})
        assert job.status_code == 422 and "Not enough disk space" in job.text
        assert _model(client, "hub-tiny")["state"] == "absent"
    store.close()
    assert online.stats.bytes_for(REPO) == 0


def test_unknown_model_routes_are_404_problems(app_client) -> None:
    client, _ = app_client
    for method, path in (("get", "/v1/models/nope"), ("post", "/v1/models/nope/pull"), ("delete", "/v1/models/nope")):
        response = client.request(method, path)
        assert response.status_code == 404 and "catalog" in response.json()["detail"]
    assert client.get("/v1/models/nope/events").status_code == 404
    spec = client.get("/openapi.json").json()
    assert {"/v1/models/{name}/pull", "/v1/models/{name}/events", "/v1/models/{name}"} <= set(spec["paths"])


def test_delete_during_a_pull_stops_it_frees_the_disk_and_fails_the_jobs_waiting_for_it(
    app_client, online: LocalHub
) -> None:
    client, store = app_client
    online.bytes_per_second = 100_000
    job_id = client.post("/v1/jobs", json={"prompt": "a fox", "model": "hub-tiny"}).json()["id"]
    _wait(lambda: (_model(client, "hub-tiny").get("download") or {}).get("bytes_done", 0) > 0)
    deleted = client.delete("/v1/models/hub-tiny")
    assert deleted.status_code == 200 and deleted.json()["state"] == "absent"
    assert deleted.json()["download"] is None  # nothing left to resume from
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["kind"] == "model_unavailable"
    assert "steadyframe pull hub-tiny" in job["error"]["advice"]
    settings = client.app.state.ctx.settings
    assert not (settings.resolved_models_dir / "steadyframe--tiny-t2v").exists()
