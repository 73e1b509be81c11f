"""The user's own audit records: what the client files about operations only it sees (keys exported or
imported), and reading one's records back. The server stamps who, which device and when itself."""

from __future__ import annotations

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.key_lifecycle import MAX_AUDIT_LIMIT, AuditEntry, AuditResponse, ClientAuditRequest
from tokenim.server.services.common import Context, Requester

CLIENT_PREFIX = "client."


class AuditService:
    """Client-filed records (allow-listed kinds, one small detail) and a user's view of their records."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def do_record_client_event(self, requester: Requester, req: ClientAuditRequest) -> None:
        """File `client.<event>` for the requester's user and device, at the server's time."""
        details = req.details.model_dump(exclude_none=True)
        async with self._ctx.db.write() as tx:
            await self._ctx.auditor.record(tx, CLIENT_PREFIX + req.event, requester.user_id, requester.device_id, **details)

    async def access_events(self, requester: Requester, limit: int, before: int | None = None) -> AuditResponse:
        """The requester's user's records, newest first, numbered below `before` if given; only their own.
        `next_before` pages on to older records, so no record can be pushed out of reach by newer ones."""
        if not 1 <= limit <= MAX_AUDIT_LIMIT:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, f"limit must be between 1 and {MAX_AUDIT_LIMIT}.")
        async with self._ctx.db.read() as tx:
            rows = await self._ctx.auditor.store.for_user(tx, requester.user_id, limit + 1, before)
        page = rows[:limit]
        entries = [AuditEntry(id=r.id, ts=r.ts, event=r.event, device_id=r.device_id, details=r.details) for r in page]
        return AuditResponse(events=entries, next_before=page[-1].id if len(rows) > limit else None)
