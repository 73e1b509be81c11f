"""Routes for rooms, messages, sync, to-device messages and files."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse

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
from tokenim.server.services.common import Requester
from tokenim.server.services.files import FileService
from tokenim.server.services.messages import MessageService
from tokenim.server.services.rooms import RoomService

# Room ids are made by the server ("!" and URL-safe characters); anything else can't name a room.
RoomId = Annotated[str, Path(max_length=64, pattern=r"^![A-Za-z0-9_-]+$")]
Position = Annotated[int, Query(ge=0, le=MAX_POSITION)]


def build_messaging_router(
    rooms: RoomService, messages: MessageService, files: FileService, requester: Callable[..., Awaitable[Requester]]
) -> APIRouter:
    router = APIRouter()
    Me = Annotated[Requester, Depends(requester)]

    @router.get("/v1/rooms", response_model=RoomsResponse, tags=["rooms"])
    async def list_rooms(me: Me) -> RoomsResponse:
        return await rooms.access_rooms(me)

    @router.post("/v1/rooms", response_model=RoomSummary, tags=["rooms"])
    async def create_room(me: Me, body: RoomCreateRequest) -> RoomSummary:
        return await rooms.do_create_group(me, body.name, body.invite)

    @router.post("/v1/rooms/direct", response_model=RoomSummary, tags=["rooms"])
    async def direct_room(me: Me, body: DirectRoomRequest) -> RoomSummary:
        return await rooms.do_direct(me, body.user_id)

    @router.get("/v1/rooms/{room_id}", response_model=RoomSummary, tags=["rooms"])
    async def get_room(me: Me, room_id: RoomId) -> RoomSummary:
        return await rooms.access_room(me, room_id)

    @router.get("/v1/rooms/{room_id}/members", response_model=MembersResponse, tags=["rooms"])
    async def members(me: Me, room_id: RoomId) -> MembersResponse:
        return await rooms.access_members(me, room_id)

    @router.post("/v1/rooms/{room_id}/invite", response_model=OkResponse, tags=["rooms"])
    async def invite(me: Me, room_id: RoomId, body: MemberRequest) -> OkResponse:
        await rooms.do_invite(me, room_id, body.user_id)
        return OkResponse()

    @router.post("/v1/rooms/{room_id}/join", response_model=RoomSummary, tags=["rooms"])
    async def join(me: Me, room_id: RoomId) -> RoomSummary:
        return await rooms.do_join(me, room_id)

    @router.post("/v1/rooms/{room_id}/leave", response_model=OkResponse, tags=["rooms"])
    async def leave(me: Me, room_id: RoomId) -> OkResponse:
        await rooms.do_leave(me, room_id)
        return OkResponse()

    @router.post("/v1/rooms/{room_id}/remove", response_model=OkResponse, tags=["rooms"])
    async def remove(me: Me, room_id: RoomId, body: MemberRequest) -> OkResponse:
        await rooms.do_remove(me, room_id, body.user_id)
        return OkResponse()

    @router.post("/v1/rooms/{room_id}/name", response_model=OkResponse, tags=["rooms"])
    async def rename(me: Me, room_id: RoomId, body: RenameRequest) -> OkResponse:
        await rooms.do_rename(me, room_id, body.name)
        return OkResponse()

    @router.put("/v1/rooms/{room_id}/send/{txn_id}", response_model=SendResponse, tags=["messages"])
    async def send(me: Me, room_id: RoomId, txn_id: str, body: SendRequest) -> SendResponse:
        messages.check_send(body.type, body.content, txn_id)
        return await messages.do_send(me, room_id, txn_id, body.content, body.device_seq)

    @router.get("/v1/rooms/{room_id}/history", response_model=HistoryResponse, tags=["messages"])
    async def history(
        me: Me,
        room_id: RoomId,
        before: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> HistoryResponse:
        return await messages.access_history(me, room_id, before, limit)

    @router.get("/v1/sync", response_model=SyncResponse, tags=["messages"])
    async def sync(
        me: Me,
        since: Position = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 500,
        to_device_after: Position = 0,
    ) -> SyncResponse:
        return await messages.access_sync(me, since, limit, to_device_after)

    @router.post("/v1/to_device", response_model=OkResponse, tags=["messages"])
    async def send_to_device(me: Me, body: ToDeviceRequest) -> OkResponse:
        await messages.do_send_to_device(me, body.type, body.messages, body.device_seq)
        return OkResponse()

    @router.post("/v1/to_device/ack", response_model=OkResponse, tags=["messages"])
    async def ack_to_device(me: Me, body: AckRequest) -> OkResponse:
        await messages.do_ack_to_device(me, body.up_to)
        return OkResponse()

    @router.post("/v1/blobs", response_model=BlobResponse, tags=["files"])
    async def upload(me: Me, request: Request) -> BlobResponse:
        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                yield chunk

        return await files.do_upload(me, chunks())

    @router.get("/v1/blobs/{blob_id}", tags=["files"], response_model=None)
    async def download(me: Me, blob_id: str) -> FileResponse:
        path, _size = await files.access_blob(blob_id)
        return FileResponse(path, media_type="application/octet-stream")

    return router
