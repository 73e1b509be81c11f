"""Request and response bodies of the HTTP API (strict pydantic models: no coercion, no extra fields)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from tokenim.core.limits import MAX_DEVICES_PER_USER, MAX_POSITION
from tokenim.protocol.wire import (
    DeviceIdStr,
    DeviceKeysJson,
    EventJson,
    MasterKeyJson,
    MegolmContentJson,
    OlmContentJson,
    OneTimeKeyJson,
    OneTimeKeysJson,
    RevocationJson,
    RotationJson,
    ToDeviceJson,
    UserIdStr,
)


def _no_nul_in_schema(schema: dict[str, Any]) -> None:
    """State the NUL rule in the JSON Schema of every plain text field (those with a pattern state their own)."""
    for prop in schema.get("properties", {}).values():
        if prop.get("type") == "string" and "pattern" not in prop and "const" not in prop and "enum" not in prop:
            prop["pattern"] = "^[^\\u0000]*$"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, json_schema_extra=_no_nul_in_schema)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """No text field holds NUL: no name or id needs it, and PostgreSQL cannot store it."""
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value


class HealthResponse(_Wire):
    status: str
    version: str
    server_name: str


class RegisterRequest(_Wire):
    username: str = Field(min_length=1, max_length=64)
    email: str | None = Field(default=None, max_length=254)
    invite: str | None = Field(default=None, max_length=128)
    master_key: MasterKeyJson
    device_keys: DeviceKeysJson
    one_time_keys: OneTimeKeysJson = Field(default_factory=dict)
    fallback_keys: OneTimeKeysJson = Field(default_factory=dict)


class RegisterResponse(_Wire):
    user_id: str
    device_id: str
    is_admin: bool


class ChallengeRequest(_Wire):
    user_id: UserIdStr = Field(max_length=320)
    device_id: DeviceIdStr = Field(max_length=32)


class ChallengeResponse(_Wire):
    nonce: str
    server_name: str
    expires_at: int


class LoginRequest(_Wire):
    user_id: UserIdStr = Field(max_length=320)
    device_id: DeviceIdStr = Field(max_length=32)
    nonce: str = Field(max_length=128)
    signature: str = Field(max_length=128)


class TokenResponse(_Wire):
    user_id: str
    device_id: str
    access_token: str
    access_expires_at: int
    refresh_token: str
    refresh_expires_at: int


class RefreshRequest(_Wire):
    refresh_token: str = Field(max_length=128)


class WhoAmIResponse(_Wire):
    user_id: str
    device_id: str
    is_admin: bool
    email: str | None
    key_rotation_days: int = Field(
        default=365, ge=1, description="the server's setting: rotate a master key once it is this many days old"
    )


class DeviceInfo(_Wire):
    device_id: str
    created_at: int
    last_seen_at: int | None
    keys: DeviceKeysJson


class DevicesResponse(_Wire):
    devices: list[DeviceInfo]


class KeysUploadRequest(_Wire):
    one_time_keys: OneTimeKeysJson = Field(default_factory=dict)
    fallback_keys: OneTimeKeysJson = Field(default_factory=dict)


class KeyCountsResponse(_Wire):
    one_time_keys: int
    has_fallback_key: bool


class KeysQueryRequest(_Wire):
    user_ids: list[UserIdStr] = Field(min_length=1, max_length=100)


class UserKeys(_Wire):
    master_key: MasterKeyJson
    devices: dict[str, DeviceKeysJson]
    rotations: list[RotationJson] = Field(
        default_factory=list, description="the chain: one rotation per version from 1 to the current one, oldest first"
    )
    revocations: list[RevocationJson] = Field(default_factory=list, description="the user's revoked devices")


class KeysQueryResponse(_Wire):
    users: dict[str, UserKeys]
    unknown: list[str]


class KeysClaimRequest(_Wire):
    devices: dict[UserIdStr, list[DeviceIdStr]] = Field(min_length=1)


class ClaimedKey(_Wire):
    key_id: str = Field(description="signed_curve25519:<key id>, as the owner uploaded it")
    key: OneTimeKeyJson


class KeysClaimResponse(_Wire):
    one_time_keys: dict[str, dict[str, ClaimedKey]]


class InviteCreateRequest(_Wire):
    expires_in_seconds: int = Field(default=7 * 86400, ge=60, le=365 * 86400)


class InviteResponse(_Wire):
    code: str
    expires_at: int


class OkResponse(_Wire):
    ok: bool = True


class LogoutAllResponse(_Wire):
    """`POST /v1/logout/all`: every session of the account ended, on all its devices."""

    ok: bool = True
    sessions_ended: int


class RotateRequest(_Wire):
    """`POST /v1/keys/rotate`: the new master key, the rotation to it, and every device re-signed by it."""

    master_key: MasterKeyJson
    rotation: RotationJson
    devices: list[DeviceKeysJson] = Field(max_length=MAX_DEVICES_PER_USER)


class RotateResponse(_Wire):
    version: int


class RevokeRequest(_Wire):
    """`POST /v1/keys/revoke`: a device revocation signed by the current master key."""

    revocation: RevocationJson


class AddDeviceRequest(_Wire):
    device_keys: DeviceKeysJson
    one_time_keys: OneTimeKeysJson = Field(default_factory=dict)
    fallback_keys: OneTimeKeysJson = Field(default_factory=dict)


# ---- messaging -------------------------------------------------------------------------------


class RoomCreateRequest(_Wire):
    name: str = Field(min_length=1, max_length=255)
    invite: list[UserIdStr] = Field(default_factory=list, max_length=100)


class DirectRoomRequest(_Wire):
    user_id: UserIdStr = Field(max_length=320)


class MemberRequest(_Wire):
    user_id: UserIdStr = Field(max_length=320)


class RenameRequest(_Wire):
    name: str = Field(min_length=1, max_length=255)


class RoomSummary(_Wire):
    room_id: str
    kind: str
    name: str
    membership: str
    role: str
    members: list[str]


class RoomsResponse(_Wire):
    rooms: list[RoomSummary]


class Member(_Wire):
    user_id: str
    membership: str
    role: str


class MembersResponse(_Wire):
    room_id: str
    members: list[Member]


class SendRequest(_Wire):
    # Checked by the service, which says why ("encrypt first"); the schema names the one accepted type.
    type: Annotated[str, Field(max_length=64), WithJsonSchema({"type": "string", "const": "m.room.encrypted"})]
    content: MegolmContentJson
    device_seq: int | None = Field(default=None, ge=1, le=MAX_POSITION)  # see docs/protocol.md, "Forked profiles"


class SendResponse(_Wire):
    event_id: str
    pos: int
    seq: int


class SyncResponse(_Wire):
    events: list[EventJson]
    to_device: list[ToDeviceJson]
    next_pos: int
    limited: bool
    one_time_keys: int  # left on the server for this device: the client tops up when low
    has_fallback_key: bool


class HistoryResponse(_Wire):
    events: list[EventJson]
    next_before: int | None


class ToDeviceRequest(_Wire):
    type: Literal["m.room.encrypted"]
    messages: dict[UserIdStr, dict[DeviceIdStr, OlmContentJson]]
    device_seq: int | None = Field(default=None, ge=1, le=MAX_POSITION)


class AckRequest(_Wire):
    up_to: int = Field(ge=0, le=MAX_POSITION)


class BlobResponse(_Wire):
    blob_id: str
    size: int
    sha256: str
