"""The signed objects a device holding the master key makes to change the user's identity: a new master key
with the rotation to it and every device re-signed by it (`POST /v1/keys/rotate`), and a device revocation
(`POST /v1/keys/revoke`). Shapes as in protocol/identity.py and docs/protocol.md; time is passed in."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from tokenim.core.signing import SigningKey, sign_json
from tokenim.protocol.identity import REVOCATION_TYPE, ROTATION_TYPE
from tokenim.protocol.keys import DeviceKeys


def master_key_object(user_id: str, key: SigningKey, version: int, created_at: int) -> dict[str, Any]:
    """A self-signed master-key object (as `DeviceIdentity.master_key_object`, for any key and version)."""
    pub = key.public_key
    obj = {"user_id": user_id, "usage": ["master"], "keys": {f"ed25519:{pub}": pub}, "version": version, "created_at": created_at}
    return sign_json(obj, user_id, pub, key)


def resign_device(device: DeviceKeys, new_master: SigningKey) -> dict[str, Any]:
    """The device's object unchanged but for its signatures: the device's own kept, the new master key's added
    (the old master key's dropped: a device object carries exactly two signatures)."""
    obj = copy.deepcopy(device.raw)
    own = obj["signatures"][device.user_id][f"ed25519:{device.device_id}"]
    obj["signatures"] = {device.user_id: {f"ed25519:{device.device_id}": own}}
    return sign_json(obj, device.user_id, new_master.public_key, new_master)


@dataclass(frozen=True, slots=True)
class RotationRequest:
    """The body of `POST /v1/keys/rotate`, and the new key (kept pending until the server has it)."""

    new_master: SigningKey
    new_version: int
    body: dict[str, Any]


def rotation_request(
    user_id: str, old: SigningKey, old_version: int, devices: list[DeviceKeys], now: int, new: SigningKey | None = None
) -> RotationRequest:
    """A new master key of version n + 1, the rotation to it signed by the old and the new key, and every
    device (already verified under the old key by the caller) re-signed by the new one."""
    new = new or SigningKey.generate()
    rotation: dict[str, Any] = {
        "type": ROTATION_TYPE,
        "user_id": user_id,
        "old_key": old.public_key,
        "old_version": old_version,
        "new_key": new.public_key,
        "new_version": old_version + 1,
        "ts": now,
    }
    rotation = sign_json(sign_json(rotation, user_id, old.public_key, old), user_id, new.public_key, new)
    body = {
        "master_key": master_key_object(user_id, new, old_version + 1, now),
        "rotation": rotation,
        "devices": [resign_device(d, new) for d in devices],
    }
    return RotationRequest(new, old_version + 1, body)


def revocation_object(device: DeviceKeys, master: SigningKey, version: int, now: int) -> dict[str, Any]:
    """A revocation of `device`, naming its keys, signed by the master key of `version` (the current one)."""
    obj = {
        "type": REVOCATION_TYPE,
        "user_id": device.user_id,
        "device_id": device.device_id,
        "keys": {f"curve25519:{device.device_id}": device.curve25519, f"ed25519:{device.device_id}": device.ed25519},
        "master_key_version": version,
        "ts": now,
    }
    return sign_json(obj, device.user_id, master.public_key, master)


__all__ = ["RotationRequest", "master_key_object", "resign_device", "revocation_object", "rotation_request"]
