"""Loopback by default, a bearer token beyond it, and no file route into the data directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.server.auth import UnsafeBindError, check_bind, is_loopback
from steadyframe.server.main import serve
from steadyframe.settings import Settings

LOOPBACK_URL = "http://127.0.0.1"  # the Host the request guard answers to (TestClient's default is "testserver")
TOKEN = "test-token-0123456789"  # the server refuses tokens under 16 characters


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_addresses_need_no_token(host: str) -> None:
    assert is_loopback(host)
    check_bind(Settings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "myhost.example"])
def test_serve_refuses_a_remote_bind_without_a_token_before_listening(host: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeBindError) as caught:
        serve(Settings(host=host, data_dir=tmp_path))
    assert "STEADYFRAME_API_TOKEN" in (caught.value.advice or "")
    assert not (tmp_path / "jobs.sqlite3").exists()  # refused before anything was set up


def test_remote_bind_is_allowed_with_a_token_or_the_explicit_opt_out() -> None:
    check_bind(Settings(host="0.0.0.0", api_token=TOKEN))
    check_bind(Settings(host="0.0.0.0", allow_unauthenticated_remote=True))


@pytest.fixture
def token_client(tmp_path: Path):
    from steadyframe.server.app import create_app
    from steadyframe.supervisor import Dispatcher

    settings = Settings(data_dir=tmp_path / "data", api_token=TOKEN)
    store = SqliteJobStore(settings.jobs_db)
    with TestClient(create_app(settings, store=store, dispatcher=Dispatcher(settings, store)), base_url=LOOPBACK_URL) as client:
        yield client, settings
    store.close()


def test_api_and_metrics_need_the_bearer_token_probes_do_not(token_client) -> None:
    client, _ = token_client
    for path in ("/v1/jobs", "/v1/system", "/v1/models", "/metrics"):
        missing = client.get(path)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.post("/v1/jobs", json={"prompt": "x"}).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503


def test_ui_asks_for_the_token_as_password(token_client) -> None:
    client, _ = token_client
    assert client.get("/ui/config").status_code == 401
    wrong = client.post("/ui/login", data={"username": "me", "password": "nope"})
    assert wrong.status_code == 400
    right = client.post("/ui/login", data={"username": "me", "password": TOKEN})
    assert right.status_code == 200
    assert client.get("/ui/config").status_code == 200


def test_gradio_file_route_cannot_read_the_data_directory(tmp_path: Path) -> None:
    from steadyframe.server.app import create_app
    from steadyframe.supervisor import Dispatcher

    settings = Settings(data_dir=tmp_path / "data")
    store = SqliteJobStore(settings.jobs_db)
    (settings.outputs_dir / "abc").mkdir(parents=True)
    (settings.outputs_dir / "abc" / "video.mp4").write_bytes(b"private")
    with TestClient(create_app(settings, store=store, dispatcher=Dispatcher(settings, store)), base_url=LOOPBACK_URL) as client:
        for target in (settings.jobs_db, settings.outputs_dir / "abc" / "video.mp4"):
            response = client.get(f"/ui/gradio_api/file={target}")
            assert response.status_code in (403, 404), target
            assert b"private" not in response.content


def test_ui_config_has_no_share_link_and_no_analytics(tmp_path: Path) -> None:
    from steadyframe.server.app import create_app
    from steadyframe.supervisor import Dispatcher

    settings = Settings(data_dir=tmp_path / "data")
    store = SqliteJobStore(settings.jobs_db)
    with TestClient(create_app(settings, store=store, dispatcher=Dispatcher(settings, store)), base_url=LOOPBACK_URL) as client:
        config = client.get("/ui/config").json()
    assert config.get("analytics_enabled") is False
    assert not config.get("share_url")


def _idle_client(settings: Settings):
    from steadyframe.server.app import create_app
    from steadyframe.supervisor import Dispatcher

    store = SqliteJobStore(settings.jobs_db)
    return TestClient(create_app(settings, store=store, dispatcher=Dispatcher(settings, store)), base_url=LOOPBACK_URL)


def test_an_unauthenticated_remote_bind_is_loud_in_the_system_view(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", host="0.0.0.0", allow_unauthenticated_remote=True)
    with _idle_client(settings) as client:
        warnings = client.get("/v1/system").json()["warnings"]
    assert any("without an API token" in w for w in warnings), warnings
    with _idle_client(Settings(data_dir=tmp_path / "quiet")) as client:
        assert client.get("/v1/system").json()["warnings"] == []


def test_tokens_shorter_than_16_characters_are_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at least 16"):
        Settings(api_token="s3cret")
    assert Settings(api_token="").api_token is None  # an empty variable means no token


def test_repeated_bad_ui_logins_are_slowed(token_client) -> None:
    import time

    client, _ = token_client
    timings = []
    for attempt in range(5):
        started = time.monotonic()
        assert client.post("/ui/login", data={"username": "me", "password": f"guess-{attempt}"}).status_code == 400
        timings.append(time.monotonic() - started)
    assert timings[-1] >= 0.9, timings


def test_a_configured_cors_origin_gets_headers_and_preflight_others_do_not(tmp_path: Path) -> None:
    allowed = "https://app.example:8443"
    settings = Settings(data_dir=tmp_path / "data", cors_origins=[allowed])
    with _idle_client(settings) as client:
        preflight = client.options(
            "/v1/jobs", headers={"Origin": allowed, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == allowed
        read = client.get("/v1/system", headers={"Origin": allowed})
        assert read.headers["access-control-allow-origin"] == allowed
        posted = client.post("/v1/jobs", json={"prompt": "from the allowed app", "steps": 1}, headers={"Origin": allowed})
        assert posted.status_code == 202
        other = client.get("/v1/system", headers={"Origin": "https://other.example"})
        assert "access-control-allow-origin" not in other.headers


def test_docs_work_offline_from_bundled_files(tmp_path: Path) -> None:
    with _idle_client(Settings(data_dir=tmp_path / "data")) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "cdn" not in page.text.lower()
        scripts = [part.split('"', 1)[0] for part in page.text.split('src="')[1:]]
        assert scripts and all(s.startswith("/") for s in scripts), scripts  # served here, not from the internet
        for script in scripts:
            assert client.get(script).status_code == 200
        assert client.get("/redoc").status_code == 200
