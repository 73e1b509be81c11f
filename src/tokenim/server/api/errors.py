"""Turns every failure into the one error model; enforces the request-body limit."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenim.core.errors import ErrorCode, TokenIMError

log = logging.getLogger("tokenim.server")
TOO_LARGE_FLAG = "tokenim.body_too_large"


def error_response(err: TokenIMError) -> JSONResponse:
    """The error body; an error saying when to come back (`details.retry_after_ms`) also gets `Retry-After`
    in whole seconds, rounded up."""
    response = JSONResponse(err.to_json(), status_code=err.status)
    wait = err.details.get("retry_after_ms")
    if isinstance(wait, int) and not isinstance(wait, bool) and wait > 0:
        response.headers["Retry-After"] = str(-(-wait // 1000))
    return response


# FastAPI's words when reading the body fails for another reason than bad syntax (JSON nested past the
# parser's recursion limit, bytes that are not UTF-8, a 5,000-digit integer); the exception it raises has the
# parser's own as its cause, and would otherwise reach the client as an `invalid_request` sentence.
_FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


def unreadable_body(cause: BaseException | None) -> TokenIMError:
    """`bad_json` for a body the JSON parser gave up on, saying why when the cause is known: nested past the
    parser's recursion limit, not UTF-8, or an integer with more digits than Python converts."""
    if isinstance(cause, RecursionError):
        why = "it is nested too deeply to parse"
    elif isinstance(cause, UnicodeError):
        why = "it is not UTF-8 text"
    elif isinstance(cause, ValueError) and "digits" in str(cause):
        why = "it holds a number with too many digits"
    else:
        return TokenIMError(ErrorCode.BAD_JSON, "The request body could not be read as JSON.")
    return TokenIMError(ErrorCode.BAD_JSON, f"The request body could not be read as JSON: {why}.")


def _is_json_content_type(value: str | None) -> bool:
    media = (value or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _describe_body(request: Request, errors: list[dict[str, Any]]) -> TokenIMError | None:
    """The body as a whole is wrong: missing, or not sent as JSON. None when the errors are about its members."""
    whole_body = [e for e in errors if tuple(e.get("loc", ())) == ("body",)]
    if not whole_body:
        return None
    if any(e.get("type") == "missing" for e in whole_body):
        return TokenIMError(ErrorCode.INVALID_REQUEST, "This request needs a JSON body.")
    if not _is_json_content_type(request.headers.get("content-type")):
        return TokenIMError(
            ErrorCode.INVALID_REQUEST, "The request body must be sent with the header Content-Type: application/json."
        )
    return None


def describe_validation(errors: list[dict[str, Any]], what: str = "request") -> TokenIMError:
    """One `invalid_request` (or `bad_json`) naming the first few problems pydantic found, in our words."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return TokenIMError(ErrorCode.BAD_JSON, "The request body is not valid JSON.")
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        kind = e.get("type", "")
        if kind == "missing":
            parts.append(f"'{loc}' is missing")
        elif kind == "extra_forbidden":
            parts.append(f"'{loc}' is not an accepted field")
        elif loc == "body" and kind in ("model_attributes_type", "dict_type", "model_type"):
            parts.append("the body must be a JSON object")
        else:
            msg = str(e.get("msg", "invalid"))
            # Lower-case only the first letter: the rest may quote a pattern or a value, case and all.
            parts.append(f"'{loc}': {msg[:1].lower()}{msg[1:]}")
    fields = [".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in errors]
    return TokenIMError(
        ErrorCode.INVALID_REQUEST, f"The {what} is invalid: " + "; ".join(parts) + ".", details={"fields": fields[:20]}
    )


def remember_routes(app: FastAPI, routers: list[APIRouter]) -> None:
    """Keep each HTTP route's path pattern and methods, for the `Allow` header of a 405."""
    app.state.route_methods = [
        (route.path_regex, frozenset(route.methods or ()))
        for router in routers
        for route in router.routes
        if isinstance(route, Route)
    ]


def allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts at this path (Starlette's own 405 names only the first route's)."""
    table: list[tuple[re.Pattern[str], frozenset[str]]] = getattr(request.app.state, "route_methods", [])
    return sorted({m for regex, methods in table if regex.match(request.url.path) for m in methods})


def install_error_handlers(app: FastAPI) -> None:
    """Map our errors, validation errors, unknown routes and crashes to `{"error": {...}}`."""

    async def on_tokenim(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TokenIMError)
        return error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        return error_response(_describe_body(request, errors) or describe_validation(errors))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if request.scope.get(TOO_LARGE_FLAG):
            err = TokenIMError(ErrorCode.BODY_TOO_LARGE, "The request body is larger than the limit.")
        elif exc.status_code == 404:
            err = TokenIMError(ErrorCode.NOT_FOUND, "There is nothing at this address.")
        elif exc.status_code == 405:
            err = TokenIMError(ErrorCode.METHOD_NOT_ALLOWED, "This address does not accept that method.")
            response = error_response(err)
            response.headers["Allow"] = ", ".join(allowed_methods(request))
            return response
        elif exc.status_code == 400 and exc.detail == _FASTAPI_BODY_PARSE_ERROR:
            err = unreadable_body(exc.__cause__)
        else:
            err = TokenIMError(ErrorCode.INVALID_REQUEST, str(exc.detail))
        return error_response(err)

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        err = TokenIMError(ErrorCode.INTERNAL, "Something went wrong on the server; the details are in its log.")
        return error_response(err)

    app.add_exception_handler(TokenIMError, on_tokenim)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int, overrides: dict[tuple[str, str], int] | None = None) -> None:
        self.app = app
        self.default_max = max_bytes
        self.overrides = overrides or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.overrides.get((scope["method"], scope["path"]), self.default_max)
        too_big = TokenIMError(ErrorCode.BODY_TOO_LARGE, f"The request body is larger than the limit of {max_bytes} bytes.")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = max_bytes + 1
                if length > max_bytes:
                    await error_response(too_big)(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    scope[TOO_LARGE_FLAG] = True  # FastAPI turns errors while reading the body into a 400
                    raise too_big
            return message

        await self.app(scope, limited_receive, send)
