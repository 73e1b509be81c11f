"""The SDK's only way to the server over HTTP: one httpx client, the access and refresh tokens (kept
encrypted in the store), one refresh when the server says the access token expired, and every failure
turned into a TokenIMError a person can read."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from tokenim.client.stores import Store
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.api import ChallengeResponse, OkResponse, TokenResponse
from tokenim.protocol.two_factor import OTP_HEADER

M = TypeVar("M", bound=BaseModel)
# Asked for a current two-factor code when the server answers `otp_required` (client.two_factor.use_codes).
CodeSource = Callable[[], Awaitable[str]]
NOT_LOGGED_IN = "You are not logged in: run `tokenim login`."
REVOKED = (
    "This device ({device}) was revoked by another of your devices: the server refuses it for good, so this profile "
    "can no longer send or read messages. Use a device you still have, or add a new one from it."
)
REMOVED = (
    "The server no longer knows this device ({device}): it was removed from your account (or the server lost its "
    "data), so it can't log in again. Use a device you still have, or add this computer again as a new device "
    "(`tokenim devices link` into a new profile)."
)


def _gone(err: TokenIMError, device: str | None) -> TokenIMError | None:
    """The login challenge's answer for this device, as this profile's sentence: revoked, or removed."""
    if err.code is ErrorCode.DEVICE_REVOKED:
        return TokenIMError(ErrorCode.DEVICE_REVOKED, REVOKED.format(device=device))
    if err.code is ErrorCode.UNKNOWN_DEVICE:
        return TokenIMError(ErrorCode.UNKNOWN_DEVICE, REMOVED.format(device=device))
    return None


class Transport:
    """Requests to one server, authenticated with the tokens kept in `store`."""

    def __init__(self, http: httpx.AsyncClient, store: Store) -> None:
        self.http = http
        self._store = store
        self.code_source: CodeSource | None = None
        self._refreshing = asyncio.Lock()

    @staticmethod
    def connect(server_url: str, store: Store, transport: httpx.AsyncBaseTransport | None = None) -> Transport:
        """A transport to `server_url` (`transport`: e.g. an in-process ASGI app in tests)."""
        return Transport(httpx.AsyncClient(base_url=server_url.rstrip("/"), transport=transport, timeout=30.0), store)

    @property
    def base_url(self) -> str:
        return str(self.http.base_url)

    async def close(self) -> None:
        await self.http.aclose()

    # ---- tokens ----------------------------------------------------------------------------

    def access_token(self) -> str:
        """The current access token; refused in words when this device is logged out."""
        token = self._store.get_secret("access_token")
        if token is None:
            raise TokenIMError(ErrorCode.NOT_LOGGED_IN, NOT_LOGGED_IN)
        return token.decode()

    def tokens(self) -> tuple[bytes | None, bytes | None]:
        """The access and refresh tokens held now (either may be None)."""
        return self._store.get_secret("access_token"), self._store.get_secret("refresh_token")

    def keep_tokens(self, tokens: TokenResponse | None) -> None:
        """Store a new pair of tokens, encrypted (None: forget them)."""
        if tokens is None:
            self._store.save(secrets={"access_token": None, "refresh_token": None}, meta={"access_expires_at": ""})
            return
        self._store.save(
            secrets={"access_token": tokens.access_token.encode(), "refresh_token": tokens.refresh_token.encode()},
            meta={"access_expires_at": str(tokens.access_expires_at)},
        )

    async def refresh(self) -> None:
        """Swap the refresh token for a new pair; a refresh token the server no longer honours is forgotten.

        One refresh at a time: requests that found the access token expired together (the live connection
        and a send) would otherwise spend the same refresh token twice, and the loser would forget the
        pair the winner just stored. A request that waited behind another's refresh uses its result."""
        stale = self._store.get_secret("refresh_token")
        async with self._refreshing:
            refresh = self._store.get_secret("refresh_token")
            if refresh is None:
                raise TokenIMError(ErrorCode.NOT_LOGGED_IN, NOT_LOGGED_IN)
            if refresh != stale:
                return
            try:
                body = {"refresh_token": refresh.decode()}
                tokens = await self.post("/v1/token/refresh", body, TokenResponse, auth=False)
            except TokenIMError as err:
                if err.code in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
                    self.keep_tokens(None)
                    await self._refuse_if_revoked()
                raise
            self.keep_tokens(tokens)

    async def _refuse_if_revoked(self) -> None:
        """The server no longer knows this session: if that is because the device was revoked or removed, say
        so. The login challenge is the one place that tells them apart (`device_revoked`, `unknown_device`)."""
        ident = {"user_id": self._store.get_meta("user_id"), "device_id": self._store.get_meta("device_id")}
        if not ident["user_id"] or not ident["device_id"]:
            return
        try:
            await call(self.http, "POST", "/v1/login/challenge", ChallengeResponse, body=ident)
        except TokenIMError as err:
            gone = _gone(err, ident["device_id"])
            if gone is not None:
                raise gone from None

    async def end_session(self, access: bytes | None, refresh: bytes | None) -> None:
        """End a session this device held before, only once a new one is in hand (a failed login keeps it)."""
        if access is None:
            return
        try:
            await call(self.http, "POST", "/v1/logout", OkResponse, token=access.decode())
            return
        except TokenIMError as err:
            if err.code is not ErrorCode.TOKEN_EXPIRED or refresh is None:
                if err.code in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
                    return  # the server no longer honours it
                raise
        try:  # an expired access token: its refresh token still lives, so take it and end that session
            body = {"refresh_token": refresh.decode()}
            fresh = await call(self.http, "POST", "/v1/token/refresh", TokenResponse, body=body)
            await call(self.http, "POST", "/v1/logout", OkResponse, token=fresh.access_token)
        except TokenIMError as err:
            if err.code not in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
                raise

    # ---- requests --------------------------------------------------------------------------

    async def post(self, path: str, body: dict[str, Any], model: type[M], *, auth: bool = True) -> M:
        """POST a JSON body; the answer parsed as `model`."""
        return await self.request("POST", path, model, body=body, auth=auth)

    async def get(self, path: str, model: type[M]) -> M:
        """GET with the access token; the answer parsed as `model`."""
        return await self.request("GET", path, model)

    async def request(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        body: dict[str, Any] | None = None,
        auth: bool = True,
        otp: str | None = None,
    ) -> M:
        """One request; an expired access token is refreshed once and the request sent again. When the server
        wants a two-factor code (`otp_required`: the request changed nothing) and none was given, the code
        source is asked for one and the request sent again with it."""
        try:
            return await self._request(method, path, model, body, auth, otp)
        except TokenIMError as err:
            if err.code is not ErrorCode.OTP_REQUIRED or otp is not None or self.code_source is None:
                raise
        return await self._request(method, path, model, body, auth, await self.code_source())

    async def _request(
        self, method: str, path: str, model: type[M], body: dict[str, Any] | None, auth: bool, otp: str | None
    ) -> M:
        if not auth:
            try:
                return await call(self.http, method, path, model, body=body, otp=otp)
            except TokenIMError as err:
                gone = _gone(err, self._store.get_meta("device_id")) if path.startswith("/v1/login") else None
                if gone is not None:
                    raise gone from None
                raise
        try:
            return await call(self.http, method, path, model, body=body, token=self.access_token(), otp=otp)
        except TokenIMError as err:
            if err.code is ErrorCode.UNAUTHORIZED:
                await self._refuse_if_revoked()
            if err.code is not ErrorCode.TOKEN_EXPIRED:
                raise
        await self.refresh()
        return await call(self.http, method, path, model, body=body, token=self.access_token(), otp=otp)


async def call(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    model: type[M],
    *,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    otp: str | None = None,
) -> M:
    """One HTTP request: an error answer becomes its TokenIMError, an unexpected one BAD_RESPONSE."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if otp is not None:
        headers[OTP_HEADER] = otp
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


__all__ = ["CodeSource", "Transport", "call", "transport_problem"]
