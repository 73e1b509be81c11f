"""Routes of the key lifecycle done on the client: add a device by the master key, file and read one's
own audit records."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from tokenim.core.errors import ErrorCode as E
from tokenim.core.limits import MAX_POSITION
from tokenim.protocol.api import OkResponse, TokenResponse
from tokenim.protocol.key_lifecycle import (
    AddDeviceByMasterKeyRequest,
    AuditResponse,
    ClientAuditRequest,
    MasterChallengeRequest,
    MasterChallengeResponse,
)
from tokenim.server.api.contract import errors
from tokenim.server.api.messaging import Digits, Limit
from tokenim.server.api.routes import client_address
from tokenim.server.services.audit_events import AuditService
from tokenim.server.services.common import Requester
from tokenim.server.services.master_device import MasterDeviceService

Before = Annotated[int | None, Query(ge=1, le=MAX_POSITION), Digits]


def build_key_lifecycle_router(
    master_devices: MasterDeviceService, audit: AuditService, requester: Callable[..., Awaitable[Requester]]
) -> APIRouter:
    """The routes, closed over the two services they use."""
    router = APIRouter()
    Me = Annotated[Requester, Depends(requester)]

    @router.post(
        "/v1/devices/by_master_key/challenge",
        response_model=MasterChallengeResponse,
        tags=["devices"],
        description="A single-use nonce (60 s) for adding `device_id` to `user_id` with the master key; no token needed.",
        responses=errors(E.DEVICE_REVOKED, E.UNKNOWN_USER, E.DEVICE_EXISTS, E.RATE_LIMITED, auth=False),
    )
    async def challenge(request: Request, body: MasterChallengeRequest) -> MasterChallengeResponse:
        return await master_devices.do_challenge(body.user_id, body.device_id, client_address(request))

    @router.post(
        "/v1/devices/by_master_key/add",
        response_model=TokenResponse,
        tags=["devices"],
        description=(
            "Add a device whose keys, and the challenge, are signed by the user's current master key; "
            "answers with the new device's first tokens."
        ),
        responses=errors(
            E.BAD_KEY_OBJECT,
            E.BAD_SIGNATURE,
            E.TOO_MANY_KEYS,
            E.CHALLENGE_INVALID,
            E.CHALLENGE_EXPIRED,
            E.DEVICE_REVOKED,
            E.UNKNOWN_USER,
            E.DEVICE_EXISTS,
            E.KEY_CONFLICT,
            auth=False,
        ),
    )
    async def add(body: AddDeviceByMasterKeyRequest) -> TokenResponse:
        return await master_devices.do_add(master_devices.check_add(body))

    @router.post(
        "/v1/audit/events",
        response_model=OkResponse,
        tags=["audit"],
        description="File a record of something only the client sees (one of the allowed `event` kinds).",
        responses=errors(),
    )
    async def record(me: Me, body: ClientAuditRequest) -> OkResponse:
        await audit.do_record_client_event(me, body)
        return OkResponse()

    @router.get(
        "/v1/audit",
        response_model=AuditResponse,
        tags=["audit"],
        description="The user's records, newest first; `before` (a record's `id`, or `next_before`) pages to older ones.",
        responses=errors(body=False),
    )
    async def events(me: Me, limit: Limit = 100, before: Before = None) -> AuditResponse:
        return await audit.access_events(me, limit, before)

    return router
