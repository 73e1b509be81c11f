"""The app's connection to the server while it runs: the SDK's `messages.listen` (one WebSocket, caught up
first, reconnecting by itself), the room list (asked again every few seconds, since invitations and
renames reach the app only through it), and messages waiting for their keys (read again, with a growing
pause, until the key has come: the sender's device sends it on its own)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Protocol, cast

from tokenim.client import Client, Message
from tokenim.client.attention import Attention, RoomKinds, attention_of
from tokenim.core.errors import TokenIMError
from tokenim.protocol.api import RoomSummary

ROOM_POLL_S = 5.0
REFILL_FIRST_S = 0.5
REFILL_MAX_S = 30.0
REFILL_LIMIT = 200  # how far back the history is read again for a message waiting for its key


class LiveView(Protocol):
    """What the app does with what the connection brings."""

    def offline(self, reason: str, delay: float) -> None: ...
    def online(self) -> None: ...
    def ended(self, error: TokenIMError) -> None: ...
    async def arrived(self, message: Message, attention: Attention) -> None: ...
    async def rooms_changed(self, rooms: list[RoomSummary]) -> None: ...
    async def refilled(self, room_id: str, messages: list[Message]) -> None: ...
    def awaiting(self) -> dict[str, set[str]]: ...
    def knows(self, room_id: str) -> bool: ...


class _Ready(asyncio.Event):
    """`listen` sets it each time it is caught up (at start and after every reconnection)."""

    def __init__(self, view: LiveView) -> None:
        super().__init__()
        self.view = view

    def set(self) -> None:
        super().set()
        self.view.online()


class Live:
    """Runs the three loops for one client and tells `view`."""

    def __init__(self, client: Client, view: LiveView, *, room_poll_s: float = ROOM_POLL_S) -> None:
        self.client = client
        self.view = view
        self.kinds = RoomKinds(client.rooms)
        self.room_poll_s = room_poll_s
        self.ready = _Ready(view)
        self._wake_refill = asyncio.Event()

    async def listen(self) -> None:
        """Messages as they come; ends only when the session itself ends (logged out, device removed)."""
        stream = cast("AsyncGenerator[Message, None]", self.client.messages.listen(ready=self.ready, on_retry=self.view.offline))
        try:
            async with contextlib.aclosing(stream):
                async for message in stream:
                    if not self.view.knows(message.room):
                        with contextlib.suppress(TokenIMError):
                            await self.refresh_rooms()
                    attention = await attention_of(message, self.client.user_id, self.kinds)
                    await self.view.arrived(message, attention)
                    self.wake_refill()
        except TokenIMError as err:
            self.view.ended(err)

    async def refresh_rooms(self) -> None:
        """Ask for the room list now (after an action of this user, or a message from a room not known)."""
        rooms = (await self.client.rooms.all()).rooms
        for room in rooms:
            self.kinds.remember(room.room_id, room.kind)
        await self.view.rooms_changed(rooms)

    async def poll_rooms(self) -> None:
        """The room list, again and again: invitations, renames and rooms left elsewhere show up."""
        while True:
            with contextlib.suppress(TokenIMError):
                await self.refresh_rooms()
            await asyncio.sleep(self.room_poll_s)

    def wake_refill(self) -> None:
        """Something may have brought keys (a message arrived, a message waits): try the waiting ones soon."""
        self._wake_refill.set()

    async def refill(self) -> None:
        """Read again the messages that wait for their keys, pausing longer each time nothing changed."""
        delay = REFILL_FIRST_S
        while True:
            if not self.view.awaiting():
                self._wake_refill.clear()
                await self._wake_refill.wait()
                delay = REFILL_FIRST_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_refill.wait(), delay)
            self._wake_refill.clear()
            for room_id, ids in self.view.awaiting().items():
                try:
                    messages = await self.client.messages.history(room_id, REFILL_LIMIT)
                except TokenIMError:  # offline, or no longer in the room: tried again later, or the room goes
                    continue
                await self.view.refilled(room_id, [m for m in messages if m.id in ids])
            delay = min(delay * 2, REFILL_MAX_S)


__all__ = ["REFILL_LIMIT", "ROOM_POLL_S", "Live", "LiveView"]
