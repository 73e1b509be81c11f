"""Rooms: direct chats and groups. Every change is an event in the room, written through the EventWriter."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_user_id
from tokenim.core.names import check_room_name, name_key
from tokenim.protocol.api import Member, MembersResponse, RoomsResponse, RoomSummary
from tokenim.protocol.events import CREATE, DEVICE_LIST, MEMBER, NAME
from tokenim.server.services.common import Context, Requester
from tokenim.server.services.membership import MembershipCache
from tokenim.server.services.writer import Batch, EventWriter
from tokenim.server.storage.database import Tx
from tokenim.server.storage.rooms import MemberRow, RoomRow, RoomStore

JOIN, INVITE, LEAVE = "join", "invite", "leave"
ADMIN, MEMBER_ROLE = "admin", "member"
MAX_ROOM_MEMBERS = 1000


def new_room_id() -> str:
    return "!" + secrets.token_urlsafe(15)


@dataclass(frozen=True, slots=True)
class RoomRef:
    room_id: str


class RoomService:
    """Create, invite, join, leave, remove, rename, list. Membership and metadata are kept here."""

    def __init__(self, ctx: Context, rooms: RoomStore, writer: EventWriter, members: MembershipCache) -> None:
        self._ctx = ctx
        self._members = members
        self._rooms = rooms
        self._writer = writer

    async def _require_users(self, tx: Tx, user_ids: list[str]) -> None:
        for uid in user_ids:
            if await self._ctx.accounts.get_user(tx, uid) is None:
                raise TokenIMError(ErrorCode.UNKNOWN_USER, f"There is no user {uid} on this server.")

    async def _require_free_name(self, tx: Tx, user_id: str, name: str, renamed: str | None = None) -> None:
        """Names find rooms: refuse a group name already used by a room this person is in or invited to, or one
        that looks the same (compared by `name_key`: NFKC, case folded, invisible characters dropped)."""
        key = name_key(name)
        for room, me in await self._rooms.rooms_of(tx, user_id):
            mine = room.kind == "group" and me.membership in (JOIN, INVITE) and room.room_id != renamed
            if mine and name_key(room.name) == key:
                raise TokenIMError(
                    ErrorCode.ROOM_NAME_TAKEN,
                    f"You are already in a room named '{room.name}' ({room.room_id}): choose another name.",
                    details={"room_id": room.room_id},
                )

    async def _member_event(
        self,
        b: Batch,
        room_id: str,
        sender: str,
        target: str,
        membership: str,
        role: str,
        period_from: int | None = None,
        **extra: str,
    ) -> None:
        """Change a membership and record it as an event visible to the room and to the target.

        `period_from` lets the creator's first membership period start at the room's creation event.
        """
        await self._rooms.set_member(b.tx, MemberRow(room_id, target, membership, role), b.now)
        self._members.invalidate(room_id)
        content = {"user_id": target, "membership": membership, **extra}
        ev = await b.add_event(room_id, MEMBER, sender, content)
        if membership == JOIN:
            await self._rooms.open_period(b.tx, room_id, target, ev.pos if period_from is None else period_from)
        elif membership == INVITE:
            await self._rooms.open_period(b.tx, room_id, target, ev.pos, ev.pos)
        else:
            await self._rooms.close_period(b.tx, room_id, target, ev.pos)
        recipients = {m.user_id for m in await self._rooms.members(b.tx, room_id)} | {target}
        b.publish(ev, sorted(recipients))

    async def _create(self, b: Batch, requester: Requester, kind: str, name: str, joined: list[str], invited: list[str]) -> str:
        room_id = new_room_id()
        await self._rooms.insert_room(b.tx, RoomRow(room_id, kind, name, requester.user_id, b.now))
        create = await b.add_event(room_id, CREATE, requester.user_id, {"kind": kind, "name": name, "creator": requester.user_id})
        b.publish(create, [requester.user_id])
        for uid in joined:
            creator = uid == requester.user_id
            role = ADMIN if creator or kind == "direct" else MEMBER_ROLE
            await self._member_event(b, room_id, requester.user_id, uid, JOIN, role, period_from=create.pos if creator else None)
        for uid in invited:
            await self._member_event(b, room_id, requester.user_id, uid, INVITE, MEMBER_ROLE)
        return room_id

    async def do_create_group(self, requester: Requester, name: str, invite: list[str]) -> RoomSummary:
        name = check_room_name(name)
        invitees: list[str] = sorted({str(check_user_id(u)) for u in invite} - {requester.user_id})

        async def job(b: Batch) -> str:
            await self._require_users(b.tx, invitees)
            await self._require_free_name(b.tx, requester.user_id, name)
            return await self._create(b, requester, "group", name.strip() or name, [requester.user_id], invitees)

        room_id = await self._writer.submit(job)
        return await self.access_room(requester, room_id)

    async def do_direct(self, requester: Requester, other: str) -> RoomSummary:
        """Find the direct chat with `other`, or create it with both people joined. Whoever of the two had left
        it is brought back: the caller joins again, the other person is invited again (and may join)."""
        other_id = check_user_id(other)
        if other_id == requester.user_id:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "A direct chat needs another person.")

        async def job(b: Batch) -> str:
            existing = await self._rooms.find_direct(b.tx, requester.user_id, other_id)
            if existing is not None:
                mine = await self._rooms.get_member(b.tx, existing, requester.user_id)
                if mine is not None and mine.membership != JOIN:
                    await self._member_event(b, existing, requester.user_id, requester.user_id, JOIN, ADMIN)
                theirs = await self._rooms.get_member(b.tx, existing, other_id)
                if theirs is None or theirs.membership == LEAVE:
                    await self._member_event(b, existing, requester.user_id, other_id, INVITE, ADMIN)
                return existing
            await self._require_users(b.tx, [other_id])
            room_id = await self._create(b, requester, "direct", "", [requester.user_id, other_id], [])
            await self._rooms.insert_direct(b.tx, requester.user_id, other_id, room_id)
            return room_id

        room_id = await self._writer.submit(job)
        return await self.access_room(requester, room_id)

    async def _room_and_me(self, tx: Tx, requester: Requester, room_id: str) -> tuple[RoomRow, MemberRow | None]:
        room = await self._rooms.get_room(tx, room_id)
        if room is None:
            raise TokenIMError(ErrorCode.NOT_FOUND, f"There is no room {room_id}.")
        return room, await self._rooms.get_member(tx, room_id, requester.user_id)

    async def do_invite(self, requester: Requester, room_id: str, user: str) -> None:
        target = check_user_id(user)

        async def job(b: Batch) -> None:
            room, me = await self._room_and_me(b.tx, requester, room_id)
            if me is None or me.membership != JOIN:
                raise TokenIMError(ErrorCode.FORBIDDEN, "Only members of a room can invite to it.")
            if room.kind == "direct":
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "A direct chat is for two people: create a group room instead.")
            await self._require_users(b.tx, [target])
            theirs = await self._rooms.get_member(b.tx, room_id, target)
            if theirs is not None and theirs.membership in (JOIN, INVITE):
                raise TokenIMError(
                    ErrorCode.INVALID_REQUEST,
                    f"{target} is already {'in' if theirs.membership == JOIN else 'invited to'} the room.",
                )
            if len(await self._rooms.members(b.tx, room_id, None)) >= MAX_ROOM_MEMBERS:
                raise TokenIMError(ErrorCode.FORBIDDEN, f"A room holds at most {MAX_ROOM_MEMBERS} members.")
            await self._member_event(b, room_id, requester.user_id, target, INVITE, MEMBER_ROLE)

        await self._writer.submit(job)

    async def do_join(self, requester: Requester, room_id: str) -> RoomSummary:
        """Accept an invitation. Joining a group room that has no joined admin (its admins left while the
        others were only invited) makes the joiner admin, so a room with members always has one."""

        async def job(b: Batch) -> None:
            room, me = await self._room_and_me(b.tx, requester, room_id)
            if me is not None and me.membership == JOIN:
                return
            if me is None or me.membership != INVITE:
                raise TokenIMError(ErrorCode.FORBIDDEN, "You need an invitation to join this room.")
            role = me.role
            if room.kind == "group" and not any(m.role == ADMIN for m in await self._rooms.members(b.tx, room_id)):
                role = ADMIN
                await self._ctx.auditor.record(
                    b.tx, "room.admin_on_join", requester.user_id, requester.device_id, room_id=room_id, target=requester.user_id
                )
            await self._member_event(b, room_id, requester.user_id, requester.user_id, JOIN, role)

        await self._writer.submit(job)
        return await self.access_room(requester, room_id)

    async def _hand_on_admin(self, b: Batch, requester: Requester, room: RoomRow, leaving: MemberRow) -> None:
        """A group room keeps an admin while it has members: when its last admin leaves (or is removed), the
        member who has been in it longest becomes admin, so nobody is left unable to rename it or remove members."""
        if room.kind == "direct" or leaving.role != ADMIN or leaving.membership != JOIN:
            return
        joined = await self._rooms.members(b.tx, room.room_id)
        if any(m.role == ADMIN and m.user_id != leaving.user_id for m in joined):
            return
        successor = await self._rooms.longest_joined(b.tx, room.room_id, leaving.user_id)
        if successor is None:
            return
        await self._rooms.set_member(b.tx, MemberRow(room.room_id, successor.user_id, JOIN, ADMIN), b.now)
        await self._ctx.auditor.record(
            b.tx, "room.admin_handed_on", requester.user_id, requester.device_id, room_id=room.room_id, target=successor.user_id
        )

    async def do_leave(self, requester: Requester, room_id: str) -> None:
        async def job(b: Batch) -> None:
            room, me = await self._room_and_me(b.tx, requester, room_id)
            if me is None or me.membership == LEAVE:
                raise TokenIMError(ErrorCode.FORBIDDEN, "You are not in this room.")
            await self._hand_on_admin(b, requester, room, me)
            await self._member_event(b, room_id, requester.user_id, requester.user_id, LEAVE, me.role)

        await self._writer.submit(job)

    async def do_remove(self, requester: Requester, room_id: str, user: str) -> None:
        target = check_user_id(user)

        async def job(b: Batch) -> None:
            room, me = await self._room_and_me(b.tx, requester, room_id)
            if me is None or me.membership != JOIN or me.role != ADMIN:
                raise TokenIMError(ErrorCode.FORBIDDEN, "Only a room admin can remove members.")
            if room.kind == "direct":
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "Nobody can be removed from a direct chat: leave it instead.")
            theirs = await self._rooms.get_member(b.tx, room_id, target)
            if theirs is None or theirs.membership == LEAVE:
                raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{target} is not in the room.")
            await self._hand_on_admin(b, requester, room, theirs)
            await self._member_event(b, room_id, requester.user_id, target, LEAVE, theirs.role, removed_by=requester.user_id)
            await self._ctx.auditor.record(
                b.tx, "room.member_removed", requester.user_id, requester.device_id, room_id=room_id, target=target
            )

        await self._writer.submit(job)

    async def do_rename(self, requester: Requester, room_id: str, name: str) -> None:
        name = check_room_name(name)

        async def job(b: Batch) -> None:
            room, me = await self._room_and_me(b.tx, requester, room_id)
            if me is None or me.membership != JOIN or me.role != ADMIN:
                raise TokenIMError(ErrorCode.FORBIDDEN, "Only a room admin can rename it.")
            if room.kind == "direct":
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "Direct chats have no name.")
            await self._require_free_name(b.tx, requester.user_id, name, renamed=room_id)
            await self._rooms.rename(b.tx, room_id, name)
            ev = await b.add_event(room_id, NAME, requester.user_id, {"name": name})
            b.publish(ev, [m.user_id for m in await self._rooms.members(b.tx, room_id)])

        await self._writer.submit(job)

    async def announce_device(self, b: Batch, user_id: str, device_id: str, change: str) -> None:
        """Inside the batch that changes the device: tell every room the user is in that their devices
        changed (`tokenim.device_list`), so senders re-check keys. Same transaction, so a device change
        is never committed without its announcement, nor the other way round."""
        content = {"user_id": user_id, "device_id": device_id, "change": change}
        for room, me in await self._rooms.rooms_of(b.tx, user_id):
            if me.membership != JOIN:
                continue
            ev = await b.add_event(room.room_id, DEVICE_LIST, user_id, content)
            b.publish(ev, [m.user_id for m in await self._rooms.members(b.tx, room.room_id)])

    async def access_members(self, requester: Requester, room_id: str) -> MembersResponse:
        async with self._ctx.db.read() as tx:
            _room, me = await self._room_and_me(tx, requester, room_id)
            if me is None or me.membership not in (JOIN, INVITE):
                raise TokenIMError(ErrorCode.FORBIDDEN, "You are not in this room.")
            rows = await self._rooms.members(tx, room_id, None)
        return MembersResponse(
            room_id=room_id, members=[Member(user_id=m.user_id, membership=m.membership, role=m.role) for m in rows]
        )

    async def access_room(self, requester: Requester, room_id: str) -> RoomSummary:
        async with self._ctx.db.read() as tx:
            room, me = await self._room_and_me(tx, requester, room_id)
            if me is None or me.membership not in (JOIN, INVITE):
                raise TokenIMError(ErrorCode.FORBIDDEN, "You are not in this room.")
            members = [m.user_id for m in await self._rooms.members(tx, room_id)]
        return RoomSummary(
            room_id=room_id, kind=room.kind, name=room.name, membership=me.membership, role=me.role, members=members
        )

    async def access_rooms(self, requester: Requester) -> RoomsResponse:
        async with self._ctx.db.read() as tx:
            rows = await self._rooms.rooms_of(tx, requester.user_id)
            out = []
            for room, me in rows:
                members = [m.user_id for m in await self._rooms.members(tx, room.room_id)]
                out.append(
                    RoomSummary(
                        room_id=room.room_id,
                        kind=room.kind,
                        name=room.name,
                        membership=me.membership,
                        role=me.role,
                        members=members,
                    )
                )
        return RoomsResponse(rooms=out)
