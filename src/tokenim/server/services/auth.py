"""Login by key: a single-use, short-lived challenge signed by the device; hashed, expiring tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_device_id, check_user_id
from tokenim.core.limits import ACCESS_TOKEN_TTL_MS, CHALLENGE_TTL_MS, REFRESH_TOKEN_TTL_MS
from tokenim.core.signing import SigningKey, verify_ed25519
from tokenim.protocol.api import ChallengeResponse, LoginRequest, TokenResponse
from tokenim.protocol.auth import login_challenge_payload
from tokenim.server.services.common import NO_ORIGIN, Context, Origin, Requester, new_secret, secret_hash
from tokenim.server.services.limits import Kind
from tokenim.server.storage.auth import ChallengeRow, TokenRow
from tokenim.server.storage.database import Tx

ACCESS = "access"
REFRESH = "refresh"
LOGIN = "login"
LOGIN_FAILED = "login.failed"


@dataclass(frozen=True, slots=True)
class DeviceStanding:
    """Whether the user exists, the device's key if it is live, and whether the user revoked or ever had it."""

    user_exists: bool
    ed25519: str | None
    revoked: bool
    once_had: bool


class AuthService:
    """Issues challenges and tokens, and turns a bearer token into a `Requester`."""

    def __init__(self, ctx: Context, on_session_end: Callable[[str], None] = lambda _session: None) -> None:
        self._ctx = ctx
        self._on_session_end = on_session_end
        # A login for a device that does not exist is checked against this key, so it costs what a wrong
        # signature costs; nobody holds its private half.
        self._stand_in_key = SigningKey.generate().public_key

    async def do_challenge(self, user_id: str, device_id: str, origin: Origin = NO_ORIGIN) -> ChallengeResponse:
        """A fresh nonce bound to this server, user and device, valid for 60 seconds, usable once.

        Issued alike whether or not the user exists (docs/threat-model.md, "Accounts stay private"): only a
        device id the user once had is told apart (`device_revoked`, or `unknown_device` once removed), and
        such ids are known only to those who already know the account. That refusal is recorded as a failed
        login (stage `challenge`), with where it came from."""
        uid, did = check_user_id(user_id), check_device_id(device_id)
        now = self._ctx.clock.now_ms()
        nonce = new_secret(32)
        address = origin.ip or ""
        async with self._ctx.db.write() as tx:
            await self._ctx.limiter.check(tx, Kind.LOGIN, user_id=uid, address=address)
            await self._ctx.limiter.hit(tx, Kind.LOGIN_CHALLENGE, address=address)
            gone = self._gone(await self._standing(tx, uid, did), uid, did)
            if gone is not None:
                await self._failed(tx, uid, did, origin, gone.code, stage="challenge")
            else:
                await self._ctx.auth.purge_challenges(tx, now)
                await self._ctx.auth.insert_challenge(tx, secret_hash(nonce), ChallengeRow(uid, did, now + CHALLENGE_TTL_MS))
        if gone is not None:
            raise gone
        return ChallengeResponse(nonce=nonce, server_name=self._ctx.server_name, expires_at=now + CHALLENGE_TTL_MS)

    async def _failed(self, tx: Tx, user_id: str, device_id: str, origin: Origin, code: ErrorCode, stage: str = "login") -> None:
        """Record a failed login attempt, its reason (the error code) and where it came from. An attempt at a user
        that does not exist is recorded under no user, naming the one it claimed (someone registering that name
        later must not find it in their log)."""
        if await self._ctx.accounts.get_user(tx, user_id) is None:
            await self._ctx.auditor.record(
                tx, LOGIN_FAILED, None, None, origin=origin, reason=code.value, stage=stage, user=user_id, device=device_id
            )
            return
        await self._ctx.auditor.record(tx, LOGIN_FAILED, user_id, device_id, origin=origin, reason=code.value, stage=stage)

    async def _standing(self, tx: Tx, user_id: str, device_id: str) -> DeviceStanding:
        """Everything the login needs to know about a device, read with the same queries whatever the answer,
        so that the time taken does not tell a missing account from a present one."""
        user = await self._ctx.accounts.get_user(tx, user_id)
        device = await self._ctx.accounts.get_device(tx, user_id, device_id)
        revoked = await self._ctx.identity.is_revoked(tx, user_id, device_id)
        once_had = bool(await self._ctx.identity.keys_device_had(tx, user_id, device_id))
        return DeviceStanding(user is not None, device.ed25519 if device is not None else None, revoked, once_had)

    @staticmethod
    def _gone(standing: DeviceStanding, user_id: str, device_id: str) -> TokenIMError | None:
        """Why a device id the user once had can't log in; None for a live device or an id never seen."""
        if standing.ed25519 is not None or not (standing.once_had or standing.revoked):
            return None
        if standing.revoked:
            return TokenIMError(
                ErrorCode.DEVICE_REVOKED, f"Device {device_id} of {user_id} was revoked: it can never log in again."
            )
        return TokenIMError(ErrorCode.UNKNOWN_DEVICE, f"{user_id} has no device {device_id}: it was removed.")

    async def do_login(self, req: LoginRequest, origin: Origin = NO_ORIGIN) -> TokenResponse:
        """Check the signed challenge and issue an access/refresh token pair.

        The challenge is consumed whatever the outcome, so a failed answer can't be retried. A user or
        device that never existed fails exactly as a wrong signature does (same error, same work: the
        signature is checked against a stand-in key). Each failure counts toward the login limits of the
        address and (but for an unknown or spent challenge) the account. Every attempt is recorded in the
        audit log with where it came from: `login`, or `login.failed` with the reason.
        """
        now = self._ctx.clock.now_ms()
        uid, address = req.user_id, origin.ip or ""
        async with self._ctx.db.write() as tx:
            await self._ctx.limiter.check(tx, Kind.LOGIN, user_id=uid, address=address)
            challenge = await self._ctx.auth.take_challenge(tx, secret_hash(req.nonce))
            refusal, tokens = self._judge_challenge(challenge, req, now), None
            if refusal is not None:
                await self._failed(tx, uid, req.device_id, origin, refusal.code)
            else:
                refusal, tokens = await self._answer(tx, req, now, origin)
            if refusal is not None and refusal.code is not ErrorCode.CHALLENGE_EXPIRED:  # a slow client is no guess
                # A made-up or spent nonce is bound to no account: it counts against the address only, or
                # anyone could lock an account out without even asking for its challenges.
                account = None if refusal.code is ErrorCode.CHALLENGE_INVALID else uid
                await self._ctx.limiter.failed(tx, Kind.LOGIN, user_id=account, address=address)
        if refusal is not None:
            raise refusal
        assert tokens is not None
        return tokens

    @staticmethod
    def _judge_challenge(challenge: ChallengeRow | None, req: LoginRequest, now: int) -> TokenIMError | None:
        if challenge is None or (challenge.user_id, challenge.device_id) != (req.user_id, req.device_id):
            return TokenIMError(
                ErrorCode.CHALLENGE_INVALID, "That login challenge is unknown or was already used: ask for a new one."
            )
        if challenge.expires_at <= now:
            return TokenIMError(ErrorCode.CHALLENGE_EXPIRED, "That login challenge has expired: ask for a new one.")
        return None

    async def _answer(
        self, tx: Tx, req: LoginRequest, now: int, origin: Origin
    ) -> tuple[TokenIMError | None, TokenResponse | None]:
        """Check the signature on a live challenge: tokens, or the refusal (recorded in the audit log)."""
        uid, did = req.user_id, req.device_id
        standing = await self._standing(tx, uid, did)
        payload = login_challenge_payload(server_name=self._ctx.server_name, user_id=uid, device_id=did, nonce=req.nonce)
        valid = verify_ed25519(standing.ed25519 or self._stand_in_key, payload, req.signature) and standing.ed25519 is not None
        refusal = self._gone(standing, uid, did)
        if refusal is None and valid:
            tokens = await self._issue(tx, uid, did, new_secret(16), now)
            await self._ctx.accounts.touch_device(tx, uid, did, now)
            await self._ctx.limiter.succeeded(tx, Kind.LOGIN, user_id=uid)
            await self._ctx.auditor.record(tx, LOGIN, uid, did, origin=origin)
            return None, tokens
        refusal = refusal or TokenIMError(
            ErrorCode.BAD_SIGNATURE, "The signature on the login challenge does not verify with this device's key."
        )
        await self._failed(tx, uid, did, origin, refusal.code)
        return refusal, None

    async def issue_session(self, tx: Tx, user_id: str, device_id: str, now: int) -> TokenResponse:
        """A new session's token pair, inside the caller's transaction (a device that has just been added)."""
        return await self._issue(tx, user_id, device_id, new_secret(16), now)

    async def _issue(self, tx: Tx, user_id: str, device_id: str, session_id: str, now: int) -> TokenResponse:
        access, refresh = new_secret(32), new_secret(32)
        access_exp, refresh_exp = now + ACCESS_TOKEN_TTL_MS, now + REFRESH_TOKEN_TTL_MS
        await self._ctx.auth.insert_token(
            tx, secret_hash(access), TokenRow(ACCESS, session_id, user_id, device_id, access_exp), now
        )
        await self._ctx.auth.insert_token(
            tx, secret_hash(refresh), TokenRow(REFRESH, session_id, user_id, device_id, refresh_exp), now
        )
        return TokenResponse(
            user_id=user_id,
            device_id=device_id,
            access_token=access,
            access_expires_at=access_exp,
            refresh_token=refresh,
            refresh_expires_at=refresh_exp,
        )

    async def do_refresh(self, refresh_token: str) -> TokenResponse:
        """Trade a refresh token for a new pair; the old pair stops working (rotation).

        The refresh token is taken (deleted) atomically, so racing refreshes can't both win.
        """
        now = self._ctx.clock.now_ms()
        async with self._ctx.db.write() as tx:
            row = await self._ctx.auth.take_token(tx, secret_hash(refresh_token), REFRESH)
            if row is None:
                raise TokenIMError(ErrorCode.UNAUTHORIZED, "That refresh token is not valid: log in again.")
            await self._ctx.auth.delete_session(tx, row.session_id)
            if row.expires_at <= now:
                expired = True
            else:
                expired = False
                tokens = await self._issue(tx, row.user_id, row.device_id, row.session_id, now)
        if expired:
            raise TokenIMError(ErrorCode.TOKEN_EXPIRED, "Your session has expired: log in again.")
        return tokens

    async def do_logout(self, requester: Requester) -> None:
        """End the current session: both its tokens stop working."""
        async with self._ctx.db.write() as tx:
            await self._ctx.auth.delete_session(tx, requester.session_id)
            await self._ctx.auditor.record(tx, "logout", requester.user_id, requester.device_id)
        self._on_session_end(requester.session_id)

    async def do_logout_all(self, requester: Requester) -> int:
        """End every session of the requester's account, on all their devices; returns how many ended."""
        async with self._ctx.db.write() as tx:
            sessions = await self._ctx.auth.delete_user_sessions(tx, requester.user_id)
            await self._ctx.auditor.record(tx, "logout_all", requester.user_id, requester.device_id)
        for session_id in sessions:
            self._on_session_end(session_id)
        return len(sessions)

    async def access_requester(self, authorization: str | None) -> Requester:
        """Resolve an `Authorization: Bearer <token>` header to the requester, or raise 401."""
        if not authorization or not authorization.startswith("Bearer ") or len(authorization) > 200:
            raise TokenIMError(ErrorCode.UNAUTHORIZED, "This request needs an access token: log in first.")
        token = authorization[len("Bearer ") :].strip()
        async with self._ctx.db.read() as tx:
            row = await self._ctx.auth.get_token(tx, secret_hash(token))
            if row is None or row.kind != ACCESS:
                raise TokenIMError(ErrorCode.UNAUTHORIZED, "Your access token is not valid: log in again.")
            if row.expires_at <= self._ctx.clock.now_ms():
                raise TokenIMError(ErrorCode.TOKEN_EXPIRED, "Your access token has expired: refresh it or log in again.")
            user = await self._ctx.accounts.get_user(tx, row.user_id)
        if user is None:
            raise TokenIMError(ErrorCode.UNAUTHORIZED, "Your account no longer exists.")
        return Requester(row.user_id, row.device_id, row.session_id, user.is_admin, row.expires_at)
