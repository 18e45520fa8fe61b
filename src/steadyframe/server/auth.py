"""Who may talk to the server: loopback-only by default, a bearer token beyond it.

The API and /metrics take ``Authorization: Bearer <token>``; the UI asks for the same token as
the password of Gradio's login form (any user name). Probes (/healthz, /readyz) stay open.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable

from fastapi import HTTPException, Request, status

from steadyframe.errors import ErrorKind, SteadyframeError
from steadyframe.settings import Settings


class UnsafeBindError(SteadyframeError):
    """Binding beyond loopback without a token (and without the explicit opt-out)."""

    kind = ErrorKind.INVALID_INPUT


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so treat it as remote


def check_bind(settings: Settings) -> None:
    """Raise ``UnsafeBindError`` when ``settings`` would expose an unauthenticated server."""
    if is_loopback(settings.host) or settings.api_token or settings.allow_unauthenticated_remote:
        return
    raise UnsafeBindError(
        f"Refusing to listen on {settings.host} without an API token: anyone who can reach it could run jobs.",
        advice="Set STEADYFRAME_API_TOKEN (clients then send 'Authorization: Bearer <token>'), or set "
        "STEADYFRAME_ALLOW_UNAUTHENTICATED_REMOTE=1 if something else guards the network.",
    )


def token_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def bearer_guard(settings: Settings) -> Callable[[Request], None]:
    """A FastAPI dependency that answers 401 unless the request carries the configured token."""

    def require_token(request: Request) -> None:
        if not settings.api_token:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not token_matches(settings.api_token, given.strip()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing or wrong API token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_token


def ui_login(settings: Settings) -> Callable[[str, str], bool] | None:
    """Gradio's ``auth`` callable (password = the API token), or None when no token is set."""
    token = settings.api_token
    if not token:
        return None

    def check(_username: str, password: str) -> bool:
        return token_matches(token, password)

    return check
