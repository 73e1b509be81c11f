"""One error model end to end: a stable machine code, an HTTP status and a sentence a person understands."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Every client-visible error code. Codes are part of the protocol: never rename one."""

    BAD_JSON = "bad_json"
    INVALID_REQUEST = "invalid_request"
    BODY_TOO_LARGE = "body_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    BAD_SIGNATURE = "bad_signature"
    BAD_KEY_OBJECT = "bad_key_object"
    CHALLENGE_INVALID = "challenge_invalid"
    CHALLENGE_EXPIRED = "challenge_expired"
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_DEVICE = "unknown_device"
    USERNAME_TAKEN = "username_taken"
    DEVICE_EXISTS = "device_exists"
    INVITE_REQUIRED = "invite_required"
    INVITE_INVALID = "invite_invalid"
    KEY_CONFLICT = "key_conflict"
    ROOM_NAME_TAKEN = "room_name_taken"
    SENDER_MISMATCH = "sender_mismatch"
    TOO_MANY_KEYS = "too_many_keys"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    PROFILE_FORKED = "profile_forked"
    KEY_CHAIN_INVALID = "key_chain_invalid"
    DEVICES_NOT_RESIGNED = "devices_not_resigned"
    DEVICE_REVOKED = "device_revoked"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    REQUEST_TIMEOUT = "request_timeout"
    SERVER_BUSY = "server_busy"
    NO_BACKUP = "no_backup"
    BACKUP_OUTDATED = "backup_outdated"
    BACKUP_CONFLICT = "backup_conflict"
    LINK_EXPIRED = "link_expired"
    LINK_USED = "link_used"
    LINK_FAILED = "link_failed"
    OTP_REQUIRED = "otp_required"
    OTP_INVALID = "otp_invalid"
    TWO_FACTOR_ON = "two_factor_on"
    TWO_FACTOR_OFF = "two_factor_off"
    EMAIL_UNAVAILABLE = "email_unavailable"
    SMS_UNAVAILABLE = "sms_unavailable"
    INTERNAL = "internal_error"
    # Local (client-side) errors: never sent by a server, but shaped the same way for the CLI.
    WRONG_PASSPHRASE = "wrong_passphrase"
    PROFILE_MISSING = "profile_missing"
    PROFILE_EXISTS = "profile_exists"
    PROFILE_BUSY = "profile_busy"
    NOT_LOGGED_IN = "not_logged_in"
    SERVER_UNREACHABLE = "server_unreachable"
    BAD_RESPONSE = "bad_response"
    BAD_CONFIG = "bad_config"
    FINGERPRINT_MISMATCH = "fingerprint_mismatch"
    FILE_EXISTS = "file_exists"
    CANCELLED = "cancelled"
    BAD_KEY_FILE = "bad_key_file"
    KEY_NOT_CURRENT = "key_not_current"
    BAD_RECOVERY_KEY = "bad_recovery_key"
    WRONG_RECOVERY_KEY = "wrong_recovery_key"
    BACKUP_TAMPERED = "backup_tampered"
    BACKUP_ROLLED_BACK = "backup_rolled_back"
    BACKUP_EXISTS = "backup_exists"
    VERIFICATION_FAILED = "verification_failed"


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_JSON: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.BAD_SIGNATURE: 400,
    ErrorCode.BAD_KEY_OBJECT: 400,
    ErrorCode.CHALLENGE_INVALID: 401,
    ErrorCode.CHALLENGE_EXPIRED: 401,
    ErrorCode.UNKNOWN_USER: 404,
    ErrorCode.UNKNOWN_DEVICE: 404,
    ErrorCode.USERNAME_TAKEN: 409,
    ErrorCode.DEVICE_EXISTS: 409,
    ErrorCode.INVITE_REQUIRED: 403,
    ErrorCode.INVITE_INVALID: 403,
    ErrorCode.KEY_CONFLICT: 409,
    ErrorCode.ROOM_NAME_TAKEN: 409,
    ErrorCode.SENDER_MISMATCH: 400,
    ErrorCode.TOO_MANY_KEYS: 400,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.QUOTA_EXCEEDED: 413,
    ErrorCode.PROFILE_FORKED: 409,
    ErrorCode.KEY_CHAIN_INVALID: 409,
    ErrorCode.DEVICES_NOT_RESIGNED: 400,
    ErrorCode.DEVICE_REVOKED: 403,
    ErrorCode.TOO_MANY_CONNECTIONS: 429,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.SERVER_BUSY: 503,
    ErrorCode.NO_BACKUP: 404,
    ErrorCode.BACKUP_OUTDATED: 409,
    ErrorCode.BACKUP_CONFLICT: 409,
    ErrorCode.LINK_EXPIRED: 410,
    ErrorCode.LINK_USED: 409,
    ErrorCode.LINK_FAILED: 409,
    ErrorCode.OTP_REQUIRED: 401,
    ErrorCode.OTP_INVALID: 401,
    ErrorCode.TWO_FACTOR_ON: 409,
    ErrorCode.TWO_FACTOR_OFF: 409,
    ErrorCode.EMAIL_UNAVAILABLE: 503,
    ErrorCode.SMS_UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
    ErrorCode.WRONG_PASSPHRASE: 400,
    ErrorCode.PROFILE_MISSING: 400,
    ErrorCode.PROFILE_EXISTS: 409,
    ErrorCode.PROFILE_BUSY: 409,
    ErrorCode.NOT_LOGGED_IN: 401,
    ErrorCode.SERVER_UNREACHABLE: 503,
    ErrorCode.BAD_RESPONSE: 502,
    ErrorCode.BAD_CONFIG: 400,
    ErrorCode.FINGERPRINT_MISMATCH: 400,
    ErrorCode.FILE_EXISTS: 409,
    ErrorCode.CANCELLED: 400,
    ErrorCode.BAD_KEY_FILE: 400,
    ErrorCode.KEY_NOT_CURRENT: 409,
    ErrorCode.BAD_RECOVERY_KEY: 400,
    ErrorCode.WRONG_RECOVERY_KEY: 400,
    ErrorCode.BACKUP_TAMPERED: 502,
    ErrorCode.BACKUP_ROLLED_BACK: 502,
    ErrorCode.BACKUP_EXISTS: 409,
    ErrorCode.VERIFICATION_FAILED: 400,
}


# Codes only the client makes (the CLI shapes them like the server's); every other code may come from a server.
LOCAL_CODES = frozenset({
    ErrorCode.WRONG_PASSPHRASE, ErrorCode.PROFILE_MISSING, ErrorCode.PROFILE_EXISTS, ErrorCode.PROFILE_BUSY,
    ErrorCode.NOT_LOGGED_IN, ErrorCode.SERVER_UNREACHABLE, ErrorCode.BAD_RESPONSE, ErrorCode.BAD_CONFIG,
    ErrorCode.FINGERPRINT_MISMATCH, ErrorCode.FILE_EXISTS, ErrorCode.CANCELLED,
    ErrorCode.BAD_KEY_FILE, ErrorCode.KEY_NOT_CURRENT,
    ErrorCode.BAD_RECOVERY_KEY, ErrorCode.WRONG_RECOVERY_KEY, ErrorCode.BACKUP_TAMPERED, ErrorCode.BACKUP_ROLLED_BACK,
    ErrorCode.VERIFICATION_FAILED, ErrorCode.BACKUP_EXISTS,
})  # fmt: skip
SERVER_CODES = tuple(code for code in ErrorCode if code not in LOCAL_CODES)


def status_for(code: ErrorCode) -> int:
    """The HTTP status that goes with an error code."""
    return _STATUS[code]


class TokenIMError(Exception):
    """The root of every error a person may see: carries a code, an HTTP status and a sentence."""

    def __init__(self, code: ErrorCode, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status_for(code)
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        """The wire form: `{"error": {"code", "message", "status", ...}}`."""
        body: dict[str, Any] = {"code": self.code.value, "message": self.message, "status": self.status}
        if self.details:
            body["details"] = self.details
        return {"error": body}

    @classmethod
    def from_json(cls, payload: object, *, http_status: int) -> TokenIMError:
        """Rebuild an error from a server's response; anything unrecognisable becomes `bad_response`."""
        if isinstance(payload, dict):
            err = payload.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                try:
                    code = ErrorCode(str(err.get("code")))
                except ValueError:
                    code = ErrorCode.BAD_RESPONSE
                details = err.get("details")
                return cls(code, err["message"], details=details if isinstance(details, dict) else None)
        return cls(ErrorCode.BAD_RESPONSE, f"The server answered with HTTP {http_status} and no readable error.")

    def __repr__(self) -> str:
        return f"TokenIMError({self.code.value!r}, {self.message!r})"
