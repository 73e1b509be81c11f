"""Two-factor authentication (TOTP, RFC 6238, through pyotp) and the step-up check sensitive operations call.

`require_second_factor(tx, who, code, now)` is the one check: with 2FA on, a change guarded by it needs a
current code (the step before or after the server's is accepted), each code once (the last step used is kept
per user). A wrong or replayed code is refused with `otp_invalid`; the refusal is counted and audited
(`2fa.failed`) even though the guarded change rolls back (`RefusalWithRecord`), and five in a row lock the
account's 2FA for 15 minutes (`rate_limited`). The TOTP secret is sealed by the server key (secret_box.py);
recovery codes are kept as SHA-256 hashes (80 random bits each) and used once.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, Protocol

import pyotp

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.two_factor import (
    MAX_OTP_FAILURES,
    OTP_HEADER,
    OTP_LOCK_MS,
    RECOVERY_CODE_ALPHABET,
    RECOVERY_CODE_CHARS,
    RECOVERY_CODE_COUNT,
    TOTP_DIGITS,
    TOTP_SKEW_STEPS,
    TOTP_STEP_SECONDS,
    TwoFactorConfirmResponse,
    TwoFactorSetupResponse,
    TwoFactorStatusResponse,
    format_recovery_code,
    normalise_recovery_code,
)
from tokenim.server.secret_box import SecretBox
from tokenim.server.services.common import Context, Requester, secret_hash
from tokenim.server.storage.database import RefusalWithRecord, Tx
from tokenim.server.storage.two_factor import TwoFactorRow, TwoFactorStore

NEEDS_CODE = (
    f"This needs a current two-factor code: the {TOTP_DIGITS} digits your authenticator app shows now "
    f"(the {OTP_HEADER} header; `tokenim ... --otp CODE`)."
)


class SecondFactorRefused(TokenIMError, RefusalWithRecord):
    """`otp_invalid`, carrying the failure to count and audit once the guarded change has rolled back."""


class OtpAttempts(Protocol):
    """How wrong codes are counted and when they lock: one small interface, so that general rate limits can
    take over (`[limits]`) without touching the check."""

    async def locked_until(self, tx: Tx, user_id: str, now: int) -> int | None:
        """When the lock on this account's 2FA ends, or None if it is not locked."""
        ...

    async def failed(self, tx: Tx, user_id: str, now: int) -> int | None:
        """Count a wrong code; returns when the lock it started ends, or None."""
        ...

    async def succeeded(self, tx: Tx, user_id: str) -> None:
        """A good code: wrong ones before it no longer count."""
        ...


class StoredOtpAttempts:
    """`MAX_OTP_FAILURES` wrong codes in a row lock the account's 2FA for `OTP_LOCK_MS`, kept in its row."""

    def __init__(self, store: TwoFactorStore, max_failures: int = MAX_OTP_FAILURES, lock_ms: int = OTP_LOCK_MS) -> None:
        self._store = store
        self._max = max_failures
        self._lock_ms = lock_ms

    async def locked_until(self, tx: Tx, user_id: str, now: int) -> int | None:
        row = await self._store.get(tx, user_id)
        return row.locked_until if row is not None and row.locked_until > now else None

    async def failed(self, tx: Tx, user_id: str, now: int) -> int | None:
        return await self._store.count_failure(tx, user_id, now, self._max, self._lock_ms)

    async def succeeded(self, tx: Tx, user_id: str) -> None:
        await self._store.reset_failures(tx, user_id)


def totp_code(secret: str, step: int) -> str:
    """The code of time step `step` (seconds since the epoch // 30) for a base32 secret."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS).generate_otp(step)


def time_step(now_ms: int) -> int:
    return now_ms // 1000 // TOTP_STEP_SECONDS


def matching_steps(secret: str, code: str, now_ms: int) -> list[int]:
    """The steps around now (± `TOTP_SKEW_STEPS`) whose code is `code`, compared in constant time."""
    current = time_step(now_ms)
    steps = range(current - TOTP_SKEW_STEPS, current + TOTP_SKEW_STEPS + 1)
    return [s for s in steps if hmac.compare_digest(totp_code(secret, s).encode(), code.encode())]


def new_recovery_code() -> str:
    return "".join(secrets.choice(RECOVERY_CODE_ALPHABET) for _ in range(RECOVERY_CODE_CHARS))


def _recovery_hash(user_id: str, code: str) -> str:
    return secret_hash(f"tokenim.2fa_recovery.v1:{user_id}:{normalise_recovery_code(code)}")


def _minutes(ms: int) -> str:
    minutes = max(1, -(-ms // 60_000))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class TwoFactorService:
    """Setting 2FA up, turning it off, its status, the step-up check and the recovery codes."""

    def __init__(self, ctx: Context, box: SecretBox, attempts: OtpAttempts | None = None) -> None:
        self._ctx = ctx
        self._box = box
        self._store = TwoFactorStore()
        self._attempts = attempts or StoredOtpAttempts(self._store)

    def _secret(self, row: TwoFactorRow) -> str:
        return self._box.decrypt(row.secret_sealed, f"totp:{row.user_id}").decode("ascii")

    # ---- setting up, status, turning off ------------------------------------------------------------

    async def do_enable(self, requester: Requester) -> TwoFactorSetupResponse:
        """Start a setup: a new secret (160 bits), sealed; it takes effect once a code from it is confirmed.
        An earlier setup not confirmed is replaced."""
        uid, now = requester.user_id, self._ctx.clock.now_ms()
        secret = pyotp.random_base32()
        async with self._ctx.db.write() as tx:
            row = await self._store.get(tx, uid)
            if row is not None and row.enabled:
                raise TokenIMError(
                    ErrorCode.TWO_FACTOR_ON,
                    "Two-factor authentication is already on. To move it to another app, turn it off first "
                    "(`tokenim 2fa disable`), then enable it again.",
                )
            await self._store.start(tx, uid, self._box.encrypt(secret.encode("ascii"), f"totp:{uid}"), now)
        totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS)
        uri = totp.provisioning_uri(name=uid, issuer_name=f"TokenIM {self._ctx.server_name}")
        return TwoFactorSetupResponse(secret=secret, uri=uri)

    async def do_confirm(self, requester: Requester, code: str) -> TwoFactorConfirmResponse:
        """Turn 2FA on with a code from the new secret (that code is spent); answers the ten recovery codes,
        which the server keeps only as hashes."""
        uid, now = requester.user_id, self._ctx.clock.now_ms()
        codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        async with self._ctx.db.write() as tx:
            row = await self._store.get(tx, uid)
            if row is None:
                raise TokenIMError(ErrorCode.TWO_FACTOR_OFF, "No two-factor setup is waiting: run `tokenim 2fa enable` first.")
            if row.enabled:
                raise TokenIMError(ErrorCode.TWO_FACTOR_ON, "Two-factor authentication is already on.")
            steps = matching_steps(self._secret(row), code, now)
            if not steps:
                raise TokenIMError(
                    ErrorCode.OTP_INVALID,
                    "That code does not match the new secret: check that the authenticator app took it (and that its "
                    "clock is right), then confirm with the code it shows now. Two-factor authentication is still off.",
                )
            await self._store.turn_on(tx, uid, max(steps), now, [_recovery_hash(uid, c) for c in codes])
            await self._ctx.auditor.record(tx, "2fa.enabled", uid, requester.device_id)
        return TwoFactorConfirmResponse(recovery_codes=[format_recovery_code(c) for c in codes])

    async def access_status(self, requester: Requester) -> TwoFactorStatusResponse:
        uid, now = requester.user_id, self._ctx.clock.now_ms()
        async with self._ctx.db.read() as tx:
            row = await self._store.get(tx, uid)
            left = await self._store.recovery_codes_left(tx, uid)
            locked = await self._attempts.locked_until(tx, uid, now)
        enabled = row is not None and row.enabled
        return TwoFactorStatusResponse(
            enabled=enabled,
            pending=row is not None and not row.enabled,
            enabled_at=row.enabled_at if row is not None else None,
            recovery_codes_left=left if enabled else 0,
            locked_until=locked if enabled else None,
        )

    async def do_disable(self, requester: Requester, code: str | None, recovery_code: str | None) -> None:
        """Turn 2FA off with a current code or, when the authenticator is lost, an unused recovery code."""
        uid, now = requester.user_id, self._ctx.clock.now_ms()
        async with self._ctx.db.write() as tx:
            row = await self._store.get(tx, uid)
            if row is None or not row.enabled:
                raise TokenIMError(ErrorCode.TWO_FACTOR_OFF, "Two-factor authentication is not on.")
            if recovery_code is None:
                await self.require_second_factor(tx, requester, code, now)
            else:
                await self._refuse_if_locked(tx, uid, now)
                if not await self.use_recovery_code(tx, uid, recovery_code):
                    raise self._refused(
                        uid,
                        requester.device_id,
                        "wrong_recovery_code",
                        "That recovery code is wrong or was already used: each works once.",
                        now,
                    )
            await self._store.remove(tx, uid)
            by = "code" if recovery_code is None else "recovery_code"
            await self._ctx.auditor.record(tx, "2fa.disabled", uid, requester.device_id, by=by)

    # ---- the step-up check ------------------------------------------------------------------------------

    async def require_second_factor(self, tx: Tx, who: Requester | str, code: str | None, now: int) -> None:
        """With 2FA on for the user (`who`: the requester, or a user id when there is no session), `code` must
        be a current TOTP code not used before; it is spent in `tx`, so only if the guarded change commits.
        Call it inside the change's transaction, before the change. Refusals: `otp_required` (no code),
        `otp_invalid` (counted and audited as `2fa.failed`, whatever becomes of `tx`), `rate_limited` (locked)."""
        user_id, device_id = (who.user_id, who.device_id) if isinstance(who, Requester) else (who, None)
        row = await self._store.get(tx, user_id)
        if row is None or not row.enabled:
            return
        await self._refuse_if_locked(tx, user_id, now)
        if code is None:
            raise TokenIMError(ErrorCode.OTP_REQUIRED, NEEDS_CODE)
        steps = matching_steps(self._secret(row), code, now) if len(code) == TOTP_DIGITS and code.isascii() else []
        fresh = [s for s in steps if s > row.last_step]
        if fresh and await self._store.spend_step(tx, user_id, max(fresh)):
            await self._attempts.succeeded(tx, user_id)
            return
        if steps:
            raise self._refused(
                user_id,
                device_id,
                "replayed",
                "That two-factor code was already used: wait for the next one (codes change every 30 seconds).",
                now,
            )
        raise self._refused(
            user_id,
            device_id,
            "wrong_code",
            f"That two-factor code is wrong: give the {TOTP_DIGITS} digits your authenticator app shows now (and check "
            f"its clock). After {MAX_OTP_FAILURES} wrong codes in a row, two-factor checks lock for {_minutes(OTP_LOCK_MS)}.",
            now,
        )

    async def _refuse_if_locked(self, tx: Tx, user_id: str, now: int) -> None:
        locked = await self._attempts.locked_until(tx, user_id, now)
        if locked is not None:
            raise TokenIMError(
                ErrorCode.RATE_LIMITED,
                f"Too many wrong two-factor codes: this account's two-factor checks are locked; try again in "
                f"{_minutes(locked - now)}.",
                details={"retry_after_ms": locked - now},
            )

    def _refused(self, user_id: str, device_id: str | None, reason: str, message: str, now: int) -> SecondFactorRefused:
        refusal = SecondFactorRefused(ErrorCode.OTP_INVALID, message)

        async def record(tx: Tx) -> None:
            locked = await self._attempts.failed(tx, user_id, now)
            details: dict[str, Any] = {"reason": reason}
            if locked is not None:
                details["locked_until"] = locked
            await self._ctx.auditor.record(tx, "2fa.failed", user_id, device_id, **details)

        refusal.after_rollback = record
        return refusal

    # ---- recovery codes -------------------------------------------------------------------------------

    async def use_recovery_code(self, tx: Tx, user_id: str, code: str) -> bool:
        """Spend one of the user's unused recovery codes (any case, dashes and spaces ignored); recorded as
        `2fa.recovery_code_used`. False for a wrong or used code, or when 2FA is off: the caller refuses, and
        limits how often it may be tried."""
        row = await self._store.get(tx, user_id)
        if row is None or not row.enabled:
            return False
        if not await self._store.use_recovery_code(tx, user_id, _recovery_hash(user_id, code), self._ctx.clock.now_ms()):
            return False
        left = await self._store.recovery_codes_left(tx, user_id)
        await self._ctx.auditor.record(tx, "2fa.recovery_code_used", user_id, None, codes_left=left)
        return True


__all__ = ["OtpAttempts", "SecondFactorRefused", "StoredOtpAttempts", "TwoFactorService", "totp_code"]
