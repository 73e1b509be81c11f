"""Administration: `access_admin` is the one check every admin route and admin service method passes
through; the audit log as an admin sees it (every user's records, and the chain's verification)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.audit import MAX_ADMIN_AUDIT_LIMIT, AdminAuditEntry, AdminAuditResponse, AuditVerifyResponse
from tokenim.server.services.audit import ChainWalk
from tokenim.server.services.common import Context, Requester

VERIFY_PAGE = 1000
MAX_UNNUMBERED_LISTED = 20


@dataclass(frozen=True, slots=True)
class AdminRequester:
    """A requester found to be an organisation admin. Only `access_admin` makes one, and every admin service
    method takes one, so no admin operation can be reached without the check."""

    requester: Requester

    @property
    def user_id(self) -> str:
        return self.requester.user_id

    @property
    def device_id(self) -> str:
        return self.requester.device_id


def access_admin(requester: Requester) -> AdminRequester:
    """The requester as an admin, or `forbidden` (403) for anyone else."""
    if not requester.is_admin:
        raise TokenIMError(ErrorCode.FORBIDDEN, "Only an admin of this server can do that.")
    return AdminRequester(requester)


class AdminService:
    """What admins read about the whole server: the audit log, and whether its hash chain is whole.
    Each read is itself recorded (`admin.audit_listed`, `admin.audit_verified`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def access_audit(
        self, admin: AdminRequester, limit: int, before: int | None = None, user_id: str | None = None
    ) -> AdminAuditResponse:
        """Every user's records (or one user's), newest first; `next_before` pages on to older ones."""
        if not 1 <= limit <= MAX_ADMIN_AUDIT_LIMIT:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, f"limit must be between 1 and {MAX_ADMIN_AUDIT_LIMIT}.")
        store = self._ctx.auditor.store
        async with self._ctx.db.write() as tx:
            rows = await store.page(tx, limit + 1, before, user_id)
            await self._ctx.auditor.record(tx, "admin.audit_listed", admin.user_id, admin.device_id, user=user_id)
        page = rows[:limit]
        entries = [
            AdminAuditEntry(
                id=r.id,
                seq=r.seq,
                ts=r.ts,
                event=r.event,
                user_id=r.user_id,
                device_id=r.device_id,
                ip=r.ip,
                user_agent=r.user_agent,
                details=r.details,
                prev_hash=r.prev_hash,
                hash=r.hash,
            )
            for r in page
        ]
        return AdminAuditResponse(events=entries, next_before=page[-1].id if len(rows) > limit else None)

    async def access_verify(self, admin: AdminRequester) -> AuditVerifyResponse:
        """Walk the whole chain in one snapshot, a page at a time (letting other requests in between pages),
        and say where it breaks; then record that it was checked and what was found."""
        store = self._ctx.auditor.store
        async with self._ctx.db.read(snapshot=True) as tx:
            walk = ChainWalk(await store.head(tx))
            after: tuple[int, int] | None = None
            while rows := await store.chain_page(tx, after, VERIFY_PAGE):
                for row in rows:
                    walk.add(row)
                last = rows[-1]
                assert last.seq is not None
                after = (last.seq, last.id)
                await asyncio.sleep(0)  # SQLite reads run on the event loop: let other requests in
            walk.unnumbered(*await store.unnumbered(tx, MAX_UNNUMBERED_LISTED))
        report = walk.finish()
        first = report.problems[0].entry if report.problems else None
        async with self._ctx.db.write() as tx:
            await self._ctx.auditor.record(
                tx, "admin.audit_verified", admin.user_id, admin.device_id, ok=report.ok, entries=report.entries, first=first
            )
        return report


__all__ = ["AdminRequester", "AdminService", "access_admin"]
