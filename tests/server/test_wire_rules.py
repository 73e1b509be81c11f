"""General wire rules of docs/protocol.md that no narrower check stands in for: NUL is refused in every text
field (not only in names, which refuse control characters anyway), and a browser's WebSocket token offered
as a subprotocol is used but never echoed back."""

from __future__ import annotations

import httpx
import pytest

from tokenim.server.api.realtime import ws_credentials


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/token/refresh", {"refresh_token": "abc\x00def"}),
        ("/v1/login", {"user_id": "@alice:tokenim.test", "device_id": "DEVICE", "nonce": "n\x00", "signature": "s"}),
    ],
)
async def test_nul_in_any_text_field_is_an_invalid_request(http: httpx.AsyncClient, path: str, body: dict[str, str]) -> None:
    resp = await http.post(path, json=body)
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, "invalid_request"), resp.text


def test_a_websocket_token_offered_as_a_subprotocol_is_never_echoed() -> None:
    offered = ["tokenim.v1", "tokenim.bearer.SECRET"]
    assert ws_credentials(None, offered) == ("Bearer SECRET", "tokenim.v1")
    # The header wins over a subprotocol token; the answer is still only tokenim.v1.
    assert ws_credentials("Bearer HEADER", offered) == ("Bearer HEADER", "tokenim.v1")
    # Without tokenim.v1 among the offers a browser could not accept any answer: no token is taken either.
    assert ws_credentials(None, ["tokenim.bearer.SECRET"]) == (None, None)
    assert ws_credentials(None, []) == (None, None)
