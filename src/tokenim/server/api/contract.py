"""What /openapi.json promises: the error responses of each route, the bearer scheme, the WebSocket frames.

Routes declare the error codes they can answer with (`errors(...)`); the statuses, the error body's
schema and the list of codes per status follow from `core.errors`. The document then carries no
FastAPI 422 (validation failures are our 400 `invalid_request`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict

from tokenim.core.errors import SERVER_CODES, ErrorCode, status_for
from tokenim.protocol.two_factor import OTP_HEADER, OTP_PATTERN
from tokenim.protocol.wire import websocket_frame_schemas

E = ErrorCode

# A route guarded by the step-up check takes the code in this header and can answer these codes besides its own.
Otp = Annotated[
    str | None,
    Header(
        alias=OTP_HEADER,
        pattern=OTP_PATTERN,
        description="With two-factor authentication on: the 6-digit code the user's authenticator app shows now "
        '(docs/protocol.md, "Two-factor authentication").',
    ),
]
STEP_UP = (E.OTP_REQUIRED, E.OTP_INVALID, E.RATE_LIMITED)


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"additionalProperties": False})

    code: ErrorCode
    message: str
    status: int
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    """Every error: a stable machine `code`, the HTTP `status`, a sentence for people, sometimes `details`."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


_STATUS_TEXT = {400: "Bad request", 401: "Not authenticated", 403: "Forbidden", 404: "Not found", 409: "Conflict",
                410: "Gone", 413: "Body too large", 429: "Too many requests"}  # fmt: skip


def errors(*codes: ErrorCode, body: bool = True, auth: bool = True) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can fail with `codes` (plus what every route can answer)."""
    every = [E.INVALID_REQUEST, E.BODY_TOO_LARGE]
    if body:
        every.append(E.BAD_JSON)
    if auth:
        every += [E.UNAUTHORIZED, E.TOKEN_EXPIRED]
    by_status: dict[int, list[ErrorCode]] = {}
    for code in dict.fromkeys([*every, *codes]):
        by_status.setdefault(status_for(code), []).append(code)
    return {
        status: {
            "model": ErrorResponse,
            "description": f"{_STATUS_TEXT.get(status, 'Error')}: " + ", ".join(f"`{c.value}`" for c in found),
            "x-error-codes": [c.value for c in found],
        }
        for status, found in sorted(by_status.items())
    }


WEBSOCKET_DESCRIPTION = """
**WebSocket** `GET /v1/ws` (not an HTTP operation, so not listed under paths). Authenticate with
`Authorization: Bearer <access token>` on the upgrade request or, where a client cannot set that
header (browsers), with the subprotocol list `Sec-WebSocket-Protocol: tokenim.v1, tokenim.bearer.<access token>`
(the server then answers with subprotocol `tokenim.v1`). A socket whose token is refused gets one
`error` frame and is closed with code 4401. Frames are JSON text; their schemas are the components
named `Ws*Frame` (client to server: `WsSyncFrame`, `WsSendFrame`, `WsAckToDeviceFrame`, `WsPingFrame`;
server to client: `WsEventFrame`, `WsToDeviceFrame`, `WsSyncedFrame`, `WsSentFrame`, `WsPongFrame`,
`WsKeysLowFrame`, `WsErrorFrame`). See docs/protocol.md for the full protocol.
"""


def install_openapi(app: FastAPI) -> None:
    """Replace FastAPI's generator: no 422s, the bearer scheme, and the WebSocket frames as components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=WEBSOCKET_DESCRIPTION, routes=app.routes)
        for item in doc.get("paths", {}).values():
            for op in item.values():
                op.get("responses", {}).pop("422", None)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["ErrorCode"]["enum"] = [c.value for c in SERVER_CODES]
        schemas.update(websocket_frame_schemas())
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
