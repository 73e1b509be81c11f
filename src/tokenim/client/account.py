"""The account of this device: making it (registration), unlocking it (open), and its sessions on the
server (login by a signed challenge, refresh, logout)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from cryptography.exceptions import InvalidTag

from tokenim.client.state import DeviceState
from tokenim.client.store import LOCK_FILE, KdfParams, ProfileStore
from tokenim.client.stores import Store
from tokenim.client.transport import Transport, call
from tokenim.core.clock import Clock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import DeviceId, UserId, make_user_id, new_device_id
from tokenim.core.signing import PublicMasterKey, SigningKey
from tokenim.crypto.device import DeviceIdentity
from tokenim.protocol.api import (
    ChallengeResponse,
    HealthResponse,
    LogoutAllResponse,
    OkResponse,
    RegisterResponse,
    TokenResponse,
    WhoAmIResponse,
)

if TYPE_CHECKING:
    from tokenim.client.keys import Keys


class Account:
    """`client.account`: this device's session on the server."""

    def __init__(self, state: DeviceState, transport: Transport, keys: Keys) -> None:
        self._state = state
        self._transport = transport
        self._keys = keys

    async def login(self) -> TokenResponse:
        """Prove this device holds its key (signed challenge) and keep the tokens, encrypted."""
        previous = self._transport.tokens()
        ident = {"user_id": self._state.user_id, "device_id": self._state.device_id}
        challenge = await self._transport.post("/v1/login/challenge", ident, ChallengeResponse, auth=False)
        expected = self._state.store.get_meta("server_name")
        if challenge.server_name != expected:
            raise TokenIMError(
                ErrorCode.BAD_RESPONSE, f"The server calls itself {challenge.server_name}, not {expected}: refusing to sign."
            )
        signature = self._state.identity.sign_login_challenge(server_name=challenge.server_name, nonce=challenge.nonce)
        body = {**ident, "nonce": challenge.nonce, "signature": signature}
        tokens = await self._transport.post("/v1/login", body, TokenResponse, auth=False)
        self._transport.keep_tokens(tokens)
        await self._transport.end_session(*previous)  # a second login must not leave the first session alive
        await self._keys.replenish()
        return tokens

    @property
    def logged_in(self) -> bool:
        """Whether this device holds a session's tokens (the server may still have ended it)."""
        return self._transport.tokens()[0] is not None

    def access_token(self) -> str:
        """The access token of this session, for a program that makes its own requests (a raw WebSocket,
        a benchmark). Treat it as a password: it goes in an Authorization header and nowhere else."""
        return self._transport.access_token()

    async def refresh(self) -> None:
        """Swap the refresh token for a new pair."""
        await self._transport.refresh()

    async def logout(self, *, everywhere: bool = False) -> int:
        """End this session (or, `everywhere`, every session of the account) on the server, then forget the
        tokens here; returns how many sessions the server ended (0: it had already ended this one).

        If the server can't be reached or fails, the tokens are kept: the session is still valid there, and
        forgetting it here would leave it usable for weeks with no way left to end it. A revoked device has no
        session left anywhere: its tokens are forgotten and `device_revoked` is raised, saying so.
        """
        try:
            if everywhere:
                ended = (await self._transport.request("POST", "/v1/logout/all", LogoutAllResponse)).sessions_ended
            else:
                await self._transport.request("POST", "/v1/logout", OkResponse)
                ended = 1
        except TokenIMError as err:
            if err.code is ErrorCode.DEVICE_REVOKED:
                self._transport.keep_tokens(None)
                raise TokenIMError(
                    err.code,
                    f"{err.message.rstrip('.')}. The server had already ended its sessions; its tokens were forgotten here.",
                    details=err.details,
                ) from None
            if err.code not in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
                raise
            ended = 0  # the server no longer honours this session: nothing is left to end there
        self._transport.keep_tokens(None)
        return ended

    async def whoami(self) -> WhoAmIResponse:
        """Who the server thinks this session is; its key-rotation period is remembered for `keys.rotation_due`."""
        me = await self._transport.get("/v1/whoami", WhoAmIResponse)
        self._state.store.set_meta({"key_rotation_days": str(me.key_rotation_days)})
        return me


async def register(
    profile: Path | Store,
    passphrase: str | None,
    *,
    server_url: str,
    username: str,
    clock: Clock,
    email: str | None,
    invite: str | None,
    kdf: KdfParams | None,
    transport: httpx.AsyncBaseTransport | None,
) -> tuple[DeviceState, Transport]:
    """Make the user's master key and this device's keys here and register them (not logged in yet).

    If the server refuses, a new profile directory is removed again so the command can simply be retried.
    """
    _check_empty(profile)
    http = httpx.AsyncClient(base_url=server_url.rstrip("/"), transport=transport, timeout=30.0)
    try:
        health = await call(http, "GET", "/health", HealthResponse)
        user_id = make_user_id(username, health.server_name)
        now = clock.now_ms()
        identity = DeviceIdentity.create(user_id, new_device_id(), now)
        store = ProfileStore.create(profile, _need(passphrase), kdf) if isinstance(profile, Path) else profile
    except BaseException:
        await http.aclose()
        raise
    conn = Transport(http, store)
    registered = False
    try:
        state = DeviceState(store, identity, clock)
        meta = {"server_url": server_url, "server_name": health.server_name, "user_id": user_id}
        meta |= {"device_id": identity.device_id, "master_key_version": str(identity.master_version)}
        store.set_meta(meta | {"master_created_at": str(now), "device_created_at": str(now)})
        state.save_identity(master=True)
        upload = identity.keys_to_upload(0, need_fallback=True)
        state.save_identity()
        body = {
            "username": username,
            "email": email,
            "invite": None if invite is None else normalise_invite(invite),
            "master_key": identity.master_key_object(),
            "device_keys": identity.device_keys_object(now),
            "one_time_keys": upload.one_time_keys,
            "fallback_keys": upload.fallback_keys,
        }
        await conn.post("/v1/register", body, RegisterResponse, auth=False)
        registered = True
        identity.mark_keys_as_published()
        state.save_identity()
    except BaseException as exc:
        await _close(conn, store)
        if isinstance(profile, Path) and not registered and _refused(exc):
            _remove_profile(profile)  # the server said no: nothing exists there, so nothing is lost here
        elif not registered and isinstance(exc, Exception) and not _refused(exc):
            where = f"Your new keys are kept in {profile}" if isinstance(profile, Path) else "Your new keys are kept in the store"
            raise TokenIMError(
                ErrorCode.SERVER_UNREACHABLE,
                f"Registration may or may not have completed ({_sentence(exc)}). {where}: "
                "try `tokenim login`; if it says the user is unknown, remove that directory and register again.",
            ) from exc
        raise
    return state, conn


def open_device(
    profile: Path | Store, passphrase: str | None, *, clock: Clock, transport: httpx.AsyncBaseTransport | None
) -> tuple[DeviceState, Transport]:
    """Unlock a profile (or a store) made by `register`."""
    store = ProfileStore.open(profile, _need(passphrase)) if isinstance(profile, Path) else profile
    try:
        seed, pickle = store.get_secret("master_seed"), store.get_secret("olm_account")
        user_id, device_id, server_url = store.get_meta("user_id"), store.get_meta("device_id"), store.get_meta("server_url")
        master_public = store.get_meta("master_public")  # a device linked with the signature only (client/link.py)
        if (seed is None and not master_public) or pickle is None or not user_id or not device_id or not server_url:
            raise TokenIMError(ErrorCode.PROFILE_MISSING, f"The profile in {profile} holds no account: register first.")
        identity = DeviceIdentity(
            UserId(user_id),
            DeviceId(device_id),
            DeviceIdentity.unpickle_account(pickle.decode(), store.pickle_key),
            SigningKey.from_seed(seed) if seed is not None else PublicMasterKey(str(master_public)),
            int(store.get_meta("master_key_version") or 1),
            int(store.get_meta("master_created_at") or 0),
        )
        state = DeviceState(store, identity, clock)
    except (InvalidTag, ValueError, KeyError, TypeError):
        store.close()
        raise TokenIMError(
            ErrorCode.PROFILE_MISSING, f"The profile in {profile} is damaged: its records cannot be read."
        ) from None
    except BaseException:
        store.close()
        raise
    return state, Transport.connect(server_url, store, transport)


def normalise_invite(code: str) -> str:
    """An invite code as the server made it (`ABCD-EFGH-…`), whatever the case, dashes or spaces typed."""
    chars = "".join(c for c in code if c not in "- \t").upper()
    if len(chars) != 24 or not chars.isalnum():
        return code.strip()  # not the server's form: sent as typed, the server says whether it is valid
    return "-".join(chars[i : i + 4] for i in range(0, 24, 4))


def _check_empty(profile: Path | Store) -> None:
    if isinstance(profile, Path):
        if ProfileStore.exists(profile):
            raise TokenIMError(ErrorCode.PROFILE_EXISTS, f"There is already a profile in {profile}: use another --profile.")
    elif profile.get_meta("user_id"):
        raise TokenIMError(ErrorCode.PROFILE_EXISTS, "This store already holds an account: use a new one.")


def _need(passphrase: str | None) -> str:
    if passphrase is None:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "A profile on disk needs a passphrase.")
    return passphrase


async def _close(conn: Transport, store: Store) -> None:
    try:
        await conn.close()
    finally:
        store.close()


def _sentence(exc: BaseException) -> str:
    return exc.message.rstrip(".") if isinstance(exc, TokenIMError) else "the connection failed"


def _refused(exc: BaseException) -> bool:
    """A definite refusal from the server (not a lost answer, a crash or an interruption)."""
    unsure = (ErrorCode.SERVER_UNREACHABLE, ErrorCode.BAD_RESPONSE, ErrorCode.INTERNAL)
    return isinstance(exc, TokenIMError) and exc.code not in unsure


def _remove_profile(profile_dir: Path) -> None:
    """Undo a registration the server refused: remove the profile file and, if now empty, its directory."""
    for path in [*profile_dir.glob(ProfileStore.db_path(profile_dir).name + "*"), profile_dir / LOCK_FILE]:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        profile_dir.rmdir()


__all__ = ["Account", "normalise_invite", "open_device", "register"]
