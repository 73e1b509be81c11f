"""Sending (idempotent, acknowledged after commit), sync from a position, history, and to-device messages."""

from __future__ import annotations

import re

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_device_id, check_user_id
from tokenim.protocol.api import HistoryResponse, SendResponse, SyncResponse
from tokenim.protocol.events import (
    ENCRYPTED,
    MAX_CONTENT_BYTES,
    check_encrypted_content,
    check_event_type,
    check_megolm_sender,
    check_olm_content,
    check_olm_recipient,
    check_olm_sender,
)
from tokenim.server.services.common import Context, Requester
from tokenim.server.services.forks import forked, take_device_seq
from tokenim.server.services.limits import Kind
from tokenim.server.services.membership import MembershipCache
from tokenim.server.services.writer import Batch, EventWriter
from tokenim.server.storage.events import EventStore, ToDeviceRow
from tokenim.server.storage.rooms import RoomStore

_TXN = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
MAX_SYNC = 1000
MAX_TO_DEVICE_BATCH = 1000


def check_txn_id(txn_id: str) -> str:
    if not _TXN.fullmatch(txn_id):
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "A transaction id is 1 to 64 letters, digits or . _ ~ -.")
    return txn_id


class MessageService:
    """The message path: ciphertext in, ciphertext out; the server sees only opaque content."""

    def __init__(self, ctx: Context, rooms: RoomStore, events: EventStore, writer: EventWriter, members: MembershipCache) -> None:
        self._ctx = ctx
        self._members = members
        self._rooms = rooms
        self._events = events
        self._writer = writer

    def check_send(self, event_type: str, content: dict[str, object], txn_id: str) -> None:
        check_txn_id(txn_id)
        if event_type != ENCRYPTED:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Only {ENCRYPTED} events can be sent to a room: encrypt first.")
        check_encrypted_content(content)
        used = sum(len(v) for v in content.values() if isinstance(v, str))
        if used > MAX_CONTENT_BYTES:
            raise TokenIMError(
                ErrorCode.BODY_TOO_LARGE,
                f"A room message's content may hold at most {MAX_CONTENT_BYTES:,} characters in its strings "
                f"(ciphertext, ids and keys); this one has {used:,}.",
                details={"limit": MAX_CONTENT_BYTES, "size": used},
            )

    async def do_send(
        self, requester: Requester, room_id: str, txn_id: str, content: dict[str, object], device_seq: int | None = None
    ) -> SendResponse:
        """Store the event and return once it is committed; a repeated transaction id returns the first result.

        The content must name the sending device and its Curve25519 key: the server relays no spoofed sender.
        A `device_seq` the device already used is refused (a forked profile), unless it is a retry of that send.
        """

        async def job(b: Batch) -> SendResponse:
            # Fast path: trust the unique (sender, device, txn id) index to catch a repeat; if it does,
            # the batch rolls back and this job runs again carefully, finding and returning the original.
            if b.careful:
                seen = await self._events.find_txn(b.tx, requester.user_id, requester.device_id, txn_id)
                if seen is not None:
                    if seen.room_id != room_id:
                        raise TokenIMError(ErrorCode.INVALID_REQUEST, "That transaction id was already used for another room.")
                    return SendResponse(event_id=seen.event_id, pos=seen.pos, seq=seen.room_seq)
            joined = await self._members.joined(b.tx, room_id)
            if requester.user_id not in joined:
                if await self._rooms.get_room(b.tx, room_id) is None:
                    raise TokenIMError(ErrorCode.NOT_FOUND, f"There is no room {room_id}.")
                raise TokenIMError(ErrorCode.FORBIDDEN, "You are not in this room.")
            check_megolm_sender(content, requester.device_id, await self._sender_curve25519(b, requester))
            last = await take_device_seq(b.tx, self._ctx.accounts, requester, device_seq)
            if last is not None:
                seen = await self._events.find_txn(b.tx, requester.user_id, requester.device_id, txn_id)
                if seen is None or seen.room_id != room_id:
                    raise forked(device_seq or 0, last)
                return SendResponse(event_id=seen.event_id, pos=seen.pos, seq=seen.room_seq)  # a retry
            ev = await b.add_event(
                room_id, ENCRYPTED, requester.user_id, dict(content), sender_device=requester.device_id, txn_id=txn_id
            )
            b.publish(ev, joined)
            return SendResponse(event_id=ev.event_id, pos=ev.pos, seq=ev.room_seq)

        return await self._writer.submit(job, pure=True)

    async def _sender_curve25519(self, b: Batch, requester: Requester) -> str:
        device = await self._ctx.accounts.get_device(b.tx, requester.user_id, requester.device_id)
        if device is None:
            raise TokenIMError(ErrorCode.UNKNOWN_DEVICE, "This device has been removed.")
        return device.curve25519

    async def access_sync(self, requester: Requester, since: int, limit: int, to_device_after: int = 0) -> SyncResponse:
        """Everything the device missed since `since`, in order; pending to-device messages until acknowledged."""
        limit = max(1, min(limit, MAX_SYNC))
        async with self._ctx.db.read() as tx:
            # Read the position first: events committed meanwhile are left for the next sync, never skipped.
            current = await self._events.current_pos(tx)
            rows = await self._events.since(tx, requester.user_id, since, current, limit + 1)
            one_time_keys, has_fallback = await self._ctx.keys.count_unclaimed(tx, requester.user_id, requester.device_id)
            pending = await self._events.pending_to_device(
                tx, requester.user_id, requester.device_id, to_device_after, MAX_TO_DEVICE_BATCH
            )
        limited = len(rows) > limit
        rows = rows[:limit]
        # A `since` beyond the head (a client ahead of a server restored from backup) is treated as the head, so
        # the client moves back to it and gets the events that come next instead of skipping past them.
        next_pos = rows[-1].pos if limited else current
        return SyncResponse(
            events=[r.to_wire() for r in rows],
            to_device=[m.to_wire() for m in pending],
            next_pos=next_pos,
            limited=limited,
            one_time_keys=one_time_keys,
            has_fallback_key=has_fallback,
        )

    async def access_history(self, requester: Requester, room_id: str, before: int | None, limit: int) -> HistoryResponse:
        """A page of older events (newest first), only from the periods the requester was in the room."""
        limit = max(1, min(limit, MAX_SYNC))
        async with self._ctx.db.read() as tx:
            if await self._rooms.get_member(tx, room_id, requester.user_id) is None:
                if await self._rooms.get_room(tx, room_id) is None:
                    raise TokenIMError(ErrorCode.NOT_FOUND, f"There is no room {room_id}.")
                raise TokenIMError(ErrorCode.FORBIDDEN, "You are not in this room.")
            rows = await self._events.history(tx, requester.user_id, room_id, before, limit)
        next_before = rows[-1].room_seq if len(rows) == limit else None
        return HistoryResponse(events=[r.to_wire() for r in rows], next_before=next_before)

    async def do_send_to_device(
        self,
        requester: Requester,
        event_type: str,
        messages: dict[str, dict[str, dict[str, object]]],
        device_seq: int | None = None,
    ) -> int:
        """Queue Olm-encrypted messages for specific devices; they stay until each device acknowledges them.

        Each must come from the sending device's key and be addressed to its recipient device's key, and
        each counts toward the sender's `to_device_per_minute`.
        """
        check_event_type(event_type)
        flat: list[tuple[str, str, str, str, str, dict[str, object]]] = []
        for user_id, by_device in messages.items():
            check_user_id(user_id)
            for device_id, content in by_device.items():
                check_device_id(device_id)
                check_olm_content(content)
                flat.append((user_id, device_id, requester.user_id, requester.device_id, event_type, content))
        if len(flat) > MAX_TO_DEVICE_BATCH:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Send to at most {MAX_TO_DEVICE_BATCH} devices at once.")

        async def job(b: Batch) -> int:
            # Counted in the job's savepoint: a refused send rolls back, using up none of the quota.
            await self._ctx.limiter.hit(b.tx, Kind.TO_DEVICE, user_id=requester.user_id, amount=len(flat))
            sender_key = await self._sender_curve25519(b, requester)
            last = await take_device_seq(b.tx, self._ctx.accounts, requester, device_seq)
            if last is not None:
                raise forked(device_seq or 0, last)
            known = []
            for row in flat:
                check_olm_sender(row[5], sender_key)
                recipient = await self._ctx.accounts.get_device(b.tx, row[0], row[1])
                if recipient is not None:
                    check_olm_recipient(row[5], recipient.device_id, recipient.curve25519)
                    known.append(row)
            stored: list[ToDeviceRow] = await self._events.insert_to_device(b.tx, known, b.now)
            b.to_device.extend(stored)
            return len(stored)

        return await self._writer.submit(job)

    async def do_ack_to_device(self, requester: Requester, up_to: int) -> int:
        async with self._ctx.db.write() as tx:
            return await self._events.ack_to_device(tx, requester.user_id, requester.device_id, up_to)
