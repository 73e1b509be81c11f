"""Master key rotation and device revocation: the user's identity over time.

The server checks every signature with `protocol.identity` (the same functions clients use), stores the
objects as signed, and commits each change with its audit record and its `tokenim.device_list`
announcement in one transaction (a job of the event writer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.signing import signing_payload
from tokenim.protocol.api import RevokeRequest, RotateRequest, RotateResponse
from tokenim.protocol.identity import (
    MAX_CHAIN_LENGTH,
    MAX_REVOCATIONS,
    Revocation,
    Rotation,
    parse_revocation,
    parse_rotation,
    verify_revocation_by_current,
    verify_rotation,
)
from tokenim.protocol.keys import (
    DeviceKeys,
    MasterKey,
    parse_device_keys,
    parse_master_key,
    verify_device_keys,
    verify_master_key,
)
from tokenim.server.services.common import Context, Requester, SecondFactor
from tokenim.server.services.writer import AnnounceDevice, Batch, EventWriter
from tokenim.server.storage.database import Tx

ROTATED, REVOKED = "rotated", "revoked"


@dataclass(frozen=True, slots=True)
class CheckedRotation:
    """A rotation whose objects are well formed and correctly signed; `do_rotate` checks it extends the chain."""

    master: MasterKey
    rotation: Rotation
    devices: dict[str, DeviceKeys]


def _mine(user_id: str, requester: Requester, what: str) -> None:
    if user_id != requester.user_id:
        raise TokenIMError(ErrorCode.FORBIDDEN, f"The {what} is for {user_id}: you can only change your own keys.")


class IdentityService:
    """Rotations of the master key and revocations of devices, each one signed and kept forever."""

    def __init__(
        self,
        ctx: Context,
        writer: EventWriter,
        announce: AnnounceDevice,
        second_factor: SecondFactor,
        on_revoked: Callable[[str, str], None] = lambda _user, _device: None,
    ) -> None:
        self._ctx = ctx
        self._second_factor = second_factor
        self._writer = writer
        self._announce = announce
        self._on_revoked = on_revoked

    def check_rotate(self, requester: Requester, req: RotateRequest) -> CheckedRotation:
        """Shape and signatures, without the database: the new self-signed master key, the rotation to it
        (signed by the old and the new key), and each device signed by itself and the new key."""
        master = parse_master_key(req.master_key)
        _mine(master.user_id, requester, "master key")
        verify_master_key(master)
        rotation = parse_rotation(req.rotation)
        _mine(rotation.user_id, requester, "rotation")
        if (rotation.new_key, rotation.new_version) != (master.public_key, master.version):
            raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, "The rotation must lead to the new master key and its version.")
        verify_rotation(rotation)
        if rotation.old_version > MAX_CHAIN_LENGTH:
            raise TokenIMError(
                ErrorCode.KEY_CHAIN_INVALID,
                f"Your master key was rotated {MAX_CHAIN_LENGTH} times, the most a chain may hold: every client "
                "would refuse a longer one, so it can't be rotated again.",
                details={"problem": "too_long", "max_rotations": MAX_CHAIN_LENGTH},
            )
        devices: dict[str, DeviceKeys] = {}
        for raw in req.devices:
            device = parse_device_keys(raw)
            _mine(device.user_id, requester, "device keys object")
            if device.device_id in devices:
                raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, f"Device {device.device_id} is listed twice.")
            verify_device_keys(device, master)
            devices[device.device_id] = device
        return CheckedRotation(master, rotation, devices)

    async def do_rotate(self, requester: Requester, checked: CheckedRotation, otp: str | None = None) -> RotateResponse:
        """Append version n + 1 to the chain and store every device re-signed by it, in one transaction (with 2FA
        on, `otp` must be a current code)."""
        uid, rot = requester.user_id, checked.rotation

        async def job(b: Batch) -> None:
            await self._second_factor(b.tx, requester, otp, b.now)
            current = await self._current_master(b.tx, uid)
            if (rot.old_version, rot.old_key) != (current.version, current.public_key):
                raise TokenIMError(
                    ErrorCode.KEY_CHAIN_INVALID,
                    f"The rotation does not start from your current master key (version {current.version}): "
                    "fetch your keys and rotate again.",
                    details={"current_version": current.version},
                )
            if await self._ctx.identity.master_key_used(b.tx, uid, checked.master.public_key):
                raise TokenIMError(ErrorCode.KEY_CHAIN_INVALID, "That master key was used before: rotate to a new key.")
            await self._store_resigned_devices(b.tx, uid, checked.devices)
            await self._ctx.accounts.insert_master_key(
                b.tx, uid, checked.master.version, checked.master.public_key, checked.master.raw, b.now
            )
            await self._ctx.identity.insert_rotation(b.tx, rot, b.now)
            await self._ctx.auditor.record(
                b.tx, "master_key.rotated", uid, requester.device_id, old_version=rot.old_version, new_version=rot.new_version
            )
            await self._announce(b, uid, requester.device_id, ROTATED)

        await self._writer.submit(job)
        return RotateResponse(version=rot.new_version)

    async def _current_master(self, tx: Tx, user_id: str) -> MasterKey:
        masters = await self._ctx.accounts.current_master_keys(tx, [user_id])
        if user_id not in masters:
            raise TokenIMError(ErrorCode.UNAUTHORIZED, "Your account no longer exists.")
        return parse_master_key(masters[user_id])

    async def _store_resigned_devices(self, tx: Tx, user_id: str, resigned: dict[str, DeviceKeys]) -> None:
        """Every device of the user, and only those, re-signed: the same signed payload, new signatures."""
        stored = {d.device_id: d for d in await self._ctx.accounts.list_devices(tx, [user_id])}
        unknown = sorted(set(resigned) - set(stored))
        if unknown:
            raise TokenIMError(ErrorCode.UNKNOWN_DEVICE, f"You have no device {unknown[0]}.")
        missing = sorted(did for did, row in stored.items() if did not in resigned)
        changed = sorted(did for did, d in resigned.items() if signing_payload(d.raw) != signing_payload(stored[did].keys))
        if missing or changed:
            raise TokenIMError(
                ErrorCode.DEVICES_NOT_RESIGNED,
                "Every device must be re-signed by the new master key, unchanged except for its signatures: "
                + ", ".join([f"{d} is missing" for d in missing] + [f"{d} was changed" for d in changed])
                + ".",
                details={"missing": missing, "changed": changed},
            )
        for did, device in resigned.items():
            await self._ctx.identity.replace_device_json(tx, user_id, did, device.raw)

    def check_revoke(self, requester: Requester, req: RevokeRequest) -> Revocation:
        """The revocation's shape, and that it is the requester's own."""
        rev = parse_revocation(req.revocation)
        _mine(rev.user_id, requester, "revocation")
        if rev.ed25519 == rev.curve25519:
            raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, "The revocation's curve25519 and ed25519 keys must differ.")
        return rev

    async def _check_keys_were_the_devices(self, tx: Tx, rev: Revocation) -> None:
        """A revocation names one of the user's own devices, current or removed, with exactly the keys the
        server recorded for it: otherwise a user could revoke another user's keys under a made-up id."""
        had = await self._ctx.identity.keys_device_had(tx, rev.user_id, rev.device_id)
        if not had:
            raise TokenIMError(ErrorCode.UNKNOWN_DEVICE, f"You never had a device {rev.device_id}.")
        if not {("ed25519", rev.ed25519), ("curve25519", rev.curve25519)} <= had:
            raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, f"The revocation names other keys than device {rev.device_id} has.")

    async def do_revoke(self, requester: Requester, rev: Revocation, otp: str | None = None) -> None:
        """Publish the revocation: the device, its tokens, keys and queued messages go, and its id and keys
        are refused from then on. One transaction with the audit record and the `device_list` event (with 2FA
        on, `otp` must be a current code)."""
        uid, did = rev.user_id, rev.device_id

        async def job(b: Batch) -> None:
            await self._second_factor(b.tx, requester, otp, b.now)
            verify_revocation_by_current(rev, await self._current_master(b.tx, uid))
            if await self._ctx.identity.is_revoked(b.tx, uid, did):
                raise TokenIMError(ErrorCode.DEVICE_REVOKED, f"Device {did} is already revoked.")
            await self._check_keys_were_the_devices(b.tx, rev)
            if await self._ctx.identity.count_revocations(b.tx, uid) >= MAX_REVOCATIONS:
                raise TokenIMError(
                    ErrorCode.TOO_MANY_KEYS,
                    f"You have revoked {MAX_REVOCATIONS} devices, the most an account may: remove the device instead.",
                    details={"max_revocations": MAX_REVOCATIONS},
                )
            await self._ctx.accounts.delete_device(b.tx, uid, did)  # its tokens, one-time keys and to-device messages cascade
            await self._ctx.identity.insert_revocation(b.tx, rev, b.now)
            await self._ctx.auditor.record(b.tx, "device.revoked", uid, did, by_device=requester.device_id)
            await self._announce(b, uid, did, REVOKED)

        await self._writer.submit(job)
        self._on_revoked(uid, did)
