"""Listing and removing one's own devices."""

from __future__ import annotations

from collections.abc import Callable

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_device_id
from tokenim.protocol.api import DeviceInfo, DevicesResponse
from tokenim.server.services.common import Context, Requester
from tokenim.server.services.writer import AnnounceDevice, Batch, EventWriter


class DeviceService:
    """A user sees and removes only their own devices; removal ends the device's sessions and keys."""

    def __init__(
        self,
        ctx: Context,
        writer: EventWriter,
        announce: AnnounceDevice,
        on_removed: Callable[[str, str], None] = lambda _user, _device: None,
    ) -> None:
        self._ctx = ctx
        self._writer = writer
        self._announce = announce
        self._on_removed = on_removed

    async def access_devices(self, requester: Requester) -> DevicesResponse:
        async with self._ctx.db.read() as tx:
            rows = await self._ctx.accounts.list_devices(tx, [requester.user_id])
        return DevicesResponse(
            devices=[
                DeviceInfo(device_id=r.device_id, created_at=r.created_at, last_seen_at=r.last_seen_at, keys=r.keys) for r in rows
            ]
        )

    async def do_remove(self, requester: Requester, device_id: str) -> None:
        """Delete the device, its tokens and keys, its audit record and its `device_list` event: one transaction."""
        did = check_device_id(device_id)

        async def job(b: Batch) -> None:
            await self._ctx.auth.delete_device_tokens(b.tx, requester.user_id, did)
            if not await self._ctx.accounts.delete_device(b.tx, requester.user_id, did):
                raise TokenIMError(ErrorCode.UNKNOWN_DEVICE, f"You have no device {did}.")
            await self._ctx.auditor.record(b.tx, "device.removed", requester.user_id, did, by_device=requester.device_id)
            await self._announce(b, requester.user_id, did, "removed")

        await self._writer.submit(job)
        self._on_removed(requester.user_id, did)
