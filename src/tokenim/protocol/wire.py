"""JSON Schemas of what the server relays as stored (key objects, events, to-device messages) and of
the WebSocket frames. They document the wire for /openapi.json. Validation of stored objects stays in
`protocol.keys`, `protocol.events` and the services, which give the documented error codes and human
sentences; the server also checks every client WebSocket frame against `CLIENT_FRAMES` last, so a member
the schema does not name is refused rather than silently accepted or ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from tokenim.core.encoding import b64decode
from tokenim.core.ids import DEVICE_ID_PATTERN, USER_ID_PATTERN
from tokenim.core.limits import MAX_POSITION
from tokenim.protocol.keys import MAX_TIME_MS, MIN_TIME_MS, ONE_TIME_KEY_ID

B64 = r"^[A-Za-z0-9+/]*$"
USER_ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": USER_ID_PATTERN, "maxLength": 320}
DEVICE_ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": DEVICE_ID_PATTERN}
ROOM_ID_PATTERN = r"^![A-Za-z0-9_-]{1,63}$"
TXN_ID_PATTERN = r"^[A-Za-z0-9._~-]{1,64}$"
BLOB_ID_PATTERN = r"^[A-Za-z0-9_-]{22,64}$"
OTK_NAME_PATTERN = rf"^signed_curve25519:{ONE_TIME_KEY_ID.pattern}$"


def _unpadded_base64(value: str) -> str:
    b64decode(value)  # a ValueError (a length of 4n + 1, stray bits, padding) is the field's error
    return value


# Opaque bytes the server relays or stores: canonical unpadded base64, not just its alphabet ("A" is not).
# The pattern says the same for /openapi.json: whole groups of 4, then 2 or 3 characters with no stray bits.
CANONICAL_B64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048])?$"
UnpaddedBase64 = AfterValidator(_unpadded_base64)
UserIdStr = Annotated[str, WithJsonSchema(USER_ID_SCHEMA)]
DeviceIdStr = Annotated[str, WithJsonSchema(DEVICE_ID_SCHEMA)]
Signatures = Annotated[
    dict[str, dict[str, str]],
    Field(description='{"<user id>": {"ed25519:<key id>": "<unpadded base64 signature>"}}'),
]
TimeMs = Annotated[int, Field(ge=MIN_TIME_MS, le=MAX_TIME_MS, description="milliseconds since the Unix epoch")]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MasterKeyObject(_Doc):
    """The user's self-signed master key (Ed25519); the key id is the public key itself."""

    user_id: UserIdStr
    usage: list[Literal["master"]] = Field(min_length=1, max_length=1)
    keys: dict[str, str] = Field(min_length=1, max_length=1, description='{"ed25519:<public key>": "<public key>"}')
    version: int = Field(ge=0)
    created_at: TimeMs
    signatures: Signatures


class DeviceKeysObject(_Doc):
    """A device's Curve25519 (Olm) and Ed25519 (signing) keys, signed by the device and the master key."""

    user_id: UserIdStr
    device_id: DeviceIdStr
    algorithms: list[Literal["tokenim.olm.v1.curve25519-aes-sha2", "tokenim.megolm.v1.aes-sha2"]] = Field(
        min_length=2, max_length=2
    )
    keys: dict[str, str] = Field(description='{"curve25519:<device id>": "<pub>", "ed25519:<device id>": "<pub>"}')
    master_key_version: int = Field(ge=0)
    created_at: TimeMs
    signatures: Signatures


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class OneTimeKeyObject(_Doc):
    """A signed Curve25519 one-time key; a fallback key has `"fallback": true` inside the signed object."""

    key: str = Field(pattern=B64, min_length=43, max_length=43)
    # `true` on a fallback key; absent on a one-time key (never null or false: the server refuses those).
    fallback: Literal[True] | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)
    signatures: Signatures


class RotationObject(_Doc):
    """The user's master key moves from version n to n + 1, signed by the old key and by the new key."""

    type: Literal["tokenim.master_key_rotation.v1"]
    user_id: UserIdStr
    old_key: str = Field(pattern=B64, min_length=43, max_length=43, description="the master public key of version n")
    old_version: int = Field(ge=1)
    new_key: str = Field(pattern=B64, min_length=43, max_length=43, description="the master public key of version n + 1")
    new_version: int = Field(ge=2)
    ts: TimeMs
    signatures: Signatures


class RevocationObject(_Doc):
    """A device that must never be trusted or accepted again, signed by the user's current master key."""

    type: Literal["tokenim.device_revocation.v1"]
    user_id: UserIdStr
    device_id: DeviceIdStr
    keys: dict[str, str] = Field(description='{"curve25519:<device id>": "<pub>", "ed25519:<device id>": "<pub>"}')
    master_key_version: int = Field(ge=1)
    ts: TimeMs
    signatures: Signatures


def _flat(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


ONE_TIME_KEY_MAP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'One-time (or fallback) keys by "signed_curve25519:<key id>".',
    "propertyNames": {"pattern": OTK_NAME_PATTERN},
    "additionalProperties": _flat(OneTimeKeyObject),
}
MasterKeyJson = Annotated[dict[str, Any], WithJsonSchema(_flat(MasterKeyObject))]
DeviceKeysJson = Annotated[dict[str, Any], WithJsonSchema(_flat(DeviceKeysObject))]
RotationJson = Annotated[dict[str, Any], WithJsonSchema(_flat(RotationObject))]
RevocationJson = Annotated[dict[str, Any], WithJsonSchema(_flat(RevocationObject))]
OneTimeKeysJson = Annotated[dict[str, Any], WithJsonSchema(ONE_TIME_KEY_MAP_SCHEMA)]
OneTimeKeyJson = Annotated[dict[str, Any], WithJsonSchema(_flat(OneTimeKeyObject))]


class MegolmContent(_Doc):
    """The content of an `m.room.encrypted` room event: Megolm ciphertext and who sent it."""

    algorithm: Literal["tokenim.megolm.v1.aes-sha2"]
    ciphertext: str = Field(description="the vodozemac MegolmMessage, unpadded base64")
    session_id: str
    sender_key: str = Field(description="the sending device's Curve25519 key")
    device_id: str = Field(description="the sending device's id")


class OlmContent(BaseModel):
    """The content of an `m.room.encrypted` to-device message: one Olm ciphertext per recipient Curve25519 key.

    The server checks only `algorithm`, `sender_key` and that `ciphertext` is an object; the recipient checks the rest.
    """

    model_config = ConfigDict(extra="allow")

    algorithm: Literal["tokenim.olm.v1.curve25519-aes-sha2"]
    sender_key: str = Field(description="the sending device's Curve25519 key")
    ciphertext: dict[str, Any] = Field(
        description='by the recipient device\'s Curve25519 key: {"type": 0 (pre-key) or 1 (normal), '
        '"body": "<the Olm message bytes, unpadded base64>"}'
    )


def _content_schema() -> dict[str, Any]:
    schema = _flat(MegolmContent)
    schema.pop("title", None)
    return schema


MegolmContentJson = Annotated[dict[str, Any], WithJsonSchema(_content_schema())]
OlmContentJson = Annotated[dict[str, Any], WithJsonSchema(_flat(OlmContent))]


class Event(_Doc):
    """A room event as sync, history and the WebSocket deliver it."""

    pos: int = Field(ge=1, description="global stream position (the sync token)")
    event_id: str
    room_id: str
    seq: int = Field(ge=1, description="sequence number within the room")
    type: str = Field(description="m.room.encrypted, m.room.create, m.room.member, m.room.name or tokenim.device_list")
    sender: str
    sender_device: str | None = Field(description="set on m.room.encrypted events")
    content: dict[str, Any] = Field(
        description="m.room.encrypted: MegolmContent; m.room.member: {user_id, membership, removed_by?}; "
        "m.room.name: {name}; m.room.create: {kind, name, creator}; tokenim.device_list: {user_id, device_id, change}"
    )
    ts: int = Field(description="server time in milliseconds")


class ToDeviceMessage(_Doc):
    """A to-device message as sync and the WebSocket deliver it, kept until the device acknowledges its id."""

    id: int = Field(ge=1)
    sender: str
    sender_device: str
    type: str = Field(description="m.room.encrypted (content: OlmContent)")
    content: dict[str, Any]


EventJson = Annotated[dict[str, Any], WithJsonSchema(_flat(Event))]
ToDeviceJson = Annotated[dict[str, Any], WithJsonSchema(_flat(ToDeviceMessage))]


# ---- WebSocket frames ------------------------------------------------------------------------

Pos = Annotated[int, Field(ge=0, le=MAX_POSITION)]


class WsSyncFrame(_Doc):
    """Client: send the backlog after these positions (to-device first), then go live."""

    type: Literal["sync"]
    since: Pos = 0
    to_device_after: Pos = 0


class WsSendFrame(_Doc):
    """Client: send an encrypted room event; answered by `sent` or an `error` frame carrying the txn_id."""

    type: Literal["send"]
    room_id: str
    txn_id: str
    content: MegolmContent
    device_seq: int | None = Field(default=None, ge=1, le=MAX_POSITION, description='see "Forked profiles"')


class WsAckToDeviceFrame(_Doc):
    """Client: the device has stored every to-device message up to this id."""

    type: Literal["ack_to_device"]
    up_to: Pos


class WsPingFrame(_Doc):
    """Client: answered by `pong`."""

    type: Literal["ping"]


class WsEventFrame(_Doc):
    type: Literal["event"]
    event: Event


class WsToDeviceFrame(_Doc):
    type: Literal["to_device"]
    message: ToDeviceMessage


class WsSyncedFrame(_Doc):
    """Server: the backlog is sent; live frames follow."""

    type: Literal["synced"]
    pos: int


class WsSentFrame(_Doc):
    type: Literal["sent"]
    txn_id: str
    event_id: str
    pos: int
    seq: int


class WsPongFrame(_Doc):
    type: Literal["pong"]


class WsKeysLowFrame(_Doc):
    """Server: this device's published one-time keys run low: upload more."""

    type: Literal["keys_low"]


class WsErrorBody(_Doc):
    code: str
    message: str
    status: int
    details: dict[str, Any] | None = None


class WsErrorFrame(_Doc):
    """Server: a refused frame (with the txn_id of a refused send), or a refused token just before close 4401."""

    type: Literal["error"]
    error: WsErrorBody
    txn_id: str | None = None


ClientFrame = Annotated[WsSyncFrame | WsSendFrame | WsAckToDeviceFrame | WsPingFrame, Field(discriminator="type")]
CLIENT_FRAMES: TypeAdapter[WsSyncFrame | WsSendFrame | WsAckToDeviceFrame | WsPingFrame] = TypeAdapter(ClientFrame)
"""What the server accepts from a client: the same models /openapi.json shows, so the two cannot disagree."""

WS_FRAMES: list[type[BaseModel]] = [
    WsSyncFrame, WsSendFrame, WsAckToDeviceFrame, WsPingFrame, WsEventFrame, WsToDeviceFrame, WsSyncedFrame,
    WsSentFrame, WsPongFrame, WsKeysLowFrame, WsErrorFrame,
]  # fmt: skip


def websocket_frame_schemas() -> dict[str, dict[str, Any]]:
    """Component schemas for the WebSocket frames, with their nested models as sibling components."""
    out: dict[str, dict[str, Any]] = {}
    for model in WS_FRAMES:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out
