"""The request surface and the data folder, tried as an attacker and an unlucky operator would, over HTTP
against real servers: DNS rebinding, foreign pages, unauthenticated and oversized bodies, slow clients,
a second server on the same folder, bad uploads, greedy clients."""

from __future__ import annotations

import io
import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from PIL import Image

from steadyframe.testing.bad_media import bad_uploads

if TYPE_CHECKING:  # fixtures arrive by name; the import is for readers and type checkers only
    from conftest import LiveServer

pytestmark = pytest.mark.slow

TOKEN = "hardening-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPLOAD_CAP_MB = 2
REQUEST_TIMEOUT_S = 2
MB = 1024 * 1024


@pytest.fixture(scope="module")
def token_server(server_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    """A server with a token, a 2 MB upload cap, 2 s request timeouts and small per-client quotas."""
    return server_factory(
        tmp_path_factory.mktemp("token-server"),
        STEADYFRAME_API_TOKEN=TOKEN,
        STEADYFRAME_MAX_UPLOAD_MB=str(UPLOAD_CAP_MB),
        STEADYFRAME_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
        STEADYFRAME_MAX_QUEUE_PER_CLIENT="2",
        STEADYFRAME_MAX_EVENT_STREAMS_PER_CLIENT="2",
    )


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def _complete(response: bytes) -> bool:
    """Headers and as much body as Content-Length says (the body may come in a later packet)."""
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return length is None or len(body) >= int(length.group(1))


def raw_exchange(url: str, head: bytes, body: Iterable[bytes], *, wait_s: float = 20.0) -> tuple[int, bytes, int]:
    """Send ``head`` then ``body`` chunks until the server answers (or stops reading).

    -> (status, response bytes, body bytes the server took before answering). A plain socket, because
    HTTP clients send the whole body before they look for an answer.
    """
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=wait_s)
    sent = 0
    try:
        sock.sendall(head)
        for chunk in body:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # the answer came before the body ended
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(chunk)
        response = b""
        deadline = time.monotonic() + wait_s
        while not _complete(response) and time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            response += data
    finally:
        sock.close()
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0
    return status, response, sent


def _zeros(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    for _ in range(total // chunk):
        yield b"\x00" * chunk


MULTIPART_START = (
    b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n\x89PNG\r\n\x1a\n"
)


def _chunked(total: int, chunk: int = 256 * 1024, *, start: bytes = b"") -> Iterator[bytes]:
    """Chunked transfer encoding of ``start`` then zeros, ``total`` bytes in all (never a last chunk)."""
    if start:
        yield f"{len(start):x}\r\n".encode() + start + b"\r\n"
    for _ in range(total // chunk):
        yield f"{chunk:x}\r\n".encode() + b"\x00" * chunk + b"\r\n"


def _head(server: LiveServer, path: str, extra: str) -> bytes:
    host = urlsplit(server.url).netloc
    return f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


# --- cross-site ---------------------------------------------------------------------------------


def test_a_rebinding_host_is_refused_on_api_ui_and_file_routes(live_server: LiveServer) -> None:
    port = urlsplit(live_server.url).port
    with live_server.client() as http:
        for path in ("/v1/system", "/v1/jobs", "/ui/", "/ui/config", "/v1/jobs/x/video", "/ui/gradio_api/file=x"):
            evil = http.get(path, headers={"Host": f"evil.example:{port}"})
            assert evil.status_code == 400, path
            assert "evil.example" in evil.json()["detail"] and evil.json()["advice"]
        posted = http.post("/v1/jobs", json={"prompt": "x"}, headers={"Host": f"evil.example:{port}"})
        assert posted.status_code == 400
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            assert http.get("/v1/system", headers={"Host": host}).status_code == 200


def test_a_foreign_origin_cannot_change_anything_and_gets_no_cors_headers(live_server: LiveServer) -> None:
    evil = {"Origin": "http://evil.example"}
    with live_server.client() as http:
        before = len(http.get("/v1/jobs", params={"limit": 500}).json()["jobs"])
        for path, kwargs in (
            ("/v1/jobs", {"json": {"prompt": "from a foreign page", "steps": 1}}),
            ("/v1/uploads", {"files": {"file": ("a.png", _png_bytes())}}),
            ("/v1/jobs/x/cancel", {}),
            ("/ui/gradio_api/queue/join", {"json": {"data": [], "fn_index": 0, "session_hash": "x"}}),
            ("/ui/gradio_api/upload", {"files": {"files": ("a.png", _png_bytes())}}),
            ("/ui/login", {"data": {"username": "a", "password": "b"}}),
        ):
            refused = http.post(path, headers=evil, **kwargs)
            assert refused.status_code == 403, (path, refused.text)
            assert "evil.example" in refused.json()["detail"]
        cross_site = http.post("/v1/jobs", json={"prompt": "x"}, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross_site.status_code == 403
        assert len(http.get("/v1/jobs", params={"limit": 500}).json()["jobs"]) == before  # nothing queued
        read = http.get("/v1/system", headers=evil)
        assert read.status_code == 200 and not any(h.lower().startswith("access-control-") for h in read.headers)
        ui_read = http.get("/ui/config", headers=evil)
        assert not any(h.lower().startswith("access-control-") for h in ui_read.headers)
        preflight = http.options("/v1/jobs", headers={**evil, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 403
        same_origin = http.post(
            "/v1/jobs", json={"prompt": "from our own page", "steps": 1}, headers={"Origin": live_server.url}
        )
        assert same_origin.status_code == 202
    live_server.wait_for(same_origin.json()["id"])


# --- bodies: authenticated first, counted always -------------------------------------------------


def test_without_the_token_a_huge_body_is_401_before_it_is_read(token_server: LiveServer) -> None:
    rss_before = rss_mb(token_server.pid)
    declared = _head(token_server, "/v1/uploads", f"Content-Length: {4096 * MB}\r\nContent-Type: multipart/form-data; boundary=x\r\n")
    status, response, sent = raw_exchange(token_server.url, declared, _zeros(256 * MB))
    assert status == 401 and b"WWW-Authenticate" in response.replace(b"www-authenticate", b"WWW-Authenticate")
    assert sent < 64 * MB, sent  # answered from the headers; the rest was never taken
    chunked = _head(token_server, "/v1/jobs", "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n")
    status, _, sent = raw_exchange(token_server.url, chunked, _chunked(256 * MB))
    assert status == 401 and sent < 64 * MB, sent
    assert rss_mb(token_server.pid) - rss_before < 64, "the server's memory grew with the body"


def test_with_the_token_an_oversized_chunked_body_is_413_without_being_buffered(token_server: LiveServer) -> None:
    rss_before = rss_mb(token_server.pid)
    for path, content_type, start in (
        ("/v1/uploads", "multipart/form-data; boundary=x", MULTIPART_START),  # a well-formed file part, endless
        ("/v1/jobs", "application/json", b'{"prompt": "'),
    ):
        head = _head(
            token_server, path, f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\nContent-Type: {content_type}\r\n"
        )
        status, response, sent = raw_exchange(token_server.url, head, _chunked(256 * MB, start=start))
        assert status == 413, (path, response[:300])
        assert b"larger than" in response
        assert sent < 64 * MB, (path, sent)
    assert rss_mb(token_server.pid) - rss_before < 64, "the server's memory grew with the body"
    assert list((token_server.data_dir / "uploads").iterdir()) == []
    with token_server.client(headers=AUTH) as http:  # a file under the cap still goes in
        assert http.post("/v1/uploads", files={"file": ("ok.png", _png_bytes())}).status_code == 201


def test_bad_tokens_are_slowed_down_and_the_right_one_is_not(token_server: LiveServer) -> None:
    timings = []
    with token_server.client() as http:
        for attempt in range(5):
            started = time.monotonic()
            answer = http.get("/v1/system", headers={"Authorization": f"Bearer wrong-guess-{attempt:02d}-xxxxxxx"})
            timings.append(time.monotonic() - started)
            assert answer.status_code == 401
        assert timings[-1] >= 0.9, timings  # the fifth guess waits (0.5 s doubling after three free ones)
        assert http.get("/v1/system", headers=AUTH).status_code == 200
        started = time.monotonic()
        assert http.get("/v1/system", headers={"Authorization": "Bearer another-wrong-token-000"}).status_code == 401
        assert time.monotonic() - started < 0.9  # a success forgave the earlier failures


def test_slow_headers_and_a_stalled_body_are_cut_off(token_server: LiveServer) -> None:
    parts = urlsplit(token_server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=REQUEST_TIMEOUT_S * 10) as slow:
        slow.sendall(f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode())  # and never the blank line
        started = time.monotonic()
        assert slow.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < REQUEST_TIMEOUT_S * 5
    head = _head(token_server, "/v1/jobs", f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n")
    with socket.create_connection((parts.hostname, parts.port), timeout=REQUEST_TIMEOUT_S * 10) as stalled:
        stalled.sendall(head + b'{"prompt": ')
        started = time.monotonic()
        answer = stalled.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started < REQUEST_TIMEOUT_S * 5


def test_short_tokens_are_refused_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "STEADYFRAME_DATA_DIR": str(tmp_path), "STEADYFRAME_API_TOKEN": "hunter2"}
    done = subprocess.run(
        [sys.executable, "-m", "steadyframe.cli", "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "16" in done.stderr and "token" in done.stderr.lower(), done.stderr


# --- fair use -----------------------------------------------------------------------------------


def test_per_client_queue_quota_and_event_stream_cap(token_server: LiveServer) -> None:
    with token_server.client(headers=AUTH) as http:
        long_job = http.post("/v1/jobs", json={"prompt": "hold the worker", "steps": 200, "num_frames": 17}).json()["id"]
        token_server_wait_running(http, long_job)
        queued = [http.post("/v1/jobs", json={"prompt": f"waits {i}", "steps": 1}) for i in range(2)]
        assert all(r.status_code == 202 for r in queued), [r.text for r in queued]
        over = http.post("/v1/jobs", json={"prompt": "one too many", "steps": 1})
        assert over.status_code == 429 and "per client" in over.json()["detail"] and over.headers["Retry-After"]
        target = queued[0].json()["id"]
        with httpx.Client(base_url=token_server.url, headers=AUTH, timeout=30) as streams:
            opened = [streams.stream("GET", f"/v1/jobs/{target}/events") for _ in range(2)]
            responses = [ctx.__enter__() for ctx in opened]
            try:
                assert all(r.status_code == 200 for r in responses)
                third = http.get(f"/v1/jobs/{target}/events")
                assert third.status_code == 429 and "event streams" in third.json()["detail"]
            finally:
                for ctx in opened:
                    ctx.__exit__(None, None, None)
        for job_id in [long_job, *(r.json()["id"] for r in queued)]:
            http.post(f"/v1/jobs/{job_id}/cancel")
        deadline = time.monotonic() + 60
        while http.get("/v1/jobs", params={"status": "running"}).json()["jobs"] and time.monotonic() < deadline:
            time.sleep(0.3)


def token_server_wait_running(http: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["progress"]["stage"] == "denoise":
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached denoise")


# --- one server per data folder -----------------------------------------------------------------


def test_a_second_server_on_the_same_folder_is_refused_while_the_first_runs_a_job(live_server: LiveServer) -> None:
    with live_server.client() as http:
        job_id = http.post("/v1/jobs", json={"prompt": "the first server's job", "steps": 60}).json()["id"]
        token_server_wait_running(http, job_id)
    env = {**os.environ, "STEADYFRAME_DATA_DIR": str(live_server.data_dir), "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "steadyframe.cli", "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=120
    )
    assert second.returncode != 0
    port = urlsplit(live_server.url).port
    assert f"pid {live_server.pid}" in second.stderr and f"port {port}" in second.stderr, second.stderr
    assert time.monotonic() - started < 60  # refused before importing the UI or starting workers
    job = live_server.wait_for(job_id)
    assert job["status"] == "succeeded" and job["attempt"] == 0, job
    assert "recovered" not in live_server.log_path.read_text()


# --- never a 5xx for a bad upload -----------------------------------------------------------------


def test_every_bad_upload_is_a_4xx_with_advice(live_server: LiveServer, mp4_file: Path, tmp_path: Path) -> None:
    corpus = bad_uploads(tmp_path, _png_bytes(), mp4_file.read_bytes())
    with live_server.client() as http:
        for name, content in corpus.items():
            answer = http.post("/v1/uploads", files={"file": ("upload.bin", content)})
            assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text)
            body = answer.json()
            assert isinstance(body["detail"], str) and body["advice"], (name, body)
        missing = http.post("/v1/uploads", data={"other": "x"})
        assert missing.status_code == 422 and isinstance(missing.json()["detail"], str)
        assert missing.json()["errors"][0]["loc"] == ["body", "file"]
    assert [p for p in (live_server.data_dir / "uploads").iterdir() if not (p / "meta.json").exists()] == []
