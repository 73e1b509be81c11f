"""The audit log: one place where every security-relevant event is recorded, as a hash chain.

Rows are inserted by `append` without their place in the chain; `chain` gives them their numbers and
hashes as the transaction's last work (services/audit.py), under the lock of the chain's head row.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import audit_chain, audit_log

HEAD_ROW = 1


@dataclass(frozen=True, slots=True)
class AuditEvent:
    ts: int
    event: str
    user_id: str | None
    device_id: str | None
    details: dict[str, Any]
    id: int = 0  # the record's number, set when read back (paging cursor); 0 before it is stored
    ip: str | None = None
    user_agent: str | None = None
    seq: int | None = None  # its place in the hash chain; None until the transaction that wrote it chains it
    prev_hash: str | None = None
    hash: str | None = None


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int
    hash: str


def _event(r: Any) -> AuditEvent:
    return AuditEvent(
        r.ts, r.event, r.user_id, r.device_id, json.loads(r.details_json), r.id, r.ip, r.user_agent, r.seq, r.prev_hash, r.hash
    )


class AuditStore:
    """Append-only; written in the same transaction as the change it records."""

    async def append(self, tx: Tx, ev: AuditEvent) -> int:
        """Insert the row (not yet chained); returns its id."""
        result = await tx.execute(
            insert(audit_log).values(
                ts=ev.ts,
                event=ev.event,
                user_id=ev.user_id,
                device_id=ev.device_id,
                details_json=json.dumps(ev.details),
                ip=ev.ip,
                user_agent=ev.user_agent,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    async def lock_head(self, tx: Tx) -> ChainHead | None:
        """The chain's head, locked until the transaction ends (on SQLite the write lock already serialises)."""
        q = select(audit_chain.c.seq, audit_chain.c.hash).where(audit_chain.c.id == HEAD_ROW).with_for_update()
        row = (await tx.execute(q)).first()
        return None if row is None else ChainHead(row.seq, row.hash)

    async def head(self, tx: Tx) -> ChainHead | None:
        row = (await tx.execute(select(audit_chain.c.seq, audit_chain.c.hash).where(audit_chain.c.id == HEAD_ROW))).first()
        return None if row is None else ChainHead(row.seq, row.hash)

    async def set_head(self, tx: Tx, old: ChainHead | None, new: ChainHead) -> None:
        if old is None:
            await tx.execute(insert(audit_chain).values(id=HEAD_ROW, seq=new.seq, hash=new.hash))
        else:
            await tx.execute(update(audit_chain).where(audit_chain.c.id == HEAD_ROW).values(seq=new.seq, hash=new.hash))

    async def unchained(self, tx: Tx, ids: Collection[int]) -> list[AuditEvent]:
        """Those of `ids` still in the transaction (a savepoint may have rolled some back), oldest first."""
        c = audit_log.c
        q = select(audit_log).where(and_(c.id.in_(list(ids)), c.seq.is_(None))).order_by(c.id)
        return [_event(r) for r in await tx.execute(q)]

    async def highest_seq(self, tx: Tx) -> int:
        """The highest entry number in the table (0 when none)."""
        return int((await tx.execute(select(func.coalesce(func.max(audit_log.c.seq), 0)))).scalar_one())

    async def set_link(self, tx: Tx, row_id: int, seq: int, prev_hash: str, digest: str) -> None:
        await tx.execute(update(audit_log).where(audit_log.c.id == row_id).values(seq=seq, prev_hash=prev_hash, hash=digest))

    async def chain_page(self, tx: Tx, after: tuple[int, int] | None, limit: int) -> list[AuditEvent]:
        """Numbered rows in chain order (seq, then id), after the (seq, id) given."""
        c = audit_log.c
        cond: ColumnElement[bool] = c.seq.is_not(None)
        if after is not None:
            cond = and_(cond, (c.seq > after[0]) | and_(c.seq == after[0], c.id > after[1]))
        q = select(audit_log).where(cond).order_by(c.seq, c.id).limit(limit)
        return [_event(r) for r in await tx.execute(q)]

    async def unnumbered(self, tx: Tx, limit: int) -> tuple[int, list[AuditEvent]]:
        """How many committed rows have no place in the chain, and the first `limit` of them."""
        c = audit_log.c
        count = (await tx.execute(select(func.count()).select_from(audit_log).where(c.seq.is_(None)))).scalar_one()
        rows = await tx.execute(select(audit_log).where(c.seq.is_(None)).order_by(c.id).limit(limit))
        return int(count), [_event(r) for r in rows]

    async def page(self, tx: Tx, limit: int, before: int | None = None, user_id: str | None = None) -> list[AuditEvent]:
        """Rows newest first (by id), numbered below `before`, of one user if given."""
        c = audit_log.c
        conds: list[ColumnElement[bool]] = []
        if before is not None:
            conds.append(c.id < before)
        if user_id is not None:
            conds.append(c.user_id == user_id)
        q = select(audit_log).where(*conds).order_by(c.id.desc()).limit(limit)
        return [_event(r) for r in await tx.execute(q)]

    async def for_user(self, tx: Tx, user_id: str, limit: int = 100, before: int | None = None) -> list[AuditEvent]:
        """The user's records, newest first, numbered below `before` if given."""
        c = audit_log.c
        cond = c.user_id == user_id if before is None else and_(c.user_id == user_id, c.id < before)
        q = select(audit_log).where(cond).order_by(c.id.desc()).limit(limit)
        return [_event(r) for r in await tx.execute(q)]

    async def user_since(self, tx: Tx, user_id: str, since: int, limit: int) -> list[AuditEvent]:
        """The user's records from time `since` on, newest first, at most `limit`."""
        c = audit_log.c
        q = select(audit_log).where(and_(c.user_id == user_id, c.ts >= since)).order_by(c.id.desc()).limit(limit)
        return [_event(r) for r in await tx.execute(q)]

    async def first_seen(self, tx: Tx, user_id: str, events: Sequence[str], ips: Collection[str]) -> dict[str, int]:
        """For each of `ips`, the id of the user's first record of one of `events` from it."""
        if not ips:
            return {}
        c = audit_log.c
        q = (
            select(c.ip, func.min(c.id).label("first"))
            .where(and_(c.user_id == user_id, c.event.in_(list(events)), c.ip.in_(list(ips))))
            .group_by(c.ip)
        )
        return {str(r.ip): int(r.first) for r in await tx.execute(q)}

    async def latest_of(self, tx: Tx, user_id: str, events: Sequence[str]) -> AuditEvent | None:
        """The user's newest record of one of `events`."""
        c = audit_log.c
        q = select(audit_log).where(and_(c.user_id == user_id, c.event.in_(list(events)))).order_by(c.id.desc()).limit(1)
        row = (await tx.execute(q)).first()
        return None if row is None else _event(row)
