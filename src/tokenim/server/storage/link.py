"""Link slots and their mailboxes (linking a new device). Ids, tokens and addresses are stored hashed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, select, update

from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import link_messages, link_slots

OPEN, CLAIMED, APPROVED, FAILED = "open", "claimed", "approved", "failed"
LIVE_STATES = (OPEN, CLAIMED)


@dataclass(frozen=True, slots=True)
class LinkSlot:
    id_hash: str
    user_id: str
    token_hash: str
    state: str
    approver_device: str | None
    fail_reason: str | None
    expires_at: int


class LinkStore:
    """Every method runs inside the caller's transaction."""

    async def insert_slot(self, tx: Tx, slot: LinkSlot, address_hash: str, now: int) -> None:
        await tx.execute(
            insert(link_slots).values(
                id_hash=slot.id_hash,
                user_id=slot.user_id,
                token_hash=slot.token_hash,
                address_hash=address_hash,
                state=slot.state,
                created_at=now,
                expires_at=slot.expires_at,
            )
        )

    async def get_slot(self, tx: Tx, id_hash: str) -> LinkSlot | None:
        c = link_slots.c
        q = select(c.id_hash, c.user_id, c.token_hash, c.state, c.approver_device, c.fail_reason, c.expires_at)
        row = (await tx.execute(q.where(c.id_hash == id_hash))).first()
        return (
            None
            if row is None
            else LinkSlot(
                row.id_hash, row.user_id, row.token_hash, row.state, row.approver_device, row.fail_reason, row.expires_at
            )
        )

    async def count_recent(self, tx: Tx, now: int, *, address_hash: str | None = None) -> tuple[int, int]:
        """Slots opened in the last 10 minutes (not yet past `expires_at`) whatever became of them, from one
        address or (none given) the whole server: ending a slot early does not free its place. With the
        earliest of their `expires_at` (when a place frees up; 0 when there are none)."""
        c = link_slots.c
        cond = c.expires_at > now
        if address_hash is not None:
            cond = and_(cond, c.address_hash == address_hash)
        q = (
            select(func.count().label("n"), func.coalesce(func.min(c.expires_at), 0).label("earliest"))
            .select_from(link_slots)
            .where(cond)
        )
        row = (await tx.execute(q)).one()
        return int(row.n), int(row.earliest)

    async def delete_stale(self, tx: Tx, before: int) -> None:
        """Forget slots that expired before `before` (their mailboxes go with them)."""
        stale = select(link_slots.c.id_hash).where(link_slots.c.expires_at < before)
        await tx.execute(delete(link_messages).where(link_messages.c.id_hash.in_(stale)))
        await tx.execute(delete(link_slots).where(link_slots.c.expires_at < before))

    async def claim(self, tx: Tx, id_hash: str, device_id: str) -> bool:
        """Open → claimed by `device_id`; False if another request claimed it first."""
        c = link_slots.c
        q = update(link_slots).where(c.id_hash == id_hash, c.state == OPEN).values(state=CLAIMED, approver_device=device_id)
        return (await tx.execute(q)).rowcount == 1

    async def close(self, tx: Tx, id_hash: str, state: str, reason: str | None) -> bool:
        """A live slot ends (approved or failed) and its mailbox is emptied; False if it had already ended."""
        c = link_slots.c
        q = update(link_slots).where(c.id_hash == id_hash, c.state.in_(LIVE_STATES)).values(state=state, fail_reason=reason)
        ended = (await tx.execute(q)).rowcount == 1
        if ended:
            await tx.execute(delete(link_messages).where(link_messages.c.id_hash == id_hash))
        return ended

    async def get_message(self, tx: Tx, id_hash: str, side: str, seq: int) -> str | None:
        c = link_messages.c
        row = (await tx.execute(select(c.body).where(c.id_hash == id_hash, c.side == side, c.seq == seq))).first()
        return None if row is None else str(row.body)

    async def side_size(self, tx: Tx, id_hash: str, side: str) -> tuple[int, int]:
        """How many messages one side has posted on a slot, and their total length in characters."""
        c = link_messages.c
        q = select(func.count().label("n"), func.coalesce(func.sum(func.length(c.body)), 0).label("chars")).where(
            c.id_hash == id_hash, c.side == side
        )
        row = (await tx.execute(q)).one()
        return int(row.n), int(row.chars)

    async def insert_message(self, tx: Tx, id_hash: str, side: str, seq: int, body: str) -> None:
        await tx.execute(insert(link_messages).values(id_hash=id_hash, side=side, seq=seq, body=body))

    async def messages_after(self, tx: Tx, id_hash: str, side: str, after: int) -> list[tuple[int, str]]:
        c = link_messages.c
        q = select(c.seq, c.body).where(c.id_hash == id_hash, c.side == side, c.seq > after).order_by(c.seq)
        return [(int(r.seq), str(r.body)) for r in await tx.execute(q)]
