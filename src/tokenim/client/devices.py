"""`client.devices`: the devices of this account."""

from __future__ import annotations

from tokenim.client.keys import Keys
from tokenim.client.state import DeviceState
from tokenim.client.transport import Transport
from tokenim.protocol.api import DevicesResponse, OkResponse


class Devices:
    """`client.devices`: list this account's devices, and remove one (ending its sessions)."""

    def __init__(self, state: DeviceState, transport: Transport, keys: Keys) -> None:
        self._state = state
        self._transport = transport
        self._keys = keys

    async def all(self) -> DevicesResponse:
        """Every device of this account, with when it was last seen."""
        return await self._transport.get("/v1/devices", DevicesResponse)

    async def remove(self, device_id: str, *, force: bool = False) -> None:
        """Remove a device of this account; removing this one also forgets its tokens here.

        A device that no longer holds the current master key may remove only itself: another device it removes
        could be the only one holding that key, and then nobody could add, revoke or rotate again. `force`
        removes it all the same (the caller has told the user so)."""
        if device_id != self._state.device_id and not force:
            await self._keys.require_current_master(
                "remove another device safely: if that one holds the current key, your account could never add, "
                "revoke or rotate again (`tokenim devices remove ID --force` removes it anyway)"
            )
        await self._transport.request("DELETE", f"/v1/devices/{device_id}", OkResponse)
        if device_id == self._state.device_id:
            self._transport.keep_tokens(None)


__all__ = ["Devices"]
