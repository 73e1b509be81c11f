"""Unpadded base64, the encoding used for every key and signature on the wire."""

from __future__ import annotations

import base64
import binascii


def b64encode(data: bytes) -> str:
    """Standard base64 without padding."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode(text: str) -> bytes:
    """Decode standard base64 without padding; raises ValueError on anything else.

    Only the one canonical form is accepted (no `=`, no stray bits in the last character), so a
    key or signature has exactly one spelling on the wire, as docs/protocol.md says.
    """
    if not isinstance(text, str):
        raise ValueError("base64 value must be a string")
    if "=" in text:
        raise ValueError("base64 must be unpadded")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid base64") from exc
    if b64encode(data) != text:
        raise ValueError("base64 is not in its canonical form")
    return data
