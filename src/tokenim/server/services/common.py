"""What every service shares: the stores, the clock, the server's name, the audit recorder, the limiter, a request's origin."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenim.core.clock import Clock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.keys import DeviceKeys
from tokenim.server.services.limits import Limiter
from tokenim.server.storage.accounts import AccountStore
from tokenim.server.storage.auth import AuthStore
from tokenim.server.storage.database import Database, Tx
from tokenim.server.storage.identity import IdentityStore
from tokenim.server.storage.keys import OneTimeKeyStore

if TYPE_CHECKING:
    from tokenim.server.services.audit import Auditor


def secret_hash(secret: str) -> str:
    """SHA-256 of a random, high-entropy secret (token, nonce, invite): what the database keeps instead."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(nbytes: int = 32) -> str:
    """A fresh random secret, URL-safe."""
    return secrets.token_urlsafe(nbytes)


@dataclass(frozen=True, slots=True)
class Requester:
    """Who is making an authenticated request."""

    user_id: str
    device_id: str
    session_id: str
    is_admin: bool
    expires_at: int = 0  # when the access token used for this request expires


MAX_USER_AGENT = 256
MAX_IP = 64


def _printable(text: str) -> str:
    # Controls, format characters (bidi overrides), separators, surrogates, private use and unassigned go.
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" and unicodedata.category(ch) not in ("Zl", "Zp"))


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from, as the audit log records it: the client's address and its User-Agent.
    The only part of a request a route hands a service besides the parsed body and the requester."""

    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def of(cls, ip: str | None, user_agent: str | None) -> Origin:
        """From the connection's address and the raw User-Agent header (as the ASGI server decoded it, latin-1):
        read as UTF-8, control and invisible characters removed, capped at 256 characters."""
        agent = None
        if user_agent is not None:
            with contextlib.suppress(UnicodeEncodeError):  # already text beyond latin-1: take it as it is
                user_agent = user_agent.encode("latin-1").decode("utf-8", "replace")
            agent = _printable(user_agent).strip()[:MAX_USER_AGENT] or None
        address = _printable(ip)[:MAX_IP] if ip else ""
        return cls(ip=address or None, user_agent=agent)


NO_ORIGIN = Origin()


# The step-up check (`TwoFactorService.require_second_factor`): inside the change's transaction, with the
# requester (or, without a session, the user id), the code from the request's TokenIM-OTP header, and the time.
SecondFactor = Callable[[Tx, Requester | str, str | None, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Context:
    """The dependencies handed to each service's constructor (explicit wiring, no globals)."""

    db: Database
    clock: Clock
    server_name: str
    accounts: AccountStore
    keys: OneTimeKeyStore
    auth: AuthStore
    auditor: Auditor
    identity: IdentityStore
    limiter: Limiter


async def refuse_revoked_keys(ctx: Context, tx: Tx, device: DeviceKeys) -> None:
    """A revoked device id, or a device key that belonged to any revoked device, is refused forever."""
    if await ctx.identity.is_revoked(tx, device.user_id, device.device_id):
        raise TokenIMError(ErrorCode.DEVICE_REVOKED, f"Device {device.device_id} was revoked: it can never be added again.")
    if await ctx.identity.revoked_key_in(tx, [device.ed25519, device.curve25519]):
        raise TokenIMError(ErrorCode.DEVICE_REVOKED, "These device keys belong to a revoked device: make new keys.")
