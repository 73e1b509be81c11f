"""The outbox table: sealed messages waiting for delivery, leased by the sender so two never send one."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, insert, select, update

from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import outbox


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    channel: str
    kind: str
    user_id: str | None
    sealed: bytes
    created_at: int
    attempts: int


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A waiting message as an operator may see it: what and for whom, not what it says or where it goes."""

    id: int
    channel: str
    kind: str
    user_id: str | None
    attempts: int
    next_attempt_at: int
    last_error: str | None


class OutboxStore:
    """Every method runs inside the caller's transaction."""

    async def insert(self, tx: Tx, channel: str, kind: str, user_id: str | None, sealed: bytes, now: int) -> None:
        await tx.execute(
            insert(outbox).values(
                channel=channel,
                kind=kind,
                user_id=user_id,
                sealed=sealed,
                created_at=now,
                next_attempt_at=now,
                attempts=0,
                last_error=None,
            )
        )

    async def any_due(self, tx: Tx, now: int) -> bool:
        q = select(outbox.c.id).where(outbox.c.next_attempt_at <= now).limit(1)
        return (await tx.execute(q)).first() is not None

    async def lease_due(self, tx: Tx, now: int, lease_until: int, limit: int) -> list[OutboxRow]:
        """The oldest due rows (at most `limit`), each moved to `lease_until` so that no other sender takes it
        meanwhile; a row another sender leased first (its time changed under us) is left out."""
        c = outbox.c
        q = select(outbox).where(c.next_attempt_at <= now).order_by(c.next_attempt_at, c.id).limit(limit)
        leased = []
        for r in (await tx.execute(q)).all():
            moved = await tx.execute(
                update(outbox)
                .where(and_(c.id == r.id, c.next_attempt_at == r.next_attempt_at))
                .values(next_attempt_at=lease_until)
            )
            if moved.rowcount == 1:
                leased.append(OutboxRow(r.id, r.channel, r.kind, r.user_id, bytes(r.sealed), r.created_at, r.attempts))
        return leased

    async def retry_at(self, tx: Tx, row_id: int, attempts: int, next_attempt_at: int, error: str) -> None:
        await tx.execute(
            update(outbox)
            .where(outbox.c.id == row_id)
            .values(attempts=attempts, next_attempt_at=next_attempt_at, last_error=error[:120])
        )

    async def delete(self, tx: Tx, row_id: int) -> None:
        await tx.execute(delete(outbox).where(outbox.c.id == row_id))

    async def pending(self, tx: Tx) -> list[PendingMessage]:
        """Every waiting message, without its sealed content: for operators and tests."""
        c = outbox.c
        q = select(c.id, c.channel, c.kind, c.user_id, c.attempts, c.next_attempt_at, c.last_error).order_by(c.id)
        return [
            PendingMessage(r.id, r.channel, r.kind, r.user_id, r.attempts, r.next_attempt_at, r.last_error)
            for r in (await tx.execute(q)).all()
        ]
