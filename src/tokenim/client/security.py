"""`client.security`: the user's security review, computed by the server from their own audit records."""

from __future__ import annotations

from tokenim.client.transport import Transport
from tokenim.protocol.audit import SecurityReviewResponse


class Security:
    """`client.security`: recent logins and activity, with flags for what looks wrong."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def review(self, days: int = 30) -> SecurityReviewResponse:
        """The last `days` days (1 to 365): logins (time, address, user agent, device, outcome), other activity,
        and `flags` (a new device or address, a burst of failed attempts, a lost or revoked device trying to log
        in, a recovery in progress), each newest first."""
        return await self._transport.get(f"/v1/security/review?days={int(days)}", SecurityReviewResponse)


__all__ = ["Security"]
