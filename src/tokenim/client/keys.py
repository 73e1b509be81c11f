"""`client.keys`: this device's keys, other people's keys, and trust in them.

Every key object the server relays is verified here before it is trusted. A master key is pinned on
first sight. When the server later presents another one (the person reset their keys, or a malicious
server swapped them), that person's devices get no room keys until either the pinned key comes back
(nothing to do) or the user compares fingerprints and accepts the new key. Every send that leaves a
device out says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tokenim.client.contacts import ContactKeys, ExcludedDevice, KeyAcceptance, changed_message, digits, safe_device, safe_user
from tokenim.client.state import DeviceState
from tokenim.client.transport import Transport
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import parse_user_id
from tokenim.core.signing import fingerprint
from tokenim.protocol.api import KeyCountsResponse, KeysClaimResponse, KeysQueryResponse
from tokenim.protocol.keys import (
    DeviceKeys,
    MasterKey,
    parse_device_keys,
    parse_master_key,
    verify_device_keys,
    verify_master_key,
)


@dataclass(frozen=True, slots=True)
class KeysInfo:
    """What `tokenim keys show` prints."""

    user_id: str
    master_key: str
    master_key_version: int
    fingerprint: str
    device_id: str
    device_ed25519: str
    device_curve25519: str


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


class Keys:
    """`client.keys`: one-time keys of this device, other users' verified keys, pins and accepting a change."""

    def __init__(self, state: DeviceState, transport: Transport, on_trust_changed: Callable[[], None]) -> None:
        self._state = state
        self._transport = transport
        self._machine = state.machine
        self._trust_changed = on_trust_changed  # caches of who gets room keys must be rebuilt

    def info(self) -> KeysInfo:
        """This device's keys and the user's master key, with its fingerprint."""
        identity = self._state.identity
        master = identity.master.public_key
        return KeysInfo(
            user_id=identity.user_id,
            master_key=master,
            master_key_version=identity.master_version,
            fingerprint=fingerprint(master),
            device_id=identity.device_id,
            device_ed25519=identity.ed25519,
            device_curve25519=identity.curve25519,
        )

    async def counts(self) -> KeyCountsResponse:
        """How many one-time keys the server holds for this device, and whether it has a fallback key."""
        return await self._transport.get("/v1/keys/counts", KeyCountsResponse)

    async def replenish(self) -> KeyCountsResponse:
        """Top up published one-time keys (and the fallback key) when the server runs low."""
        counts = await self.counts()
        identity = self._state.identity
        upload = identity.keys_to_upload(counts.one_time_keys, need_fallback=not counts.has_fallback_key)
        if upload.empty:
            return counts
        self._state.save_identity()
        body = {"one_time_keys": upload.one_time_keys, "fallback_keys": upload.fallback_keys}
        counts = await self._transport.post("/v1/keys/upload", body, KeyCountsResponse)
        identity.mark_keys_as_published()
        self._state.save_identity()
        return counts

    async def query(self, user_ids: list[str]) -> dict[str, VerifiedUserKeys]:
        """Users' master and device keys, each signature checked here; anything that fails is left out."""
        return (await self._query(user_ids))[0]

    async def claim(self, devices: dict[str, list[str]]) -> KeysClaimResponse:
        """Claim one one-time key of each device named (device ids by user id)."""
        return await self._transport.post("/v1/keys/claim", {"devices": devices}, KeysClaimResponse)

    async def _query(self, user_ids: list[str]) -> tuple[dict[str, VerifiedUserKeys], list[str]]:
        resp = await self._transport.post("/v1/keys/query", {"user_ids": user_ids}, KeysQueryResponse)
        return verify_query_response(resp)

    async def recipients(self, user_ids: list[str]) -> tuple[list[DeviceKeys], list[ExcludedDevice]]:
        """The verified devices of these users that may get room keys, and the devices left out, with why."""
        wanted = sorted(set(user_ids))
        users, dropped = await self._query(wanted)
        devices: list[DeviceKeys] = []
        excluded: list[ExcludedDevice] = []
        for user_id in wanted:
            uk = users.get(user_id)  # only users we asked about are looked at, let alone pinned
            if uk is None:
                excluded.append(_no_keys(user_id, bad=user_id in dropped))
                continue
            usable = self._machine.observe_user(user_id, uk.master.public_key, list(uk.devices.values()))
            current = self._machine.key_changes.get(user_id)
            if current is not None:
                message = changed_message(user_id, self._machine.pinned_masters[user_id], current)
                excluded.append(ExcludedDevice(user_id=user_id, reason="master_key_changed", message=message))
                continue
            devices.extend(usable)
            excluded.extend(
                ExcludedDevice(
                    user_id=user_id,
                    device_id=safe_device(device_id),
                    reason="bad_device_signature",
                    message=f"device {safe_device(device_id)} of {user_id} is not signed by their master key.",
                )
                for device_id in uk.rejected_devices
            )
        return devices, excluded

    async def devices_of(self, user_ids: list[str]) -> list[DeviceKeys]:
        """Verified device keys of these users; users whose master key changed are left out."""
        return (await self.recipients(user_ids))[0]

    def is_pinned(self, user_id: str) -> bool:
        """Whether a master key of `user_id` is pinned here (seen before, or accepted)."""
        return user_id in self._machine.pinned_masters

    async def contact(self, user: str) -> ContactKeys:
        """A person's master key and devices as the server presents them, against the key pinned here."""
        user_id = self._state.full_user_id(user)
        parse_user_id(user_id)
        was_pinned = self.is_pinned(user_id)
        users, dropped = await self._query([user_id])
        uk = users.get(user_id)
        if uk is None:
            if user_id in dropped:
                raise TokenIMError(ErrorCode.BAD_RESPONSE, f"The server's master key for {user_id} does not verify.")
            raise TokenIMError(ErrorCode.UNKNOWN_USER, f"There is no user {user_id} on this server.")
        self._machine.observe_user(user_id, uk.master.public_key, list(uk.devices.values()))
        self._state.persist()
        pinned, current = self._machine.pinned_masters[user_id], uk.master.public_key
        status = "changed" if pinned != current else ("trusted" if was_pinned else "pinned_now")
        device_status = "unverified: signed by the changed key" if status == "changed" else "verified"
        devices = [
            {"device_id": d.device_id, "ed25519": d.ed25519, "curve25519": d.curve25519, "status": device_status}
            for d in uk.devices.values()
        ]
        refused = "refused: not signed by the master key"
        devices += [{"device_id": safe_device(d), "status": refused} for d in uk.rejected_devices]
        return ContactKeys(user_id, status, pinned, fingerprint(pinned), current, fingerprint(current), devices)

    async def accept(self, user: str, expected_fingerprint: str) -> KeyAcceptance:
        """Pin the master key the server now shows for `user`, replacing the pinned one.

        `expected_fingerprint` is the new key's fingerprint as the person confirmed it: the key is accepted
        only if the server's current key has exactly that fingerprint, so what is pinned is what was compared.
        """
        user_id = self._state.full_user_id(user)
        if user_id == self._state.user_id:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "That is your own key: it can't be accepted like a contact's.")
        keys = await self.contact(user_id)
        if keys.status != "changed":
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                f"{user_id}'s key has not changed: the pinned key (fingerprint {keys.pinned_fingerprint}) is in use.",
            )
        if digits(expected_fingerprint) != digits(keys.current_fingerprint):
            raise TokenIMError(
                ErrorCode.FINGERPRINT_MISMATCH,
                f"The fingerprint given does not match {user_id}'s current key ({keys.current_fingerprint}): nothing was "
                "accepted.",
            )
        self._machine.accept_master(user_id, keys.current_master)
        self._state.persist()
        self._trust_changed()
        return KeyAcceptance(user_id, keys.pinned_fingerprint, keys.current_fingerprint)


def _no_keys(user_id: str, *, bad: bool) -> ExcludedDevice:
    who = safe_user(user_id)
    if bad:
        message = f"the server gave a master key for {who} that does not verify."
        return ExcludedDevice(user_id=who, reason="bad_master_key", message=message)
    return ExcludedDevice(user_id=who, reason="no_keys", message=f"the server has no keys for {who}.")


__all__ = ["Keys", "KeysInfo", "VerifiedUserKeys", "verify_query_response"]
