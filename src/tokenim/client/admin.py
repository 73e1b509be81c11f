"""`client.admin`: what a server administrator does from the SDK."""

from __future__ import annotations

from urllib.parse import quote

from tokenim.client.transport import Transport
from tokenim.protocol.api import InviteResponse
from tokenim.protocol.audit import AdminAuditResponse, AuditVerifyResponse


class Admin:
    """`client.admin`: invitations and the server's audit log (only an administrator may use them)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def create_invite(self, expires_in_seconds: int) -> InviteResponse:
        """A single-use invite code that lets one person register, valid for `expires_in_seconds`."""
        return await self._transport.post("/v1/admin/invites", {"expires_in_seconds": expires_in_seconds}, InviteResponse)

    async def audit(self, limit: int = 100, *, before: int | None = None, user_id: str | None = None) -> AdminAuditResponse:
        """Every user's audit records, or only `user_id`'s (a full user id), newest first (1 to 1000 a page);
        pass the answer's `next_before` as `before` for the next, older page."""
        query = f"/v1/admin/audit?limit={int(limit)}"
        if before is not None:
            query += f"&before={int(before)}"
        if user_id is not None:
            query += f"&user={quote(user_id, safe='')}"
        return await self._transport.get(query, AdminAuditResponse)

    async def verify_audit(self) -> AuditVerifyResponse:
        """Have the server check the audit log's whole hash chain: `ok`, or the `problems`, in order, each naming
        the entry where the chain breaks and whether a row was changed, removed or inserted."""
        return await self._transport.get("/v1/admin/audit/verify", AuditVerifyResponse)


__all__ = ["Admin"]
