"""Listing and removing one's own devices."""

from __future__ import annotations

from collections.abc import Callable

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_device_id
from tokenim.protocol.api import DeviceInfo, DevicesResponse
from tokenim.protocol.link import LINK_TTL_MS
from tokenim.server.services.common import Context, Requester, SecondFactor
from tokenim.server.services.writer import AnnounceDevice, Batch, EventWriter
from tokenim.server.storage.accounts import DeviceRow


class DeviceService:
    """A user sees and removes only their own devices; removal ends the device's sessions and keys."""

    def __init__(
        self,
        ctx: Context,
        writer: EventWriter,
        announce: AnnounceDevice,
        second_factor: SecondFactor,
        on_removed: Callable[[str, str], None] = lambda _user, _device: None,
    ) -> None:
        self._ctx = ctx
        self._second_factor = second_factor
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

    async def do_remove(self, requester: Requester, device_id: str, otp: str | None = None) -> None:
        """Delete the device, its tokens and keys, its audit record and its `device_list` event: one transaction.
        With 2FA on, `otp` must be a current code, unless the device removes itself or undoes a fresh addition."""
        did = check_device_id(device_id)

        async def job(b: Batch) -> None:
            row = await self._ctx.accounts.get_device(b.tx, requester.user_id, did)
            if row is None:
                raise TokenIMError(ErrorCode.UNKNOWN_DEVICE, f"You have no device {did}.")
            if not _removable_without_code(requester, row, b.now):
                await self._second_factor(b.tx, requester, otp, b.now)
            await self._ctx.auth.delete_device_tokens(b.tx, requester.user_id, did)
            if not await self._ctx.accounts.delete_device(b.tx, requester.user_id, did):
                raise TokenIMError(ErrorCode.UNKNOWN_DEVICE, f"You have no device {did}.")
            await self._ctx.auditor.record(b.tx, "device.removed", requester.user_id, did, by_device=requester.device_id)
            await self._announce(b, requester.user_id, did, "removed")

        await self._writer.submit(job)
        self._on_removed(requester.user_id, did)


def _removable_without_code(requester: Requester, device: DeviceRow, now: int) -> bool:
    """A device may remove itself (it gives up its own access, nothing more), and a device added less than a
    link's lifetime ago that never logged in may be removed: undoing a link that failed half-way, after the
    addition that needed the code (docs/protocol.md, "Two-factor authentication")."""
    if device.device_id == requester.device_id:
        return True
    return device.last_seen_at is None and now - device.created_at < LINK_TTL_MS
