"""The in-process hub: which devices are connected, and delivery of committed events to them.

Each connection has an outbox drained by its own writer. While a connection catches up from the
database, live frames wait in `pending`; they are released afterwards, skipping what the backlog
already carried, so every event reaches the device once and in stream order.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable

from tokenim.core.clock import Clock
from tokenim.core.content import encode_json
from tokenim.server.storage.events import EventRow, ToDeviceRow

MAX_QUEUED_FRAMES = 10_000


class Connection:
    """One device's live connection. Frames are JSON text, serialised once per event.

    An idle connection holds no task: a drain task exists only while frames wait to be written,
    which keeps the memory of ten thousand idle devices small.
    """

    __slots__ = (
        "_close",
        "_drain",
        "_send",
        "closed",
        "device_id",
        "expires_at",
        "in_flight",
        "last_pos",
        "last_to_device",
        "live",
        "outbox",
        "pending",
        "session_id",
        "syncing",
        "user_id",
    )

    def __init__(
        self,
        user_id: str,
        device_id: str,
        send: Callable[[str], Awaitable[None]],
        *,
        session_id: str = "",
        expires_at: int = 2**62,
        close: Callable[[int], None] = lambda _code: None,
    ) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.session_id = session_id
        self.expires_at = expires_at  # the access token's expiry: past it, the socket is closed (4401)
        self.in_flight = 0  # sends taken from this socket and not yet answered
        self._send = send
        self._close = close
        self._drain: asyncio.Task[None] | None = None
        self.outbox: deque[str] = deque()
        self.live = False  # subscribed: a `sync` frame was handled
        self.syncing = False  # sending the backlog: live frames wait in `pending`
        self.pending: list[tuple[str, int, str]] = []
        self.last_pos = 0
        self.last_to_device = 0
        self.closed = False

    def push(self, frame: str) -> None:
        """Queue a frame for writing, in order. A device that stops reading is disconnected (1008), not buffered
        without end: it catches up from its position when it reconnects."""
        if self.closed:
            return
        if len(self.outbox) >= MAX_QUEUED_FRAMES:
            self.kick(1008)
            return
        self.outbox.append(frame)
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_outbox())

    async def _drain_outbox(self) -> None:
        try:
            while self.outbox and not self.closed:
                await self._send(self.outbox.popleft())
        except Exception:
            self.closed = True  # the socket is gone; the reader notices and unregisters
        finally:
            self._drain = None

    def close(self) -> None:
        self.closed = True
        self.outbox.clear()
        if self._drain is not None:
            self._drain.cancel()

    def kick(self, code: int) -> None:
        """Close the socket: the token ended (4401) or the device fell too far behind (1008)."""
        if not self.closed:
            self.close()
            self._close(code)

    def send_event(self, pos: int, frame: str) -> None:
        """Queue an event frame if it is new for this device."""
        if pos > self.last_pos:
            self.last_pos = pos
            self.push(frame)

    def send_to_device(self, msg_id: int, frame: str) -> None:
        if msg_id > self.last_to_device:
            self.last_to_device = msg_id
            self.push(frame)

    def offer(self, kind: str, ident: int, frame: str) -> None:
        """A live frame from the hub: delivered now, or held while the backlog is sent."""
        if self.syncing:
            if len(self.pending) >= MAX_QUEUED_FRAMES:
                self.kick(1008)
                return
            self.pending.append((kind, ident, frame))
        elif not self.live:
            return  # not subscribed yet: the `sync` frame will bring everything from its position
        elif kind == "event":
            self.send_event(ident, frame)
        else:
            self.send_to_device(ident, frame)

    def go_live(self) -> None:
        """After the backlog: release held frames (skipping duplicates) and deliver directly from now on."""
        self.live, self.syncing = True, False
        held, self.pending = self.pending, []
        for kind, ident, frame in held:
            self.offer(kind, ident, frame)


def event_frame(event: EventRow) -> str:
    """A live event frame, written by the one encoder that writes sync responses."""
    return encode_json({"type": "event", "event": event.to_wire()}).decode("utf-8")


def to_device_frame(msg: ToDeviceRow) -> str:
    return encode_json({"type": "to_device", "message": msg.to_wire()}).decode("utf-8")


class Hub:
    """Routes committed events to the connections of the users allowed to see them."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._by_user: dict[str, set[Connection]] = defaultdict(set)
        self._clock = clock

    def expired(self, conn: Connection) -> bool:
        """True once the access token the socket was opened with has expired."""
        return self._clock is not None and self._clock.now_ms() >= conn.expires_at

    def _kick_if_expired(self, conn: Connection) -> bool:
        if self.expired(conn):
            conn.kick(4401)
            self.unregister(conn)
            return True
        return False

    def close_session(self, session_id: str) -> None:
        """A login session ended (logout): its sockets stop at once."""
        for conns in list(self._by_user.values()):
            for conn in [c for c in conns if c.session_id == session_id]:
                conn.kick(4401)
                self.unregister(conn)

    def close_device(self, user_id: str, device_id: str) -> None:
        """A device was removed: its sockets stop at once."""
        for conn in [c for c in self._by_user.get(user_id, ()) if c.device_id == device_id]:
            conn.kick(4401)
            self.unregister(conn)

    def register(self, conn: Connection, *, max_per_device: int | None = None) -> bool:
        """Add a connection; False (and not added) if its device already has `max_per_device` open."""
        conns = self._by_user[conn.user_id]
        if max_per_device is not None and sum(c.device_id == conn.device_id for c in conns) >= max_per_device:
            if not conns:
                del self._by_user[conn.user_id]
            return False
        conns.add(conn)
        return True

    def unregister(self, conn: Connection) -> None:
        conn.close()
        conns = self._by_user.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_user[conn.user_id]

    def publish_events(self, items: Iterable[tuple[EventRow, Iterable[str]]]) -> None:
        """Called after commit, in stream order."""
        for event, recipients in items:
            frame: str | None = None
            for user_id in recipients:
                conns = self._by_user.get(user_id)
                if not conns:
                    continue
                if frame is None:
                    frame = event_frame(event)
                for conn in list(conns):
                    if not self._kick_if_expired(conn):
                        conn.offer("event", event.pos, frame)

    def notify_keys_low(self, user_id: str, device_id: str) -> None:
        """Tell a connected device its published one-time keys are running low."""
        for conn in self._by_user.get(user_id, ()):
            if conn.device_id == device_id and conn.live:
                conn.push('{"type":"keys_low"}')

    def publish_to_device(self, messages: Iterable[ToDeviceRow]) -> None:
        for msg in messages:
            for conn in list(self._by_user.get(msg.user_id, ())):
                if conn.device_id == msg.device_id and not self._kick_if_expired(conn):
                    conn.offer("to_device", msg.id, to_device_frame(msg))
