"""Who is joined to each room, cached in memory for the send path.

Every membership change runs through this process's EventWriter, which drops the room's entry
when it changes and clears everything when a batch rolls back, so the cache never outlives the
truth. (Several server nodes will need the broker to carry these invalidations.)
"""

from __future__ import annotations

from tokenim.server.storage.database import Tx
from tokenim.server.storage.rooms import RoomStore

MAX_CACHED_ROOMS = 50_000


class MembershipCache:
    def __init__(self, rooms: RoomStore) -> None:
        self._rooms = rooms
        self._joined: dict[str, frozenset[str]] = {}

    async def joined(self, tx: Tx, room_id: str) -> frozenset[str]:
        """The users joined to the room, as of this transaction."""
        hit = self._joined.get(room_id)
        if hit is None:
            hit = frozenset(m.user_id for m in await self._rooms.members(tx, room_id))
            if len(self._joined) >= MAX_CACHED_ROOMS:
                self._joined.clear()
            self._joined[room_id] = hit
        return hit

    def invalidate(self, room_id: str) -> None:
        self._joined.pop(room_id, None)

    def clear(self) -> None:
        self._joined.clear()
