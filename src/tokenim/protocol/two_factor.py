"""Two-factor authentication on the wire (docs/protocol.md, "Two-factor authentication"): TOTP per RFC 6238
(SHA-1, 6 digits, 30-second steps), one-time recovery codes, and the header that carries a code for step-up."""

from __future__ import annotations

from pydantic import Field

from tokenim.protocol.api import _Wire

OTP_HEADER = "TokenIM-OTP"
TOTP_DIGITS = 6
TOTP_STEP_SECONDS = 30
TOTP_SKEW_STEPS = 1  # a code of the step before or after the server's is accepted too
OTP_PATTERN = r"^[0-9]{6}$"
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # 32 letters and digits, none easily confused
RECOVERY_CODE_CHARS = 16  # 80 bits, shown as four groups of four
RECOVERY_CODE_PATTERN = r"^[A-Za-z0-9 -]{16,40}$"
MAX_OTP_FAILURES = 5  # wrong codes in a row before the account's 2FA locks
OTP_LOCK_MS = 15 * 60 * 1000


def normalise_recovery_code(text: str) -> str:
    """A recovery code as typed (any case, spaces or dashes anywhere) in the form that is hashed."""
    return "".join(ch for ch in text.upper() if ch not in " -")


def format_recovery_code(code: str) -> str:
    """`ABCDEFGHJKLMNPQR` → `ABCD-EFGH-JKLM-NPQR`."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


class TwoFactorSetupResponse(_Wire):
    """`POST /v1/2fa/enable`: the secret (base32) and the `otpauth://` URI an authenticator app takes."""

    secret: str
    uri: str
    digits: int = TOTP_DIGITS
    period: int = TOTP_STEP_SECONDS


class TwoFactorConfirmRequest(_Wire):
    code: str = Field(pattern=OTP_PATTERN)


class TwoFactorConfirmResponse(_Wire):
    """The ten recovery codes, shown once: the server keeps only their hashes."""

    recovery_codes: list[str]


class TwoFactorStatusResponse(_Wire):
    enabled: bool
    pending: bool  # a setup was started and not confirmed yet
    enabled_at: int | None
    recovery_codes_left: int
    locked_until: int | None  # while wrong codes have locked the account's 2FA


class TwoFactorDisableRequest(_Wire):
    """Turn 2FA off with a current code (the TokenIM-OTP header) or, when the authenticator is lost, one of
    the recovery codes."""

    recovery_code: str | None = Field(default=None, pattern=RECOVERY_CODE_PATTERN)


__all__ = [
    "MAX_OTP_FAILURES",
    "OTP_HEADER",
    "OTP_LOCK_MS",
    "OTP_PATTERN",
    "RECOVERY_CODE_ALPHABET",
    "RECOVERY_CODE_CHARS",
    "RECOVERY_CODE_COUNT",
    "TOTP_DIGITS",
    "TOTP_SKEW_STEPS",
    "TOTP_STEP_SECONDS",
    "TwoFactorConfirmRequest",
    "TwoFactorConfirmResponse",
    "TwoFactorDisableRequest",
    "TwoFactorSetupResponse",
    "TwoFactorStatusResponse",
    "format_recovery_code",
    "normalise_recovery_code",
]
