"""Routes for the master-key chain: rotate the master key, revoke a device."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends

from tokenim.core.errors import ErrorCode as E
from tokenim.protocol.api import OkResponse, RevokeRequest, RotateRequest, RotateResponse
from tokenim.server.api.contract import STEP_UP, Otp, errors
from tokenim.server.services.common import Requester
from tokenim.server.services.identity import IdentityService


def build_identity_router(identity: IdentityService, requester: Callable[..., Awaitable[Requester]]) -> APIRouter:
    """The identity routes, closed over the one service they use."""
    router = APIRouter()
    Me = Annotated[Requester, Depends(requester)]

    @router.post(
        "/v1/keys/rotate",
        response_model=RotateResponse,
        tags=["keys"],
        responses=errors(
            E.BAD_KEY_OBJECT,
            E.BAD_SIGNATURE,
            E.DEVICES_NOT_RESIGNED,
            E.FORBIDDEN,
            E.UNKNOWN_DEVICE,
            E.KEY_CHAIN_INVALID,
            *STEP_UP,
        ),
    )
    async def rotate(me: Me, body: RotateRequest, otp: Otp = None) -> RotateResponse:
        return await identity.do_rotate(me, identity.check_rotate(me, body), otp)

    @router.post(
        "/v1/keys/revoke",
        response_model=OkResponse,
        tags=["keys"],
        responses=errors(
            E.BAD_KEY_OBJECT,
            E.BAD_SIGNATURE,
            E.TOO_MANY_KEYS,
            E.FORBIDDEN,
            E.DEVICE_REVOKED,
            E.UNKNOWN_DEVICE,
            E.KEY_CHAIN_INVALID,
            *STEP_UP,
        ),
    )
    async def revoke(me: Me, body: RevokeRequest, otp: Otp = None) -> OkResponse:
        await identity.do_revoke(me, identity.check_revoke(me, body), otp)
        return OkResponse()

    return router
