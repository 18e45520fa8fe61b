"""Who may talk to the server: loopback-only by default, a bearer token beyond it.

The API and /metrics take ``Authorization: Bearer <token>`` (checked by ``server.guard`` before a
body is read); the UI asks for the same token as the password of Gradio's login form (any user
name). Probes (/healthz, /readyz) stay open.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable

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


def bind_warnings(settings: Settings) -> list[str]:
    """What an operator must hear about how the server is exposed (logged at start, shown in /v1/system)."""
    if is_loopback(settings.host) or settings.api_token:
        return []
    return [
        f"listening on {settings.host} without an API token (STEADYFRAME_ALLOW_UNAUTHENTICATED_REMOTE is set): "
        "anyone who can reach this address can run jobs and read results"
    ]


def token_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def ui_login(settings: Settings) -> Callable[[str, str], bool] | None:
    """Gradio's ``auth`` callable (password = the API token), or None when no token is set."""
    token = settings.api_token
    if not token:
        return None

    def check(_username: str, password: str) -> bool:
        return token_matches(token, password)

    return check
