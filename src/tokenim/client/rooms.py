"""`client.rooms`: rooms and their members, and which member devices get a room's key."""

from __future__ import annotations

from tokenim.client.contacts import ExcludedDevice
from tokenim.client.keys import Keys
from tokenim.client.state import DeviceState
from tokenim.client.transport import Transport
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_user_id
from tokenim.core.names import name_key
from tokenim.protocol.api import MembersResponse, OkResponse, RoomsResponse, RoomSummary
from tokenim.protocol.keys import DeviceKeys

# Member devices of a room are cached for a long-running client; membership and device-list events seen in
# sync drop the entry at once, so a leave, removal or removed device still rotates the key on the next send.
ROOM_DEVICES_TTL_MS = 5 * 60 * 1000


class Rooms:
    """`client.rooms`: list, create, join, leave and manage rooms; find one by id, name or person."""

    def __init__(self, state: DeviceState, transport: Transport, keys: Keys) -> None:
        self._state = state
        self._transport = transport
        self._keys = keys
        self._devices: dict[str, tuple[int, list[DeviceKeys], list[ExcludedDevice]]] = {}

    # ---- member devices ------------------------------------------------------------------------

    def forget_devices(self, room_id: str | None = None) -> None:
        """Drop the cached member devices of a room (None: of every room): the next send asks again."""
        if room_id is None:
            self._devices.clear()
        else:
            self._devices.pop(room_id, None)

    async def recipients(self, room_id: str) -> tuple[list[DeviceKeys], list[ExcludedDevice]]:
        """The verified devices of the room's joined members, and the member devices left out (cached; see
        ROOM_DEVICES_TTL_MS)."""
        now = self._state.clock.now_ms()
        hit = self._devices.get(room_id)
        if hit is not None and now - hit[0] <= ROOM_DEVICES_TTL_MS:
            return hit[1], hit[2]
        members = [m.user_id for m in (await self.members(room_id)).members if m.membership == "join"]
        devices, excluded = await self._keys.recipients(members)
        self._devices[room_id] = (self._state.clock.now_ms(), devices, excluded)
        return devices, excluded

    async def devices(self, room_id: str) -> list[DeviceKeys]:
        """The verified devices of the room's joined members."""
        return (await self.recipients(room_id))[0]

    # ---- rooms -------------------------------------------------------------------------------

    async def all(self) -> RoomsResponse:
        """Every room this user is in or invited to."""
        return await self._transport.get("/v1/rooms", RoomsResponse)

    async def create(self, name: str, invite: list[str] | None = None) -> RoomSummary:
        """A new group room, with people invited (`bob`, `@bob` or `@bob:server`)."""
        body = {"name": name, "invite": [self._state.full_user_id(u) for u in invite or []]}
        return await self._transport.post("/v1/rooms", body, RoomSummary)

    async def direct(self, user: str) -> RoomSummary:
        """The direct chat with `user`, made if there is none."""
        return await self._transport.post("/v1/rooms/direct", {"user_id": self._state.full_user_id(user)}, RoomSummary)

    async def invite(self, room_id: str, user: str) -> None:
        """Invite `user` into a room."""
        await self._transport.post(f"/v1/rooms/{room_id}/invite", {"user_id": self._state.full_user_id(user)}, OkResponse)

    async def join(self, room_id: str) -> RoomSummary:
        """Join a room this user was invited to."""
        return await self._transport.post(f"/v1/rooms/{room_id}/join", {}, RoomSummary)

    async def leave(self, room_id: str) -> None:
        """Leave a room."""
        await self._transport.post(f"/v1/rooms/{room_id}/leave", {}, OkResponse)
        self.forget_devices(room_id)

    async def remove(self, room_id: str, user: str) -> None:
        """Remove `user` from a room; the next message uses a new room key."""
        await self._transport.post(f"/v1/rooms/{room_id}/remove", {"user_id": self._state.full_user_id(user)}, OkResponse)
        # Our own change: don't wait for its event in sync, the next message must already rotate the key.
        self.forget_devices(room_id)

    async def rename(self, room_id: str, name: str) -> None:
        """Give a room a new name."""
        await self._transport.post(f"/v1/rooms/{room_id}/name", {"name": name}, OkResponse)

    async def get(self, room_id: str) -> RoomSummary:
        """One room's summary."""
        return await self._transport.get(f"/v1/rooms/{room_id}", RoomSummary)

    async def members(self, room_id: str) -> MembersResponse:
        """A room's members and their membership."""
        return await self._transport.get(f"/v1/rooms/{room_id}/members", MembersResponse)

    async def resolve(self, target: str, *, create: bool = False, prefer: str = "join") -> str:
        """A room id, a room name, or a person (`@bob`: the direct chat with them; made only if `create`).

        Names compare as the server compares them (look-alikes are one name). When several of your rooms
        share a name and exactly one of them has the membership `prefer` (joined, by default), that one is
        meant: an invitation from someone else never shadows a room you are in. Otherwise the name is
        refused with their ids listed (`details.candidates`).
        """
        if target.startswith("@"):
            user_id = str(check_user_id(self._state.full_user_id(target)))
            if create:
                return (await self.direct(user_id)).room_id
            direct = [r for r in (await self.all()).rooms if r.kind == "direct" and user_id in r.members]
            if not direct:
                raise TokenIMError(
                    ErrorCode.NOT_FOUND, f"You have no direct chat with {user_id} yet: send them a message to start one."
                )
            return direct[0].room_id
        if target.startswith("!"):
            return target
        key = name_key(target.strip())
        rooms = [r for r in (await self.all()).rooms if r.kind == "group" and name_key(r.name) == key]
        exact = [r for r in rooms if r.name == target]
        preferred = [r for r in rooms if r.membership == prefer]
        matches = exact if len(exact) == 1 else preferred if len(preferred) == 1 else rooms
        if not matches:
            raise TokenIMError(ErrorCode.NOT_FOUND, f"You are in no room named '{target}': see `tokenim rooms`.")
        if len(matches) > 1:
            listed = ", ".join(f"{r.room_id} ({r.membership})" for r in matches)
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                f"Several of your rooms are named '{target}': {listed}. Name one by its id.",
                details={"candidates": [r.model_dump() for r in matches]},
            )
        return matches[0].room_id


__all__ = ["ROOM_DEVICES_TTL_MS", "Rooms"]
