"""Rate-limit counters: one row per (kind, subject), in the database so that every server node sharing it
sees the same counts. A subject is a user id or a hash of a client address (never the address itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import rate_limits


@dataclass(frozen=True, slots=True)
class Counter:
    """`attempts` counted since `window_start`; refused until `blocked_until`; forgotten at `expires_at`."""

    attempts: int
    window_start: int
    blocked_until: int
    expires_at: int


class Counters(Protocol):
    """Where the limiter keeps its counts; every method runs inside the caller's transaction."""

    async def get(self, tx: Tx, kind: str, subject: str) -> Counter | None:
        """The counter as it stands, without locking it."""
        ...

    async def lock(self, tx: Tx, kind: str, subject: str, now: int) -> Counter:
        """The counter, created (already expired) if missing, locked until the transaction ends."""
        ...

    async def put(self, tx: Tx, kind: str, subject: str, counter: Counter) -> None:
        """Store a counter read with `lock`."""
        ...

    async def forget(self, tx: Tx, kind: str, subject: str) -> None:
        """Drop a counter (a success resets an account's failures)."""
        ...

    async def purge(self, tx: Tx, now: int) -> None:
        """Drop every counter that has expired."""
        ...


class CounterStore:
    """The default `Counters`: the `rate_limits` table, on SQLite and PostgreSQL alike."""

    async def get(self, tx: Tx, kind: str, subject: str) -> Counter | None:
        c = rate_limits.c
        q = select(c.attempts, c.window_start, c.blocked_until, c.expires_at).where(c.kind == kind, c.subject == subject)
        row = (await tx.execute(q)).first()
        return None if row is None else Counter(row.attempts, row.window_start, row.blocked_until, row.expires_at)

    async def lock(self, tx: Tx, kind: str, subject: str, now: int) -> Counter:
        # Insert-or-nothing, then a locking read: two transactions counting the same subject at once
        # (PostgreSQL) take turns on the row instead of both inserting it. SQLite serialises writers anyway.
        values = {"kind": kind, "subject": subject, "attempts": 0, "window_start": now, "blocked_until": 0, "expires_at": now}
        if tx.dialect_name == "postgresql":
            await tx.execute(postgresql.insert(rate_limits).values(**values).on_conflict_do_nothing())
        else:
            await tx.execute(sqlite.insert(rate_limits).values(**values).on_conflict_do_nothing())
        c = rate_limits.c
        q = (
            select(c.attempts, c.window_start, c.blocked_until, c.expires_at)
            .where(c.kind == kind, c.subject == subject)
            .with_for_update()
        )
        row = (await tx.execute(q)).one()
        return Counter(row.attempts, row.window_start, row.blocked_until, row.expires_at)

    async def put(self, tx: Tx, kind: str, subject: str, counter: Counter) -> None:
        c = rate_limits.c
        await tx.execute(
            update(rate_limits)
            .where(c.kind == kind, c.subject == subject)
            .values(
                attempts=counter.attempts,
                window_start=counter.window_start,
                blocked_until=counter.blocked_until,
                expires_at=counter.expires_at,
            )
        )

    async def forget(self, tx: Tx, kind: str, subject: str) -> None:
        await tx.execute(delete(rate_limits).where(rate_limits.c.kind == kind, rate_limits.c.subject == subject))

    async def purge(self, tx: Tx, now: int) -> None:
        await tx.execute(delete(rate_limits).where(rate_limits.c.expires_at <= now))
