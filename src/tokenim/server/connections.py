"""Connection limits, below the ASGI application where sockets are accepted and read.

uvicorn keeps a connection that never finishes its request head, or stops sending its body, open
for ever, and accepts until the process runs out of file descriptors. Here every accepted connection
is counted (in total and per client address) before anything is read from it; one over a cap is
answered at once with an error (503 `server_busy` or 429 `too_many_connections`, with Retry-After)
and closed, so the server always has descriptors left to say so. A request head must arrive whole
within `header_timeout`, and a body may not fall silent for longer than `body_timeout`; either ends
with 408 `request_timeout`. A WebSocket stays counted until it closes.

The caps are enforced by subclasses of uvicorn's own protocol classes (HTTP/1.1 and the configured
WebSocket implementation), installed through `uvicorn.Config(http=..., ws=...)`.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from uvicorn.config import WS_PROTOCOLS
from uvicorn.importer import import_from_string

from tokenim.core.errors import ErrorCode, TokenIMError

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _BaseHTTP
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    from uvicorn.protocols.http.h11_impl import H11Protocol as _BaseHTTP  # type: ignore[assignment]

RETRY_AFTER_SECONDS = 5
REFUSED_GRACE_SECONDS = 2.0  # a refused connection is closed at the latest this long after its answer
MIN_RESERVED_FILES = 64


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The caps and timeouts, resolved (no zero meaning "derive")."""

    max_connections: int
    max_per_address: int  # 0: no cap per address
    header_timeout: float
    body_timeout: float


def reserved_files(open_file_limit: int) -> int:
    """Descriptors kept back from connections: the database pool, blobs being written, logs, the listener."""
    return max(MIN_RESERVED_FILES, open_file_limit // 8)


def resolve_max_connections(configured: int, open_file_limit: int) -> int:
    """The connection cap: `configured`, or derived from the open-file limit when 0; never above what the limit allows."""
    ceiling = open_file_limit - reserved_files(open_file_limit)
    if ceiling < 1:
        raise TokenIMError(
            ErrorCode.BAD_CONFIG, f"The open-file limit ({open_file_limit}) is too low to serve: raise it (ulimit -n)."
        )
    if configured == 0:
        return ceiling
    if configured > ceiling:
        raise TokenIMError(
            ErrorCode.BAD_CONFIG,
            f"max_connections = {configured} needs more open files than the limit of {open_file_limit} allows "
            f"(at most {ceiling}, keeping {reserved_files(open_file_limit)} for the database and files): "
            "raise the limit (ulimit -n) or lower max_connections.",
        )
    return configured


def error_response(err: TokenIMError, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 response carrying the error body, ending the connection."""
    body = json.dumps(err.to_json(), separators=(",", ":")).encode()
    phrase = {408: "Request Timeout", 429: "Too Many Requests", 503: "Service Unavailable"}.get(err.status, "Error")
    head = [
        f"HTTP/1.1 {err.status} {phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


class ConnectionGuard:
    """Counts the open connections of one server process, in total and per client address."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._open: dict[asyncio.BaseTransport, str] = {}
        self._by_address: Counter[str] = Counter()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, transport: asyncio.BaseTransport) -> TokenIMError | None:
        """Count a new connection, or say why it is refused (then it is not counted)."""
        if transport in self._open:
            return None
        address = _address(transport)
        if len(self._open) >= self.limits.max_connections:
            return TokenIMError(ErrorCode.SERVER_BUSY, "The server has too many open connections: try again shortly.")
        if self.limits.max_per_address and self._by_address[address] >= self.limits.max_per_address:
            return TokenIMError(
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"Too many open connections from your address (at most {self.limits.max_per_address}): close some first.",
            )
        self._open[transport] = address
        self._by_address[address] += 1
        return None

    def release(self, transport: asyncio.BaseTransport) -> None:
        """The connection closed (idempotent)."""
        address = self._open.pop(transport, None)
        if address is not None:
            self._by_address[address] -= 1
            if self._by_address[address] <= 0:
                del self._by_address[address]


def guarded_protocols(guard: ConnectionGuard, websocket: str) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """uvicorn protocol classes (HTTP, WebSocket) that enforce `guard`'s caps and timeouts."""
    ws_base: Any = import_from_string(WS_PROTOCOLS[websocket])

    class GuardedWebSocket(ws_base):  # type: ignore[misc]
        """An upgraded connection: still counted until it closes."""

        def connection_lost(self, exc: Exception | None) -> None:
            guard.release(self.transport)
            super().connection_lost(exc)

    class GuardedHTTP(_GuardedHTTP):
        pass

    GuardedHTTP.guard = guard
    return GuardedHTTP, GuardedWebSocket


class _GuardedHTTP(_BaseHTTP):
    """HTTP/1.1 with admission control, a deadline for the request head and a silence limit for the body."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_head = False
        self._head_of: object = None  # the request cycle in place when the wait for a head began
        self._body_seen = 0.0
        self._refused = False
        refusal = self.guard.admit(transport)
        if refusal is not None:
            self._refuse(refusal)
        else:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self.transport)
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped, so that closing does not reset the answer away
        super().data_received(data)
        if self.transport.get_protocol() is not self:  # upgraded to a WebSocket: no HTTP deadlines any more
            self._disarm()
            return
        if self._awaiting_head and self.cycle is not self._head_of:
            self._head_arrived(self.cycle)
        self._body_seen = self.loop.time()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()

    # --- deadlines -----------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _await_head(self) -> None:
        """Idle between requests (or new): the next head must be complete within the header timeout."""
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a pipelined request is already being served
        self._awaiting_head, self._head_of = True, self.cycle
        self._arm(self.guard.limits.header_timeout, self._head_timed_out)

    def _head_arrived(self, cycle: Any) -> None:
        self._awaiting_head, self._head_of = False, None
        self._disarm()
        if cycle.more_body and not cycle.response_complete:
            self._arm(self.guard.limits.body_timeout, self._body_check)

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._awaiting_head and self.cycle is self._head_of and not self.transport.is_closing():
            self._time_out("The request was not received in time.")

    def _body_check(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.more_body or self.transport.is_closing():
            return
        silent = self.loop.time() - self._body_seen
        if self.flow.read_paused or silent < self.guard.limits.body_timeout:
            # Paused: the application has not taken what arrived yet; that is not the client's silence.
            wait = self.guard.limits.body_timeout - (0 if self.flow.read_paused else silent)
            self._arm(wait, self._body_check)
            return
        self._time_out("The request body stopped arriving.", answer=not cycle.response_started)

    def _time_out(self, message: str, *, answer: bool = True) -> None:
        if answer:
            self.transport.write(error_response(TokenIMError(ErrorCode.REQUEST_TIMEOUT, message)))
        self.transport.close()

    def _refuse(self, refusal: TokenIMError) -> None:
        """Answer at once and stop: the answer first, then end our side, then close shortly after."""
        self._refused = True
        self.transport.write(error_response(refusal, retry_after=RETRY_AFTER_SECONDS))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(REFUSED_GRACE_SECONDS, self.transport.close)
