"""A request's origin as the services see it: the client's address and its User-Agent, nothing more."""

from typing import Annotated

from fastapi import Depends, Request

from tokenim.server.services.common import Origin


def request_origin(request: Request) -> Origin:
    """The connection's address and the User-Agent header, cleaned and capped by `Origin.of`."""
    return Origin.of(request.client.host if request.client else None, request.headers.get("user-agent"))


RequestOrigin = Annotated[Origin, Depends(request_origin)]

__all__ = ["RequestOrigin", "request_origin"]
