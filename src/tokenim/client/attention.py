"""What in a message asks for this user's attention (a mention, a direct message), and whether a message is
still waiting for its room key. Shared by `tokenim listen --json` and the terminal app (tui/), so a script
and a person are told about the same messages.

A mention is `@name` (this user's name, any case) or the full `@name:server` of this user, as a word of its
own: `@alice,` and `@alice:` (addressing someone) mention @alice, `@alice2`, `@alice.b` and
`@alice:other.example` do not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tokenim.client.messages import Message
from tokenim.client.rooms import Rooms
from tokenim.core.errors import TokenIMError
from tokenim.core.ids import parse_user_id
from tokenim.crypto.megolm import KEY_NOT_ARRIVED

DIRECT = "direct"


def mention_pattern(user_id: str) -> re.Pattern[str]:
    """The words that mention `user_id` in a message body."""
    local, server = parse_user_id(user_id)
    return re.compile(
        rf"(?<![\w@]){re.escape('@' + local)}(?::{re.escape(server)})?(?![\w=-])(?!\.\w)(?!:\w)",
        re.IGNORECASE,
    )


def mentions(body: str | None, user_id: str) -> bool:
    """Whether `body` mentions `user_id` (see the module's docstring for what counts)."""
    return bool(body) and mention_pattern(user_id).search(body or "") is not None


def awaiting_key(message: Message) -> bool:
    """A message this device cannot read yet because its room key has not arrived; it can be read again
    (`messages.history`) once the key comes, which the sender's device sends on its own."""
    return message.warning == KEY_NOT_ARRIVED


@dataclass(frozen=True, slots=True)
class Attention:
    """Why a message asks for this user's attention: it mentions them, or it came in a direct chat."""

    mention: bool = False
    direct: bool = False

    @property
    def wanted(self) -> bool:
        """Whether to ring the bell or notify: a mention, or a direct message."""
        return self.mention or self.direct


class RoomKinds:
    """Which rooms are direct chats: the room list is asked for once, and again for a room not seen before."""

    def __init__(self, rooms: Rooms) -> None:
        self._rooms = rooms
        self._kinds: dict[str, str] = {}

    def remember(self, room_id: str, kind: str) -> None:
        """Note a room's kind learnt elsewhere (e.g. from a room list the app fetched anyway)."""
        self._kinds[room_id] = kind

    async def kind(self, room_id: str) -> str | None:
        """`direct`, `group`, or None when the server does not list the room for this user (or can't be asked
        now: a message is never held up by this)."""
        if room_id not in self._kinds:
            try:
                rooms = (await self._rooms.all()).rooms
            except TokenIMError:
                return None
            for room in rooms:
                self._kinds[room.room_id] = room.kind
        return self._kinds.get(room_id)


async def attention_of(message: Message, user_id: str, kinds: RoomKinds) -> Attention:
    """What `message` asks of `user_id`: nothing for their own messages and for room notices (key rotations)."""
    if message.sender == user_id or message.event is not None:
        return Attention()
    direct = await kinds.kind(message.room) == DIRECT
    return Attention(mention=mentions(message.body, user_id), direct=direct)


__all__ = ["Attention", "RoomKinds", "attention_of", "awaiting_key", "mention_pattern", "mentions"]
