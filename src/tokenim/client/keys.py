"""Checking what the server relays: every key object is verified on the client before it is trusted."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenim.core.errors import TokenIMError
from tokenim.protocol.api import KeysQueryResponse
from tokenim.protocol.keys import (
    DeviceKeys,
    MasterKey,
    parse_device_keys,
    parse_master_key,
    verify_device_keys,
    verify_master_key,
)


@dataclass(frozen=True, slots=True)
class VerifiedUserKeys:
    """A user's master key and those of their devices whose signatures all check out."""

    master: MasterKey
    devices: dict[str, DeviceKeys]
    rejected_devices: list[str] = field(default_factory=list)


def verify_query_response(resp: KeysQueryResponse) -> tuple[dict[str, VerifiedUserKeys], list[str]]:
    """Keep only what verifies: users whose master key is bad are dropped whole, bad devices one by one.

    Returns the verified users and the list of user ids that were dropped.
    """
    users: dict[str, VerifiedUserKeys] = {}
    dropped: list[str] = []
    for user_id, uk in resp.users.items():
        try:
            master = parse_master_key(uk.master_key)
            verify_master_key(master)
            if master.user_id != user_id:
                raise ValueError("master key names another user")
        except (TokenIMError, ValueError):
            dropped.append(user_id)
            continue
        good: dict[str, DeviceKeys] = {}
        bad: list[str] = []
        for device_id, raw in uk.devices.items():
            try:
                dk = parse_device_keys(raw)
                if dk.device_id != device_id:
                    raise ValueError("device id mismatch")
                verify_device_keys(dk, master)
                good[device_id] = dk
            except (TokenIMError, ValueError):
                bad.append(device_id)
        users[user_id] = VerifiedUserKeys(master, good, bad)
    return users, dropped
