"""What the SDK says about other people's keys: member devices left out of a message and why, a contact's
keys as this device sees them, and an accepted key change (the logic is in client/keys.py)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tokenim.core.errors import TokenIMError
from tokenim.core.ids import check_device_id, parse_user_id
from tokenim.core.signing import fingerprint
from tokenim.protocol.api import SendResponse


class ExcludedDevice(BaseModel):
    """A member's device that was not given the room key, so it cannot read the message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str
    device_id: str | None = None  # None: every device of the user
    reason: str  # master_key_changed | bad_master_key | bad_device_signature | no_keys | no_session
    message: str


class SendResult(SendResponse):
    """The server's answer to a send, and the member devices left out of it (empty when everyone can read it)."""

    excluded: list[ExcludedDevice] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ContactKeys:
    """What `tokenim keys show @user` prints. `status`: trusted, pinned_now (first seen now) or changed."""

    user_id: str
    status: str
    pinned_master: str
    pinned_fingerprint: str
    current_master: str
    current_fingerprint: str
    devices: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class KeyAcceptance:
    """A contact's new master key, accepted: the old and the new fingerprint."""

    user_id: str
    old_fingerprint: str
    new_fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def safe_user(user_id: str) -> str:
    """A user id as the server gave it, escaped unless well-formed: it ends up on people's terminals."""
    try:
        parse_user_id(user_id)
    except TokenIMError:
        return ascii(user_id)
    return user_id


def safe_device(device_id: str) -> str:
    try:
        check_device_id(device_id)
    except TokenIMError:
        return ascii(device_id)
    return device_id


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def changed_message(user_id: str, pinned: str, current: str) -> str:
    return (
        f"{user_id}'s master key changed (pinned fingerprint {fingerprint(pinned)}, the server now shows "
        f"{fingerprint(current)}); compare it with them, then run `tokenim keys accept {user_id}`."
    )


__all__ = [
    "ContactKeys",
    "ExcludedDevice",
    "KeyAcceptance",
    "SendResult",
    "changed_message",
    "digits",
    "safe_device",
    "safe_user",
]
