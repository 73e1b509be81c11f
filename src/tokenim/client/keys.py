"""`client.keys`: this device's keys, other people's keys, and trust in them.

Every key object the server relays is verified here before it is trusted. A master key is pinned on
first sight. When the server later presents another one (the person reset their keys, or a malicious
server swapped them), that person's devices get no room keys until either the pinned key comes back
(nothing to do) or the user compares fingerprints and accepts the new key. Every send that leaves a
device out says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tokenim.client.contacts import (
    ContactKeys,
    ExcludedDevice,
    KeyAcceptance,
    digits,
    safe_device,
    safe_user,
    warning_message,
)
from tokenim.client.lifecycle import DEFAULT_ROTATION_DAYS, ROTATION_DAYS, KeyRotation, KeyStatus, Lifecycle
from tokenim.client.state import DeviceState
from tokenim.client.transport import Transport
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import parse_user_id
from tokenim.core.signing import fingerprint
from tokenim.crypto.machine import KeyWarning
from tokenim.crypto.rotation import revocation_object, rotation_request
from tokenim.crypto.trust import Decision
from tokenim.protocol.api import (
    KeyCountsResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    OkResponse,
    RotateResponse,
    UserKeys,
    WhoAmIResponse,
)
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


UNSURE = (ErrorCode.SERVER_UNREACHABLE, ErrorCode.BAD_RESPONSE, ErrorCode.INTERNAL)
OUTDATED = (
    "This device no longer holds your current master key (version {version}: another of your devices rotated it "
    "since), so it can't {what}. Do this from a device that holds it, or bring the key here with `tokenim keys "
    "import` or `tokenim devices link`."
)


@dataclass(frozen=True, slots=True)
class DeviceRevocation:
    """A device revoked: whose, which, its Ed25519 key, and the master key version that signed the revocation."""

    user_id: str
    device_id: str
    ed25519: str
    master_key_version: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
        self._lifecycle = Lifecycle(state, on_trust_changed)

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
        return verify_query_response(await self._query_raw(user_ids))

    async def _query_raw(self, user_ids: list[str]) -> KeysQueryResponse:
        return await self._transport.post("/v1/keys/query", {"user_ids": user_ids}, KeysQueryResponse)

    def _observe(self, user_id: str, keys: UserKeys) -> Decision:
        """Run the trust decision on one user's answer (crypto/trust.py); for this user, also settle a rotation
        this device started but did not see answered (client/rotation.py)."""
        decision = self._machine.observe(user_id, keys.model_dump(), self._state.clock.now_ms())
        if user_id == self._state.user_id:
            self._lifecycle.settle_pending(decision)
        return decision

    async def recipients(self, user_ids: list[str]) -> tuple[list[DeviceKeys], list[ExcludedDevice]]:
        """The verified devices of these users that may get room keys, and the devices left out, with why.

        Each user's keys go through the trust decision: a signed rotation is followed as routine; any other
        change of master key leaves all of the user's devices out (reason `master_key_changed`, with the
        `verdict`), and a revoked device is left out for good."""
        wanted = sorted(set(user_ids))
        resp = await self._query_raw(wanted)
        devices: list[DeviceKeys] = []
        excluded: list[ExcludedDevice] = []
        for user_id in wanted:
            keys = resp.users.get(user_id)  # only users we asked about are looked at, let alone pinned
            if keys is None:
                excluded.append(_no_keys(user_id, bad=False))
                continue
            decision = self._observe(user_id, keys)
            warning = self._machine.key_changes.get(user_id)
            if warning is not None:
                excluded.append(self._left_out_user(user_id, warning))
                continue
            devices.extend(decision.devices.values())
            shown_revoked = sorted(d for d in decision.revoked if d in keys.devices)
            excluded.extend(self._left_out_device(user_id, d, keys) for d in [*decision.unverified, *shown_revoked])
        return devices, excluded

    def _left_out_user(self, user_id: str, warning: KeyWarning) -> ExcludedDevice:
        pin = self._machine.pins.get(user_id)
        if pin is None and warning.presented is None:
            return _no_keys(user_id, bad=True)
        message = warning_message(user_id, pin, warning)
        return ExcludedDevice(user_id=safe_user(user_id), reason="master_key_changed", message=message, verdict=warning.verdict)

    def _left_out_device(self, user_id: str, device_id: str, keys: UserKeys) -> ExcludedDevice:
        who, device = safe_user(user_id), safe_device(device_id)
        if self._is_revoked(user_id, device_id, keys):
            message = f"device {device} of {who} was revoked: it never gets messages again, whatever the server shows."
            return ExcludedDevice(user_id=who, device_id=device, reason="revoked", message=message)
        message = f"device {device} of {who} is not signed by their master key."
        return ExcludedDevice(user_id=who, device_id=device, reason="bad_device_signature", message=message)

    def _is_revoked(self, user_id: str, device_id: str, keys: UserKeys) -> bool:
        """Whether `user_id` revoked this device (another user's revocations never count)."""
        raw = keys.devices.get(device_id, {}).get("keys")
        shown = [k for k in raw.values() if isinstance(k, str)] if isinstance(raw, dict) else []
        return any(self._machine.is_revoked(user_id, k) for k in shown)

    async def devices_of(self, user_ids: list[str]) -> list[DeviceKeys]:
        """Verified device keys of these users; users whose master key changed are left out."""
        return (await self.recipients(user_ids))[0]

    def is_pinned(self, user_id: str) -> bool:
        """Whether a master key of `user_id` is pinned here (seen before, or accepted)."""
        return user_id in self._machine.pins

    def followed_keys(self, user: str) -> tuple[str, ...]:
        """Every master key of `user` trusted here, oldest first: the one first pinned (or accepted) and each
        one followed from it through signed rotations. A verification of any of them still vouches for the user."""
        return self._machine.followed_keys(self._state.full_user_id(user))

    async def contact(self, user: str) -> ContactKeys:
        """A person's master key and devices as the server presents them, against the key pinned here."""
        user_id = self._state.full_user_id(user)
        parse_user_id(user_id)
        was_pinned = self.is_pinned(user_id)
        keys = (await self._query_raw([user_id])).users.get(user_id)
        if keys is None:
            raise TokenIMError(ErrorCode.UNKNOWN_USER, f"There is no user {user_id} on this server.")
        decision = self._observe(user_id, keys)
        self._state.persist()
        warning = self._machine.key_changes.get(user_id)
        pin = self._machine.pins.get(user_id)
        if pin is None:  # first sight, and what the server shows does not verify: nothing was pinned
            raise TokenIMError(
                ErrorCode.BAD_RESPONSE, f"The server's master key for {user_id} does not verify: nothing was pinned."
            )
        status = "changed" if warning is not None else ("trusted" if was_pinned else "pinned_now")
        current = pin.master_key if warning is None else (warning.presented.public_key if warning.presented else "")
        devices = [
            {"device_id": d.device_id, "ed25519": d.ed25519, "curve25519": d.curve25519, "status": "verified"}
            for d in decision.devices.values()
        ]
        if warning is not None:
            devices = [_unverified_device(d, raw) for d, raw in keys.devices.items()]
        else:
            refused = "refused: not signed by the master key"
            for d in [*decision.unverified, *sorted(x for x in decision.revoked if x in keys.devices)]:
                devices.append(
                    {"device_id": safe_device(d), "status": "revoked" if self._is_revoked(user_id, d, keys) else refused}
                )
        return ContactKeys(
            user_id,
            status,
            pin.master_key,
            fingerprint(pin.master_key),
            current,
            fingerprint(current) if current else "",
            devices,
            verdict=decision.verdict.value,
            version=pin.version,
            message=warning_message(user_id, pin, warning) if warning is not None else "",
        )

    async def accept(self, user: str, expected_fingerprint: str) -> KeyAcceptance:
        """Pin the master key the server now shows for `user`, replacing the pinned one.

        `expected_fingerprint` is the new key's fingerprint as the person confirmed it: the key is accepted
        only if the server's current key has exactly that fingerprint, so what is pinned is what was compared.
        A chain that does not verify at all can't be accepted: no pin would make it verify.
        """
        user_id = self._state.full_user_id(user)
        if user_id == self._state.user_id:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "That is your own key: it can't be accepted like a contact's.")
        keys = await self.contact(user_id)
        warning = self._machine.key_changes.get(user_id)
        if keys.status != "changed" or warning is None:
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                f"{user_id}'s key has not changed: the pinned key (fingerprint {keys.pinned_fingerprint}) is in use.",
            )
        if not warning.acceptable or warning.presented is None:
            raise TokenIMError(ErrorCode.KEY_CHAIN_INVALID, f"Nothing was accepted: {keys.message}")
        if digits(expected_fingerprint) != digits(keys.current_fingerprint):
            raise TokenIMError(
                ErrorCode.FINGERPRINT_MISMATCH,
                f"The fingerprint given does not match {user_id}'s current key: nothing was accepted. Compare the one "
                f"`tokenim keys show {user_id}` shows with theirs, digit by digit.",
            )
        self._machine.accept_master(user_id, warning.presented.public_key, warning.presented.version, self._state.clock.now_ms())
        self._state.persist()
        self._trust_changed()
        return KeyAcceptance(user_id, keys.pinned_fingerprint, keys.current_fingerprint)

    # ---- this user's master key: rotate, revoke, status ------------------------------------------

    async def _own_keys(self) -> tuple[Decision, UserKeys]:
        """This user's keys as the server shows them, through the trust decision (settling a pending rotation);
        refused when they do not verify, or when this device no longer holds the current master key."""
        me = self._state.user_id
        keys = (await self._query_raw([me])).users.get(me)
        if keys is None:
            raise TokenIMError(ErrorCode.BAD_RESPONSE, "The server shows no keys for your own account.")
        decision = self._observe(me, keys)
        self._state.persist()
        warning = self._machine.key_changes.get(me)
        if warning is not None:
            raise TokenIMError(
                ErrorCode.KEY_CHAIN_INVALID,
                f"The server shows your own keys in a way that does not verify ({warning.verdict.value.replace('_', ' ')}): "
                "nothing was changed. Tell the server's admin.",
            )
        return decision, keys

    def _need_current_master(self, what: str) -> None:
        if self._machine.own_master_outdated:
            pin = self._machine.pins[self._state.user_id]
            raise TokenIMError(ErrorCode.KEY_CHAIN_INVALID, OUTDATED.format(version=pin.version, what=what))

    async def require_current_master(self, what: str) -> Decision:
        """Refuse (`key_chain_invalid`, saying `what` can't be done) when this device no longer holds the user's
        current master key, as the server shows it now: called before anything that needs or hands out that key.
        Returns the trust decision on this user's own keys (its devices, the ids of those revoked)."""
        decision, _keys = await self._own_keys()
        self._need_current_master(what)
        return decision

    async def rotate(self) -> KeyRotation:
        """Replace the master key with a new one (version n + 1): the rotation is signed by the old and the new
        key and every device of the user, each verified first, is re-signed by the new key. Contacts follow
        it without a warning. The new key is saved as pending before the request leaves, so a lost answer or
        a crash never loses it: the next look at this user's keys settles it (client/lifecycle.py)."""
        decision, _keys = await self._own_keys()
        self._need_current_master("rotate it")
        if decision.unverified:
            listed = ", ".join(safe_device(d) for d in decision.unverified)
            raise TokenIMError(
                ErrorCode.BAD_RESPONSE,
                f"The server lists devices of yours that your master key never signed ({listed}): a rotation would "
                "vouch for them, so nothing was rotated. Revoke them with `tokenim devices revoke`.",
            )
        identity, now = self._state.identity, self._state.clock.now_ms()
        devices = sorted(decision.devices.values(), key=lambda d: d.device_id)
        request = rotation_request(identity.user_id, identity.master, identity.master_version, devices, now)
        self._lifecycle.save_pending(request.new_master, request.new_version, now)
        old = identity.master.public_key, identity.master_version
        try:
            await self._transport.post("/v1/keys/rotate", request.body, RotateResponse)
        except TokenIMError as err:
            if err.code in UNSURE:
                raise TokenIMError(
                    err.code,
                    f"{err.message.rstrip('.')}. The rotation may or may not have reached the server: the new key is "
                    "kept on this device, and the next command that reaches the server settles it (see `tokenim keys "
                    "status`).",
                ) from None
            self._lifecycle.drop_pending()
            if err.code is ErrorCode.KEY_CHAIN_INVALID:
                raise TokenIMError(
                    err.code, "Another of your devices rotated the master key meanwhile: nothing was rotated here."
                ) from None
            raise
        self._lifecycle.promote(request.new_master, request.new_version, now)
        return KeyRotation(
            identity.user_id,
            old[1],
            request.new_version,
            fingerprint(old[0]),
            fingerprint(request.new_master.public_key),
            [d.device_id for d in devices],
        )

    async def revoke(self, device_id: str) -> DeviceRevocation:
        """Revoke one of this user's other devices for good: the master key signs a revocation naming its keys.
        The server deletes the device and refuses it from then on; contacts stop encrypting to it and refuse its
        keys even if a server shows them again; rooms it was in get a new room key before the next message."""
        if device_id == self._state.device_id:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{device_id} is this device: revoke it from another of your devices.")
        decision, keys = await self._own_keys()
        self._need_current_master("revoke devices")
        raw = keys.devices.get(device_id)
        if raw is None:
            if device_id in decision.revoked:
                raise TokenIMError(ErrorCode.DEVICE_REVOKED, f"Device {safe_device(device_id)} is already revoked.")
            raise TokenIMError(ErrorCode.UNKNOWN_DEVICE, f"You have no device {safe_device(device_id)} (see `tokenim devices`).")
        device = parse_device_keys(raw)  # its keys are named, signed or not: a forged device is revoked as well
        identity, now = self._state.identity, self._state.clock.now_ms()
        revocation = revocation_object(device, identity.master, identity.master_version, now)
        await self._transport.post("/v1/keys/revoke", {"revocation": revocation}, OkResponse)
        self._machine.revoke_keys({device.ed25519, device.curve25519})
        self._state.persist()
        self._trust_changed()
        return DeviceRevocation(identity.user_id, device.device_id, device.ed25519, identity.master_version)

    def holds_current_master(self) -> bool:
        """Whether this device holds the user's current master key, as last seen (False once another device rotated it)."""
        return not self._machine.own_master_outdated

    async def status(self) -> KeyStatus:
        """How old the master key and this device's key are, and when rotation is due (the server's
        `key_rotation_days`, read now and remembered). Settles a rotation left pending."""
        await self._own_keys()
        days = (await self._transport.get("/v1/whoami", WhoAmIResponse)).key_rotation_days
        self._state.store.set_meta({ROTATION_DAYS: str(days)})
        return self._lifecycle.status(days)

    def rotation_due(self) -> KeyStatus | None:
        """Without asking the server: the key status when the master key is due for rotation, else None."""
        days = int(self._state.store.get_meta(ROTATION_DAYS) or DEFAULT_ROTATION_DAYS)
        status = self._lifecycle.status(days)
        return status if status.due and not status.outdated else None


def _unverified_device(device_id: str, raw: dict[str, Any]) -> dict[str, str]:
    out = {"device_id": safe_device(device_id), "status": "unverified: signed by the changed key"}
    keys = raw.get("keys")
    ed = keys.get(f"ed25519:{device_id}") if isinstance(keys, dict) else None
    if isinstance(ed, str):
        out["ed25519"] = ed
    return out


def _no_keys(user_id: str, *, bad: bool) -> ExcludedDevice:
    who = safe_user(user_id)
    if bad:
        message = f"the server gave a master key for {who} that does not verify."
        return ExcludedDevice(user_id=who, reason="bad_master_key", message=message)
    return ExcludedDevice(user_id=who, reason="no_keys", message=f"the server has no keys for {who}.")


__all__ = ["DeviceRevocation", "Keys", "KeysInfo", "VerifiedUserKeys", "verify_query_response"]
