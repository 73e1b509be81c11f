"""How the server reads a request before any route runs: bodies (empty, not JSON, nested past the parser),
paths (no redirects, ever) and integer query parameters (plain digits only); and sync from beyond the head."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.server.served import JSON_HEADERS, auth, http_sync
from tests.server.test_errors import assert_error
from tokenim.client import Client


async def test_json_nested_deeper_than_the_parser_goes_is_bad_json(http: httpx.AsyncClient, alice: Client) -> None:
    deep = b'{"user_ids": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    error = assert_error(await http.post("/v1/keys/query", content=deep, headers=JSON_HEADERS | auth(alice)), 400, "bad_json")
    assert "parsing the body" not in error["message"] and "JSON" in error["message"]
    assert "nested too deeply" in error["message"], error


# Bodies the JSON parser gives up on for another reason than nesting, and what the sentence must say instead
# (found from outside: every one of them was said to be "nested too deeply").
UNREADABLE_BODIES = [
    (b'{"user_ids": ["\xff\xfe"]}', "UTF-8"),
    ('{"user_ids": ["caf\u00e9"]}'.encode("latin-1"), "UTF-8"),
    (b'{"user_ids": [' + b"7" * 5000 + b"]}", "number"),
]


@pytest.mark.parametrize(("body", "cause"), UNREADABLE_BODIES)
async def test_a_body_the_parser_gives_up_on_says_why(http: httpx.AsyncClient, alice: Client, body: bytes, cause: str) -> None:
    error = assert_error(await http.post("/v1/keys/query", content=body, headers=JSON_HEADERS | auth(alice)), 400, "bad_json")
    assert cause in error["message"] and "nested" not in error["message"], error


async def test_an_empty_body_says_a_json_body_is_needed(http: httpx.AsyncClient, alice: Client) -> None:
    for headers in (JSON_HEADERS, {}):
        error = assert_error(
            await http.post("/v1/keys/query", content=b"", headers=headers | auth(alice)), 400, "invalid_request"
        )
        assert error["message"] == "This request needs a JSON body.", error
        assert "'body'" not in error["message"] and error.get("details", {}).get("fields") != [""]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/json"])
async def test_a_json_object_without_the_json_content_type_says_so(
    http: httpx.AsyncClient, alice: Client, content_type: str | None
) -> None:
    headers = auth(alice) | ({"content-type": content_type} if content_type else {})
    resp = await http.post("/v1/keys/query", content=b'{"user_ids": []}', headers=headers)
    error = assert_error(resp, 400, "invalid_request")
    assert "Content-Type: application/json" in error["message"], error
    # Not a JSON object with the right type is still said as such.
    resp = await http.post("/v1/keys/query", content=b"[]", headers=JSON_HEADERS | auth(alice))
    assert "must be a JSON object" in assert_error(resp, 400, "invalid_request")["message"]
    ok = await http.post(
        "/v1/keys/query",
        json={"user_ids": [alice.user_id]},
        headers={"content-type": "application/json; charset=utf-8"} | auth(alice),
    )
    assert ok.status_code == 200, ok.text


async def test_no_route_redirects_a_trailing_slash(http: httpx.AsyncClient, alice: Client) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert len(paths) > 20
    routes = [(method.upper(), path) for path, ops in paths.items() for method in ops] + [("GET", "/v1/ws")]
    for method, template in routes:
        path = template.replace("{room_id}", "!abc").replace("{device_id}", "ABCDEF1234")
        path = path.replace("{txn_id}", "t1").replace("{blob_id}", "A" * 22) + "/"
        resp = await http.request(method, path, headers=auth(alice) | {"host": "evil.example"})
        assert not resp.is_redirect and "location" not in resp.headers, (method, path)
        assert_error(resp, 404, "not_found")


NOT_PLAIN_DIGITS = ["1_000", "+5", " 5", "5 ", "%205", "0x10", "1e3", "\u0663", "-0", "5.0", "", "9" * 24]


@pytest.mark.parametrize(
    ("path", "name"),
    [("/v1/sync", "since"), ("/v1/sync", "to_device_after"), ("/v1/sync", "limit"), ("HISTORY", "before"), ("HISTORY", "limit")],
)
async def test_integer_query_parameters_are_plain_digits(http: httpx.AsyncClient, alice: Client, path: str, name: str) -> None:
    if path == "HISTORY":
        path = f"/v1/rooms/{(await alice.rooms.create('r')).room_id}/history"
    for value in NOT_PLAIN_DIGITS:
        raw = value if value == "%205" else quote(value, safe="")
        error = assert_error(await http.get(f"{path}?{name}={raw}", headers=auth(alice)), 400, "invalid_request")
        assert name in error["message"], (value, error)
    assert (await http.get(f"{path}?{name}=7", headers=auth(alice))).status_code == 200


async def test_a_since_beyond_the_head_is_treated_as_the_head(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    head = (await http_sync(http, alice))["next_pos"]
    ahead = await http_sync(http, alice, since=head + 1000)
    assert ahead["next_pos"] == head and ahead["events"] == []
    room = await alice.rooms.create("after the restore")
    page = await http_sync(http, alice, since=ahead["next_pos"])
    assert page["events"] and {e["room_id"] for e in page["events"]} == {room.room_id}, "the next events are not skipped"
