"""Rooms, their members and roles, membership periods and the direct-chat index."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, bindparam, insert, select, update

from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import direct_rooms, membership_periods, room_members, rooms


@dataclass(frozen=True, slots=True)
class RoomRow:
    room_id: str
    kind: str
    name: str
    created_by: str
    created_at: int


@dataclass(frozen=True, slots=True)
class MemberRow:
    room_id: str
    user_id: str
    membership: str
    role: str


_SET_SEQ = update(rooms).where(rooms.c.room_id == bindparam("rid")).values(last_seq=bindparam("seq"))


class RoomStore:
    """Membership is kept by the server: who is in which room, with which role, since when."""

    async def insert_room(self, tx: Tx, room: RoomRow) -> None:
        await tx.execute(
            insert(rooms).values(
                room_id=room.room_id,
                kind=room.kind,
                name=room.name,
                created_by=room.created_by,
                created_at=room.created_at,
                last_seq=0,
            )
        )

    async def get_room(self, tx: Tx, room_id: str) -> RoomRow | None:
        row = (await tx.execute(select(rooms).where(rooms.c.room_id == room_id))).first()
        return None if row is None else RoomRow(row.room_id, row.kind, row.name, row.created_by, row.created_at)

    async def rename(self, tx: Tx, room_id: str, name: str) -> None:
        await tx.execute(update(rooms).where(rooms.c.room_id == room_id).values(name=name))

    async def take_room_seq(self, tx: Tx, room_id: str) -> int:
        """The room's last sequence number, read under a row lock (PostgreSQL) for the writer to continue from."""
        q = select(rooms.c.last_seq).where(rooms.c.room_id == room_id).with_for_update()
        return int((await tx.execute(q)).scalar_one())

    async def set_room_seqs(self, tx: Tx, seqs: dict[str, int]) -> None:
        """Store each room's last sequence number (one statement for the whole batch)."""
        if seqs:
            await tx.execute(_SET_SEQ, [{"rid": room_id, "seq": seq} for room_id, seq in seqs.items()])

    async def get_member(self, tx: Tx, room_id: str, user_id: str) -> MemberRow | None:
        q = select(room_members).where(room_members.c.room_id == room_id, room_members.c.user_id == user_id)
        row = (await tx.execute(q)).first()
        return None if row is None else MemberRow(row.room_id, row.user_id, row.membership, row.role)

    async def set_member(self, tx: Tx, m: MemberRow, now: int) -> None:
        existing = await self.get_member(tx, m.room_id, m.user_id)
        if existing is None:
            await tx.execute(
                insert(room_members).values(
                    room_id=m.room_id, user_id=m.user_id, membership=m.membership, role=m.role, updated_at=now
                )
            )
        else:
            await tx.execute(
                update(room_members)
                .where(room_members.c.room_id == m.room_id, room_members.c.user_id == m.user_id)
                .values(membership=m.membership, role=m.role, updated_at=now)
            )

    async def members(self, tx: Tx, room_id: str, membership: str | None = "join") -> list[MemberRow]:
        q = select(room_members).where(room_members.c.room_id == room_id).order_by(room_members.c.user_id)
        if membership is not None:
            q = q.where(room_members.c.membership == membership)
        return [MemberRow(r.room_id, r.user_id, r.membership, r.role) for r in await tx.execute(q)]

    async def longest_joined(self, tx: Tx, room_id: str, leaving: str) -> MemberRow | None:
        """The joined member other than `leaving` whose membership changed least recently (the longest in the room)."""
        q = (
            select(room_members)
            .where(room_members.c.room_id == room_id, room_members.c.membership == "join", room_members.c.user_id != leaving)
            .order_by(room_members.c.updated_at, room_members.c.user_id)
            .limit(1)
        )
        row = (await tx.execute(q)).first()
        return None if row is None else MemberRow(row.room_id, row.user_id, row.membership, row.role)

    async def rooms_of(self, tx: Tx, user_id: str) -> list[tuple[RoomRow, MemberRow]]:
        """Rooms the user is in or invited to."""
        q = (
            select(rooms, room_members.c.membership, room_members.c.role)
            .join(room_members, room_members.c.room_id == rooms.c.room_id)
            .where(room_members.c.user_id == user_id, room_members.c.membership.in_(["join", "invite"]))
            .order_by(rooms.c.created_at)
        )
        return [
            (RoomRow(r.room_id, r.kind, r.name, r.created_by, r.created_at), MemberRow(r.room_id, user_id, r.membership, r.role))
            for r in await tx.execute(q)
        ]

    async def open_period(self, tx: Tx, room_id: str, user_id: str, from_pos: int, to_pos: int | None = None) -> None:
        await tx.execute(insert(membership_periods).values(room_id=room_id, user_id=user_id, from_pos=from_pos, to_pos=to_pos))

    async def close_period(self, tx: Tx, room_id: str, user_id: str, to_pos: int) -> None:
        await tx.execute(
            update(membership_periods)
            .where(
                and_(
                    membership_periods.c.room_id == room_id,
                    membership_periods.c.user_id == user_id,
                    membership_periods.c.to_pos.is_(None),
                )
            )
            .values(to_pos=to_pos)
        )

    async def find_direct(self, tx: Tx, user_a: str, user_b: str) -> str | None:
        a, b = sorted((user_a, user_b))
        q = select(direct_rooms.c.room_id).where(direct_rooms.c.user_a == a, direct_rooms.c.user_b == b)
        return (await tx.execute(q)).scalar_one_or_none()

    async def insert_direct(self, tx: Tx, user_a: str, user_b: str, room_id: str) -> None:
        a, b = sorted((user_a, user_b))
        await tx.execute(insert(direct_rooms).values(user_a=a, user_b=b, room_id=room_id))
