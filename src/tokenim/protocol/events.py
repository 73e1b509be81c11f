"""Room event types and the shape of encrypted content, as the server checks it (ciphertext is opaque)."""

from __future__ import annotations

from typing import Any

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.keys import MEGOLM_ALGORITHM, OLM_ALGORITHM

ENCRYPTED = "m.room.encrypted"
CREATE = "m.room.create"
MEMBER = "m.room.member"
NAME = "m.room.name"
ROOM_KEY = "m.room_key"
DEVICE_LIST = "tokenim.device_list"  # a member added or removed a device: senders must re-check who gets keys
MAX_CONTENT_BYTES = 64 * 1024


def check_encrypted_content(content: dict[str, Any]) -> None:
    """A room message must be Megolm ciphertext: the server refuses anything that looks like plaintext."""
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
    """A to-device message must be Olm ciphertext addressed to the recipient's Curve25519 key."""
    if content.get("algorithm") != OLM_ALGORITHM:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"To-device messages must use {OLM_ALGORITHM}.")
    if not isinstance(content.get("sender_key"), str) or not isinstance(content.get("ciphertext"), dict):
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "Olm content needs 'sender_key' and a 'ciphertext' object.")
