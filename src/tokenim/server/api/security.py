"""The user's security review."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from tokenim.protocol.audit import MAX_REVIEW_DAYS, SecurityReviewResponse
from tokenim.server.api.contract import errors
from tokenim.server.api.messaging import Digits
from tokenim.server.services.common import Requester
from tokenim.server.services.security import SecurityService

Days = Annotated[int, Query(ge=1, le=MAX_REVIEW_DAYS), Digits]


def build_security_router(security: SecurityService, requester: Callable[..., Awaitable[Requester]]) -> APIRouter:
    """The review route, closed over its service."""
    router = APIRouter()
    Me = Annotated[Requester, Depends(requester)]

    @router.get(
        "/v1/security/review",
        response_model=SecurityReviewResponse,
        tags=["audit"],
        description="The requester's logins and activity of the last `days` days (default 30), newest first, with flags "
        "for what looks wrong (a new device or address, a burst of failures, a lost or revoked device trying to log "
        "in, a recovery in progress).",
        responses=errors(body=False),
    )
    async def review(me: Me, days: Days = 30) -> SecurityReviewResponse:
        return await security.access_review(me, days)

    return router
