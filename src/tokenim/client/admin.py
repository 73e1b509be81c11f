"""`client.admin`: what a server administrator does from the SDK."""

from __future__ import annotations

from tokenim.client.transport import Transport
from tokenim.protocol.api import InviteResponse


class Admin:
    """`client.admin`: invitations (only an administrator may make them)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def create_invite(self, expires_in_seconds: int) -> InviteResponse:
        """A single-use invite code that lets one person register, valid for `expires_in_seconds`."""
        return await self._transport.post("/v1/admin/invites", {"expires_in_seconds": expires_in_seconds}, InviteResponse)


__all__ = ["Admin"]
