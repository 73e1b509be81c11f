"""A device added by whoever holds the user's master key, without a session (`keys import` on a new
computer): a single-use challenge, signed by the master key together with the new device's keys.

The challenge is stored hashed (60 s, used up whatever the outcome) under a hash of its own domain and in
its own table, so a login nonce can never answer here and this nonce can never log in. No token is needed to
ask for one, so at most MAX_ADD_CHALLENGES_PER_USER are issued per user and MAX_ADD_CHALLENGES_PER_ADDRESS per
client address in any 60 s (used ones count until they expire): that bounds the `device.add_refused` records
anyone can make in a user's audit log. The device, its audit record, its `device_list` events, its first
session and the mail telling the user of it (server/services/notices.py) commit in one transaction.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_device_id, check_user_id
from tokenim.core.limits import CHALLENGE_TTL_MS, MAX_DEVICES_PER_USER
from tokenim.core.signing import verify_ed25519
from tokenim.protocol.api import TokenResponse
from tokenim.protocol.key_lifecycle import (
    ADD_DEVICE_CHALLENGE_TYPE,
    MAX_ADD_CHALLENGES_PER_ADDRESS,
    MAX_ADD_CHALLENGES_PER_USER,
    AddDeviceByMasterKeyRequest,
    MasterChallengeResponse,
    add_device_payload,
)
from tokenim.protocol.keys import DeviceKeys, parse_device_keys, parse_master_key
from tokenim.server.services.accounts import AccountService, check_new_device
from tokenim.server.services.auth import AuthService
from tokenim.server.services.common import (
    NO_ORIGIN,
    Context,
    Origin,
    SecondFactor,
    new_secret,
    refuse_revoked_keys,
    secret_hash,
)
from tokenim.server.services.limits import Kind, describe_wait, rate_limited
from tokenim.server.services.notices import NoticeKind, SecurityNotifier
from tokenim.server.services.writer import AnnounceDevice, Batch, EventWriter
from tokenim.server.storage.database import Tx
from tokenim.server.storage.master_challenges import MasterChallenge, MasterChallengeStore


def _nonce_hash(nonce: str) -> str:
    return secret_hash(f"{ADD_DEVICE_CHALLENGE_TYPE}:{nonce}")


@dataclass(frozen=True, slots=True)
class CheckedMasterAdd:
    """A request whose device keys are well formed and name the requesting user; signatures come later."""

    user_id: str
    nonce: str
    signature: str
    device: DeviceKeys
    request: AddDeviceByMasterKeyRequest


class MasterDeviceService:
    """Challenges for, and additions of, devices proven by the master key."""

    def __init__(
        self,
        ctx: Context,
        accounts: AccountService,
        auth: AuthService,
        writer: EventWriter,
        announce: AnnounceDevice,
        second_factor: SecondFactor,
        notices: SecurityNotifier,
    ) -> None:
        self._ctx = ctx
        self._second_factor = second_factor
        self._notices = notices
        self._accounts = accounts
        self._auth = auth
        self._writer = writer
        self._announce = announce
        self._store = MasterChallengeStore()
        # Addresses only as an HMAC under a key held in memory: enough to count a minute's challenges.
        self._address_key = secrets.token_bytes(32)

    async def do_challenge(self, user_id: str, device_id: str, origin: Origin = NO_ORIGIN) -> MasterChallengeResponse:
        """A fresh nonce for adding device `device_id` to `user_id` (valid 60 seconds, usable once), with the
        user's current master key and its chain, public as in a key query, so the client can tell a superseded
        or foreign key before it signs anything. An unknown user counts toward the address's lookup limit."""
        try:
            return await self._challenge(user_id, device_id, origin)
        except TokenIMError as err:
            if err.code is ErrorCode.UNKNOWN_USER:
                await self._ctx.limiter.record_failure(Kind.LOOKUP, address=origin.ip or "")
            raise

    async def _challenge(self, user_id: str, device_id: str, origin: Origin) -> MasterChallengeResponse:
        uid, did = check_user_id(user_id), check_device_id(device_id)
        now = self._ctx.clock.now_ms()
        nonce = new_secret(32)
        address_hash = hmac.new(self._address_key, (origin.ip or "").encode(), "sha256").hexdigest()
        async with self._ctx.db.write() as tx:
            await self._ctx.limiter.check(tx, Kind.LOOKUP, address=origin.ip or "")
            masters = await self._ctx.accounts.current_master_keys(tx, [uid])
            if uid not in masters:
                raise TokenIMError(ErrorCode.UNKNOWN_USER, f"There is no user {uid} on this server.")
            await self._refuse_taken_id(tx, uid, did)
            rotations = (await self._ctx.identity.rotations(tx, [uid])).get(uid, [])
            await self._store.purge(tx, now)
            await self._refuse_too_many(tx, now, uid, address_hash)
            challenge = MasterChallenge(uid, did, now + CHALLENGE_TTL_MS)
            await self._store.insert(tx, _nonce_hash(nonce), challenge, address_hash)
        return MasterChallengeResponse(
            nonce=nonce,
            server_name=self._ctx.server_name,
            expires_at=now + CHALLENGE_TTL_MS,
            master_key=masters[uid],
            rotations=rotations,
        )

    async def _refuse_too_many(self, tx: Tx, now: int, user_id: str, address_hash: str) -> None:
        live, earliest = await self._store.count_live(tx, now, address_hash=address_hash)
        if live >= MAX_ADD_CHALLENGES_PER_ADDRESS:
            raise rate_limited(
                f"Too many add-device challenges were asked for from this address: try again in {describe_wait(earliest - now)}.",
                earliest - now,
            )
        live, earliest = await self._store.count_live(tx, now, user_id=user_id)
        if live >= MAX_ADD_CHALLENGES_PER_USER:
            raise rate_limited(
                f"Too many add-device challenges were asked for {user_id} in the last minute: "
                f"try again in {describe_wait(earliest - now)}.",
                earliest - now,
            )

    async def _refuse_taken_id(self, tx: Tx, user_id: str, device_id: str) -> None:
        if await self._ctx.identity.is_revoked(tx, user_id, device_id):
            raise TokenIMError(ErrorCode.DEVICE_REVOKED, f"Device {device_id} was revoked: it can never be added again.")
        if await self._ctx.accounts.get_device(tx, user_id, device_id) is not None:
            raise TokenIMError(ErrorCode.DEVICE_EXISTS, f"Device {device_id} already exists.")

    def check_add(self, req: AddDeviceByMasterKeyRequest) -> CheckedMasterAdd:
        """The device keys' shape, and that they are for the user named; nothing stored is read."""
        uid = check_user_id(req.user_id)
        device = parse_device_keys(req.device_keys)
        if device.user_id != uid:
            raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, f"The device keys are for {device.user_id}, not {uid}.")
        return CheckedMasterAdd(uid, req.nonce, req.signature, device, req)

    async def do_add(self, checked: CheckedMasterAdd, origin: Origin = NO_ORIGIN, otp: str | None = None) -> TokenResponse:
        """Consume the challenge, check the master key's signature and the device keys against the user's
        current master key and, with 2FA on, the code `otp` (only once the signature is good: nobody without
        the master key can spend or lock the user's codes), then add the device and open its first session,
        in one transaction."""
        uid, did = checked.user_id, checked.device.device_id
        now = self._ctx.clock.now_ms()
        async with self._ctx.db.write() as tx:
            challenge = await self._store.take(tx, _nonce_hash(checked.nonce))
        if challenge is None or (challenge.user_id, challenge.device_id) != (uid, did):
            raise TokenIMError(
                ErrorCode.CHALLENGE_INVALID, "That add-device challenge is unknown or was already used: ask for a new one."
            )
        if challenge.expires_at <= now:
            raise TokenIMError(ErrorCode.CHALLENGE_EXPIRED, "That add-device challenge has expired: ask for a new one.")

        async def job(b: Batch) -> TokenResponse:
            masters = await self._ctx.accounts.current_master_keys(b.tx, [uid])
            if uid not in masters:
                raise TokenIMError(ErrorCode.UNKNOWN_USER, f"There is no user {uid} on this server.")
            master = parse_master_key(masters[uid])
            payload = add_device_payload(
                server_name=self._ctx.server_name,
                user_id=uid,
                device_id=did,
                device_ed25519=checked.device.ed25519,
                nonce=checked.nonce,
            )
            if not verify_ed25519(master.public_key, payload, checked.signature):
                raise TokenIMError(
                    ErrorCode.BAD_SIGNATURE,
                    f"The challenge is not signed by {uid}'s current master key (version {master.version}).",
                )
            await self._second_factor(b.tx, uid, otp, b.now)
            req = checked.request
            device, otks = check_new_device(master, req.device_keys, req.one_time_keys, req.fallback_keys)
            await refuse_revoked_keys(self._ctx, b.tx, device)
            await self._refuse_taken_id(b.tx, uid, did)
            if await self._ctx.accounts.count_devices(b.tx, uid) >= MAX_DEVICES_PER_USER:
                raise TokenIMError(ErrorCode.TOO_MANY_KEYS, f"An account may have at most {MAX_DEVICES_PER_USER} devices.")
            await self._accounts.insert_device(b.tx, device, otks, b.now)
            await self._ctx.auditor.record(
                b.tx, "device.added", uid, did, origin=origin, by="master_key", master_key_version=master.version
            )
            await self._announce(b, uid, did, "added")
            await self._notices.notify(b.tx, uid, NoticeKind.NEW_DEVICE, {"device_id": did, "method": "master_key"})
            tokens = await self._auth.issue_session(b.tx, uid, did, b.now)
            await self._ctx.accounts.touch_device(b.tx, uid, did, b.now)
            return tokens

        try:
            return await self._writer.submit(job)
        except IntegrityError:  # a race with another add of the same device or the same keys
            raise TokenIMError(
                ErrorCode.KEY_CONFLICT, "The device or its keys were added by another request at the same moment."
            ) from None
        except TokenIMError as err:
            if err.code is ErrorCode.BAD_SIGNATURE:
                async with self._ctx.db.write() as tx:
                    await self._ctx.auditor.record(tx, "device.add_refused", uid, did, origin=origin, reason="bad_signature")
            raise
