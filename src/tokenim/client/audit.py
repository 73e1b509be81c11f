"""`client.audit`: this user's audit records on the server, and filing those only the client can see."""

from __future__ import annotations

from tokenim.client.transport import Transport
from tokenim.protocol.api import OkResponse
from tokenim.protocol.key_lifecycle import AuditResponse, ClientAuditEvent


class Audit:
    """`client.audit`: read the user's records (newest first); `record` files a client-side operation."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def events(self, limit: int = 100, *, before: int | None = None) -> AuditResponse:
        """The user's audit records, newest first (1 to 1000 a page); pass the answer's `next_before` as
        `before` for the next, older page."""
        query = f"/v1/audit?limit={int(limit)}" + ("" if before is None else f"&before={int(before)}")
        return await self._transport.get(query, AuditResponse)

    async def record(
        self, event: ClientAuditEvent, *, sessions: int | None = None, peer: str | None = None, method: str | None = None
    ) -> None:
        """File `client.<event>` for this device; the server adds who, which device and when. Details: `sessions`
        (how many room keys), or for `person.verified` whom (`peer`) and how (`method`)."""
        given = {"sessions": sessions, "peer": peer, "method": method}
        details = {k: v for k, v in given.items() if v is not None}
        await self._transport.post("/v1/audit/events", {"event": event, "details": details}, OkResponse)


__all__ = ["Audit"]
