"""Wire objects of the key lifecycle done on the client: a device added by whoever holds the master key
(no session needed), and the audit records the client files for what only it does (exporting keys).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tokenim.core.canonical import canonical_json
from tokenim.core.errors import TokenIMError
from tokenim.core.ids import parse_user_id
from tokenim.core.limits import MAX_POSITION
from tokenim.protocol.api import _Wire
from tokenim.protocol.wire import DeviceIdStr, DeviceKeysJson, MasterKeyJson, OneTimeKeysJson, RotationJson, UserIdStr

ADD_DEVICE_CHALLENGE_TYPE = "tokenim.add_device.v1"

# What a client may file about itself, and the details each may carry (a count; whom and how for a verification).
CLIENT_AUDIT_EVENTS = ("master_key.exported", "room_keys.exported", "room_keys.imported", "person.verified")
ClientAuditEvent = Literal["master_key.exported", "room_keys.exported", "room_keys.imported", "person.verified"]
MAX_AUDIT_LIMIT = 1000
# Add-device challenges issued in any 60 s (their lifetime), used or not: per user, and per client address.
MAX_ADD_CHALLENGES_PER_USER = 3
MAX_ADD_CHALLENGES_PER_ADDRESS = 10


def add_device_payload(*, server_name: str, user_id: str, device_id: str, device_ed25519: str, nonce: str) -> bytes:
    """The canonical JSON the master key signs to add a device: bound to the server, the user, the new
    device and its Ed25519 key, and a single-use nonce, so the signature is useless anywhere else."""
    return canonical_json(
        {
            "type": ADD_DEVICE_CHALLENGE_TYPE,
            "server_name": server_name,
            "user_id": user_id,
            "device_id": device_id,
            "device_ed25519": device_ed25519,
            "nonce": nonce,
        }
    )


class MasterChallengeRequest(_Wire):
    user_id: UserIdStr = Field(max_length=320)
    device_id: DeviceIdStr = Field(max_length=32, description="the id of the device to be added")


class MasterChallengeResponse(_Wire):
    nonce: str
    server_name: str
    expires_at: int
    master_key: MasterKeyJson = Field(description="the user's current master key, so the client can check its key first")
    rotations: list[RotationJson] = Field(description="the chain to it, oldest first (as POST /v1/keys/query)")


class AddDeviceByMasterKeyRequest(_Wire):
    user_id: UserIdStr = Field(max_length=320)
    nonce: str = Field(max_length=128)
    signature: str = Field(max_length=128, description="the master key's signature of the add-device payload")
    device_keys: DeviceKeysJson
    one_time_keys: OneTimeKeysJson = Field(default_factory=dict)
    fallback_keys: OneTimeKeysJson = Field(default_factory=dict)


class AuditDetails(_Wire):
    sessions: int | None = Field(default=None, ge=0, le=MAX_POSITION, description="how many room keys")
    peer: UserIdStr | None = Field(default=None, max_length=320, description="person.verified: whom")
    method: Literal["sas", "safety_number"] | None = Field(default=None, description="person.verified: how")

    @field_validator("peer")
    @classmethod
    def _peer_is_a_user_id(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_user_id(value)
            except TokenIMError:
                raise ValueError("peer is not a user id") from None
        return value


class ClientAuditRequest(_Wire):
    event: ClientAuditEvent
    details: AuditDetails = Field(default_factory=AuditDetails)

    @model_validator(mode="after")
    def _details_fit_the_event(self) -> ClientAuditRequest:
        d = self.details
        if self.event == "person.verified":
            if d.peer is None or d.method is None or d.sessions is not None:
                raise ValueError("person.verified carries peer and method, nothing else")
        elif d.peer is not None or d.method is not None:
            raise ValueError(f"{self.event} carries at most sessions")
        return self


class AuditEntry(_Wire):
    id: int = Field(description="the record's number: pass it as `before` to read older records")
    ts: int
    event: str
    device_id: str | None
    details: dict[str, Any]


class AuditResponse(_Wire):
    events: list[AuditEntry] = Field(description="newest first")
    next_before: int | None = Field(description="`before` for the next (older) page; null when there are no older records")


__all__ = [
    "ADD_DEVICE_CHALLENGE_TYPE",
    "CLIENT_AUDIT_EVENTS",
    "MAX_ADD_CHALLENGES_PER_ADDRESS",
    "MAX_ADD_CHALLENGES_PER_USER",
    "MAX_AUDIT_LIMIT",
    "AddDeviceByMasterKeyRequest",
    "AuditDetails",
    "AuditEntry",
    "AuditResponse",
    "ClientAuditEvent",
    "ClientAuditRequest",
    "MasterChallengeRequest",
    "MasterChallengeResponse",
    "add_device_payload",
]
