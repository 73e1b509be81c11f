"""The async SDK: the only client code that talks to a server. The CLI and bots are built on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography.exceptions import InvalidTag
from pydantic import BaseModel, ValidationError

from tokenim.client.keys import VerifiedUserKeys, verify_query_response
from tokenim.client.store import LOCK_FILE, KdfParams, ProfileStore
from tokenim.core.clock import Clock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import DeviceId, UserId, make_user_id, new_device_id
from tokenim.core.signing import SigningKey, fingerprint
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.machine import CryptoMachine
from tokenim.crypto.persist import export_changes, load_records
from tokenim.protocol.api import (
    ChallengeResponse,
    DevicesResponse,
    HealthResponse,
    InviteResponse,
    KeyCountsResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    LogoutAllResponse,
    OkResponse,
    RegisterResponse,
    TokenResponse,
    WhoAmIResponse,
)

M = TypeVar("M", bound=BaseModel)
# Send numbers in flight at once stay closer together than this, so none arrives further below the
# highest one than the server remembers (62 numbers; docs/protocol.md, "Forked profiles").
SEND_WINDOW = 32
C = TypeVar("C", bound="AccountClient")


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


class AccountClient:
    """A device's account: registration, login, devices and keys. `Client` adds messaging on top."""

    def __init__(self, store: ProfileStore, identity: DeviceIdentity, http: httpx.AsyncClient, clock: Clock) -> None:
        self.store = store
        self.identity = identity
        self._http = http
        self._clock = clock
        self.machine = CryptoMachine(identity)
        load_records(self.machine, store.all_records(), store.pickle_key)
        self._rotate_if_copied()
        self._in_flight: set[int] = set()
        self._window = asyncio.Condition()

    def persist_crypto(
        self,
        *,
        send_seq: int | None = None,
        records: dict[str, dict[str, bytes | None]] | None = None,
        meta: dict[str, str] | None = None,
    ) -> None:
        """Write what changed in the crypto state (sessions, keys, seen indexes, the account) to the profile,
        with the send number about to be used and any other `records` and `meta`, in one durable transaction."""
        changes = export_changes(self.machine, self.store.pickle_key)
        for kind, items in (records or {}).items():
            changes.setdefault(kind, {}).update(items)
        secrets: dict[str, bytes | None] = {}
        if self.machine.olm.account_dirty:
            self.machine.olm.account_dirty = False
            secrets["olm_account"] = self.identity.pickle_account(self.store.pickle_key).encode()
        meta = dict(meta or {})
        if send_seq is not None:
            meta["send_seq"] = str(send_seq)
        self.store.save(secrets=secrets, records=changes, meta=meta)

    # ---- forked profiles (docs/protocol.md, "Forked profiles") --------------------------------

    def _rotate_if_copied(self) -> None:
        """A profile file that is not where it was last opened may be a copy (or a restored backup) of one that
        lives on: its outbound sessions may be used by the other copy too, so none of them is used again."""
        here, before = self.store.location(), self.store.get_meta("location")
        if here == before:
            return
        if before is not None:
            self.machine.rooms.discard_outbound("copied")
            self.persist_crypto()
        self.store.set_meta({"location": here})

    def next_send_seq(self) -> int:
        """The number for the next send of this device; refused at once if this copy is known to be stale."""
        if self.store.get_meta("forked"):
            raise TokenIMError(ErrorCode.PROFILE_FORKED, _FORKED_MESSAGE.format(device=self.device_id))
        return int(self.store.get_meta("send_seq") or 0) + 1

    def _window_has_room(self) -> bool:
        return not self._in_flight or self.next_send_seq() - min(self._in_flight) < SEND_WINDOW

    @contextlib.asynccontextmanager
    async def numbered_send(self) -> AsyncIterator[int]:
        """Take the next send number and save it with the crypto state (before anything leaves), then hold it
        while the request is in flight. Waits while the oldest number in flight is SEND_WINDOW behind."""
        async with self._window:
            await self._window.wait_for(self._window_has_room)
            seq = self.next_send_seq()
            self.persist_crypto(send_seq=seq)
            self._in_flight.add(seq)
        try:
            yield seq
        finally:
            self._in_flight.discard(seq)
            async with self._window:
                self._window.notify_all()

    def profile_forked(self) -> TokenIMError:
        """The server refused a send number already used: this copy is stale. It stops sending for good, and
        drops its outbound sessions (the other copy holds them too)."""
        self.machine.rooms.discard_outbound("forked")
        self.persist_crypto()
        self.store.set_meta({"forked": "1"})
        return TokenIMError(ErrorCode.PROFILE_FORKED, _FORKED_MESSAGE.format(device=self.device_id))

    # ---- lifecycle -------------------------------------------------------------------------

    @staticmethod
    def _http_client(server_url: str, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=server_url.rstrip("/"), transport=transport, timeout=30.0)

    @classmethod
    async def register(
        cls: type[C],
        profile_dir: Path,
        passphrase: str,
        *,
        server_url: str,
        username: str,
        clock: Clock,
        email: str | None = None,
        invite: str | None = None,
        kdf: KdfParams | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> C:
        """Make the user's master key and this device's keys here, register them, then log in.

        If the server refuses, the new profile is removed again so the command can simply be retried.
        """
        if ProfileStore.exists(profile_dir):
            raise TokenIMError(ErrorCode.PROFILE_EXISTS, f"There is already a profile in {profile_dir}: use another --profile.")
        http = cls._http_client(server_url, transport)
        try:
            health = await _call(http, "GET", "/health", HealthResponse)
            user_id = make_user_id(username, health.server_name)
            now = clock.now_ms()
            identity = DeviceIdentity.create(user_id, new_device_id(), now)
            store = ProfileStore.create(profile_dir, passphrase, kdf)
        except BaseException:
            await http.aclose()
            raise
        client = cls(store, identity, http, clock)
        registered = False
        try:
            client.store.set_meta(
                {
                    "server_url": server_url,
                    "server_name": health.server_name,
                    "user_id": user_id,
                    "device_id": identity.device_id,
                    "master_key_version": str(identity.master_version),
                    "master_created_at": str(now),
                    "device_created_at": str(now),
                }
            )
            client._save_identity(master=True)
            upload = identity.keys_to_upload(0, need_fallback=True)
            client._save_identity()
            body = {
                "username": username,
                "email": email,
                "invite": None if invite is None else normalise_invite(invite),
                "master_key": identity.master_key_object(),
                "device_keys": identity.device_keys_object(now),
                "one_time_keys": upload.one_time_keys,
                "fallback_keys": upload.fallback_keys,
            }
            await client._post("/v1/register", body, RegisterResponse, auth=False)
            registered = True
            identity.mark_keys_as_published()
            client._save_identity()
            await client.login()
        except BaseException as exc:
            await client.close()
            if not registered and _refused(exc):
                _remove_profile(profile_dir)  # the server said no: nothing exists there, so nothing is lost here
            elif not registered and isinstance(exc, Exception):
                raise TokenIMError(
                    ErrorCode.SERVER_UNREACHABLE,
                    f"Registration may or may not have completed ({_sentence(exc)}). Your new keys are kept in {profile_dir}: "
                    "try `tokenim login`; if it says the user is unknown, remove that directory and register again.",
                ) from exc
            raise
        return client

    @classmethod
    async def open(
        cls: type[C], profile_dir: Path, passphrase: str, *, clock: Clock, transport: httpx.AsyncBaseTransport | None = None
    ) -> C:
        """Unlock a profile made by `register`."""
        store = ProfileStore.open(profile_dir, passphrase)
        try:
            seed, pickle = store.get_secret("master_seed"), store.get_secret("olm_account")
            user_id, device_id, server_url = store.get_meta("user_id"), store.get_meta("device_id"), store.get_meta("server_url")
            if seed is None or pickle is None or not user_id or not device_id or not server_url:
                raise TokenIMError(ErrorCode.PROFILE_MISSING, f"The profile in {profile_dir} holds no account: register first.")
            identity = DeviceIdentity(
                UserId(user_id),
                DeviceId(device_id),
                DeviceIdentity.unpickle_account(pickle.decode(), store.pickle_key),
                SigningKey.from_seed(seed),
                int(store.get_meta("master_key_version") or 1),
                int(store.get_meta("master_created_at") or 0),
            )
            http = cls._http_client(server_url, transport)
            try:
                return cls(store, identity, http, clock)
            except BaseException:
                await http.aclose()
                raise
        except (InvalidTag, ValueError, KeyError, TypeError):
            store.close()
            raise TokenIMError(
                ErrorCode.PROFILE_MISSING, f"The profile in {profile_dir} is damaged: its records cannot be read."
            ) from None
        except BaseException:
            store.close()
            raise

    async def close(self) -> None:
        try:
            await self._http.aclose()
        finally:
            self.store.close()

    async def __aenter__(self: C) -> C:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _save_identity(self, *, master: bool = False) -> None:
        secrets: dict[str, bytes | None] = {"olm_account": self.identity.pickle_account(self.store.pickle_key).encode()}
        if master:
            secrets["master_seed"] = self.identity.master.seed()
        self.store.set_secrets(secrets)

    @property
    def user_id(self) -> str:
        return self.identity.user_id

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    # ---- HTTP ------------------------------------------------------------------------------

    def _access_token(self) -> str:
        token = self.store.get_secret("access_token")
        if token is None:
            raise TokenIMError(ErrorCode.NOT_LOGGED_IN, "You are not logged in: run `tokenim login`.")
        return token.decode()

    async def _post(self, path: str, body: dict[str, Any], model: type[M], *, auth: bool = True) -> M:
        return await self._request("POST", path, model, body=body, auth=auth)

    async def _request(
        self, method: str, path: str, model: type[M], *, body: dict[str, Any] | None = None, auth: bool = True
    ) -> M:
        if not auth:
            return await _call(self._http, method, path, model, body=body)
        try:
            return await _call(self._http, method, path, model, body=body, token=self._access_token())
        except TokenIMError as err:
            if err.code is not ErrorCode.TOKEN_EXPIRED:
                raise
        await self.refresh()
        return await _call(self._http, method, path, model, body=body, token=self._access_token())

    # ---- auth ------------------------------------------------------------------------------

    async def login(self) -> TokenResponse:
        """Prove this device holds its key (signed challenge) and keep the tokens, encrypted."""
        previous = self.store.get_secret("access_token"), self.store.get_secret("refresh_token")
        ident = {"user_id": self.user_id, "device_id": self.device_id}
        challenge = await self._post("/v1/login/challenge", ident, ChallengeResponse, auth=False)
        expected = self.store.get_meta("server_name")
        if challenge.server_name != expected:
            raise TokenIMError(
                ErrorCode.BAD_RESPONSE, f"The server calls itself {challenge.server_name}, not {expected}: refusing to sign."
            )
        signature = self.identity.sign_login_challenge(server_name=challenge.server_name, nonce=challenge.nonce)
        tokens = await self._post(
            "/v1/login", {**ident, "nonce": challenge.nonce, "signature": signature}, TokenResponse, auth=False
        )
        self._keep_tokens(tokens)
        await self._end_session(*previous)  # a second login must not leave the first session alive on the server
        await self.replenish_keys()
        return tokens

    async def _end_session(self, access: bytes | None, refresh: bytes | None) -> None:
        """End a session this device held before, only once a new one is in hand (a failed login keeps it)."""
        if access is None:
            return
        try:
            await _call(self._http, "POST", "/v1/logout", OkResponse, token=access.decode())
            return
        except TokenIMError as err:
            if err.code is not ErrorCode.TOKEN_EXPIRED or refresh is None:
                if err.code in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
                    return  # the server no longer honours it
                raise
        try:  # an expired access token: its refresh token still lives, so take it and end that session
            fresh = await _call(self._http, "POST", "/v1/token/refresh", TokenResponse, body={"refresh_token": refresh.decode()})
            await _call(self._http, "POST", "/v1/logout", OkResponse, token=fresh.access_token)
        except TokenIMError as err:
            if err.code not in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
                raise

    def _keep_tokens(self, tokens: TokenResponse | None) -> None:
        if tokens is None:
            self.store.set_secrets({"access_token": None, "refresh_token": None})
            self.store.set_meta({"access_expires_at": ""})
            return
        self.store.set_secrets({"access_token": tokens.access_token.encode(), "refresh_token": tokens.refresh_token.encode()})
        self.store.set_meta({"access_expires_at": str(tokens.access_expires_at)})

    async def refresh(self) -> None:
        """Swap the refresh token for a new pair."""
        refresh = self.store.get_secret("refresh_token")
        if refresh is None:
            raise TokenIMError(ErrorCode.NOT_LOGGED_IN, "You are not logged in: run `tokenim login`.")
        try:
            tokens = await self._post("/v1/token/refresh", {"refresh_token": refresh.decode()}, TokenResponse, auth=False)
        except TokenIMError as err:
            if err.code in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
                self._keep_tokens(None)
            raise
        self._keep_tokens(tokens)

    async def logout(self, *, everywhere: bool = False) -> int:
        """End this session (or, `everywhere`, every session of the account) on the server, then forget the
        tokens here; returns how many sessions the server ended (0: it had already ended this one).

        If the server can't be reached or fails, the tokens are kept: the session is still valid there, and
        forgetting it here would leave it usable for weeks with no way left to end it.
        """
        path = "/v1/logout/all" if everywhere else "/v1/logout"
        try:
            if everywhere:
                ended = (await self._request("POST", path, LogoutAllResponse)).sessions_ended
            else:
                await self._request("POST", path, OkResponse)
                ended = 1
        except TokenIMError as err:
            if err.code not in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
                raise
            ended = 0  # the server no longer honours this session: nothing is left to end there
        self._keep_tokens(None)
        return ended

    async def whoami(self) -> WhoAmIResponse:
        return await self._request("GET", "/v1/whoami", WhoAmIResponse)

    # ---- devices and keys ------------------------------------------------------------------

    async def devices(self) -> DevicesResponse:
        return await self._request("GET", "/v1/devices", DevicesResponse)

    async def remove_device(self, device_id: str) -> None:
        await self._request("DELETE", f"/v1/devices/{device_id}", OkResponse)
        if device_id == self.device_id:
            self._keep_tokens(None)

    async def key_counts(self) -> KeyCountsResponse:
        return await self._request("GET", "/v1/keys/counts", KeyCountsResponse)

    async def replenish_keys(self) -> KeyCountsResponse:
        """Top up published one-time keys (and the fallback key) when the server runs low."""
        counts = await self.key_counts()
        upload = self.identity.keys_to_upload(counts.one_time_keys, need_fallback=not counts.has_fallback_key)
        if upload.empty:
            return counts
        self._save_identity()
        counts = await self._post(
            "/v1/keys/upload", {"one_time_keys": upload.one_time_keys, "fallback_keys": upload.fallback_keys}, KeyCountsResponse
        )
        self.identity.mark_keys_as_published()
        self._save_identity()
        return counts

    async def query_keys(self, user_ids: list[str]) -> dict[str, VerifiedUserKeys]:
        """Users' master and device keys, each signature checked here; anything that fails is left out."""
        resp = await self._post("/v1/keys/query", {"user_ids": user_ids}, KeysQueryResponse)
        users, _dropped = verify_query_response(resp)
        return users

    async def claim_one_time_keys(self, devices: dict[str, list[str]]) -> KeysClaimResponse:
        return await self._post("/v1/keys/claim", {"devices": devices}, KeysClaimResponse)

    async def create_invite(self, expires_in_seconds: int) -> InviteResponse:
        return await self._post("/v1/admin/invites", {"expires_in_seconds": expires_in_seconds}, InviteResponse)

    def keys_info(self) -> KeysInfo:
        master = self.identity.master.public_key
        return KeysInfo(
            user_id=self.user_id,
            master_key=master,
            master_key_version=self.identity.master_version,
            fingerprint=fingerprint(master),
            device_id=self.device_id,
            device_ed25519=self.identity.ed25519,
            device_curve25519=self.identity.curve25519,
        )


def normalise_invite(code: str) -> str:
    """An invite code as the server made it (`ABCD-EFGH-…`), whatever the case, dashes or spaces typed."""
    chars = "".join(c for c in code if c not in "- \t").upper()
    if len(chars) != 24 or not chars.isalnum():
        return code.strip()  # not the server's form: sent as typed, the server says whether it is valid
    return "-".join(chars[i : i + 4] for i in range(0, 24, 4))


def transport_problem(exc: BaseException) -> str:
    """What went wrong on the way to the server, in words (never an exception class name)."""
    causes: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(causes) < 10:
        causes.append(seen)
        seen = seen.__cause__ or seen.__context__
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = cause.verify_message or "it could not be verified"
            return f"its TLS certificate was refused ({detail})"
        if isinstance(cause, ssl.SSLError):
            return "the secure (TLS) connection could not be set up"
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return "the connection timed out"
    if isinstance(exc, httpx.TimeoutException):
        return "the server did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        if "name or service" in text or "nodename" in text or "getaddrinfo" in text or "resolution" in text:
            return "its host name could not be found"
        return "the connection was refused (is the server running, and is the address right?)"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "the connection was cut before the server answered"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "the address is not an http:// or https:// URL"
    return "the connection failed"


def _sentence(exc: BaseException) -> str:
    return exc.message.rstrip(".") if isinstance(exc, TokenIMError) else "the connection failed"


_FORKED_MESSAGE = (
    "This profile is an out-of-date copy of device {device} (copied or restored from a backup): another copy "
    "has sent messages since. It can still read, but it will not send, so that no encryption key is used twice: "
    "send from the up-to-date copy."
)


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


async def _call(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    model: type[M],
    *,
    body: dict[str, Any] | None = None,
    token: str | None = None,
) -> M:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = await http.request(method, path, json=body, headers=headers)
    except httpx.TransportError as exc:
        raise TokenIMError(
            ErrorCode.SERVER_UNREACHABLE, f"Cannot reach the server at {http.base_url}: {transport_problem(exc)}."
        ) from None
    try:
        payload = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if resp.status_code >= 400:
        raise TokenIMError.from_json(payload, http_status=resp.status_code)
    try:
        return model.model_validate(payload, strict=False)
    except ValidationError:
        raise TokenIMError(
            ErrorCode.BAD_RESPONSE, f"The server's answer to {method} {path} is not what TokenIM expects."
        ) from None


__all__ = ["AccountClient", "KeysInfo", "normalise_invite", "transport_problem"]
