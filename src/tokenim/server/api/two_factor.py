"""Routes for two-factor authentication: set it up, confirm it, read its status, turn it off."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends

from tokenim.core.errors import ErrorCode as E
from tokenim.protocol.api import OkResponse
from tokenim.protocol.two_factor import (
    TwoFactorConfirmRequest,
    TwoFactorConfirmResponse,
    TwoFactorDisableRequest,
    TwoFactorSetupResponse,
    TwoFactorStatusResponse,
)
from tokenim.server.api.contract import STEP_UP, Otp, errors
from tokenim.server.services.common import Requester
from tokenim.server.services.two_factor import TwoFactorService


def build_two_factor_router(two_factor: TwoFactorService, requester: Callable[..., Awaitable[Requester]]) -> APIRouter:
    """The 2FA routes, closed over the one service they use."""
    router = APIRouter()
    Me = Annotated[Requester, Depends(requester)]

    @router.get("/v1/2fa", response_model=TwoFactorStatusResponse, tags=["2fa"], responses=errors(body=False))
    async def status(me: Me) -> TwoFactorStatusResponse:
        return await two_factor.access_status(me)

    @router.post(
        "/v1/2fa/enable",
        response_model=TwoFactorSetupResponse,
        tags=["2fa"],
        description="Start setting up TOTP: a new secret and its otpauth:// URI; nothing changes until it is confirmed.",
        responses=errors(E.TWO_FACTOR_ON, body=False),
    )
    async def enable(me: Me) -> TwoFactorSetupResponse:
        return await two_factor.do_enable(me)

    @router.post(
        "/v1/2fa/confirm",
        response_model=TwoFactorConfirmResponse,
        tags=["2fa"],
        description="Turn two-factor authentication on with a code from the new secret; answers ten recovery codes, once.",
        responses=errors(E.OTP_INVALID, E.TWO_FACTOR_ON, E.TWO_FACTOR_OFF),
    )
    async def confirm(me: Me, body: TwoFactorConfirmRequest) -> TwoFactorConfirmResponse:
        return await two_factor.do_confirm(me, body.code)

    @router.post(
        "/v1/2fa/disable",
        response_model=OkResponse,
        tags=["2fa"],
        description="Turn two-factor authentication off: a current code in the TokenIM-OTP header, or `recovery_code`.",
        responses=errors(E.TWO_FACTOR_OFF, *STEP_UP),
    )
    async def disable(me: Me, body: TwoFactorDisableRequest, otp: Otp = None) -> OkResponse:
        await two_factor.do_disable(me, otp, body.recovery_code)
        return OkResponse()

    return router
