"""Room event types and the shape of encrypted content, as the server checks it (ciphertext is opaque)."""

from __future__ import annotations

import re
from typing import Any

from tokenim.core.content import check_client_json
from tokenim.core.errors import ErrorCode, TokenIMError
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


def check_encrypted_content(content: dict[str, Any]) -> None:
    """A room message must be Megolm ciphertext: the server refuses anything that looks like plaintext."""
    check_client_json(content, "message content")
    need = {"algorithm": str, "ciphertext": str, "session_id": str, "sender_key": str, "device_id": str}
    for name, kind in need.items():
        if not isinstance(content.get(name), kind):
            raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Encrypted content needs a string '{name}'.")
    if content["algorithm"] != MEGOLM_ALGORITHM:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Room messages must use {MEGOLM_ALGORITHM}.")
    extra = set(content) - set(need)
    if extra:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Encrypted content has unexpected fields: {sorted(extra)}.")


def check_olm_content(content: dict[str, Any]) -> None:
    """A to-device message must be Olm ciphertext (`ciphertext` maps a Curve25519 key to a message)."""
    check_client_json(content, "to-device content")
    if content.get("algorithm") != OLM_ALGORITHM:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"To-device messages must use {OLM_ALGORITHM}.")
    if not isinstance(content.get("sender_key"), str) or not isinstance(content.get("ciphertext"), dict):
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "Olm content needs 'sender_key' and a 'ciphertext' object.")


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
