"""uvicorn's h11 protocol with a deadline on request headers (uvicorn has none: a client that sends
half a request line and then waits holds its connection for good; hand-written for that one gap)."""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class DeadlineH11Protocol(H11Protocol):
    """Closes a connection whose request headers are not complete ``header_timeout_s`` after it opened
    (or after its previous response). Bodies are timed by ``server.guard``; idle keep-alive by uvicorn."""

    header_timeout_s: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_overdue)

    def _headers_overdue(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # still no complete request line and headers


def protocol_with_timeout(timeout_s: float) -> type[DeadlineH11Protocol]:
    """The protocol class uvicorn should use, with ``timeout_s`` as its header deadline."""
    return type("SteadyframeH11Protocol", (DeadlineH11Protocol,), {"header_timeout_s": timeout_s})
