"""Responses that carry stored client content are written by the one encoder (`core.content.encode_json`),
the same that writes WebSocket frames, so both paths serve exactly the same bytes and fail the same way."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import Response

from tokenim.core.content import encode_json


def _fields(value: object) -> dict[str, object]:
    """A response model as a plain object of its fields; content inside stays as stored."""
    if isinstance(value, BaseModel):
        return {name: getattr(value, name) for name in type(value).model_fields}
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_text(value: object) -> str:
    """JSON text for a WebSocket frame, from the one encoder."""
    return encode_json(value, default=_fields).decode("utf-8")


def content_response(model: BaseModel) -> Response:
    """An HTTP 200 with `model` as JSON, from the one encoder (the route still declares the model for OpenAPI)."""
    return Response(encode_json(model, default=_fields), media_type="application/json")
