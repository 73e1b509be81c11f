"""Typed identifiers and their syntax: `@name:server` users, upper-case device ids, key ids."""

from __future__ import annotations

import re
import secrets
from typing import NewType

from tokenim.core.errors import ErrorCode, TokenIMError

UserId = NewType("UserId", str)
DeviceId = NewType("DeviceId", str)
KeyId = NewType("KeyId", str)

# fullmatch, not match: `$` alone also matches before a trailing newline, so "alice\n" would pass.
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._=-]{0,63}$"
DEVICE_ID_PATTERN = r"^[A-Z0-9]{6,32}$"
USER_ID_PATTERN = r"^@([a-z0-9][a-z0-9._=-]{0,63}):([A-Za-z0-9.-]{1,255}(:[0-9]{1,5})?)$"
_USERNAME = re.compile(USERNAME_PATTERN)
_SERVER_NAME = re.compile(r"^[A-Za-z0-9.-]{1,255}(:[0-9]{1,5})?$")
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_USER_ID = re.compile(USER_ID_PATTERN)
_ROOM_ID = re.compile(r"^![A-Za-z0-9_-]{1,63}$")
_DEVICE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def check_username(name: object) -> str:
    """Validate a local user name: lower-case letters, digits and `._=-`, 1 to 64 characters."""
    if not isinstance(name, str) or not _USERNAME.fullmatch(name):
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST,
            "A username is 1 to 64 characters: lower-case letters, digits and . _ = -, starting with a letter or digit.",
        )
    return name


def check_server_name(name: str) -> str:
    """Validate a server name (a host name, optionally with a port)."""
    if not _SERVER_NAME.fullmatch(name):
        raise TokenIMError(ErrorCode.BAD_CONFIG, f"'{name}' is not a valid server name (a host name, optionally :port).")
    return name


def make_user_id(username: str, server_name: str) -> UserId:
    """Build the full user id `@username:server_name`."""
    return UserId(f"@{check_username(username)}:{server_name}")


def parse_user_id(value: object) -> tuple[str, str]:
    """Split a user id into (username, server name), or raise a clear error."""
    m = _USER_ID.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{value!r} is not a user id; user ids look like @alice:example.com.")
    return m.group(1), m.group(2)


def check_user_id(value: object) -> UserId:
    """Validate a full user id."""
    parse_user_id(value)
    return UserId(str(value))


def check_device_id(value: object) -> DeviceId:
    """Validate a device id: 6 to 32 upper-case letters and digits."""
    if not isinstance(value, str) or not _DEVICE_ID.fullmatch(value):
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{value!r} is not a device id (6 to 32 upper-case letters and digits).")
    return DeviceId(value)


def check_room_id(value: object) -> str:
    """Validate a room id as the server makes them: `!` and up to 63 URL-safe characters."""
    if not isinstance(value, str) or not _ROOM_ID.fullmatch(value):
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{value!r} is not a room id (! and up to 63 letters, digits, _ or -).")
    return value


def new_device_id() -> DeviceId:
    """A fresh random device id (10 characters, about 50 bits, unambiguous letters)."""
    return DeviceId("".join(secrets.choice(_DEVICE_ALPHABET) for _ in range(10)))
