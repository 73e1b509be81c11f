"""TOTP codes computed independently of pyotp and of the code under test (RFC 4226 and RFC 6238, with the
standard library's hmac and struct), and a helper that turns two-factor authentication on for a client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from typing import Any

from tokenim.client import Client
from tokenim.core.clock import FakeClock

STEP_SECONDS = 30


def hotp(key: bytes, counter: int, digits: int = 6, digest: Any = hashlib.sha1) -> str:
    """RFC 4226, section 5.3: HMAC over the 8-byte big-endian counter, dynamic truncation, modulo 10^digits."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def totp_at(key: bytes, unix_seconds: int, digits: int = 6, digest: Any = hashlib.sha1) -> str:
    """RFC 6238: HOTP of T = floor(unix time / 30)."""
    return hotp(key, unix_seconds // STEP_SECONDS, digits, digest)


def secret_key(secret_b32: str) -> bytes:
    return base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))


def step_of(now_ms: int) -> int:
    return now_ms // 1000 // STEP_SECONDS


def code(secret_b32: str, clock: FakeClock, steps: int = 0) -> str:
    """The 6-digit code `steps` time steps from the clock's current one."""
    return hotp(secret_key(secret_b32), step_of(clock.now_ms()) + steps)


async def turn_on(client: Client, clock: FakeClock) -> tuple[str, list[str]]:
    """Enable and confirm 2FA for `client`; returns the secret and the recovery codes. The current step is then
    spent: the clock moves on one step so that the next `code(secret, clock)` is fresh."""
    setup = await client.two_factor.enable()
    recovery = await client.two_factor.confirm(code(setup.secret, clock))
    clock.advance(seconds=STEP_SECONDS)
    return setup.secret, recovery
