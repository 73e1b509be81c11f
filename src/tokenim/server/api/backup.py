"""Routes for the key backup: create a version, read it, upload and download entries, delete it."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path

from tokenim.core.errors import ErrorCode as E
from tokenim.core.limits import MAX_POSITION
from tokenim.protocol.api import OkResponse
from tokenim.protocol.backup import (
    BackupCreateRequest,
    BackupCreateResponse,
    BackupInfoResponse,
    BackupKeysResponse,
    BackupUploadRequest,
    BackupUploadResponse,
)
from tokenim.server.api.contract import STEP_UP, Otp, errors
from tokenim.server.api.messaging import Digits
from tokenim.server.services.backup import BackupService
from tokenim.server.services.common import Requester

Version = Annotated[int, Path(ge=1, le=MAX_POSITION), Digits]


def build_backup_router(backup: BackupService, requester: Callable[..., Awaitable[Requester]]) -> APIRouter:
    """The backup routes, closed over the one service they use."""
    router = APIRouter()
    Me = Annotated[Requester, Depends(requester)]

    @router.post("/v1/backup", response_model=BackupCreateResponse, tags=["backup"], responses=errors(*STEP_UP))
    async def create(me: Me, body: BackupCreateRequest, otp: Otp = None) -> BackupCreateResponse:
        return await backup.do_create(me, body, otp)

    @router.get("/v1/backup", response_model=BackupInfoResponse, tags=["backup"], responses=errors(E.NO_BACKUP, body=False))
    async def current(me: Me) -> BackupInfoResponse:
        return await backup.access_current(me)

    @router.put(
        "/v1/backup/{version}/keys",
        response_model=BackupUploadResponse,
        tags=["backup"],
        responses=errors(E.NO_BACKUP, E.BACKUP_OUTDATED, E.BACKUP_CONFLICT, E.TOO_MANY_KEYS),
    )
    async def upload(me: Me, version: Version, body: BackupUploadRequest) -> BackupUploadResponse:
        return await backup.do_upload(me, version, body, backup.check_upload(version, body))

    @router.get(
        "/v1/backup/{version}/keys",
        response_model=BackupKeysResponse,
        tags=["backup"],
        description=(
            "The version's entries. With two-factor authentication on, a device that neither created this version "
            "nor read it before (a restore) needs a code."
        ),
        responses=errors(E.NO_BACKUP, E.BACKUP_OUTDATED, *STEP_UP, body=False),
    )
    async def download(me: Me, version: Version, otp: Otp = None) -> BackupKeysResponse:
        return await backup.access_keys(me, version, otp)

    @router.delete(
        "/v1/backup/{version}",
        response_model=OkResponse,
        tags=["backup"],
        responses=errors(E.NO_BACKUP, E.BACKUP_OUTDATED, *STEP_UP, body=False),
    )
    async def delete(me: Me, version: Version, otp: Otp = None) -> OkResponse:
        await backup.do_delete(me, version, otp)
        return OkResponse()

    return router
