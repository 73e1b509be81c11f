"""Every client-visible failure is a 4xx `{"error": {"code", "message", "status"}}`: never a 500, never a traceback.

Covers malformed and mistyped bodies, body limits (announced and streamed), routing, bearer tokens,
the login challenge, signatures on registration, and a seeded fuzz of every POST route.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
import string
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.identity_kit import Device, master_key_object, resign, revocation_object, rotation_object
from tests.support import insides, websocket_scope
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.ids import UserId, new_device_id
from tokenim.core.limits import ACCESS_TOKEN_TTL_MS, CHALLENGE_TTL_MS, MAX_BODY_BYTES
from tokenim.core.signing import SigningKey, sign_json
from tokenim.crypto.device import DeviceIdentity
from tokenim.protocol.auth import login_challenge_payload
from tokenim.protocol.backup import BACKUP_ALGORITHM
from tokenim.protocol.events import ENCRYPTED
from tokenim.protocol.keys import MEGOLM_ALGORITHM
from tokenim.protocol.link import LinkClaimResponse, LinkOpenResponse
from tokenim.server.config import ServerConfig
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import devices, master_keys, one_time_keys, users

MAX_UPLOAD = 64 * 1024
JSON = {"content-type": "application/json"}


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    """Open registration, blobs under the test's own directory, and a small file limit to test streaming."""
    return ServerConfig(
        registration=RegistrationMode.OPEN, server_name="tokenim.test", data_dir=tmp_path / "data", max_upload_bytes=MAX_UPLOAD
    )


def assert_error(resp: httpx.Response, status: int, code: str, *, one_line: bool = True) -> dict[str, Any]:
    """The response is the error model with this status and code, and nothing that looks like a crash.

    `one_line=False` for fuzzed bodies, whose field names (control characters and all) a message may quote.
    """
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message", "status"} <= set(err) <= {"code", "message", "status", "details"}, err
    assert err["code"] == code, err
    assert err["status"] == status
    assert isinstance(err["message"], str) and err["message"].strip()
    assert "\n" not in err["message"] or not one_line
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    return dict(err)


def auth(client: Client) -> dict[str, str]:
    token = client.account.access_token()
    return {"Authorization": f"Bearer {token}"}


def registration_body(identity: DeviceIdentity, username: str, now: int, *, otks: int = 5) -> dict[str, Any]:
    """A complete, correctly signed registration for a new identity (built as the SDK does, by hand)."""
    identity.account.generate_one_time_keys(otks)
    upload = identity.keys_to_upload(10**6, need_fallback=True)  # a high server count: generate nothing more
    return {
        "username": username,
        "master_key": identity.master_key_object(),
        "device_keys": identity.device_keys_object(now),
        "one_time_keys": upload.one_time_keys,
        "fallback_keys": upload.fallback_keys,
    }


def new_identity(username: str, clock: FakeClock) -> DeviceIdentity:
    return DeviceIdentity.create(UserId(f"@{username}:tokenim.test"), new_device_id(), clock.now_ms())


async def count_rows(database: Database, table: Any) -> int:
    async with database.read() as tx:
        return int((await tx.execute(select(func.count()).select_from(table))).scalar_one())


# ---- malformed bodies --------------------------------------------------------------------------


async def test_malformed_json_is_bad_json(http: httpx.AsyncClient, alice: Client) -> None:
    for raw in [b"{not json", b'{"user_id": "@a:b",', b"{'user_id': 1}", b'{"a": 1} trailing', b"\xff\xfe{}", b'{"a": NaN']:
        assert_error(await http.post("/v1/login/challenge", content=raw, headers=JSON), 400, "bad_json")
    # On an authenticated route as well.
    assert_error(await http.post("/v1/keys/query", content=b'{"user_ids": [', headers=JSON | auth(alice)), 400, "bad_json")


async def test_a_body_that_is_not_an_object_is_refused(http: httpx.AsyncClient) -> None:
    for body in [[], ["user_id", "device_id"], "a string", 42, True, 1.5]:
        err = assert_error(await http.post("/v1/login/challenge", json=body), 400, "invalid_request")
        assert "JSON object" in err["message"], body


async def test_an_empty_null_or_non_json_body_is_refused(http: httpx.AsyncClient) -> None:
    assert_error(await http.post("/v1/login/challenge", content=b"", headers=JSON), 400, "invalid_request")
    assert_error(await http.post("/v1/login/challenge", content=b"null", headers=JSON), 400, "invalid_request")
    assert_error(await http.post("/v1/login/challenge"), 400, "invalid_request")
    body = json.dumps({"user_id": "@alice:tokenim.test", "device_id": "ABCDEFG"}).encode()
    resp = await http.post("/v1/login/challenge", content=body, headers={"content-type": "text/plain"})
    assert_error(resp, 400, "invalid_request")


WRONG_TYPES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/register", {"username": 5, "master_key": {}, "device_keys": {}}, "username"),
    ("/v1/register", {"username": ["dave"], "master_key": {}, "device_keys": {}}, "username"),
    ("/v1/register", {"username": "dave", "master_key": [], "device_keys": {}}, "master_key"),
    ("/v1/register", {"username": "dave", "master_key": {}, "device_keys": "keys"}, "device_keys"),
    ("/v1/register", {"username": "dave", "email": 7, "master_key": {}, "device_keys": {}}, "email"),
    ("/v1/login/challenge", {"user_id": 5, "device_id": "ABCDEFG"}, "user_id"),
    ("/v1/login/challenge", {"user_id": "@alice:tokenim.test", "device_id": None}, "device_id"),
    ("/v1/login", {"user_id": "@a:b", "device_id": "ABCDEFG", "nonce": 1, "signature": "s"}, "nonce"),
    ("/v1/token/refresh", {"refresh_token": {"token": "x"}}, "refresh_token"),
]


async def test_wrong_types_are_refused_without_coercion(http: httpx.AsyncClient, alice: Client) -> None:
    for path, body, field in WRONG_TYPES:
        err = assert_error(await http.post(path, json=body), 400, "invalid_request")
        assert field in err["details"]["fields"], (path, body, err)
        assert f"'{field}'" in err["message"]
    # A string, a bool, a float or null where an integer belongs is refused too (strict models).
    for value in ["3600", True, 3600.0, None]:
        resp = await http.post("/v1/admin/invites", json={"expires_in_seconds": value}, headers=auth(alice))
        assert assert_error(resp, 400, "invalid_request")["details"]["fields"] == ["expires_in_seconds"]
    assert (await http.post("/v1/admin/invites", json={"expires_in_seconds": 3600}, headers=auth(alice))).status_code == 200


async def test_missing_fields_are_named(http: httpx.AsyncClient) -> None:
    err = assert_error(await http.post("/v1/login", json={"user_id": "@a:b", "device_id": "ABCDEFG"}), 400, "invalid_request")
    assert "'nonce' is missing" in err["message"] and "'signature' is missing" in err["message"]
    assert sorted(err["details"]["fields"]) == ["nonce", "signature"]
    err = assert_error(await http.post("/v1/register", json={}), 400, "invalid_request")
    assert {"username", "master_key", "device_keys"} <= set(err["details"]["fields"])
    err = assert_error(await http.post("/v1/token/refresh", json={}), 400, "invalid_request")
    assert err["details"]["fields"] == ["refresh_token"]


async def test_extra_fields_are_refused(http: httpx.AsyncClient, alice: Client) -> None:
    body = {"user_id": alice.user_id, "device_id": alice.device_id, "admin": True}
    err = assert_error(await http.post("/v1/login/challenge", json=body), 400, "invalid_request")
    assert "'admin' is not an accepted field" in err["message"]
    assert err["details"]["fields"] == ["admin"]
    body = {"user_ids": [alice.user_id], "include_private_keys": True}
    assert_error(await http.post("/v1/keys/query", json=body, headers=auth(alice)), 400, "invalid_request")


async def test_field_limits_are_enforced(http: httpx.AsyncClient, alice: Client) -> None:
    too_many = {"user_ids": [f"@u{i}:tokenim.test" for i in range(101)]}
    assert_error(await http.post("/v1/keys/query", json=too_many, headers=auth(alice)), 400, "invalid_request")
    assert_error(await http.post("/v1/keys/query", json={"user_ids": []}, headers=auth(alice)), 400, "invalid_request")
    assert_error(await http.post("/v1/keys/claim", json={"devices": {}}, headers=auth(alice)), 400, "invalid_request")
    long_nonce = {"user_id": alice.user_id, "device_id": alice.device_id, "nonce": "n" * 129, "signature": "s"}
    assert_error(await http.post("/v1/login", json=long_nonce), 400, "invalid_request")
    for seconds in (59, 365 * 86400 + 1, -1):
        resp = await http.post("/v1/admin/invites", json={"expires_in_seconds": seconds}, headers=auth(alice))
        assert_error(resp, 400, "invalid_request")


async def test_bad_identifiers_are_invalid_requests(http: httpx.AsyncClient, alice: Client) -> None:
    for user_id, device_id in [("alice", "ABCDEFG"), ("@Alice:tokenim.test", "ABCDEFG"), ("@alice:tokenim.test", "abc")]:
        resp = await http.post("/v1/login/challenge", json={"user_id": user_id, "device_id": device_id})
        assert_error(resp, 400, "invalid_request")
    resp = await http.post("/v1/keys/query", json={"user_ids": ["not a user"]}, headers=auth(alice))
    assert_error(resp, 400, "invalid_request")
    resp = await http.post("/v1/keys/claim", json={"devices": {alice.user_id: ["lower"]}}, headers=auth(alice))
    assert_error(resp, 400, "invalid_request")


async def test_integers_beyond_53_bits_are_refused_not_overflowed(http: httpx.AsyncClient, alice: Client) -> None:
    """A position past 2^53 - 1 (not exact in JSON everywhere, and past 2^63 not in a BIGINT) is a 400."""
    room = (await alice.rooms.create("huge")).room_id
    for value in (2**53, 2**53 + 1, 2**63, 2**70, 10**30):
        assert_error(await http.post("/v1/to_device/ack", json={"up_to": value}, headers=auth(alice)), 400, "invalid_request")
        for params in ({"since": value}, {"to_device_after": value}):
            assert_error(await http.get("/v1/sync", params=params, headers=auth(alice)), 400, "invalid_request")
        resp = await http.get(f"/v1/rooms/{room}/history", params={"before": value}, headers=auth(alice))
        assert_error(resp, 400, "invalid_request")
    # The largest exact JSON integer itself is fine.
    biggest = 2**53 - 1
    assert (await http.post("/v1/to_device/ack", json={"up_to": biggest}, headers=auth(alice))).status_code == 200
    assert (await http.get("/v1/sync", params={"since": biggest}, headers=auth(alice))).status_code == 200
    assert (await http.get(f"/v1/rooms/{room}/history", params={"before": biggest}, headers=auth(alice))).status_code == 200


async def test_a_nul_character_in_stored_text_is_refused(
    http: httpx.AsyncClient, alice: Client, clock: FakeClock, database: Database
) -> None:
    """PostgreSQL text cannot hold NUL: such a name or address is a 400 on both databases, not a driver error."""
    room = (await alice.rooms.create("fine")).room_id
    for name in ["a\x00b", "\x00"]:
        assert_error(await http.post("/v1/rooms", json={"name": name}, headers=auth(alice)), 400, "invalid_request")
        resp = await http.post(f"/v1/rooms/{room}/name", json={"name": name}, headers=auth(alice))
        assert_error(resp, 400, "invalid_request")
    assert (await http.get(f"/v1/rooms/{room}", headers=auth(alice))).json()["name"] == "fine"
    assert [r.name for r in (await alice.rooms.all()).rooms] == ["fine"]
    body = registration_body(new_identity("erin", clock), "erin", clock.now_ms()) | {"email": "erin\x00@example.com"}
    assert_error(await http.post("/v1/register", json=body), 400, "invalid_request")
    assert await count_rows(database, users) == 1  # only Alice


async def test_a_malformed_room_id_in_the_path_is_refused(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    room = (await alice.rooms.create("real")).room_id
    for bad in ["%00x", "!a%00b", "!" + "a" * 100, "no-bang", "!a b"]:
        for method, path, body in [
            ("GET", f"/v1/rooms/{bad}", None),
            ("GET", f"/v1/rooms/{bad}/members", None),
            ("GET", f"/v1/rooms/{bad}/history", None),
            ("POST", f"/v1/rooms/{bad}/join", None),
            ("POST", f"/v1/rooms/{bad}/leave", None),
            ("POST", f"/v1/rooms/{bad}/invite", {"user_id": bob.user_id}),
            ("POST", f"/v1/rooms/{bad}/remove", {"user_id": bob.user_id}),
            ("POST", f"/v1/rooms/{bad}/name", {"name": "x"}),
            ("PUT", f"/v1/rooms/{bad}/send/txn1", {"type": ENCRYPTED, "content": {}}),
        ]:
            resp = await http.request(method, path, json=body, headers=auth(alice))
            assert_error(resp, 400, "invalid_request")
            assert "room_id" in resp.json()["error"]["details"]["fields"][0], (method, path)
    # A well-formed id of a room that doesn't exist is still "not found"; a real one works.
    assert_error(await http.get("/v1/rooms/!nosuchroom", headers=auth(alice)), 404, "not_found")
    assert (await http.get(f"/v1/rooms/{room}", headers=auth(alice))).status_code == 200


# ---- body size ----------------------------------------------------------------------------------


async def test_an_announced_oversized_body_is_413_before_it_is_read(http: httpx.AsyncClient) -> None:
    big = b" " * (MAX_BODY_BYTES + 1)
    err = assert_error(await http.post("/v1/login/challenge", content=big, headers=JSON), 413, "body_too_large")
    assert str(MAX_BODY_BYTES) in err["message"]
    # Exactly at the limit is read and judged on its content instead.
    at_limit = b'{"user_id": 1}'.ljust(MAX_BODY_BYTES)
    assert_error(await http.post("/v1/login/challenge", content=at_limit, headers=JSON), 400, "invalid_request")


async def test_a_streamed_oversized_body_without_content_length_is_413(http: httpx.AsyncClient, alice: Client) -> None:
    sent_headers: list[httpx.Headers] = []

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"user_ids": ["'
        for _ in range(MAX_BODY_BYTES // 8192 + 2):
            yield b"a" * 8192
        yield b'"]}'

    async def record(request: httpx.Request) -> None:
        sent_headers.append(request.headers)

    http.event_hooks["request"].append(record)
    resp = await http.post("/v1/keys/query", content=stream(), headers=JSON | auth(alice))
    assert_error(resp, 413, "body_too_large")
    assert "content-length" not in sent_headers[0] and sent_headers[0]["transfer-encoding"] == "chunked"
    # An unauthenticated route, too.
    assert_error(await http.post("/v1/login/challenge", content=stream(), headers=JSON), 413, "body_too_large")

    async def small() -> AsyncIterator[bytes]:
        yield b'{"user_ids": '
        yield json.dumps([alice.user_id]).encode()
        yield b"}"

    # A small streamed body is read as usual.
    resp = await http.post("/v1/keys/query", content=small(), headers=JSON | auth(alice))
    assert resp.status_code == 200, resp.text
    assert alice.user_id in resp.json()["users"]


async def test_file_uploads_have_their_own_limit_streamed_or_announced(
    http: httpx.AsyncClient, alice: Client, config: ServerConfig
) -> None:
    blob_dir = config.data_dir / "blobs"
    ok = await http.post("/v1/blobs", content=b"x" * MAX_UPLOAD, headers=auth(alice))
    assert ok.status_code == 200, ok.text
    assert ok.json()["size"] == MAX_UPLOAD

    resp = await http.post("/v1/blobs", content=b"x" * (MAX_UPLOAD + 1), headers=auth(alice))
    assert_error(resp, 413, "body_too_large")

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(MAX_UPLOAD // 1024 + 2):
            yield b"y" * 1024

    assert_error(await http.post("/v1/blobs", content=stream(), headers=auth(alice)), 413, "body_too_large")
    # Only the one accepted file is on disk: refused uploads leave no partial file behind.
    assert [p.name for p in blob_dir.iterdir()] == [ok.json()["blob_id"]]


# ---- routing -------------------------------------------------------------------------------------


async def test_unknown_routes_are_404_and_wrong_methods_405(http: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/v1/nothing-here"), ("POST", "/v2/register"), ("GET", "/"), ("GET", "/v1/../etc")]:
        assert_error(await http.request(method, path), 404, "not_found")
    for method, path in [
        ("GET", "/v1/register"),
        ("PUT", "/v1/login"),
        ("DELETE", "/v1/whoami"),
        ("DELETE", "/v1/devices"),
        ("POST", "/health"),
        ("PATCH", "/v1/keys/claim"),
    ]:
        assert_error(await http.request(method, path), 405, "method_not_allowed")


# ---- bearer tokens -------------------------------------------------------------------------------

BAD_AUTHORIZATION: list[str | bytes | None] = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer garbage",
    "bearer garbage",
    "Basic YWxpY2U6cGFzc3dvcmQ=",
    "Token abc",
    "Bearer " + "x" * 5000,
    "Bearer \t",
    b"Bearer \xff\xfe\x80",
]


async def test_missing_or_garbage_tokens_are_401(http: httpx.AsyncClient, alice: Client) -> None:
    for header in BAD_AUTHORIZATION:
        headers = {} if header is None else {"Authorization": header}
        for method, path in [("GET", "/v1/whoami"), ("GET", "/v1/devices"), ("POST", "/v1/logout"), ("GET", "/v1/sync")]:
            assert_error(await http.request(method, path, headers=headers), 401, "unauthorized")
    # A refresh token is not an access token.
    refresh = insides(alice).store.get_secret("refresh_token")
    assert refresh is not None
    resp = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {refresh.decode()}"})
    assert_error(resp, 401, "unauthorized")
    # None of that disturbed Alice's own session.
    assert (await http.get("/v1/whoami", headers=auth(alice))).status_code == 200


async def test_an_expired_access_token_is_token_expired(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    clock.advance(ms=ACCESS_TOKEN_TTL_MS - 1)
    assert (await http.get("/v1/whoami", headers=auth(alice))).status_code == 200
    clock.advance(ms=1)  # the token expires at exactly issue time + TTL
    err = assert_error(await http.get("/v1/whoami", headers=auth(alice)), 401, "token_expired")
    assert "expired" in err["message"]
    assert_error(await http.post("/v1/keys/query", json={"user_ids": [alice.user_id]}, headers=auth(alice)), 401, "token_expired")


# ---- WebSocket frames ----------------------------------------------------------------------------


async def websocket_exchange(app: FastAPI, token: str, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Speak raw ASGI to /v1/ws in this event loop: send frames, collect one answer each, then disconnect."""
    inbox: list[dict[str, Any]] = [{"type": "websocket.connect"}] + [
        {"type": "websocket.receive", "text": json.dumps(f)} for f in frames
    ]
    answers: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        for _ in range(500):
            if len(answers) >= len(frames):
                break
            await asyncio.sleep(0.01)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            answers.append(json.loads(message["text"]))

    scope = websocket_scope(token)
    await asyncio.wait_for(app(scope, receive, send), 10)
    return answers


async def test_websocket_frames_with_huge_numbers_get_an_error_frame(app: FastAPI, alice: Client) -> None:
    token = auth(alice)["Authorization"].removeprefix("Bearer ")
    answers = await websocket_exchange(
        app,
        token,
        [
            {"type": "ack_to_device", "up_to": 2**64},
            {"type": "sync", "since": 2**70, "to_device_after": 0},
            {"type": "sync", "since": 0, "to_device_after": -1},
            {"type": "ping"},
        ],
    )
    assert [a["type"] for a in answers] == ["error", "error", "error", "pong"]
    assert [a["error"]["code"] for a in answers[:3]] == ["invalid_request"] * 3


# ---- login ---------------------------------------------------------------------------------------


async def challenge(http: httpx.AsyncClient, client: Client) -> str:
    resp = await http.post("/v1/login/challenge", json={"user_id": client.user_id, "device_id": client.device_id})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["nonce"])


def answer(client: Client, nonce: str, *, server_name: str = "tokenim.test", signer: Client | None = None) -> dict[str, str]:
    payload = login_challenge_payload(server_name=server_name, user_id=client.user_id, device_id=client.device_id, nonce=nonce)
    signature = insides(signer or client).identity.sign(payload)
    return {"user_id": client.user_id, "device_id": client.device_id, "nonce": nonce, "signature": signature}


async def test_challenge_for_unknown_user_or_device(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    """Issued like any other (so it tells nobody whether the account exists); the login then fails as a
    wrong signature does."""
    for user_id, device_id in (
        ("@nobody:tokenim.test", "ABCDEFG"),
        (alice.user_id, "NOSUCHDEV"),
        (alice.user_id, bob.device_id),  # Bob's device is not Alice's
        ("@alice:elsewhere.example", alice.device_id),  # a user of another server is unknown here
    ):
        resp = await http.post("/v1/login/challenge", json={"user_id": user_id, "device_id": device_id})
        assert resp.status_code == 200, resp.text
        assert set(resp.json()) == {"nonce", "server_name", "expires_at"}
        body = {"user_id": user_id, "device_id": device_id, "nonce": resp.json()["nonce"], "signature": "A" * 86}
        assert_error(await http.post("/v1/login", json=body), 400, "bad_signature")


async def test_a_bad_login_signature_is_refused_and_spends_the_challenge(
    http: httpx.AsyncClient, alice: Client, bob: Client
) -> None:
    def forgeries(nonce: str) -> dict[str, dict[str, str]]:
        good = answer(alice, nonce)
        return {
            "signed by another device": answer(alice, nonce, signer=bob),
            "signed for another server": answer(alice, nonce, server_name="evil.example"),
            "signed over another nonce": good | {"signature": answer(alice, nonce + "x")["signature"]},
            "not base64": good | {"signature": "!!not base64!!"},
            "empty": good | {"signature": ""},
            "truncated": good | {"signature": good["signature"][:-4]},
        }

    for how in forgeries("n"):
        nonce = await challenge(http, alice)
        err = assert_error(await http.post("/v1/login", json=forgeries(nonce)[how]), 400, "bad_signature")
        assert "signature" in err["message"], how
        # The failed attempt consumed the challenge: the right answer no longer works either.
        assert_error(await http.post("/v1/login", json=answer(alice, nonce)), 401, "challenge_invalid")


async def test_a_replayed_nonce_is_challenge_invalid(http: httpx.AsyncClient, alice: Client) -> None:
    nonce = await challenge(http, alice)
    first = await http.post("/v1/login", json=answer(alice, nonce))
    assert first.status_code == 200, first.text
    err = assert_error(await http.post("/v1/login", json=answer(alice, nonce)), 401, "challenge_invalid")
    assert "new one" in err["message"]
    # A nonce the server never issued is the same error.
    assert_error(await http.post("/v1/login", json=answer(alice, "made-up-nonce")), 401, "challenge_invalid")


async def test_an_expired_nonce_is_challenge_expired(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    nonce = await challenge(http, alice)
    clock.advance(seconds=61)
    assert_error(await http.post("/v1/login", json=answer(alice, nonce)), 401, "challenge_expired")
    # Just inside the lifetime it still works.
    nonce = await challenge(http, alice)
    clock.advance(ms=CHALLENGE_TTL_MS - 1)
    assert (await http.post("/v1/login", json=answer(alice, nonce))).status_code == 200


async def test_a_nonce_is_bound_to_its_user_and_device(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    nonce = await challenge(http, alice)
    # Bob answers Alice's nonce with a perfectly good signature of his own.
    assert_error(await http.post("/v1/login", json=answer(bob, nonce)), 401, "challenge_invalid")
    nonce = await challenge(http, alice)
    # Alice's user with Bob's device id (signed by Bob) fails just the same.
    forged = answer(bob, nonce) | {"user_id": alice.user_id}
    assert_error(await http.post("/v1/login", json=forged), 401, "challenge_invalid")
    # Alice's own fresh challenge still works.
    assert (await http.post("/v1/login", json=answer(alice, await challenge(http, alice)))).status_code == 200


# ---- registration signatures ---------------------------------------------------------------------


def _tamper(body: dict[str, Any], how: str, clock: FakeClock) -> dict[str, Any]:
    """A copy of a valid registration with one thing wrong."""
    out = copy.deepcopy(body)
    user_id = out["master_key"]["user_id"]
    device_id = out["device_keys"]["device_id"]
    other = SigningKey.generate()
    first_otk = next(iter(out["one_time_keys"]))
    fallback_id = next(iter(out["fallback_keys"]))
    if how == "master_field":
        out["master_key"]["created_at"] += 1
    elif how == "master_swapped_key":  # another key in place of the signed one: the signature is then missing
        out["master_key"]["keys"] = {f"ed25519:{other.public_key}": other.public_key}
    elif how == "master_signed_by_other":
        unsigned = {k: v for k, v in out["master_key"].items() if k != "signatures"}
        pub = next(iter(out["master_key"]["keys"].values()))
        out["master_key"] = sign_json(unsigned, user_id, pub, other)
    elif how == "master_unsigned":
        del out["master_key"]["signatures"]
    elif how == "device_curve_key":
        out["device_keys"]["keys"][f"curve25519:{device_id}"] = other.public_key
    elif how == "device_no_master_signature":
        master_pub = next(iter(out["master_key"]["keys"].values()))
        del out["device_keys"]["signatures"][user_id][f"ed25519:{master_pub}"]
    elif how == "device_no_self_signature":
        del out["device_keys"]["signatures"][user_id][f"ed25519:{device_id}"]
    elif how == "device_created_at":
        out["device_keys"]["created_at"] = clock.now_ms() + 1
    elif how == "one_time_key":
        out["one_time_keys"][first_otk]["key"] = other.public_key
    elif how == "one_time_key_unsigned":
        del out["one_time_keys"][first_otk]["signatures"]
    elif how == "fallback_key":
        out["fallback_keys"][fallback_id]["key"] = other.public_key
    elif how == "master_other_user":
        out["master_key"]["user_id"] = "@someone:tokenim.test"
    elif how == "master_usage":
        out["master_key"]["usage"] = ["self_signing"]
    elif how == "master_version":
        out["master_key"]["version"] = 2
    elif how == "device_other_user":
        out["device_keys"]["user_id"] = "@someone:tokenim.test"
    elif how == "device_bad_key":
        out["device_keys"]["keys"][f"curve25519:{device_id}"] = "not base64!"
    elif how == "device_algorithms":
        out["device_keys"]["algorithms"] = [MEGOLM_ALGORITHM]
    elif how == "device_not_object":
        out["device_keys"] = {"user_id": 1}
    elif how == "otk_bad_id":
        out["one_time_keys"] = {"curve25519:AAAA": out["one_time_keys"][first_otk]}
    elif how == "otk_in_fallback_slot":
        out["fallback_keys"] = {first_otk: out["one_time_keys"][first_otk]}
    elif how == "two_fallbacks":
        (fid, fkey) = next(iter(out["fallback_keys"].items()))
        out["fallback_keys"] = {fid: fkey, fid + "x": fkey}
    else:  # pragma: no cover
        raise AssertionError(how)
    return out


TAMPERINGS: list[tuple[str, str]] = [
    ("master_field", "bad_signature"),
    ("master_swapped_key", "bad_signature"),
    ("master_signed_by_other", "bad_signature"),
    ("master_unsigned", "bad_signature"),
    ("device_curve_key", "bad_signature"),
    ("device_no_master_signature", "bad_signature"),
    ("device_no_self_signature", "bad_signature"),
    ("device_created_at", "bad_signature"),
    ("one_time_key", "bad_signature"),
    ("one_time_key_unsigned", "bad_signature"),
    ("fallback_key", "bad_signature"),
    ("master_other_user", "bad_key_object"),
    ("master_usage", "bad_key_object"),
    ("master_version", "bad_key_object"),
    ("device_other_user", "bad_key_object"),
    ("device_bad_key", "bad_key_object"),
    ("device_algorithms", "bad_key_object"),
    ("device_not_object", "bad_key_object"),
    ("otk_bad_id", "bad_key_object"),
    ("otk_in_fallback_slot", "bad_key_object"),
    ("two_fallbacks", "too_many_keys"),
]


async def test_a_tampered_registration_is_refused_and_stores_nothing(
    http: httpx.AsyncClient, clock: FakeClock, database: Database
) -> None:
    good = registration_body(new_identity("dave", clock), "dave", clock.now_ms())
    for how, code in TAMPERINGS:
        err = assert_error(await http.post("/v1/register", json=_tamper(good, how, clock)), 400, code)
        for table in (users, master_keys, devices, one_time_keys):
            assert await count_rows(database, table) == 0, (how, table.name, err)
    # The username is still free: the untampered registration goes through.
    ok = await http.post("/v1/register", json=good)
    assert ok.status_code == 200, ok.text
    assert ok.json()["user_id"] == "@dave:tokenim.test"
    assert await count_rows(database, one_time_keys) == len(good["one_time_keys"]) + 1


async def test_a_registration_naming_another_username_than_its_keys_is_refused(http: httpx.AsyncClient, clock: FakeClock) -> None:
    body = registration_body(new_identity("dave", clock), "dave", clock.now_ms()) | {"username": "eve"}
    assert_error(await http.post("/v1/register", json=body), 400, "bad_key_object")
    assert_error(await http.post("/v1/register", json=body | {"username": "Dave"}), 400, "invalid_request")


async def test_a_refused_registration_leaves_the_username_free_for_another(
    http: httpx.AsyncClient, clock: FakeClock, database: Database
) -> None:
    """A rejected attempt by one key holder doesn't reserve the name against a different one."""
    mallory = registration_body(new_identity("frank", clock), "frank", clock.now_ms())
    assert_error(await http.post("/v1/register", json=_tamper(mallory, "one_time_key", clock)), 400, "bad_signature")
    frank = registration_body(new_identity("frank", clock), "frank", clock.now_ms())
    assert (await http.post("/v1/register", json=frank)).status_code == 200
    assert_error(await http.post("/v1/register", json=mallory), 409, "username_taken")
    assert await count_rows(database, users) == 1


# ---- fuzz ---------------------------------------------------------------------------------------

ALPHABET = "ab@:!$#.-_ ABZ019\u00e9\u4e2d\U0001f600\n\t\x00\\\"'"
SAMPLE_KEYS = ["user_id", "device_id", "keys", "signatures", "name", "type", "content", "messages", "up_to", "usage", "x"]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: nested objects and arrays of strings (with NUL, unicode), ints (some huge), floats."""
    kind = rng.randrange(10 if depth < 4 else 7)
    if kind == 0:
        return rng.choice([0, 1, -1, 59, 60, 3600, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**80])
    if kind == 1:
        return rng.randrange(-(10**6), 10**6)
    if kind == 2:
        return rng.choice([None, True, False, 0.5, -1e308, 1e-9, 3600.0])
    if kind in (3, 4):
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 24)))
    if kind == 5:
        return rng.choice(["@alice:tokenim.test", "@bob:tokenim.test", "ABCDEFGH", "signed_curve25519:AAAAAQ", ENCRYPTED, ""])
    if kind == 6:
        return "x" * rng.choice([63, 64, 65, 128, 129, 256, 321])
    if kind == 7:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rng.choice([*SAMPLE_KEYS, random_json(rng, 4)]): random_json(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def mutate(rng: random.Random, template: Any) -> Any:
    """A valid body with one to three random changes: a value replaced, a member dropped or one added."""
    body = copy.deepcopy(template)
    for _ in range(rng.randrange(1, 4)):
        path = rng.choice(_paths(body))
        if not path:
            body = random_json(rng) if rng.random() < 0.2 else body
            continue
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        action = rng.randrange(3)
        if action == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == 1 and isinstance(parent, dict):
            parent[rng.choice([*SAMPLE_KEYS, "extra"])] = random_json(rng)
        else:
            parent[path[-1]] = random_json(rng)
    return body


async def _templates(alice: Client, bob: Client, clock: FakeClock) -> dict[tuple[str, str], Any]:
    """A valid body for every route that takes one, so mutations reach past the model into the services."""
    room = (await alice.rooms.create("fuzz", invite=[bob.user_id])).room_id
    leaving = (await alice.rooms.create("to leave")).room_id  # leaving `room` would stop the other room routes early
    now = clock.now_ms()
    newcomer = new_identity("newcomer", clock)
    second = DeviceIdentity.create(alice.user_id, new_device_id(), now, master=insides(alice).identity.master)
    upload = second.keys_to_upload(45, need_fallback=True)
    otk = sign_json({"key": SigningKey.generate().public_key}, alice.user_id, alice.device_id, insides(alice).identity)
    second_device = Device(alice.user_id, second.device_id, curve25519=second.curve25519)
    second_device.signing = SigningKey.generate()  # the revocation names keys; only their shape matters here
    version = (await alice.backup.create()).version
    opened = await insides(alice).transport.post("/v1/link", {"user_id": alice.user_id}, LinkOpenResponse, auth=False)
    link = f"/v1/link/{opened.link_id}"
    await insides(alice).transport.request("POST", f"{link}/claim", LinkClaimResponse)
    return {
        ("POST", "/v1/link"): {"user_id": alice.user_id},
        ("POST", "/v1/2fa/enable"): {},
        ("POST", "/v1/2fa/confirm"): {"code": "123456"},
        ("POST", "/v1/2fa/disable"): {"recovery_code": "ABCD-EFGH-JKLM-NPQR"},
        ("POST", f"{link}/claim"): {},
        ("PUT", f"{link}/messages/1"): {"body": "AAAA"},
        ("POST", f"{link}/close"): {"outcome": "failed", "reason": "error"},
        ("POST", "/v1/register"): registration_body(newcomer, "newcomer", now),
        ("POST", "/v1/login/challenge"): {"user_id": alice.user_id, "device_id": alice.device_id},
        ("POST", "/v1/login"): {"user_id": alice.user_id, "device_id": alice.device_id, "nonce": "n", "signature": "s"},
        ("POST", "/v1/token/refresh"): {"refresh_token": "not-a-real-refresh-token"},
        ("POST", "/v1/logout"): {},
        ("POST", "/v1/logout/all"): {},
        ("POST", "/v1/devices"): {
            "device_keys": second.device_keys_object(now),
            "one_time_keys": upload.one_time_keys,
            "fallback_keys": upload.fallback_keys,
        },
        ("POST", "/v1/keys/upload"): {"one_time_keys": {"signed_curve25519:fuzz1": otk}, "fallback_keys": {}},
        ("POST", "/v1/keys/query"): {"user_ids": [alice.user_id, bob.user_id]},
        ("POST", "/v1/keys/claim"): {"devices": {bob.user_id: [bob.device_id]}},
        ("POST", "/v1/keys/rotate"): rotation_body(alice, now),
        ("POST", "/v1/keys/revoke"): {"revocation": revocation_object(second_device, insides(alice).identity.master, 1, now)},
        ("POST", "/v1/admin/invites"): {"expires_in_seconds": 3600},
        ("POST", "/v1/rooms"): {"name": "room", "invite": [bob.user_id]},
        ("POST", "/v1/rooms/direct"): {"user_id": bob.user_id},
        ("POST", f"/v1/rooms/{room}/invite"): {"user_id": bob.user_id},
        ("POST", f"/v1/rooms/{room}/join"): {},
        ("POST", f"/v1/rooms/{leaving}/leave"): {},
        ("POST", f"/v1/rooms/{room}/remove"): {"user_id": bob.user_id},
        ("POST", f"/v1/rooms/{room}/name"): {"name": "renamed"},
        ("PUT", f"/v1/rooms/{room}/send/txn1"): {
            "type": ENCRYPTED,
            "content": {
                "algorithm": MEGOLM_ALGORITHM,
                "ciphertext": "AwgAEhA",
                "session_id": "session",
                "sender_key": alice.keys.info().device_curve25519,
                "device_id": alice.device_id,
            },
        },
        ("POST", "/v1/to_device"): {"type": "m.x", "messages": {bob.user_id: {bob.device_id: {"a": 1}}}},
        ("POST", "/v1/to_device/ack"): {"up_to": 0},
        ("POST", "/v1/blobs"): {"any": "bytes"},
        ("POST", "/v1/devices/by_master_key/challenge"): {"user_id": alice.user_id, "device_id": new_device_id()},
        ("POST", "/v1/devices/by_master_key/add"): {
            "user_id": alice.user_id,
            "nonce": "n",
            "signature": "s",
            "device_keys": second.device_keys_object(now),
            "one_time_keys": upload.one_time_keys,
            "fallback_keys": upload.fallback_keys,
        },
        ("POST", "/v1/audit/events"): {"event": "room_keys.exported", "details": {"sessions": 1}},
        ("POST", "/v1/backup"): {"metadata": {"algorithm": BACKUP_ALGORITHM, "key_check": "A" * 43, "kdf": None}},
        ("PUT", f"/v1/backup/{version}/keys"): {
            "expected_counter": 1,
            "manifest": {"version": version, "counter": 2, "count": 2, "digest": "A" * 43, "mac": "A" * 43},
            "entries": [{"entry_id": "B" * 43, "ciphertext": "AAAA"}],
        },
    }


def _generic_segment(match: re.Match[str]) -> str:
    return "/v1/rooms/{room_id}/" if match.group(1).startswith("rooms") else "/v1/backup/{version}/"


def rotation_body(alice: Client, now: int) -> dict[str, Any]:
    """A well-formed rotation of Alice's master key to a new one, her device re-signed."""
    new = SigningKey.generate()
    device = resign(insides(alice).identity.device_keys_object(now), alice.user_id, new)
    return {
        "master_key": master_key_object(alice.user_id, new, 2, now),
        "rotation": rotation_object(alice.user_id, insides(alice).identity.master, 1, new, ts=now),
        "devices": [device],
    }


def _routes_with_bodies(app: FastAPI) -> set[tuple[str, str]]:
    """Every POST and PUT route, from the app's own OpenAPI document."""
    return {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops if m in ("post", "put")}


FUZZ_ROUNDS = 200
FUZZ_SHARDS = 3


@pytest.mark.parametrize("shard", range(FUZZ_SHARDS))
async def test_random_bodies_on_every_post_route_never_cause_a_server_error(
    app: FastAPI, alice: Client, bob: Client, clock: FakeClock, shard: int
) -> None:
    """A seeded fuzz: random values and mutations of valid bodies, 200 per route; always a 4xx or a success."""
    templates = await _templates(alice, bob, clock)
    # Every POST/PUT route of the app has a template (room routes with a real room id, sends with a txn id).
    generic = {
        (m, re.sub(r"/v1/(rooms/![^/]+|backup/\d+)/", _generic_segment, p).replace("/txn1", "/{txn_id}")) for m, p in templates
    }
    link_generic = {(m, re.sub(r"/v1/link/[^/]+/", "/v1/link/{link_id}/", p)) for m, p in generic}
    generic = {(m, p.replace("/messages/1", "/messages/{seq}")) for m, p in link_generic}
    assert generic == _routes_with_bodies(app)

    failures: list[str] = []
    outcomes: dict[str, Counter[str]] = {}
    # A crash must come back as a response here (500), so that every failing body is listed.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tokenim.test") as http:
        for (method, path), template in sorted(templates.items())[shard::FUZZ_SHARDS]:
            rng = random.Random(f"{method} {path.split('!')[0]}")
            seen = outcomes.setdefault(f"{method} {path}", Counter())
            for i in range(FUZZ_ROUNDS):
                body = random_json(rng) if i % 4 == 0 else mutate(rng, template)
                if path in ("/v1/logout", "/v1/logout/all"):  # logging Alice out would end the fuzz: random tokens
                    token = "".join(rng.choices(string.ascii_letters, k=rng.randrange(40)))
                    headers = JSON | {"Authorization": f"Bearer {token}"}
                else:
                    headers = JSON | auth(alice)
                url = path.replace("/send/txn1", f"/send/txn{i}")
                resp = await http.request(method, url, content=json.dumps(body).encode(), headers=headers)
                if resp.status_code >= 500:
                    failures.append(f"{method} {path} {body!r}: {resp.text}")
                elif resp.status_code >= 400:
                    err = assert_error(resp, resp.status_code, resp.json()["error"]["code"], one_line=False)
                    # Errors from the request models carry `details`; those from the services don't.
                    seen["refused by a service" if "details" not in err and err["code"] != "bad_json" else "invalid"] += 1
                else:
                    seen["ok"] += 1
    assert not failures, f"{len(failures)} server errors, e.g.\n" + "\n".join(failures[:10])
    # The mutations reach past the request models: every route got bodies through to its service.
    for route, seen in outcomes.items():
        assert set(seen) - {"invalid"}, (route, seen)
