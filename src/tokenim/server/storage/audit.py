"""The audit log: one place where every security-relevant event is recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, insert, select

from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import audit_log


@dataclass(frozen=True, slots=True)
class AuditEvent:
    ts: int
    event: str
    user_id: str | None
    device_id: str | None
    details: dict[str, Any]
    id: int = 0  # the record's number, set when read back (paging cursor); 0 before it is stored


class AuditStore:
    """Append-only; written in the same transaction as the change it records."""

    async def append(self, tx: Tx, ev: AuditEvent) -> None:
        await tx.execute(
            insert(audit_log).values(
                ts=ev.ts, event=ev.event, user_id=ev.user_id, device_id=ev.device_id, details_json=json.dumps(ev.details)
            )
        )

    async def for_user(self, tx: Tx, user_id: str, limit: int = 100, before: int | None = None) -> list[AuditEvent]:
        """The user's records, newest first, numbered below `before` if given."""
        c = audit_log.c
        cond = c.user_id == user_id if before is None else and_(c.user_id == user_id, c.id < before)
        q = select(audit_log).where(cond).order_by(c.id.desc()).limit(limit)
        return [AuditEvent(r.ts, r.event, r.user_id, r.device_id, json.loads(r.details_json), r.id) for r in await tx.execute(q)]
