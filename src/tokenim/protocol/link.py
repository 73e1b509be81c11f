"""Linking a new device: the rendezvous routes' bodies and the shape of a link code.

The server only relays: it opens a slot, hands each side a mailbox, and never sees the code's secret half
(docs/protocol.md, "Linking a new device"). What travels in the mailboxes is opaque to it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from tokenim.protocol.api import _Wire
from tokenim.protocol.wire import CANONICAL_B64_PATTERN, UnpaddedBase64, UserIdStr

# Letters and digits nobody confuses when reading a code aloud (no I, L, O, U, 0, 1).
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
LINK_ID_LENGTH = 6  # made by the server; names the slot
LINK_PASSWORD_LENGTH = 8  # made by the new device; never leaves the two devices
LINK_TTL_MS = 10 * 60 * 1000
MAX_LINK_MESSAGES = 64  # per side of a slot (the approver's side: room keys may take many messages)
MAX_LINK_BODY = 196_608  # base64 characters of one mailbox message
# The new side (no account yet) only ever sends N1 (SPAKE2, 44 characters), N2 (its keys: about 17,000
# characters with 50 one-time keys) and N3 (done): so at most 3 messages, 32,768 characters in all, and only
# message 1 before a device of the user has claimed the slot.
MAX_NEW_SIDE_MESSAGES = 3
MAX_NEW_SIDE_CHARS = 32_768
# No per-user cap: anyone may open a slot for any user without a token, so a per-user cap would let anyone
# block that user's linking. A slot is harmless to the user until one of their devices claims it by code.
MAX_OPEN_LINKS_PER_ADDRESS = 10
MAX_OPEN_LINKS = 1000  # waiting or in progress, server-wide: bounds the storage of many addresses at once
LINK_ID_PATTERN = f"^[{CODE_ALPHABET}]{{{LINK_ID_LENGTH}}}$"
BASE64_PATTERN = "^[A-Za-z0-9+/]*$"

LinkIdStr = Annotated[str, Field(pattern=LINK_ID_PATTERN, min_length=LINK_ID_LENGTH, max_length=LINK_ID_LENGTH)]


class LinkPolicy(StrEnum):
    """What an approving device hands a new one: the master private key, or only its signature on the new device."""

    MASTER_KEY = "master_key"
    SIGNATURE_ONLY = "signature_only"


class LinkSide(StrEnum):
    NEW = "new"
    APPROVER = "approver"


class LinkFailure(StrEnum):
    """Why a side gave up on a link; the other side is told this reason."""

    MISMATCH = "mismatch"  # the first sealed message did not open: wrong code, or the server changed a message
    TAMPERED = "tampered"  # a later message did not open or check out: the server changed, replayed or reordered one
    REFUSED = "refused"  # the approving device refused the new device's keys
    CANCELLED = "cancelled"  # a person stopped it
    ERROR = "error"  # anything else (a server error on one side)


class LinkOpenRequest(_Wire):
    """`POST /v1/link` (no token): a new device asks for a slot to be approved by `user_id`'s devices."""

    user_id: UserIdStr = Field(max_length=320)


class LinkOpenResponse(_Wire):
    link_id: str
    token: str  # authenticates the new device on its slot's mailbox: `Authorization: Bearer <token>`
    expires_at: int
    policy: Literal["master_key", "signature_only"]


class LinkClaimResponse(_Wire):
    """`POST /v1/link/{link_id}/claim`: the approving device takes the slot; nobody else can afterwards."""

    link_id: str
    expires_at: int
    policy: Literal["master_key", "signature_only"]


class LinkPostRequest(_Wire):
    """`PUT /v1/link/{link_id}/messages/{seq}`: one opaque message into the caller's side of the mailbox."""

    body: Annotated[str, UnpaddedBase64] = Field(min_length=1, max_length=MAX_LINK_BODY, pattern=CANONICAL_B64_PATTERN)


class LinkMessage(_Wire):
    seq: int
    body: str


class LinkMessagesResponse(_Wire):
    """The other side's messages after `after`, oldest first, and where the slot stands (`approved`: the approving
    device reported success, the last thing the new device waits for)."""

    messages: list[LinkMessage]
    state: Literal["open", "claimed", "approved"]


class LinkCloseRequest(_Wire):
    """`POST /v1/link/{link_id}/close`: the approver reports success (`approved`), either side a failure."""

    outcome: Literal["approved", "failed"]
    reason: Literal["mismatch", "tampered", "refused", "cancelled", "error"] | None = None


__all__ = [
    "CODE_ALPHABET",
    "LINK_ID_LENGTH",
    "LINK_PASSWORD_LENGTH",
    "LINK_TTL_MS",
    "MAX_LINK_BODY",
    "MAX_LINK_MESSAGES",
    "MAX_NEW_SIDE_CHARS",
    "MAX_NEW_SIDE_MESSAGES",
    "MAX_OPEN_LINKS",
    "MAX_OPEN_LINKS_PER_ADDRESS",
    "LinkClaimResponse",
    "LinkCloseRequest",
    "LinkFailure",
    "LinkIdStr",
    "LinkMessage",
    "LinkMessagesResponse",
    "LinkOpenRequest",
    "LinkOpenResponse",
    "LinkPolicy",
    "LinkPostRequest",
    "LinkSide",
]
