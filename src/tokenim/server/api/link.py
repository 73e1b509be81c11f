"""Routes for linking a new device: open a slot, claim it, and the two mailboxes. The server only relays."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from tokenim.core.errors import ErrorCode as E
from tokenim.protocol.api import OkResponse
from tokenim.protocol.link import (
    LINK_ID_PATTERN,
    MAX_LINK_MESSAGES,
    LinkClaimResponse,
    LinkCloseRequest,
    LinkMessagesResponse,
    LinkOpenRequest,
    LinkOpenResponse,
    LinkPostRequest,
)
from tokenim.server.api.contract import errors
from tokenim.server.api.messaging import Digits
from tokenim.server.api.routes import BEARER, client_address
from tokenim.server.services.common import Requester
from tokenim.server.services.link import LinkService

LinkIdPath = Annotated[str, Path(min_length=6, max_length=6, pattern=LINK_ID_PATTERN)]
SeqPath = Annotated[int, Path(ge=1, le=MAX_LINK_MESSAGES), Digits]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
MAILBOX = (
    " Authenticated as the new device (`Authorization: Bearer <token from POST /v1/link>`) or as the device "
    "that claimed the slot (its access token)."
)


def build_link_router(link: LinkService, requester: Callable[..., Awaitable[Requester]]) -> APIRouter:
    """The link routes, closed over the one service they use."""
    router = APIRouter()
    Me = Annotated[Requester, Depends(requester)]

    @router.post(
        "/v1/link",
        response_model=LinkOpenResponse,
        tags=["link"],
        description="Open a slot for linking a new device of `user_id` (no token: the device has none yet).",
        responses=errors(E.UNKNOWN_USER, E.RATE_LIMITED, auth=False),
    )
    async def open_link(request: Request, body: LinkOpenRequest) -> LinkOpenResponse:
        return await link.do_open(body.user_id, client_address(request))

    @router.post(
        "/v1/link/{link_id}/claim",
        response_model=LinkClaimResponse,
        tags=["link"],
        description="Claim the slot named by a link code's first part, to approve the device waiting there.",
        responses=errors(E.NOT_FOUND, E.LINK_EXPIRED, E.LINK_USED, E.LINK_FAILED, body=False),
    )
    async def claim_link(me: Me, link_id: LinkIdPath) -> LinkClaimResponse:
        return await link.do_claim(me, link_id)

    @router.put(
        "/v1/link/{link_id}/messages/{seq}",
        response_model=OkResponse,
        tags=["link"],
        description="Post message `seq` of the caller's side (opaque base64)." + MAILBOX,
        responses=errors(E.FORBIDDEN, E.NOT_FOUND, E.LINK_EXPIRED, E.LINK_USED, E.LINK_FAILED),
    )
    async def post_message(request: Request, _: Bearer, link_id: LinkIdPath, seq: SeqPath, body: LinkPostRequest) -> OkResponse:
        await link.do_post(link_id, request.headers.get("authorization"), seq, body.body)
        return OkResponse()

    @router.get(
        "/v1/link/{link_id}/messages",
        response_model=LinkMessagesResponse,
        tags=["link"],
        description="The other side's messages numbered above `after`, oldest first; poll until they arrive." + MAILBOX,
        responses=errors(E.FORBIDDEN, E.NOT_FOUND, E.LINK_EXPIRED, E.LINK_USED, E.LINK_FAILED, body=False),
    )
    async def read_messages(
        request: Request, _: Bearer, link_id: LinkIdPath, after: Annotated[int, Query(ge=0, le=MAX_LINK_MESSAGES), Digits] = 0
    ) -> LinkMessagesResponse:
        return await link.access_messages(link_id, request.headers.get("authorization"), after)

    @router.post(
        "/v1/link/{link_id}/close",
        response_model=OkResponse,
        tags=["link"],
        description="End the link: `approved` (the approving device, at the end) or `failed` with a reason (either side)."
        + MAILBOX,
        responses=errors(E.FORBIDDEN, E.NOT_FOUND, E.LINK_EXPIRED, E.LINK_USED, E.LINK_FAILED),
    )
    async def close_link(request: Request, _: Bearer, link_id: LinkIdPath, body: LinkCloseRequest) -> OkResponse:
        await link.do_close(link_id, request.headers.get("authorization"), body.outcome, body.reason)
        return OkResponse()

    return router
