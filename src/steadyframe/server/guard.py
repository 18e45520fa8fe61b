"""The request surface's one gate: an ASGI layer around the whole app (API, Gradio UI, file routes).

In this order, before any route sees a request:

1. **Host** must be one the server answers to (loopback names, the bind address, ``ALLOWED_HOSTS``):
   a page on ``evil.example`` that re-points its DNS name at 127.0.0.1 (DNS rebinding) is refused.
2. **Origin**: a state-changing request (anything but GET/HEAD/OPTIONS) or a websocket from a browser
   must come from this server's own origin or one of ``CORS_ORIGINS``; CORS headers are written here
   and only here (any set further in, e.g. by Gradio, are removed), so cross-origin reads are refused.
3. **Token** (when ``API_TOKEN`` is set) for ``/v1`` and ``/metrics``, checked from the headers alone:
   the body of a request without it is never read. Repeated bad tokens (and bad UI logins) are slowed.
4. **Body bytes** are counted as the route reads them, chunked or not, and cut off with 413 past the
   route's cap (uploads: ``MAX_UPLOAD_MB``; everything else: 1 MiB); a client that stalls mid-body
   for ``REQUEST_TIMEOUT_S`` gets 408. Nothing is buffered here.
5. **Event streams**: at most ``MAX_EVENT_STREAMS`` open at once, ``MAX_EVENT_STREAMS_PER_CLIENT`` each.

Hand-written as one pure ASGI class: Starlette's TrustedHost/CORS middlewares cover 1 and part of 2 but
not the ordering (auth before body), chunked counting or the per-client parts, and two layers that
each decide "who may" would be two places for one decision.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from steadyframe.logs import get_logger
from steadyframe.server.auth import is_loopback, token_matches
from steadyframe.settings import Settings

log = get_logger("server.guard")

JSON_BODY_CAP = 1024 * 1024  # job bodies, UI events, logins: a 2000-character prompt is far below this
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around an uploaded file
UPLOAD_PATHS = re.compile(r"^(/v1/uploads|/ui/gradio_api/upload)/?$")
EVENT_STREAM_PATH = re.compile(r"^/v1/jobs/[^/]+/events/?$")
PROTECTED_PREFIXES = ("/v1/", "/metrics")
UI_LOGIN_PATH = "/ui/login"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CLIENT_STATE_KEY = "steadyframe_client"  # scope["state"] key: who is asking (quotas use it)

# Bad logins: the first few are free (typos), then each waits longer, up to a cap; forgotten after a while.
FREE_FAILURES = 3
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 8.0
FAILURE_MEMORY_S = 600.0
MAX_TRACKED_CLIENTS = 10_000


class Refused(Exception):
    """A request the guard answers itself, with a problem body."""

    def __init__(self, status: int, detail: str, advice: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.advice = advice
        self.headers = headers or {}


def client_key(scope: Scope) -> str:
    """Who is asking, for quotas: the guard's verdict when it ran, else the peer address."""
    state = scope.get("state") or {}
    if CLIENT_STATE_KEY in state:
        return str(state[CLIENT_STATE_KEY])
    client = scope.get("client")
    return f"addr:{client[0]}" if client else "addr:unknown"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _host_name(host_header: str) -> str:
    """``[::1]:7860`` -> ``::1``; ``Example.COM:80`` -> ``example.com``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def send_problem(send: Send, refusal: Refused) -> None:
    """Answer with a ProblemView body and close the connection (an unread body may follow)."""
    body = json.dumps({"detail": refusal.detail, "advice": refusal.advice}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *[(k.lower().encode(), v.encode()) for k, v in refusal.headers.items()],
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class LoginThrottle:
    """Per-client delay after repeated bad tokens or UI passwords (brute force gets slow, typos do not)."""

    failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def delay_s(self, who: str) -> float:
        count, last = self.failures.get(who, (0, 0.0))
        if time.monotonic() - last > FAILURE_MEMORY_S:
            self.failures.pop(who, None)
            return 0.0
        if count < FREE_FAILURES:
            return 0.0
        return min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** (count - FREE_FAILURES))

    def failed(self, who: str) -> None:
        if len(self.failures) >= MAX_TRACKED_CLIENTS:  # many addresses guessing: forget the stale ones first
            now = time.monotonic()
            self.failures = {k: v for k, v in self.failures.items() if now - v[1] <= FAILURE_MEMORY_S}
            if len(self.failures) >= MAX_TRACKED_CLIENTS:
                self.failures.pop(next(iter(self.failures)))
        count, last = self.failures.get(who, (0, 0.0))
        if time.monotonic() - last > FAILURE_MEMORY_S:
            count = 0
        self.failures[who] = (count + 1, time.monotonic())

    def succeeded(self, who: str) -> None:
        self.failures.pop(who, None)


class _CountedBody:
    """``receive`` that counts body bytes against a cap and times out a stalled body."""

    def __init__(self, receive: Receive, cap: int, timeout_s: float, cap_advice: str) -> None:
        self._receive = receive
        self.cap = cap
        self.timeout_s = timeout_s
        self.cap_advice = cap_advice
        self.count = 0
        self.complete = False
        self.refusal: Refused | None = None

    async def __call__(self) -> Message:
        if self.complete:
            return await self._receive()  # after the body: waiting for a disconnect, no deadline
        try:
            message = await asyncio.wait_for(self._receive(), self.timeout_s)
        except TimeoutError:
            self.refusal = Refused(
                408, f"the request body stalled for {self.timeout_s:g} s", "Send the body without pausing."
            )
            raise self.refusal from None
        if message["type"] == "http.request":
            self.count += len(message.get("body", b""))
            if self.count > self.cap:
                self.refusal = Refused(413, f"the request body is larger than {self.cap / 2**20:g} MiB", self.cap_advice)
                raise self.refusal
            if not message.get("more_body", False):
                self.complete = True
        return message


class RequestGuard:
    """Wraps the whole ASGI app; see the module docstring for what it refuses and why."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.token = settings.api_token
        self.upload_cap = int(settings.max_upload_mb * 1024 * 1024) + MULTIPART_OVERHEAD
        self.any_host = "*" in settings.allowed_hosts
        self.hosts = {"localhost", "127.0.0.1", "::1", *(h.lower() for h in settings.allowed_hosts)}
        if settings.host not in ("0.0.0.0", "::", ""):
            self.hosts.add(settings.host.lower().strip("[]"))
        self.cors_origins = {o.rstrip("/").lower() for o in settings.cors_origins}
        self.throttle = LoginThrottle()
        self.streams: dict[str, int] = defaultdict(int)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        try:
            self._check_host(scope)
            self._check_origin(scope, origin)
            who = await self._check_token(scope)
        except Refused as refusal:
            await self._refuse(scope, receive, send, refusal)
            return
        scope.setdefault("state", {})[CLIENT_STATE_KEY] = who
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await self._preflight(origin, send)
            return
        if EVENT_STREAM_PATH.match(scope["path"]) and scope["method"] == "GET":
            await self._stream(scope, receive, send, who, origin)
            return
        await self._forward(scope, receive, send, origin)

    # --- checks ---------------------------------------------------------------------------

    def _check_host(self, scope: Scope) -> None:
        host = _header(scope, b"host")
        if host is None:
            raise Refused(400, "the request has no Host header", "Send a Host header (HTTP/1.1 does).")
        name = _host_name(host)
        if self.any_host or name in self.hosts or is_loopback(name):
            return
        raise Refused(
            400,
            f"this server does not answer to the host name {name!r}",
            "Use the address the server was started with, or add the name to STEADYFRAME_ALLOWED_HOSTS.",
        )

    def _same_origin(self, scope: Scope, origin: str) -> bool:
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        host = (_header(scope, b"host") or "").lower()
        return origin == f"{scheme}://{host}" or (scheme == "http" and origin == f"http://{host.removesuffix(':80')}")

    def _check_origin(self, scope: Scope, origin: str | None) -> None:
        unsafe = scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS
        if not unsafe:
            return
        if origin is None:
            # Browsers always send Origin on cross-site writes; only a fetch metadata header can still tell.
            if (_header(scope, b"sec-fetch-site") or "").lower() == "cross-site":
                raise Refused(403, "cross-site requests are refused", "Call the API from this server's own page.")
            return  # curl, scripts, SDKs: no browser, no cross-site risk
        normalized = origin.rstrip("/").lower()
        if self._same_origin(scope, normalized) or normalized in self.cors_origins:
            return
        raise Refused(
            403,
            f"requests from the web page at {origin[:100]!r} are refused",
            "Open the UI from this server's own address, or add that origin to STEADYFRAME_CORS_ORIGINS.",
        )

    async def _check_token(self, scope: Scope) -> str:
        """-> the client key; raises 401 (after the per-client delay) on a missing or wrong token."""
        client = scope.get("client")
        address = f"addr:{client[0] if client else 'unknown'}"
        path = scope["path"]
        if not self.token or not path.startswith(PROTECTED_PREFIXES) and path != "/v1":
            return address
        scheme, _, given = (_header(scope, b"authorization") or "").partition(" ")
        given = given.strip()
        if scheme.lower() == "bearer" and token_matches(self.token, given):
            self.throttle.succeeded(address)
            return "token:" + hashlib.sha256(given.encode()).hexdigest()[:16]
        delay = self.throttle.delay_s(address)
        if given:
            self.throttle.failed(address)  # a missing token is a forgotten header, not a guess
        if delay:
            await asyncio.sleep(delay)
        raise Refused(
            401,
            "missing or wrong API token",
            "Send 'Authorization: Bearer <token>' with the server's STEADYFRAME_API_TOKEN.",
            {"WWW-Authenticate": "Bearer"},
        )

    # --- answering ------------------------------------------------------------------------

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, refusal: Refused) -> None:
        log.info("refused %s %s: %s", scope.get("method", "WS"), scope["path"][:200], refusal.detail)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_problem(send, refusal)

    async def _preflight(self, origin: str | None, send: Send) -> None:
        if origin is None or origin.rstrip("/").lower() not in self.cors_origins:
            await send_problem(
                send,
                Refused(403, "cross-origin requests are not allowed from this origin", "Set STEADYFRAME_CORS_ORIGINS."),
            )
            return
        headers = [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", b"authorization, content-type, idempotency-key, last-event-id"),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _cors_headers(self, message: Message, origin: str | None) -> Message:
        headers = [(k, v) for k, v in message.get("headers", []) if not k.lower().startswith(b"access-control-")]
        if origin is not None and origin.rstrip("/").lower() in self.cors_origins:
            headers += [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-expose-headers", b"location, retry-after, idempotent-replayed"),
                (b"vary", b"Origin"),
            ]
        return {**message, "headers": headers}

    async def _forward(self, scope: Scope, receive: Receive, send: Send, origin: str | None) -> None:
        path = scope["path"]
        is_upload = bool(UPLOAD_PATHS.match(path))
        cap = self.upload_cap if is_upload else JSON_BODY_CAP
        advice = (
            f"Send a file under {self.settings.max_upload_mb:g} MB." if is_upload else "Send a smaller request body."
        )
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > cap):
            await send_problem(send, Refused(413, f"the request body is larger than {cap / 2**20:g} MiB", advice))
            return
        body = _CountedBody(receive, cap, self.settings.request_timeout_s, advice)
        started = False
        login = path == UI_LOGIN_PATH and scope["method"] == "POST"
        status: list[int] = []
        if login:
            delay = self.throttle.delay_s(client_key(scope))
            if delay:
                await asyncio.sleep(delay)

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if body.refusal is not None:
                return  # the route's own answer to a body we cut off is replaced by ours
            if message["type"] == "http.response.start":
                started = True
                status.append(int(message["status"]))
                message = self._cors_headers(message, origin)
            await send(message)

        try:
            await self.app(scope, body, guarded_send)
        except Exception:
            if body.refusal is None:
                raise
        if body.refusal is not None and not started:
            log.info("refused %s %s: %s", scope["method"], path[:200], body.refusal.detail)
            await send_problem(send, body.refusal)
        if login and status:
            (self.throttle.failed if status[0] >= 400 else self.throttle.succeeded)(client_key(scope))

    async def _stream(self, scope: Scope, receive: Receive, send: Send, who: str, origin: str | None) -> None:
        total = sum(self.streams.values())
        if total >= self.settings.max_event_streams or self.streams[who] >= self.settings.max_event_streams_per_client:
            mine = self.streams[who] >= self.settings.max_event_streams_per_client
            await send_problem(
                send,
                Refused(
                    429,
                    "too many open event streams" + (" from this client" if mine else " on this server"),
                    "Close event streams you no longer read, or poll GET /v1/jobs/{id} instead.",
                    {"Retry-After": "5"},
                ),
            )
            return
        self.streams[who] += 1
        try:
            await self._forward(scope, receive, send, origin)
        finally:
            self.streams[who] -= 1
            if not self.streams[who]:
                del self.streams[who]

