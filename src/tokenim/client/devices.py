"""`client.devices`: the devices of this account."""

from __future__ import annotations

from tokenim.client.state import DeviceState
from tokenim.client.transport import Transport
from tokenim.protocol.api import DevicesResponse, OkResponse


class Devices:
    """`client.devices`: list this account's devices, and remove one (ending its sessions)."""

    def __init__(self, state: DeviceState, transport: Transport) -> None:
        self._state = state
        self._transport = transport

    async def all(self) -> DevicesResponse:
        """Every device of this account, with when it was last seen."""
        return await self._transport.get("/v1/devices", DevicesResponse)

    async def remove(self, device_id: str) -> None:
        """Remove a device of this account; removing this one also forgets its tokens here."""
        await self._transport.request("DELETE", f"/v1/devices/{device_id}", OkResponse)
        if device_id == self._state.device_id:
            self._transport.keep_tokens(None)


__all__ = ["Devices"]
