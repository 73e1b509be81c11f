"""Room event types and the shape of encrypted content, as the server checks it (ciphertext is opaque)."""

from __future__ import annotations

import re
from typing import Any

from tokenim.core.content import check_client_json
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import DEVICE_ID_PATTERN
from tokenim.protocol.keys import MEGOLM_ALGORITHM, OLM_ALGORITHM

ENCRYPTED = "m.room.encrypted"
CREATE = "m.room.create"
MEMBER = "m.room.member"
NAME = "m.room.name"
ROOM_KEY = "m.room_key"
DEVICE_LIST = "tokenim.device_list"  # a member added or removed a device: senders must re-check who gets keys
MAX_CONTENT_BYTES = 64 * 1024
# An event type is an identifier (`m.room.encrypted`, `tokenim.device_list`), never free text.
_EVENT_TYPE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_event_type(event_type: str) -> str:
    """Refuse an event type that is not a plain identifier: it is relayed to other devices as it is."""
    if not _EVENT_TYPE.fullmatch(event_type):
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, "An event type is 1 to 64 letters, digits or . _ - (like m.room.encrypted)."
        )
    return event_type


# What the server relays inside encrypted content is base64 and ids only: nothing a member puts there can
# carry text (escape sequences, bidi controls, NUL) to other members' screens, or a shape their clients
# do not expect. Unpadded standard base64, as vodozemac writes it.
_B64 = re.compile(r"^[A-Za-z0-9+/]+$")
_KEY = re.compile(r"^[A-Za-z0-9+/]{43}$")  # a Curve25519 public key
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_MEGOLM_FIELDS = {"algorithm", "ciphertext", "session_id", "sender_key", "device_id"}
_OLM_FIELDS = {"algorithm", "sender_key", "ciphertext"}


def _need(content: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> None:
    value = content.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Encrypted content needs '{name}': {what}.")


def _only(content: dict[str, Any], fields: set[str], what: str) -> None:
    extra = set(content) - fields
    if extra:
        names = ", ".join(repr(str(n)[:40]) for n in sorted(extra)[:5])
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{what} has members it may not have: {names}.")


def check_encrypted_content(content: dict[str, Any]) -> None:
    """A room message must be Megolm ciphertext: the server refuses anything that looks like plaintext."""
    check_client_json(content, "message content")
    if content.get("algorithm") != MEGOLM_ALGORITHM:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Room messages must use {MEGOLM_ALGORITHM}.")
    _only(content, _MEGOLM_FIELDS, "Encrypted content")
    _need(content, "ciphertext", _B64, "the Megolm message in unpadded base64")
    _need(content, "session_id", _B64, "the Megolm session id in unpadded base64")
    _need(content, "sender_key", _KEY, "the sending device's Curve25519 key (43 base64 characters)")
    _need(content, "device_id", _DEVICE_ID, "the sending device's id")


def check_olm_content(content: dict[str, Any]) -> None:
    """A to-device message must be Olm ciphertext: `ciphertext` maps a Curve25519 key to exactly
    `{"type": 0 | 1, "body": <unpadded base64>}` (0: a pre-key message, 1: a normal one)."""
    check_client_json(content, "to-device content")
    if content.get("algorithm") != OLM_ALGORITHM:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"To-device messages must use {OLM_ALGORITHM}.")
    _only(content, _OLM_FIELDS, "Olm content")
    _need(content, "sender_key", _KEY, "the sending device's Curve25519 key (43 base64 characters)")
    ciphertext = content.get("ciphertext")
    if not isinstance(ciphertext, dict):
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "Olm content needs a 'ciphertext' object.")
    for message in ciphertext.values():
        if (
            not isinstance(message, dict)
            or set(message) != {"type", "body"}
            or type(message["type"]) is not int
            or message["type"] not in (0, 1)
            or not isinstance(message["body"], str)
            or not _B64.fullmatch(message["body"])
        ):
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                'Each Olm ciphertext is {"type": 0 or 1, "body": the Olm message in unpadded base64}, nothing else.',
            )


def check_megolm_sender(content: dict[str, Any], device_id: str, curve25519: str) -> None:
    """A room message names its sending device and that device's Curve25519 key: both must be the sender's own."""
    if content.get("device_id") != device_id:
        raise TokenIMError(ErrorCode.SENDER_MISMATCH, f"The content's device_id must be the sending device's, {device_id}.")
    if content.get("sender_key") != curve25519:
        raise TokenIMError(ErrorCode.SENDER_MISMATCH, "The content's sender_key must be the sending device's Curve25519 key.")


def check_olm_sender(content: dict[str, Any], curve25519: str) -> None:
    """A to-device message's `sender_key` must be the sending device's Curve25519 key."""
    if content.get("sender_key") != curve25519:
        raise TokenIMError(ErrorCode.SENDER_MISMATCH, "The to-device sender_key must be the sending device's Curve25519 key.")


def check_olm_recipient(content: dict[str, Any], device_id: str, curve25519: str) -> None:
    """An Olm ciphertext holds exactly one message, for the recipient device's Curve25519 key."""
    if list(content["ciphertext"]) != [curve25519]:
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, f"The ciphertext for device {device_id} must be for that device's Curve25519 key only."
        )
