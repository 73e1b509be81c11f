"""Routes for rooms, messages, sync, to-device messages and files."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.convertors import Convertor, register_url_convertor

from tokenim.core.errors import ErrorCode as E
from tokenim.core.limits import MAX_POSITION
from tokenim.protocol.api import (
    AckRequest,
    BlobResponse,
    DirectRoomRequest,
    HistoryResponse,
    MemberRequest,
    MembersResponse,
    OkResponse,
    RenameRequest,
    RoomCreateRequest,
    RoomsResponse,
    RoomSummary,
    SendRequest,
    SendResponse,
    SyncResponse,
    ToDeviceRequest,
)
from tokenim.protocol.wire import BLOB_ID_PATTERN, ROOM_ID_PATTERN, TXN_ID_PATTERN
from tokenim.server.api.contract import errors
from tokenim.server.api.encoding import content_response
from tokenim.server.services.common import Requester
from tokenim.server.services.files import FileService
from tokenim.server.services.messages import MessageService
from tokenim.server.services.rooms import RoomService


class _RoomSegment(Convertor[str]):
    """A room id path segment: anything but `direct`, so GET /v1/rooms/direct is a 405 (that path takes POST
    only) instead of a room id that fails its pattern; malformed ids still reach the pattern check (400)."""

    regex = r"(?!direct$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("room", _RoomSegment())
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}

# Room ids are made by the server ("!" and URL-safe characters); anything else can't name a room.
RoomId = Annotated[str, Path(max_length=64, pattern=ROOM_ID_PATTERN)]
# Checked by the services (with their own sentences); the schema states the rule.
TxnId = Annotated[str, Path(json_schema_extra={"pattern": TXN_ID_PATTERN})]
BlobId = Annotated[str, Path(json_schema_extra={"pattern": BLOB_ID_PATTERN})]


def _plain_digits(value: object) -> object:
    """A number in a path or query string is plain decimal digits: no sign, spaces, underscores, other digits,
    decimal point or leading zero, so each number has one spelling."""
    if isinstance(value, str) and not (
        value.isascii() and value.isdigit() and len(value) <= 20 and (value == "0" or not value.startswith("0"))
    ):
        raise PydanticCustomError("int_digits", "must be written with the digits 0-9 only, without a leading zero")
    return value


# Every integer path or query parameter is one of these: strict digits, then the documented bounds. The
# bounds come first so FastAPI writes them as JSON Schema `minimum`/`maximum` in /openapi.json.
Digits = BeforeValidator(_plain_digits)
Position = Annotated[int, Query(ge=0, le=MAX_POSITION), Digits]
Limit = Annotated[int, Query(ge=1, le=1000), Digits]


def build_messaging_router(
    rooms: RoomService, messages: MessageService, files: FileService, requester: Callable[..., Awaitable[Requester]]
) -> APIRouter:
    router = APIRouter()
    Me = Annotated[Requester, Depends(requester)]

    @router.get("/v1/rooms", response_model=RoomsResponse, tags=["rooms"], responses=errors(body=False))
    async def list_rooms(me: Me) -> RoomsResponse:
        return await rooms.access_rooms(me)

    @router.post("/v1/rooms", response_model=RoomSummary, tags=["rooms"], responses=errors(E.UNKNOWN_USER, E.ROOM_NAME_TAKEN))
    async def create_room(me: Me, body: RoomCreateRequest) -> RoomSummary:
        return await rooms.do_create_group(me, body.name, body.invite)

    @router.post("/v1/rooms/direct", response_model=RoomSummary, tags=["rooms"], responses=errors(E.UNKNOWN_USER))
    async def direct_room(me: Me, body: DirectRoomRequest) -> RoomSummary:
        return await rooms.do_direct(me, body.user_id)

    @router.get(
        "/v1/rooms/{room_id:room}",
        response_model=RoomSummary,
        tags=["rooms"],
        responses=errors(E.NOT_FOUND, E.FORBIDDEN, body=False),
    )
    async def get_room(me: Me, room_id: RoomId) -> RoomSummary:
        return await rooms.access_room(me, room_id)

    @router.get(
        "/v1/rooms/{room_id:room}/members",
        response_model=MembersResponse,
        tags=["rooms"],
        responses=errors(E.NOT_FOUND, E.FORBIDDEN, body=False),
    )
    async def members(me: Me, room_id: RoomId) -> MembersResponse:
        return await rooms.access_members(me, room_id)

    @router.post(
        "/v1/rooms/{room_id:room}/invite",
        response_model=OkResponse,
        tags=["rooms"],
        responses=errors(E.NOT_FOUND, E.FORBIDDEN, E.UNKNOWN_USER),
    )
    async def invite(me: Me, room_id: RoomId, body: MemberRequest) -> OkResponse:
        await rooms.do_invite(me, room_id, body.user_id)
        return OkResponse()

    @router.post(
        "/v1/rooms/{room_id:room}/join",
        response_model=RoomSummary,
        tags=["rooms"],
        responses=errors(E.NOT_FOUND, E.FORBIDDEN, body=False),
    )
    async def join(me: Me, room_id: RoomId) -> RoomSummary:
        return await rooms.do_join(me, room_id)

    @router.post(
        "/v1/rooms/{room_id:room}/leave",
        response_model=OkResponse,
        tags=["rooms"],
        responses=errors(E.NOT_FOUND, E.FORBIDDEN, body=False),
    )
    async def leave(me: Me, room_id: RoomId) -> OkResponse:
        await rooms.do_leave(me, room_id)
        return OkResponse()

    @router.post(
        "/v1/rooms/{room_id:room}/remove", response_model=OkResponse, tags=["rooms"], responses=errors(E.NOT_FOUND, E.FORBIDDEN)
    )
    async def remove(me: Me, room_id: RoomId, body: MemberRequest) -> OkResponse:
        await rooms.do_remove(me, room_id, body.user_id)
        return OkResponse()

    @router.post(
        "/v1/rooms/{room_id:room}/name",
        response_model=OkResponse,
        tags=["rooms"],
        responses=errors(E.NOT_FOUND, E.FORBIDDEN, E.ROOM_NAME_TAKEN),
    )
    async def rename(me: Me, room_id: RoomId, body: RenameRequest) -> OkResponse:
        await rooms.do_rename(me, room_id, body.name)
        return OkResponse()

    @router.put(
        "/v1/rooms/{room_id:room}/send/{txn_id}",
        response_model=SendResponse,
        tags=["messages"],
        responses=errors(E.NOT_FOUND, E.FORBIDDEN, E.SENDER_MISMATCH, E.PROFILE_FORKED),
    )
    async def send(me: Me, room_id: RoomId, txn_id: TxnId, body: SendRequest) -> SendResponse:
        messages.check_send(body.type, body.content, txn_id)
        return await messages.do_send(me, room_id, txn_id, body.content, body.device_seq)

    @router.get(
        "/v1/rooms/{room_id:room}/history",
        response_model=HistoryResponse,
        tags=["messages"],
        responses=errors(E.NOT_FOUND, E.FORBIDDEN, body=False),
    )
    async def history(
        me: Me,
        room_id: RoomId,
        before: Annotated[int | None, Query(ge=0, le=MAX_POSITION), Digits] = None,
        limit: Limit = 50,
    ) -> Response:
        return content_response(await messages.access_history(me, room_id, before, limit))

    @router.get("/v1/sync", response_model=SyncResponse, tags=["messages"], responses=errors(body=False))
    async def sync(
        me: Me,
        since: Position = 0,
        limit: Limit = 500,
        to_device_after: Position = 0,
    ) -> Response:
        return content_response(await messages.access_sync(me, since, limit, to_device_after))

    @router.post(
        "/v1/to_device",
        response_model=OkResponse,
        tags=["messages"],
        responses=errors(E.SENDER_MISMATCH, E.PROFILE_FORKED, E.RATE_LIMITED),
    )
    async def send_to_device(me: Me, body: ToDeviceRequest) -> OkResponse:
        await messages.do_send_to_device(me, body.type, body.messages, body.device_seq)
        return OkResponse()

    @router.post("/v1/to_device/ack", response_model=OkResponse, tags=["messages"], responses=errors())
    async def ack_to_device(me: Me, body: AckRequest) -> OkResponse:
        await messages.do_ack_to_device(me, body.up_to)
        return OkResponse()

    @router.post(
        "/v1/blobs",
        response_model=BlobResponse,
        tags=["files"],
        description="Upload a file's ciphertext. A user's files together may take at most `blob_quota_bytes` "
        "(`quota_exceeded`, 413, naming the quota and what is used).",
        responses=errors(E.QUOTA_EXCEEDED, body=False),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def upload(me: Me, request: Request) -> BlobResponse:
        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                yield chunk

        return await files.do_upload(me, chunks())

    @router.get(
        "/v1/blobs/{blob_id}",
        tags=["files"],
        response_model=None,
        responses={**errors(E.NOT_FOUND, body=False), 200: {"content": {"application/octet-stream": {"schema": BINARY}}}},
    )
    async def download(me: Me, blob_id: BlobId) -> FileResponse:
        path, _size = await files.access_blob(blob_id)
        return FileResponse(path, media_type="application/octet-stream")

    return router
