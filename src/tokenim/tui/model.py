"""What the app knows, without any drawing: the rooms, their unread counts and mentions, and each room's
timeline. The app changes it from the live stream and the user's actions, then redraws from it.

Unread counts live for the session: messages that arrive (live, or while catching up at start) in a room
that is not open count, and opening the room clears them. Read receipts (issue 10, point 2) will replace
this with what the server keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenim.client import Message
from tokenim.client.attention import Attention, awaiting_key
from tokenim.core.names import name_key
from tokenim.protocol.api import RoomSummary

INVITE = "invite"


@dataclass
class RoomState:
    """One room as the app shows it."""

    summary: RoomSummary
    unread: int = 0
    mentions: int = 0
    attention: bool = False  # an unread mention or direct message: the room is highlighted in the list
    messages: dict[str, Message] = field(default_factory=dict)  # event id -> message, in arrival order
    mentioned: set[str] = field(default_factory=set)  # ids of the messages that mention this user
    loaded: bool = False  # the room's history was fetched once

    @property
    def room_id(self) -> str:
        return self.summary.room_id

    @property
    def invited(self) -> bool:
        return self.summary.membership == INVITE

    def timeline(self) -> list[Message]:
        """The messages, oldest first (by the server's time, then by arrival)."""
        return sorted(self.messages.values(), key=lambda m: m.ts)

    def awaiting(self) -> set[str]:
        """Ids of the messages still waiting for their room key."""
        return {i for i, m in self.messages.items() if awaiting_key(m)}


class ChatModel:
    """The rooms of this user and which one is open."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.rooms: dict[str, RoomState] = {}
        self.current: str | None = None

    def set_rooms(self, summaries: list[RoomSummary]) -> bool:
        """Take the server's room list; rooms left or declined disappear. True when the list of rooms changed."""
        before = [(r.room_id, r.summary) for r in self.ordered()]
        fresh: dict[str, RoomState] = {}
        for summary in summaries:
            if summary.membership not in ("join", INVITE):
                continue
            state = self.rooms.get(summary.room_id) or RoomState(summary)
            state.summary = summary
            fresh[summary.room_id] = state
        self.rooms = fresh
        if self.current not in self.rooms:
            self.current = None
        return before != [(r.room_id, r.summary) for r in self.ordered()]

    def ordered(self) -> list[RoomState]:
        """Invitations first, then rooms by name (direct chats by the other person's id)."""

        def key(r: RoomState) -> tuple[int, str, str]:
            others = [m for m in r.summary.members if m != self.me]
            name = r.summary.name if r.summary.kind == "group" else " ".join(others)
            return (0 if r.invited else 1, name_key(name) if name.strip() else name, r.room_id)

        return sorted(self.rooms.values(), key=key)

    def open(self, room_id: str) -> RoomState | None:
        """Show a room: its unread count and highlight are cleared."""
        state = self.rooms.get(room_id)
        if state is None:
            return None
        self.current = room_id
        state.unread = state.mentions = 0
        state.attention = False
        return state

    def add(self, message: Message, attention: Attention, *, seen: bool) -> RoomState | None:
        """A message that arrived; None when its room is not (yet) in the list. Counts as unread unless `seen`
        (its room is open). Returns the room."""
        state = self.rooms.get(message.room)
        if state is None:
            return None
        new = message.id not in state.messages
        state.messages[message.id] = message
        if attention.mention:
            state.mentioned.add(message.id)
        if new and not seen and message.sender != self.me and message.event is None:
            state.unread += 1
            state.mentions += int(attention.mention)
            state.attention = state.attention or attention.wanted
        return state

    def merge_history(self, room_id: str, messages: list[Message], mentioned: set[str]) -> RoomState | None:
        """The room's history as fetched: messages seen before keep their place; ones read again (a key
        that has arrived since) are replaced."""
        state = self.rooms.get(room_id)
        if state is None:
            return None
        for m in messages:
            state.messages[m.id] = m
        state.mentioned |= mentioned
        state.loaded = True
        return state

    def awaiting(self) -> dict[str, set[str]]:
        """Per room, the messages still waiting for their room key."""
        return {room_id: ids for room_id, state in self.rooms.items() if (ids := state.awaiting())}


__all__ = ["ChatModel", "RoomState"]
