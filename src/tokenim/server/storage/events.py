"""Room events in one global stream (`pos`), and to-device messages kept until acknowledged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update

from tokenim.server.storage.client_json import dump_client_json, load_client_json
from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import events, membership_periods, stream_positions, to_device


@dataclass(frozen=True, slots=True)
class EventRow:
    pos: int
    event_id: str
    room_id: str
    room_seq: int
    type: str
    sender: str
    sender_device: str | None
    txn_id: str | None
    content: dict[str, Any]
    ts: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "pos": self.pos,
            "event_id": self.event_id,
            "room_id": self.room_id,
            "seq": self.room_seq,
            "type": self.type,
            "sender": self.sender,
            "sender_device": self.sender_device,
            "content": self.content,
            "ts": self.ts,
        }


@dataclass(frozen=True, slots=True)
class ToDeviceRow:
    id: int
    user_id: str
    device_id: str
    sender: str
    sender_device: str
    type: str
    content: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sender": self.sender,
            "sender_device": self.sender_device,
            "type": self.type,
            "content": self.content,
        }


def _event(r: Any) -> EventRow:
    return EventRow(
        r.pos,
        r.event_id,
        r.room_id,
        r.room_seq,
        r.type,
        r.sender,
        r.sender_device,
        r.txn_id,
        load_client_json(r.content_json, f"content of event {r.event_id}"),
        r.ts,
    )


class EventStore:
    """The stream counter is read under a row lock, so positions are committed in order."""

    async def take_stream_pos(self, tx: Tx) -> int:
        q = select(stream_positions.c.pos).where(stream_positions.c.stream == "events").with_for_update()
        return int((await tx.execute(q)).scalar_one())

    async def set_stream_pos(self, tx: Tx, pos: int) -> None:
        await tx.execute(update(stream_positions).where(stream_positions.c.stream == "events").values(pos=pos))

    async def current_pos(self, tx: Tx) -> int:
        q = select(stream_positions.c.pos).where(stream_positions.c.stream == "events")
        return int((await tx.execute(q)).scalar_one())

    async def insert_events(self, tx: Tx, rows: list[EventRow]) -> None:
        if not rows:
            return
        await tx.execute(
            insert(events),
            [
                {
                    "pos": r.pos,
                    "event_id": r.event_id,
                    "room_id": r.room_id,
                    "room_seq": r.room_seq,
                    "type": r.type,
                    "sender": r.sender,
                    "sender_device": r.sender_device,
                    "txn_id": r.txn_id,
                    "content_json": dump_client_json(r.content),
                    "ts": r.ts,
                }
                for r in rows
            ],
        )

    async def find_txn(self, tx: Tx, sender: str, sender_device: str, txn_id: str) -> EventRow | None:
        q = select(events).where(events.c.sender == sender, events.c.sender_device == sender_device, events.c.txn_id == txn_id)
        row = (await tx.execute(q)).first()
        return None if row is None else _event(row)

    def _visible(self, user_id: str) -> Any:
        return and_(
            membership_periods.c.room_id == events.c.room_id,
            membership_periods.c.user_id == user_id,
            events.c.pos >= membership_periods.c.from_pos,
            or_(membership_periods.c.to_pos.is_(None), events.c.pos <= membership_periods.c.to_pos),
        )

    async def since(self, tx: Tx, user_id: str, since: int, until: int, limit: int) -> list[EventRow]:
        """Events the user may see with `since < pos <= until`, oldest first."""
        q = (
            select(events)
            .join(membership_periods, self._visible(user_id))
            .where(events.c.pos > since, events.c.pos <= until)
            .order_by(events.c.pos)
            .limit(limit)
        )
        return [_event(r) for r in await tx.execute(q)]

    async def history(self, tx: Tx, user_id: str, room_id: str, before_seq: int | None, limit: int) -> list[EventRow]:
        """A page of a room's events the user may see, newest first, before `before_seq`."""
        q = select(events).join(membership_periods, self._visible(user_id)).where(events.c.room_id == room_id)
        if before_seq is not None:
            q = q.where(events.c.room_seq < before_seq)
        q = q.order_by(events.c.room_seq.desc()).limit(limit)
        return [_event(r) for r in await tx.execute(q)]

    async def count_for_room(self, tx: Tx, room_id: str) -> int:
        return int((await tx.execute(select(func.count()).select_from(events).where(events.c.room_id == room_id))).scalar_one())

    async def insert_to_device(
        self, tx: Tx, rows: list[tuple[str, str, str, str, str, dict[str, Any]]], now: int
    ) -> list[ToDeviceRow]:
        """Store messages (recipient user, device, sender, sender device, type, content); returns them with ids."""
        out = []
        for user_id, device_id, sender, sender_device, typ, content in rows:
            res = await tx.execute(
                insert(to_device)
                .values(
                    user_id=user_id,
                    device_id=device_id,
                    sender=sender,
                    sender_device=sender_device,
                    type=typ,
                    content_json=dump_client_json(content),
                    created_at=now,
                )
                .returning(to_device.c.id)
            )
            out.append(ToDeviceRow(int(res.scalar_one()), user_id, device_id, sender, sender_device, typ, content))
        return out

    async def pending_to_device(self, tx: Tx, user_id: str, device_id: str, after_id: int, limit: int) -> list[ToDeviceRow]:
        q = (
            select(to_device)
            .where(to_device.c.user_id == user_id, to_device.c.device_id == device_id, to_device.c.id > after_id)
            .order_by(to_device.c.id)
            .limit(limit)
        )
        return [
            ToDeviceRow(
                r.id,
                r.user_id,
                r.device_id,
                r.sender,
                r.sender_device,
                r.type,
                load_client_json(r.content_json, f"content of to-device message {r.id}"),
            )
            for r in await tx.execute(q)
        ]

    async def ack_to_device(self, tx: Tx, user_id: str, device_id: str, up_to: int) -> int:
        q = delete(to_device).where(to_device.c.user_id == user_id, to_device.c.device_id == device_id, to_device.c.id <= up_to)
        return int((await tx.execute(q)).rowcount)
