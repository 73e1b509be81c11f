"""Admin routes. Every one takes the requester through `access_admin` (403 `forbidden` for anyone else)."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from tokenim.core.errors import ErrorCode as E
from tokenim.core.ids import USER_ID_PATTERN
from tokenim.core.limits import MAX_POSITION
from tokenim.protocol.api import InviteCreateRequest, InviteResponse
from tokenim.protocol.audit import AdminAuditResponse, AuditVerifyResponse
from tokenim.server.api.contract import STEP_UP, Otp, errors
from tokenim.server.api.messaging import Digits, Limit
from tokenim.server.services.accounts import AccountService
from tokenim.server.services.admin import AdminRequester, AdminService, access_admin
from tokenim.server.services.common import Requester

Before = Annotated[int | None, Query(ge=1, le=MAX_POSITION), Digits]
UserFilter = Annotated[str | None, Query(max_length=320, pattern=USER_ID_PATTERN, description="only this user's records")]


def build_admin_router(
    accounts: AccountService, admin: AdminService, requester: Callable[..., Awaitable[Requester]]
) -> APIRouter:
    """The admin routes, closed over the services they use."""
    router = APIRouter()

    async def admin_requester(me: Annotated[Requester, Depends(requester)]) -> AdminRequester:
        return access_admin(me)

    Admin = Annotated[AdminRequester, Depends(admin_requester)]

    @router.post("/v1/admin/invites", response_model=InviteResponse, tags=["admin"], responses=errors(E.FORBIDDEN, *STEP_UP))
    async def create_invite(me: Admin, body: InviteCreateRequest, otp: Otp = None) -> InviteResponse:
        return await accounts.do_create_invite(me, body.expires_in_seconds, otp)

    @router.get(
        "/v1/admin/audit",
        response_model=AdminAuditResponse,
        tags=["admin"],
        description="Every user's audit records (or one user's), newest first, with their place in the hash chain; "
        "`before` (a record's `id`, or `next_before`) pages to older ones.",
        responses=errors(E.FORBIDDEN, body=False),
    )
    async def audit(me: Admin, limit: Limit = 100, before: Before = None, user: UserFilter = None) -> AdminAuditResponse:
        return await admin.access_audit(me, limit, before, user)

    @router.get(
        "/v1/admin/audit/verify",
        response_model=AuditVerifyResponse,
        tags=["admin"],
        description="Check the audit log's whole hash chain; `problems` says where it breaks (changed, removed or "
        "inserted entries).",
        responses=errors(E.FORBIDDEN, body=False),
    )
    async def verify(me: Admin) -> AuditVerifyResponse:
        return await admin.access_verify(me)

    return router
