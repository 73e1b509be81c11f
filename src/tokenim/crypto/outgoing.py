"""What the crypto machine asks the SDK to send, as typed values (matrix-nio's `outgoing_requests`, h11's events).

The machine builds them and takes the answers back (`CryptoMachine.receive_claim`, `CryptoMachine.mark_sent`);
the SDK only carries them to the server, so the order of steps and every check stay in the crypto layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenim.protocol.keys import DeviceKeys


@dataclass(frozen=True, slots=True)
class KeysClaim:
    """POST /v1/keys/claim: one one-time key for each device of a room that has no Olm session with us yet."""

    room_id: str
    devices: tuple[DeviceKeys, ...]

    def body(self) -> dict[str, Any]:
        """The request body: device ids by user id."""
        wanted: dict[str, list[str]] = {}
        for d in self.devices:
            wanted.setdefault(d.user_id, []).append(d.device_id)
        return {"devices": wanted}


@dataclass(frozen=True, slots=True)
class ToDevice:
    """One Olm-encrypted to-device message for one device."""

    device: DeviceKeys
    content: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToDeviceBatch:
    """POST /v1/to_device: the room key of `room_id`, Olm-encrypted for each device in `messages`.

    It must carry a send number (`device_seq`), and the crypto state must be saved before it leaves: each
    message advanced an Olm ratchet. Tell the machine with `mark_sent` once the server accepted it."""

    room_id: str
    event_type: str
    messages: tuple[ToDevice, ...]

    def body(self, device_seq: int) -> dict[str, Any]:
        """The request body, numbered with this device's send number."""
        by_user: dict[str, dict[str, dict[str, Any]]] = {}
        for m in self.messages:
            by_user.setdefault(m.device.user_id, {})[m.device.device_id] = m.content
        return {"type": self.event_type, "messages": by_user, "device_seq": device_seq}


Outgoing = KeysClaim | ToDeviceBatch

__all__ = ["KeysClaim", "Outgoing", "ToDevice", "ToDeviceBatch"]
