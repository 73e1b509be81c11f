"""Other people's keys: which member devices get room keys, who is left out and why, a contact's keys
and fingerprint as this device sees them, and deliberately accepting a contact's new master key.

A master key is pinned on first sight. When the server later presents another one (the person reset
their keys, or a malicious server swapped them), that person's devices get no room keys until either
the pinned key comes back (nothing to do) or the user compares fingerprints and accepts the new key.
Every send that leaves a device out says so.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tokenim.client.keys import VerifiedUserKeys, verify_query_response
from tokenim.client.sdk import AccountClient
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_device_id, parse_user_id
from tokenim.core.signing import fingerprint
from tokenim.protocol.api import KeysQueryResponse, SendResponse
from tokenim.protocol.keys import DeviceKeys


class ExcludedDevice(BaseModel):
    """A member's device that was not given the room key, so it cannot read the message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str
    device_id: str | None = None  # None: every device of the user
    reason: str  # master_key_changed | bad_master_key | bad_device_signature | no_keys | no_session
    message: str


class SendResult(SendResponse):
    """The server's answer to a send, and the member devices left out of it (empty when everyone can read it)."""

    excluded: list[ExcludedDevice] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ContactKeys:
    """What `tokenim keys show @user` prints. `status`: trusted, pinned_now (first seen now) or changed."""

    user_id: str
    status: str
    pinned_master: str
    pinned_fingerprint: str
    current_master: str
    current_fingerprint: str
    devices: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class KeyAcceptance:
    """A contact's new master key, accepted: the old and the new fingerprint."""

    user_id: str
    old_fingerprint: str
    new_fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _safe_user(user_id: str) -> str:
    """A user id as the server gave it, escaped unless well-formed: it ends up on people's terminals."""
    try:
        parse_user_id(user_id)
    except TokenIMError:
        return ascii(user_id)
    return user_id


def _safe_device(device_id: str) -> str:
    try:
        check_device_id(device_id)
    except TokenIMError:
        return ascii(device_id)
    return device_id


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _changed_message(user_id: str, pinned: str, current: str) -> str:
    return (
        f"{user_id}'s master key changed (pinned fingerprint {fingerprint(pinned)}, the server now shows "
        f"{fingerprint(current)}); compare it with them, then run `tokenim keys accept {user_id}`."
    )


class KeysClient(AccountClient):
    """Adds other people's keys to the account client; `Client` builds messaging on it."""

    def full_user_id(self, user: str) -> str:
        """`bob` or `@bob` means @bob on this server."""
        name = user.lstrip("@")
        return user if ":" in user else f"@{name}:{self.store.get_meta('server_name')}"

    def _trust_changed(self) -> None:
        """Called after a key is accepted: caches of who gets room keys must be rebuilt."""

    async def _query(self, user_ids: list[str]) -> tuple[dict[str, VerifiedUserKeys], list[str]]:
        resp = await self._post("/v1/keys/query", {"user_ids": user_ids}, KeysQueryResponse)
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
                bad, who = user_id in dropped, _safe_user(user_id)
                excluded.append(
                    ExcludedDevice(
                        user_id=who,
                        reason="bad_master_key" if bad else "no_keys",
                        message=f"the server gave a master key for {who} that does not verify."
                        if bad
                        else f"the server has no keys for {who}.",
                    )
                )
                continue
            usable = self.machine.observe_user(user_id, uk.master.public_key, list(uk.devices.values()))
            current = self.machine.key_changes.get(user_id)
            if current is not None:
                pinned = self.machine.pinned_masters[user_id]
                message = _changed_message(user_id, pinned, current)
                excluded.append(ExcludedDevice(user_id=user_id, reason="master_key_changed", message=message))
                continue
            devices.extend(usable)
            excluded.extend(
                ExcludedDevice(
                    user_id=user_id,
                    device_id=_safe_device(device_id),
                    reason="bad_device_signature",
                    message=f"device {_safe_device(device_id)} of {user_id} is not signed by their master key.",
                )
                for device_id in uk.rejected_devices
            )
        return devices, excluded

    async def devices_of(self, user_ids: list[str]) -> list[DeviceKeys]:
        """Verified device keys of these users; users whose master key changed are left out."""
        return (await self.recipients(user_ids))[0]

    async def contact_keys(self, user: str) -> ContactKeys:
        """A person's master key and devices as the server presents them, against the key pinned here."""
        user_id = self.full_user_id(user)
        parse_user_id(user_id)
        was_pinned = user_id in self.machine.pinned_masters
        users, dropped = await self._query([user_id])
        uk = users.get(user_id)
        if uk is None:
            if user_id in dropped:
                raise TokenIMError(ErrorCode.BAD_RESPONSE, f"The server's master key for {user_id} does not verify.")
            raise TokenIMError(ErrorCode.UNKNOWN_USER, f"There is no user {user_id} on this server.")
        self.machine.observe_user(user_id, uk.master.public_key, list(uk.devices.values()))
        self.persist_crypto()
        pinned, current = self.machine.pinned_masters[user_id], uk.master.public_key
        status = "changed" if pinned != current else ("trusted" if was_pinned else "pinned_now")
        device_status = "unverified: signed by the changed key" if status == "changed" else "verified"
        devices = [
            {"device_id": d.device_id, "ed25519": d.ed25519, "curve25519": d.curve25519, "status": device_status}
            for d in uk.devices.values()
        ]
        refused = "refused: not signed by the master key"
        devices += [{"device_id": _safe_device(d), "status": refused} for d in uk.rejected_devices]
        return ContactKeys(user_id, status, pinned, fingerprint(pinned), current, fingerprint(current), devices)

    async def accept_contact_key(self, user: str, expected_fingerprint: str) -> KeyAcceptance:
        """Pin the master key the server now shows for `user`, replacing the pinned one.

        `expected_fingerprint` is the new key's fingerprint as the person confirmed it: the key is accepted
        only if the server's current key has exactly that fingerprint, so what is pinned is what was compared.
        """
        user_id = self.full_user_id(user)
        if user_id == self.user_id:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "That is your own key: it can't be accepted like a contact's.")
        keys = await self.contact_keys(user_id)
        if keys.status != "changed":
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                f"{user_id}'s key has not changed: the pinned key (fingerprint {keys.pinned_fingerprint}) is in use.",
            )
        if _digits(expected_fingerprint) != _digits(keys.current_fingerprint):
            raise TokenIMError(
                ErrorCode.FINGERPRINT_MISMATCH,
                f"The fingerprint given does not match {user_id}'s current key ({keys.current_fingerprint}): nothing was "
                "accepted.",
            )
        self.machine.accept_master(user_id, keys.current_master)
        self.persist_crypto()
        self._trust_changed()
        return KeyAcceptance(user_id, keys.pinned_fingerprint, keys.current_fingerprint)


__all__ = ["ContactKeys", "ExcludedDevice", "KeyAcceptance", "KeysClient", "SendResult"]
