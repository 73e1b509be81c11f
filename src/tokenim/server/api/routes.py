"""The HTTP routes of API v1. Each is a few lines: parse, call a service, return its result."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tokenim import __version__
from tokenim.core.errors import ErrorCode as E
from tokenim.core.limits import MAX_DEVICES_PER_USER
from tokenim.protocol.api import (
    AddDeviceRequest,
    ChallengeRequest,
    ChallengeResponse,
    DevicesResponse,
    HealthResponse,
    KeyCountsResponse,
    KeysClaimRequest,
    KeysClaimResponse,
    KeysQueryRequest,
    KeysQueryResponse,
    KeysUploadRequest,
    LoginRequest,
    LogoutAllResponse,
    OkResponse,
    RefreshRequest,
    RegisterRequest,
    RegisterResponse,
    TokenResponse,
    WhoAmIResponse,
)
from tokenim.protocol.wire import DEVICE_ID_SCHEMA
from tokenim.server.api.contract import STEP_UP, Otp, errors
from tokenim.server.api.encoding import content_response
from tokenim.server.api.origin import RequestOrigin
from tokenim.server.jobs import Scheduler
from tokenim.server.outbox import Outbox
from tokenim.server.realtime.hub import Hub
from tokenim.server.services.accounts import AccountService
from tokenim.server.services.admin import AdminService
from tokenim.server.services.audit_events import AuditService
from tokenim.server.services.auth import AuthService
from tokenim.server.services.backup import BackupService
from tokenim.server.services.common import Requester
from tokenim.server.services.devices import DeviceService
from tokenim.server.services.files import FileService
from tokenim.server.services.identity import IdentityService
from tokenim.server.services.keys import KeyService
from tokenim.server.services.link import LinkService
from tokenim.server.services.master_device import MasterDeviceService
from tokenim.server.services.messages import MessageService
from tokenim.server.services.notices import SecurityNotifier
from tokenim.server.services.rooms import RoomService
from tokenim.server.services.security import SecurityService
from tokenim.server.services.two_factor import TwoFactorService
from tokenim.server.services.writer import EventWriter

DeviceIdPath = Annotated[str, Path(max_length=32, json_schema_extra=DEVICE_ID_SCHEMA)]


@dataclass(frozen=True, slots=True)
class Services:
    """The services the routes call, built once by `build_app`."""

    accounts: AccountService
    auth: AuthService
    keys: KeyService
    devices: DeviceService
    rooms: RoomService
    messages: MessageService
    files: FileService
    identity: IdentityService
    backup: BackupService
    hub: Hub
    writer: EventWriter
    master_devices: MasterDeviceService
    audit: AuditService
    link: LinkService
    admin: AdminService
    security: SecurityService
    two_factor: TwoFactorService
    scheduler: Scheduler
    outbox: Outbox
    notices: SecurityNotifier


# Declares the bearer scheme in /openapi.json; the header itself is checked by AuthService (auto_error off,
# so a missing or malformed header gets our 401 error body, not FastAPI's).
BEARER = HTTPBearer(auto_error=False, description="An access token from POST /v1/login or /v1/token/refresh.")


def requester_dependency(auth: AuthService) -> Callable[..., Awaitable[Requester]]:
    async def requester(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]) -> Requester:
        return await auth.access_requester(request.headers.get("authorization"))

    return requester


def build_router(services: Services, server_name: str) -> APIRouter:
    """All routes, closed over their services (no globals, no locator)."""
    router = APIRouter()
    Me = Annotated[Requester, Depends(requester_dependency(services.auth))]

    @router.get("/health", response_model=HealthResponse, tags=["server"], responses=errors(body=False, auth=False))
    async def health() -> HealthResponse:
        return HealthResponse(status="ok", version=__version__, server_name=server_name)

    @router.post(
        "/v1/register",
        response_model=RegisterResponse,
        tags=["accounts"],
        responses=errors(
            E.BAD_KEY_OBJECT,
            E.BAD_SIGNATURE,
            E.TOO_MANY_KEYS,
            E.INVITE_REQUIRED,
            E.INVITE_INVALID,
            E.DEVICE_REVOKED,
            E.USERNAME_TAKEN,
            E.KEY_CONFLICT,
            E.RATE_LIMITED,
            auth=False,
        ),
    )
    async def register(origin: RequestOrigin, body: RegisterRequest) -> RegisterResponse:
        return await services.accounts.do_register(services.accounts.check_register(body), origin)

    @router.post(
        "/v1/login/challenge",
        response_model=ChallengeResponse,
        tags=["auth"],
        description=(
            "A login challenge for `device_id` of `user_id`, issued alike whether or not the user exists; only a "
            "device id the user once had is refused (`device_revoked`, `unknown_device`)."
        ),
        responses=errors(E.DEVICE_REVOKED, E.UNKNOWN_DEVICE, E.RATE_LIMITED, auth=False),
    )
    async def challenge(origin: RequestOrigin, body: ChallengeRequest) -> ChallengeResponse:
        return await services.auth.do_challenge(body.user_id, body.device_id, origin)

    @router.post(
        "/v1/login",
        response_model=TokenResponse,
        tags=["auth"],
        responses=errors(
            E.UNKNOWN_DEVICE,
            E.CHALLENGE_INVALID,
            E.CHALLENGE_EXPIRED,
            E.BAD_SIGNATURE,
            E.DEVICE_REVOKED,
            E.RATE_LIMITED,
            auth=False,
        ),
    )
    async def login(origin: RequestOrigin, body: LoginRequest) -> TokenResponse:
        return await services.auth.do_login(body, origin)

    @router.post(
        "/v1/token/refresh",
        response_model=TokenResponse,
        tags=["auth"],
        responses=errors(E.UNAUTHORIZED, E.TOKEN_EXPIRED, auth=False),
    )
    async def refresh(body: RefreshRequest) -> TokenResponse:
        return await services.auth.do_refresh(body.refresh_token)

    @router.post("/v1/logout", response_model=OkResponse, tags=["auth"], responses=errors(body=False))
    async def logout(me: Me) -> OkResponse:
        await services.auth.do_logout(me)
        return OkResponse()

    @router.post("/v1/logout/all", response_model=LogoutAllResponse, tags=["auth"], responses=errors(body=False))
    async def logout_all(me: Me) -> LogoutAllResponse:
        return LogoutAllResponse(sessions_ended=await services.auth.do_logout_all(me))

    @router.get("/v1/whoami", response_model=WhoAmIResponse, tags=["auth"], responses=errors(body=False))
    async def whoami(me: Me) -> WhoAmIResponse:
        return await services.accounts.access_whoami(me)

    @router.get("/v1/devices", response_model=DevicesResponse, tags=["devices"], responses=errors(body=False))
    async def devices(me: Me) -> Response:
        return content_response(await services.devices.access_devices(me))

    @router.post(
        "/v1/devices",
        response_model=OkResponse,
        tags=["devices"],
        description=(
            "Add a device whose keys are signed by the account's current master key. An account has at most "
            f"{MAX_DEVICES_PER_USER} devices: one more is `too_many_keys` (400); remove one first."
        ),
        responses=errors(
            E.BAD_KEY_OBJECT, E.BAD_SIGNATURE, E.TOO_MANY_KEYS, E.DEVICE_REVOKED, E.DEVICE_EXISTS, E.KEY_CONFLICT, *STEP_UP
        ),
    )
    async def add_device(me: Me, body: AddDeviceRequest, otp: Otp = None) -> OkResponse:
        await services.keys.do_add_device(me, body.device_keys, body.one_time_keys, body.fallback_keys, otp)
        return OkResponse()

    @router.delete(
        "/v1/devices/{device_id}",
        response_model=OkResponse,
        tags=["devices"],
        description=(
            "Remove a device of one's own. With two-factor authentication on it needs a code, unless the device removes "
            "itself or undoes an addition (a device added less than 10 minutes ago that never logged in)."
        ),
        responses=errors(E.UNKNOWN_DEVICE, *STEP_UP, body=False),
    )
    async def remove_device(me: Me, device_id: DeviceIdPath, otp: Otp = None) -> OkResponse:
        await services.devices.do_remove(me, device_id, otp)
        return OkResponse()

    @router.post(
        "/v1/keys/upload",
        response_model=KeyCountsResponse,
        tags=["keys"],
        responses=errors(E.BAD_KEY_OBJECT, E.BAD_SIGNATURE, E.TOO_MANY_KEYS, E.KEY_CONFLICT, E.UNKNOWN_DEVICE),
    )
    async def upload_keys(me: Me, body: KeysUploadRequest) -> KeyCountsResponse:
        return await services.keys.do_upload(me, body.one_time_keys, body.fallback_keys)

    @router.get("/v1/keys/counts", response_model=KeyCountsResponse, tags=["keys"], responses=errors(body=False))
    async def key_counts(me: Me) -> KeyCountsResponse:
        return await services.keys.access_counts(me)

    @router.post("/v1/keys/query", response_model=KeysQueryResponse, tags=["keys"], responses=errors())
    async def query_keys(me: Me, body: KeysQueryRequest) -> Response:
        return content_response(await services.keys.access_query(body.user_ids))

    @router.post("/v1/keys/claim", response_model=KeysClaimResponse, tags=["keys"], responses=errors(E.RATE_LIMITED))
    async def claim_keys(me: Me, body: KeysClaimRequest) -> Response:
        return content_response(await services.keys.do_claim(body.devices, me))

    return router
