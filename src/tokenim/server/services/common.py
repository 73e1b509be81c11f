"""What every service shares: the stores, the clock, the server's name, the audit recorder and the limiter."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from tokenim.core.clock import Clock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.keys import DeviceKeys
from tokenim.server.services.limits import Limiter
from tokenim.server.storage.accounts import AccountStore
from tokenim.server.storage.audit import AuditEvent, AuditStore
from tokenim.server.storage.auth import AuthStore
from tokenim.server.storage.database import Database, Tx
from tokenim.server.storage.identity import IdentityStore
from tokenim.server.storage.keys import OneTimeKeyStore


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


class Auditor:
    """The one place services record security-relevant events, inside the transaction that made them."""

    def __init__(self, store: AuditStore, clock: Clock) -> None:
        self.store = store
        self._clock = clock

    async def record(self, tx: Tx, event: str, user_id: str | None, device_id: str | None, **details: Any) -> None:
        await self.store.append(tx, AuditEvent(self._clock.now_ms(), event, user_id, device_id, details))


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
