"""/openapi.json states the real contract: error responses per route, the bearer scheme, typed objects, frames."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

OPEN_ROUTES = {("post", "/v1/register"), ("post", "/v1/login/challenge"), ("post", "/v1/login"),
               ("post", "/v1/token/refresh"), ("get", "/health"), ("post", "/v1/link"),
               ("post", "/v1/devices/by_master_key/challenge"), ("post", "/v1/devices/by_master_key/add")}  # fmt: skip


@pytest.fixture
async def doc(http: httpx.AsyncClient) -> dict[str, Any]:
    resp = await http.get("/openapi.json")
    assert resp.status_code == 200
    return resp.json()  # type: ignore[no-any-return]


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in doc["paths"].items() for method, op in item.items()]


async def test_every_route_documents_its_errors_and_no_422(doc: dict[str, Any]) -> None:
    ops = _operations(doc)
    assert len(ops) >= 31
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for method, path, op in ops:
        responses = op["responses"]
        assert "422" not in responses, (method, path)
        assert "400" in responses and "413" in responses, (method, path)
        for status, response in responses.items():
            if status.startswith("4"):
                assert response["content"]["application/json"]["schema"] == error_ref, (method, path, status)
                assert response["x-error-codes"], (method, path, status)
        if (method, path) in OPEN_ROUTES:
            assert "security" not in op, (method, path)
        else:
            assert op["security"] == [{"HTTPBearer": []}], (method, path)
            # Besides the token's own, a 401 is only the two-factor step-up asking for or refusing a code.
            step_up = {"otp_required", "otp_invalid"}
            assert (
                {"unauthorized", "token_expired"}
                <= set(responses["401"]["x-error-codes"])
                <= {"unauthorized", "token_expired"} | step_up
            )
    assert doc["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An access token from POST /v1/login or /v1/token/refresh.",
    }
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorDetail"]["properties"]) == {"code", "message", "status", "details"}
    assert {"unknown_user", "unknown_device", "username_taken"} <= set(schemas["ErrorCode"]["enum"])
    assert "wrong_passphrase" not in schemas["ErrorCode"]["enum"]  # a client-side code, never on the wire


async def test_the_error_code_enum_holds_every_code_a_server_sends(doc: dict[str, Any]) -> None:
    """A client validating error bodies against ErrorCode must accept every code any route or frame declares."""
    enum = set(doc["components"]["schemas"]["ErrorCode"]["enum"])
    declared = {c for _, _, op in _operations(doc) for r in op["responses"].values() for c in r.get("x-error-codes", [])}
    assert declared <= enum, declared - enum
    documented = {c for codes in _documented_codes().values() for c in codes}
    assert documented <= enum, documented - enum
    # Sent by the connection layer or over the WebSocket rather than by one route:
    assert {"too_many_connections", "server_busy", "request_timeout", "profile_forked", "sender_mismatch"} <= enum


async def test_routes_name_the_codes_they_answer(doc: dict[str, Any]) -> None:
    def codes(method: str, path: str) -> set[str]:
        responses = doc["paths"][path][method]["responses"]
        return {c for r in responses.values() for c in r.get("x-error-codes", [])}

    assert {"unknown_device", "device_revoked", "rate_limited"} <= codes("post", "/v1/login/challenge")
    assert "unknown_user" not in codes("post", "/v1/login/challenge") | codes("post", "/v1/login")
    assert {"username_taken", "invite_required", "invite_invalid", "bad_key_object", "bad_signature"} <= codes(
        "post", "/v1/register"
    )
    assert {"not_found", "forbidden"} <= codes("get", "/v1/rooms/{room_id}/history")
    assert {"unknown_device"} <= codes("delete", "/v1/devices/{device_id}")
    assert {"key_conflict", "too_many_keys"} <= codes("post", "/v1/keys/upload")


async def test_key_objects_events_and_frames_are_typed(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    master = schemas["RegisterRequest"]["properties"]["master_key"]
    assert set(master["properties"]) == {"user_id", "usage", "keys", "version", "created_at", "signatures"}
    assert master["additionalProperties"] is False
    device = schemas["RegisterRequest"]["properties"]["device_keys"]
    assert "master_key_version" in device["properties"]
    otks = schemas["KeysUploadRequest"]["properties"]["one_time_keys"]
    assert otks["propertyNames"]["pattern"].startswith("^signed_curve25519:")
    sync = schemas["SyncResponse"]["properties"]
    assert {"pos", "event_id", "room_id", "seq", "type", "sender", "content", "ts"} <= set(sync["events"]["items"]["properties"])
    assert {"id", "sender", "sender_device", "type", "content"} <= set(sync["to_device"]["items"]["properties"])
    send = schemas["SendRequest"]["properties"]["content"]
    assert send["properties"]["algorithm"]["const"] == "tokenim.megolm.v1.aes-sha2"
    for frame in ["WsSyncFrame", "WsSendFrame", "WsAckToDeviceFrame", "WsPingFrame", "WsEventFrame", "WsToDeviceFrame",
                  "WsSyncedFrame", "WsSentFrame", "WsPongFrame", "WsKeysLowFrame", "WsErrorFrame"]:  # fmt: skip
        assert frame in schemas, frame
    assert "tokenim.bearer." in doc["info"]["description"]  # how a browser authenticates the WebSocket


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/health", "GET"),
        ("PUT", "/v1/devices", "GET, POST"),
        ("GET", "/v1/rooms/direct", "POST"),
        ("DELETE", "/v1/rooms/!abcdef", "GET"),
        ("GET", "/v1/rooms/!abcdef/send/t1", "PUT"),
    ],
)
async def test_405_says_which_methods_are_allowed(http: httpx.AsyncClient, method: str, path: str, allow: str) -> None:
    resp = await http.request(method, path)
    assert resp.status_code == 405, resp.text
    assert resp.headers["allow"] == allow
    assert resp.json()["error"]["code"] == "method_not_allowed"


def _documented_codes() -> dict[tuple[str, str], set[str]]:
    """The error table of docs/protocol.md: {(method, path): codes besides the common ones}."""
    text = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    table = text[text.index("| route | codes (status) |") :].split("\n\n")[0]
    out: dict[tuple[str, str], set[str]] = {}
    for row in table.splitlines()[2:]:
        routes, codes = row.strip("|").split("|")
        found = set(re.findall(r"`([a-z_]+)`", codes))
        prefix = ""
        for method, path in re.findall(r"`([A-Z]+) ([^`]+)`", routes):
            if path.startswith("…"):
                path = prefix + path[1:]
            else:
                prefix = path
            out[(method.lower(), path)] = found
    return out


async def test_the_docs_error_table_matches_the_openapi_document(doc: dict[str, Any]) -> None:
    documented = _documented_codes()
    for method, path, op in _operations(doc):
        common = {"invalid_request", "body_too_large", "bad_json"}
        if "security" in op:
            common |= {"unauthorized", "token_expired"}
        declared = {c for r in op["responses"].values() for c in r.get("x-error-codes", [])} - common
        assert (method, path) in documented, f"docs/protocol.md has no error row for {method.upper()} {path}"
        assert documented.pop((method, path)) == declared, (method, path)
    assert not documented, f"docs/protocol.md lists routes the server does not have: {documented}"


async def test_plain_text_fields_state_the_nul_rule(doc: dict[str, Any]) -> None:
    """The server refuses NUL in every text field; the schema says so, so schema-valid data is accepted."""
    name = doc["components"]["schemas"]["RoomCreateRequest"]["properties"]["name"]
    assert name["pattern"] == "^[^\\u0000]*$"
