"""`client.two_factor`: TOTP two-factor authentication (docs/protocol.md, "Two-factor authentication")."""

from __future__ import annotations

import re

from tokenim.client.transport import CodeSource, Transport
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.api import OkResponse
from tokenim.protocol.two_factor import (
    OTP_PATTERN,
    TwoFactorConfirmResponse,
    TwoFactorSetupResponse,
    TwoFactorStatusResponse,
)


def clean_code(code: str) -> str:
    """A code as typed (`123 456`, `123-456`) as the server takes it; anything but 6 digits is refused here."""
    digits = re.sub(r"[\s-]", "", code)
    if not re.fullmatch(OTP_PATTERN, digits):
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, "A two-factor code is the 6 digits your authenticator app shows (e.g. 123456)."
        )
    return digits


def code_source(source: str | CodeSource | None) -> CodeSource | None:
    """Codes from a code given once (`"123456"`), from an async callable (a prompt), or from nowhere (None)."""
    if source is None:
        return None
    if isinstance(source, str):
        code = clean_code(source)

        async def given() -> str:
            return code

        return given

    async def asked() -> str:
        return clean_code(await source())

    return asked


class TwoFactor:
    """`client.two_factor`: turn two-factor authentication on and off, and say where the codes come from that
    sensitive operations need while it is on (adding, linking, removing or revoking a device, rotating the master
    key, creating, restoring or deleting a backup, admin actions)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def use_codes(self, source: str | CodeSource | None) -> None:
        """Where codes come from when the server asks for one: a code (`"123456"`), an async callable asked each
        time (a prompt), or None (a request that needs a code then fails with `otp_required`). The request the
        server refused for want of a code changed nothing and is sent again with the code."""
        self._transport.code_source = code_source(source)

    async def enable(self) -> TwoFactorSetupResponse:
        """Start setting it up: a new secret and its `otpauth://` URI for an authenticator app (show it as a QR
        code). Nothing changes until `confirm` gets a code from it."""
        return await self._transport.request("POST", "/v1/2fa/enable", TwoFactorSetupResponse)

    async def confirm(self, code: str) -> list[str]:
        """Turn it on with a code the app shows for the new secret; returns the ten one-time recovery codes
        (show them once: the server keeps only their hashes)."""
        body = {"code": clean_code(code)}
        return (await self._transport.post("/v1/2fa/confirm", body, TwoFactorConfirmResponse)).recovery_codes

    async def status(self) -> TwoFactorStatusResponse:
        """Whether it is on (or a setup waits for its code), how many recovery codes are left, any lock."""
        return await self._transport.get("/v1/2fa", TwoFactorStatusResponse)

    async def disable(self, *, recovery_code: str | None = None) -> None:
        """Turn it off: with a current code (from the code source) or, when the authenticator is lost, a
        recovery code."""
        body = {} if recovery_code is None else {"recovery_code": recovery_code.strip()}
        await self._transport.post("/v1/2fa/disable", body, OkResponse)


__all__ = ["TwoFactor", "clean_code", "code_source"]
