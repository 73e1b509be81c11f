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
from tokenim.crypto.machine import KeyWarning
from tokenim.crypto.trust import Pin, Verdict
from tokenim.protocol.api import SendResponse


class ExcludedDevice(BaseModel):
    """A member's device that was not given the room key, so it cannot read the message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str
    device_id: str | None = None  # None: every device of the user
    reason: str  # master_key_changed | bad_master_key | bad_device_signature | revoked | no_keys | no_session
    message: str
    # With master_key_changed: what kind of change (changed_unsigned | broken_chain | forked | rolled_back).
    verdict: str | None = None


class SendResult(SendResponse):
    """The server's answer to a send, and the member devices left out of it (empty when everyone can read it)."""

    excluded: list[ExcludedDevice] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ContactKeys:
    """What `tokenim keys show @user` prints. `status`: trusted, pinned_now (first seen now) or changed;
    `verdict` says how the server's keys compare with the pinned ones (crypto/trust.py `Verdict`), and with a
    change `message` says what kind and what to do. `current_master` is empty when the server's key does not
    verify at all."""

    user_id: str
    status: str
    pinned_master: str
    pinned_fingerprint: str
    current_master: str
    current_fingerprint: str
    devices: list[dict[str, str]] = field(default_factory=list)
    verdict: str = ""
    version: int = 0  # the version of the pinned master key
    message: str = ""

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


def rotation_line(user_id: str, pin: Pin | None, warning: KeyWarning | None) -> tuple[str | None, str | None]:
    """What `read` shows for a `tokenim.device_list` "rotated" event: a notice when this device followed the
    signed rotation, else a warning (never both)."""
    who = safe_user(user_id)
    if warning is None and pin is not None:
        return f"{who} rotated their master key (version {pin.version})", None
    if warning is not None and warning.verdict is Verdict.CHANGED_UNSIGNED:
        return None, (
            f"{who}'s key changed without a signed rotation: compare fingerprints with them "
            f"(`tokenim keys show {who}`) before `tokenim keys accept {who}`."
        )
    kind = warning.verdict.value.replace("_", " ") if warning is not None else "its keys do not verify"
    return None, (
        f"{who}'s key changed, but the change does not verify ({kind}): their devices get nothing from you; "
        f"compare fingerprints with them (`tokenim keys show {who}`)."
    )


def warning_message(user_id: str, pin: Pin | None, warning: KeyWarning) -> str:
    """Why a user's devices get nothing now, by kind of change, and what to do about it (one sentence)."""
    who = safe_user(user_id)
    shown = warning.presented
    pinned = f"pinned fingerprint {fingerprint(pin.master_key)}" if pin is not None else "nothing pinned yet"
    now = f"the server now shows {fingerprint(shown.public_key)}" if shown is not None else "its key does not verify"
    compare = f"compare fingerprints with them, then run `tokenim keys accept {who}`."
    if not warning.acceptable:
        why = f" ({warning.problem.value.replace('_', ' ')})" if warning.problem is not None else ""
        return (
            f"the server's master key chain for {who} does not verify{why}: their devices get nothing until it does "
            f"({pinned}); the server is at fault, so tell its admin, and compare fingerprints with {who}."
        )
    if warning.verdict is Verdict.ROLLED_BACK:
        old = f" (version {shown.version}, older than the pinned version {pin.version})" if pin and shown else ""
        return f"the server shows an older master key of {who}{old}: a rollback ({pinned}, {now}); {compare}"
    if warning.verdict is Verdict.FORKED:
        return (
            f"the server shows another history of {who}'s master key than the one followed here: a forked chain "
            f"({pinned}, {now}); {compare}"
        )
    return f"{who}'s master key changed without a signed rotation ({pinned}, {now}); {compare}"


__all__ = [
    "ContactKeys",
    "ExcludedDevice",
    "KeyAcceptance",
    "SendResult",
    "digits",
    "rotation_line",
    "safe_device",
    "safe_user",
    "warning_message",
]
