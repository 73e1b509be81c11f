"""Unpadded base64, the encoding used for every key and signature on the wire."""

from __future__ import annotations

import base64
import binascii


def b64encode(data: bytes) -> str:
    """Standard base64 without padding."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode(text: str) -> bytes:
    """Decode standard base64 with or without padding; raises ValueError on bad input."""
    if not isinstance(text, str):
        raise ValueError("base64 value must be a string")
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid base64") from exc
