"""Registration, invites and the bootstrap of the first (admin) account."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import IntegrityError

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_username, make_user_id
from tokenim.core.limits import MAX_ONE_TIME_KEYS_PER_UPLOAD
from tokenim.core.names import email_problem
from tokenim.protocol.api import InviteResponse, RegisterRequest, RegisterResponse, WhoAmIResponse
from tokenim.protocol.keys import (
    DeviceKeys,
    MasterKey,
    OneTimeKey,
    parse_device_keys,
    parse_master_key,
    parse_one_time_keys,
    verify_device_keys,
    verify_master_key,
    verify_one_time_key,
)
from tokenim.server.services.admin import AdminRequester
from tokenim.server.services.common import (
    NO_ORIGIN,
    Context,
    Origin,
    Requester,
    SecondFactor,
    refuse_revoked_keys,
    secret_hash,
)
from tokenim.server.services.limits import Kind
from tokenim.server.storage.accounts import DeviceRow, UserRow
from tokenim.server.storage.database import Tx

_INVITE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def new_invite_code() -> str:
    """An invite code people can read out and type: 24 unambiguous characters (120 bits) in groups of 4.

    It never starts with '-', which a command line would take for an option.
    """
    chars = "".join(secrets.choice(_INVITE_ALPHABET) for _ in range(24))
    return "-".join(chars[i : i + 4] for i in range(0, 24, 4))


class RegistrationMode(StrEnum):
    INVITE = "invite"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class CheckedRegistration:
    username: str
    user_id: str
    email: str | None
    invite: str | None
    master: MasterKey
    device: DeviceKeys
    one_time_keys: list[OneTimeKey]


def check_new_device(
    master: MasterKey, device_raw: object, otks_raw: object, fallback_raw: object
) -> tuple[DeviceKeys, list[OneTimeKey]]:
    """Parse and verify a device's keys (signed by itself and by `master`) and its published keys."""
    device = parse_device_keys(device_raw)
    if device.user_id != master.user_id:
        raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, "The device keys name another user.")
    if device.master_key_version != master.version:
        raise TokenIMError(
            ErrorCode.BAD_KEY_OBJECT,
            f"The device keys name master key version {device.master_key_version}, which is not the current one: "
            f"the current master key is version {master.version}.",
            details={"current_version": master.version},
        )
    verify_device_keys(device, master)
    otks = parse_one_time_keys(otks_raw, fallback=False) + parse_one_time_keys(fallback_raw, fallback=True)
    if sum(not k.fallback for k in otks) > MAX_ONE_TIME_KEYS_PER_UPLOAD or sum(k.fallback for k in otks) > 1:
        raise TokenIMError(
            ErrorCode.TOO_MANY_KEYS, f"Upload at most {MAX_ONE_TIME_KEYS_PER_UPLOAD} one-time keys and one fallback key at once."
        )
    for k in otks:
        verify_one_time_key(k, device)
    return device, otks


def _check_email(email: str | None) -> str | None:
    if email is None:
        return None
    problem = email_problem(email)
    if problem is not None:  # shown to people (whoami, later the admin console): no control characters
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"The email address can't be used: {problem}.")
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or " " in email:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"'{email}' is not an email address.")
    return email


class AccountService:
    """Creates accounts from keys made on the client; the server only checks signatures."""

    def __init__(
        self, ctx: Context, mode: RegistrationMode, second_factor: SecondFactor, *, key_rotation_days: int = 365
    ) -> None:
        self._ctx = ctx
        self._second_factor = second_factor
        self.mode = mode
        self.key_rotation_days = key_rotation_days

    def check_register(self, req: RegisterRequest) -> CheckedRegistration:
        """Validate a registration without touching the database."""
        username = check_username(req.username)
        user_id = make_user_id(username, self._ctx.server_name)
        master = parse_master_key(req.master_key)
        if master.user_id != user_id:
            raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, f"The master key is for {master.user_id}, not {user_id}.")
        if master.version != 1:
            raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, "A new account's master key has version 1.")
        verify_master_key(master)
        device, otks = check_new_device(master, req.device_keys, req.one_time_keys, req.fallback_keys)
        return CheckedRegistration(username, user_id, _check_email(req.email), req.invite, master, device, otks)

    async def do_register(self, reg: CheckedRegistration, origin: Origin = NO_ORIGIN) -> RegisterResponse:
        """Create the user, their master key, first device and published keys in one transaction; the audit
        record names where the request came from (the account's first known address).

        An invalid invite code counts toward the address's invite limit (in a transaction of its own: the
        registration's rolled back)."""
        try:
            return await self._register(reg, origin)
        except TokenIMError as err:
            if err.code is ErrorCode.INVITE_INVALID:
                await self._ctx.limiter.record_failure(Kind.INVITE, address=origin.ip or "")
            raise

    async def _register(self, reg: CheckedRegistration, origin: Origin) -> RegisterResponse:
        now = self._ctx.clock.now_ms()
        try:
            async with self._ctx.db.write() as tx:
                if reg.invite is not None:
                    await self._ctx.limiter.check(tx, Kind.INVITE, address=origin.ip or "")
                grants_admin = await self._take_invite(tx, reg, now)
                if await self._ctx.accounts.username_exists(tx, reg.username):
                    raise TokenIMError(ErrorCode.USERNAME_TAKEN, f"The username '{reg.username}' is taken.")
                await refuse_revoked_keys(self._ctx, tx, reg.device)
                is_admin = grants_admin or await self._is_first_user(tx)
                await self._ctx.accounts.insert_user(tx, UserRow(reg.user_id, reg.username, reg.email, is_admin, now))
                await self._ctx.accounts.insert_master_key(tx, reg.user_id, 1, reg.master.public_key, reg.master.raw, now)
                await self.insert_device(tx, reg.device, reg.one_time_keys, now)
                await self._ctx.auditor.record(
                    tx, "account.registered", reg.user_id, reg.device.device_id, origin=origin, is_admin=is_admin
                )
        except IntegrityError:
            # A race with another registration: for the same name, or (rarer) for the same device keys.
            async with self._ctx.db.read() as tx:
                if not await self._ctx.accounts.username_exists(tx, reg.username):
                    raise TokenIMError(
                        ErrorCode.KEY_CONFLICT,
                        "The device's keys are already used by another device: every device needs keys of its own.",
                    ) from None
            raise TokenIMError(ErrorCode.USERNAME_TAKEN, f"The username '{reg.username}' is taken.") from None
        return RegisterResponse(user_id=reg.user_id, device_id=reg.device.device_id, is_admin=is_admin)

    async def _is_first_user(self, tx: Tx) -> bool:
        """True for the first account only: re-counted under a database lock, so that simultaneous first
        registrations (on one server or several sharing the database) make exactly one admin."""
        if await self._ctx.accounts.count_users(tx) > 0:
            return False
        await self._ctx.accounts.lock_first_user(tx)
        return await self._ctx.accounts.count_users(tx) == 0

    async def insert_device(self, tx: Tx, device: DeviceKeys, otks: list[OneTimeKey], now: int) -> None:
        """Store a verified device and its published keys; its identity keys must be new (`key_conflict`)."""
        await self._claim_identity_keys(tx, device)
        await self._ctx.accounts.insert_device(
            tx,
            DeviceRow(
                device.user_id,
                device.device_id,
                device.ed25519,
                device.curve25519,
                device.master_key_version,
                device.raw,
                now,
                None,
            ),
        )
        await self._ctx.keys.insert_keys(tx, device.user_id, device.device_id, [(k.key_id, k.raw, k.fallback) for k in otks], now)

    async def _claim_identity_keys(self, tx: Tx, device: DeviceKeys) -> None:
        """A device's Curve25519 and Ed25519 keys are its own: never another device's, even a removed one's.

        Otherwise a device could publish someone else's identity key and send under it (`sender_key`).
        """
        if device.curve25519 == device.ed25519:
            raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, "The device's curve25519 and ed25519 keys must be two different keys.")
        held = await self._ctx.accounts.identity_key_holders(tx, [device.curve25519, device.ed25519])
        for algorithm, key in (("curve25519", device.curve25519), ("ed25519", device.ed25519)):
            if key in held:
                raise TokenIMError(
                    ErrorCode.KEY_CONFLICT,
                    f"The device's {algorithm} key is already used by another device: every device needs keys of its own.",
                )
        await self._ctx.accounts.insert_identity_keys(
            tx, device.user_id, device.device_id, {"curve25519": device.curve25519, "ed25519": device.ed25519}
        )

    async def _take_invite(self, tx: Tx, reg: CheckedRegistration, now: int) -> bool:
        if reg.invite is None:
            if self.mode is RegistrationMode.INVITE:
                raise TokenIMError(ErrorCode.INVITE_REQUIRED, "This server needs an invite to register: ask an admin for one.")
            return False
        code_hash = secret_hash(reg.invite)
        invite = await self._ctx.auth.get_invite(tx, code_hash)
        if invite is None or invite.revoked:
            raise TokenIMError(ErrorCode.INVITE_INVALID, "That invite code is not valid.")
        if invite.used_by is not None:
            raise TokenIMError(ErrorCode.INVITE_INVALID, "That invite code has already been used.")
        if invite.expires_at <= now:
            raise TokenIMError(ErrorCode.INVITE_INVALID, "That invite code has expired: ask an admin for a new one.")
        if not await self._ctx.auth.use_invite(tx, code_hash, reg.user_id, now):
            raise TokenIMError(ErrorCode.INVITE_INVALID, "That invite code has already been used.")
        return invite.grants_admin

    async def do_create_invite(self, admin: AdminRequester, ttl_seconds: int, otp: str | None = None) -> InviteResponse:
        """An admin creates a one-time invite (an admin action: with 2FA on, `otp` must be a current code)."""
        now = self._ctx.clock.now_ms()
        code = new_invite_code()
        expires_at = now + ttl_seconds * 1000
        async with self._ctx.db.write() as tx:
            await self._second_factor(tx, admin.requester, otp, now)
            await self._ctx.auth.insert_invite(tx, secret_hash(code), admin.user_id, now, expires_at, grants_admin=False)
            await self._ctx.auditor.record(tx, "invite.created", admin.user_id, admin.device_id, expires_at=expires_at)
        return InviteResponse(code=code, expires_at=expires_at)

    async def do_bootstrap_invite(self, ttl_ms: int) -> InviteResponse | None:
        """On a server with no account yet, issue a fresh one-time invite for the first (admin) account.

        Earlier unused bootstrap invites are revoked: only the newest printed one works.
        """
        if self.mode is not RegistrationMode.INVITE:
            return None
        now = self._ctx.clock.now_ms()
        async with self._ctx.db.write() as tx:
            if await self._ctx.accounts.count_users(tx) > 0:
                return None
            await self._ctx.auth.revoke_bootstrap_invites(tx)
            code = new_invite_code()
            await self._ctx.auth.insert_invite(tx, secret_hash(code), None, now, now + ttl_ms, grants_admin=True)
            await self._ctx.auditor.record(tx, "invite.bootstrap", None, None, expires_at=now + ttl_ms)
        return InviteResponse(code=code, expires_at=now + ttl_ms)

    async def access_whoami(self, requester: Requester) -> WhoAmIResponse:
        """The requester's own account."""
        async with self._ctx.db.read() as tx:
            user = await self._ctx.accounts.get_user(tx, requester.user_id)
        if user is None:
            raise TokenIMError(ErrorCode.UNAUTHORIZED, "Your account no longer exists.")
        return WhoAmIResponse(
            user_id=user.user_id,
            device_id=requester.device_id,
            is_admin=user.is_admin,
            email=user.email,
            key_rotation_days=self.key_rotation_days,
        )
