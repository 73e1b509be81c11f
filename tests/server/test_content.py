"""Nothing one user stores can break another user's sync: content the server can't serve back is refused at
the door (400 with a sentence), what it accepts comes back byte-exact over HTTP and WebSocket, and rows
stored before these checks are served with their content withheld, never as a 500."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select, update

from tests.server.served import auth, http_history, http_sync, raw_request, strict_json, websocket_session, websocket_sync
from tests.support import insides
from tokenim.client import Client
from tokenim.core.content import MAX_JSON_DEPTH, MAX_JSON_INT
from tokenim.core.signing import SigningKey, sign_json
from tokenim.protocol.events import ENCRYPTED
from tokenim.protocol.keys import MEGOLM_ALGORITHM, OLM_ALGORITHM
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import events, rooms, stream_positions, to_device


def nested(depth: int) -> Any:
    """A JSON value `depth` arrays deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def megolm(client: Client, ciphertext: str = "AwgAEhA") -> dict[str, Any]:
    return {
        "algorithm": MEGOLM_ALGORITHM,
        "ciphertext": ciphertext,
        "session_id": "session",
        "sender_key": client.keys.info().device_curve25519,
        "device_id": client.device_id,
    }


def olm(sender: Client, recipient: Client, body: Any = "AwogAAAA") -> dict[str, Any]:
    return {
        "algorithm": OLM_ALGORITHM,
        "sender_key": sender.keys.info().device_curve25519,
        "ciphertext": {recipient.keys.info().device_curve25519: {"type": 0, "body": body}},
    }


def to_device_body(recipient: Client, content: dict[str, Any], event_type: str = ENCRYPTED) -> dict[str, Any]:
    return {"type": event_type, "messages": {recipient.user_id: {recipient.device_id: content}}}


def send_body(content: dict[str, Any]) -> dict[str, Any]:
    return {"type": ENCRYPTED, "content": content}


# Raw JSON texts for values Python's json.dumps would not write (or would write escaped as we want).
POISON: dict[str, bytes] = {
    "lone surrogate": b'"\\ud800"',
    "lone low surrogate": b'"a\\udc00b"',
    "deep nesting": b"[" * 300 + b"1" + b"]" * 300,
    "just too deep": json.dumps(nested(MAX_JSON_DEPTH)).encode(),
    "NaN": b"NaN",
    "Infinity": b"-Infinity",
    "overflowing float": b"1e400",
    "float": b"1.5",
    "huge integer": str(2**200).encode(),
    "integer past 2^53": str(MAX_JSON_INT + 1).encode(),
}


def with_raw(body: dict[str, Any], raw: bytes) -> bytes:
    """`body` as JSON with the string "@@RAW@@" replaced by the raw JSON text `raw`."""
    return json.dumps(body).replace('"@@RAW@@"', raw.decode()).encode()


def assert_refused(resp: httpx.Response, code: str = "invalid_request") -> str:
    assert resp.status_code == 400, resp.text
    err = strict_json(resp.content)["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and "\n" not in err["message"]
    return str(err["message"])


async def assert_everyone_can_read(http: httpx.AsyncClient, app: FastAPI, room_id: str | None, *clients: Client) -> None:
    for client in clients:
        await http_sync(http, client)
        await websocket_sync(app, client)
        if room_id is not None:
            await http_history(http, client, room_id)


async def test_room_content_that_cannot_be_served_is_refused(
    http: httpx.AsyncClient, app: FastAPI, alice: Client, bob: Client
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    for i, (name, raw) in enumerate(POISON.items()):
        body = with_raw(send_body(megolm(bob, "@@RAW@@")), raw)
        resp = await raw_request(http, "PUT", f"/v1/rooms/{room}/send/p{i}", body, bob)
        assert resp.status_code == 400, (name, resp.text)
        await assert_everyone_can_read(http, app, room, alice, bob)


async def test_to_device_content_that_cannot_be_served_is_refused(
    http: httpx.AsyncClient, app: FastAPI, alice: Client, bob: Client
) -> None:
    for name, raw in POISON.items():
        for where in ("body", "extra"):
            content = olm(bob, alice, "@@RAW@@") if where == "body" else olm(bob, alice) | {"extra": "@@RAW@@"}
            resp = await raw_request(http, "POST", "/v1/to_device", with_raw(to_device_body(alice, content), raw), bob)
            message = assert_refused(resp)
            assert "to-device content" in message, (name, message)
        await assert_everyone_can_read(http, app, None, alice)
    assert (await http_sync(http, alice))["to_device"] == []


async def test_a_websocket_send_with_unservable_content_gets_an_error_frame(app: FastAPI, alice: Client, bob: Client) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    content = megolm(bob) | {"ciphertext": "\ud800"}
    frames = await websocket_session(
        app, bob, [{"type": "send", "room_id": room, "txn_id": "ws1", "content": content}], until="error"
    )
    assert frames[-1]["error"]["code"] == "invalid_request" and frames[-1]["txn_id"] == "ws1"
    await websocket_sync(app, alice)


async def test_a_websocket_send_with_unservable_ids_gets_an_error_frame(app: FastAPI, alice: Client, bob: Client) -> None:
    """Every send frame is answered with strict JSON, even when its txn_id or room_id can't be echoed or stored."""
    room = (await alice.rooms.direct("@bob")).room_id
    bad_frames: list[tuple[Any, Any]] = [
        (room, "\ud800"),
        (room, float("nan")),
        (room, {"nested": [1]}),
        ("!\ud800", "t1"),
        ("!" + "a" * 200, "t2"),
        ("not a room", "t3"),
    ]
    for room_id, txn_id in bad_frames:
        frame = {"type": "send", "room_id": room_id, "txn_id": txn_id, "content": megolm(bob)}
        answer = (await websocket_session(app, bob, [frame], until="error"))[-1]
        assert answer["error"]["code"] == "invalid_request", (room_id, txn_id, answer)
        assert answer.get("txn_id") in (None, txn_id), answer


async def test_encrypted_content_relays_base64_and_ids_only(
    http: httpx.AsyncClient, app: FastAPI, alice: Client, bob: Client
) -> None:
    """NUL, astral and combining characters, bidi marks, the largest integers and deep nesting are legal JSON,
    but encrypted content carries base64 and ids only: anything else (extra members, a forged `sender`, text
    in an Olm entry, an odd session id) is refused, so no member can put text or a shape other clients do
    not expect in front of them (found from outside). The well-formed content comes back exactly."""
    odd = {
        "nul": "a\x00b",
        "text": "e\u0301 \U0001f600 \u202e \ufeff \uffff \x7f",
        "ints": [MAX_JSON_INT, -MAX_JSON_INT, 0],
        "deep": nested(MAX_JSON_DEPTH - 3),
    }
    base = olm(bob, alice)
    (key,) = base["ciphertext"]
    bad_olm = [
        base | {"odd": odd},
        base | {"sender": "@someone:else", "sender_device": "ABCDEFGH"},
        base | {"ciphertext": {key: {"type": 2, "body": "AAAA"}}},
        base | {"ciphertext": {key: {"type": "0", "body": "AAAA"}}},
        base | {"ciphertext": {key: {"type": 0, "body": 12345}}},
        base | {"ciphertext": {key: {"type": 0, "body": "\x1b]0;owned\x07"}}},
        base | {"ciphertext": {key: {"type": 0, "body": "AAAA", "note": "\u202e"}}},
        base | {"ciphertext": {key: None}},
    ]
    for content in bad_olm:
        resp = await http.post("/v1/to_device", json=to_device_body(alice, content), headers=auth(bob))
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_request", (content, resp.text)
    room = (await alice.rooms.direct("@bob")).room_id
    bad_megolm = [
        megolm(bob, "x\x00\U0001f600"),
        megolm(bob) | {"session_id": "\x1b[31m"},
        megolm(bob) | {"session_id": ""},
        megolm(bob) | {"ciphertext": ""},
        megolm(bob) | {"odd": odd},
    ]
    for n, content in enumerate(bad_megolm):
        resp = await http.put(f"/v1/rooms/{room}/send/odd{n}", json=send_body(content), headers=auth(bob))
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_request", (content, resp.text)
    page = await http_sync(http, alice)
    assert page["to_device"] == [] and [e for e in page["events"] if e["type"] == ENCRYPTED] == []

    # The well-formed forms are relayed exactly, by both paths.
    content = olm(bob, alice)
    assert (await http.post("/v1/to_device", json=to_device_body(alice, content), headers=auth(bob))).status_code == 200
    sent = megolm(bob, "AwgA/+" * 1000)
    assert (await http.put(f"/v1/rooms/{room}/send/fine", json=send_body(sent), headers=auth(bob))).status_code == 200
    page = await http_sync(http, alice)
    assert [m["content"] for m in page["to_device"]] == [content]
    assert [e["content"] for e in page["events"] if e["type"] == ENCRYPTED] == [sent]
    frames = await websocket_sync(app, alice)
    assert [f["message"]["content"] for f in frames if f["type"] == "to_device"] == [content]
    assert [f["event"]["content"] for f in frames if f["type"] == "event" and f["event"]["type"] == ENCRYPTED] == [sent]
    history = await http_history(http, alice, room)
    assert [e["content"] for e in history["events"] if e["type"] == ENCRYPTED] == [sent]


async def test_key_objects_that_cannot_be_served_are_refused(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    """A signed key object is relayed to everyone who queries or claims: it must be servable too."""
    for i, value in enumerate([nested(300), 2**70, nested(MAX_JSON_DEPTH)]):
        obj = sign_json(
            {"key": SigningKey.generate().public_key, "x": value}, alice.user_id, alice.device_id, insides(alice).identity
        )
        body = {"one_time_keys": {f"signed_curve25519:bad{i}": obj}}
        resp = await http.post("/v1/keys/upload", json=body, headers=auth(alice))
        assert_refused(resp, "bad_key_object")
    resp = await http.post("/v1/keys/query", json={"user_ids": [alice.user_id]}, headers=auth(bob))
    assert resp.status_code == 200, resp.text
    claims = {"devices": {alice.user_id: [alice.device_id]}}
    for _ in range(3):
        assert (await http.post("/v1/keys/claim", json=claims, headers=auth(bob))).status_code == 200


async def test_to_device_types_are_identifiers(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    for bad in ["", "m.room.encrypted\n", "\x1b[31m", "has space", "\u202etype"]:
        resp = await http.post("/v1/to_device", json=to_device_body(alice, olm(bob, alice), bad), headers=auth(bob))
        assert_refused(resp)
    assert (await http_sync(http, alice))["to_device"] == []


# ---- rows stored before the checks ---------------------------------------------------------------

BAD_STORED = ['{"ciphertext":"\\ud800"}', "[" * 300 + "]" * 300, '{"n":NaN}', '{"f":1e400}', "{not json"]


async def _store_poisoned_event(database: Database, room_id: str, sender: Client, content_json: str, n: int) -> int:
    """Write an event row as an older server would have, bypassing every check."""
    async with database.write() as tx:
        pos = int((await tx.execute(select(stream_positions.c.pos).where(stream_positions.c.stream == "events"))).scalar_one())
        seq = int((await tx.execute(select(rooms.c.last_seq).where(rooms.c.room_id == room_id))).scalar_one())
        await tx.execute(
            insert(events).values(
                pos=pos + 1,
                event_id=f"$poisoned{n}",
                room_id=room_id,
                room_seq=seq + 1,
                type=ENCRYPTED,
                sender=sender.user_id,
                sender_device=sender.device_id,
                txn_id=f"poison{n}",
                content_json=content_json,
                ts=1,
            )
        )
        await tx.execute(update(rooms).where(rooms.c.room_id == room_id).values(last_seq=seq + 1))
        await tx.execute(update(stream_positions).where(stream_positions.c.stream == "events").values(pos=pos + 1))
    return pos + 1


async def test_already_stored_poison_is_withheld_with_a_warning_never_a_500(
    http: httpx.AsyncClient,
    app: FastAPI,
    alice: Client,
    bob: Client,
    database: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    positions = [await _store_poisoned_event(database, room, bob, text, n) for n, text in enumerate(BAD_STORED)]
    async with database.write() as tx:
        for n, text in enumerate(BAD_STORED):
            await tx.execute(
                insert(to_device).values(
                    user_id=alice.user_id,
                    device_id=alice.device_id,
                    sender=bob.user_id,
                    sender_device=bob.device_id,
                    type=ENCRYPTED,
                    content_json=text,
                    created_at=n,
                )
            )
    await bob.messages.send_text(room, "after the poison")

    with caplog.at_level(logging.WARNING, logger="tokenim.server"):
        page = await http_sync(http, alice)
    withheld = [e for e in page["events"] if e["pos"] in positions]
    assert [e["content"] for e in withheld] == [{}] * len(BAD_STORED)
    assert [m["content"] for m in page["to_device"]][: len(BAD_STORED)] == [{}] * len(BAD_STORED)
    assert page["to_device"][-1]["content"]["algorithm"] == OLM_ALGORITHM  # the room key Bob shared after
    assert any("$poisoned0" in r.getMessage() and "withheld" in r.getMessage() for r in caplog.records)
    frames = await websocket_sync(app, alice)
    assert [f["event"]["content"] for f in frames if f["type"] == "event" and f["event"]["pos"] in positions] == [{}] * 5
    history = await http_history(http, alice, room)
    assert [e["content"] for e in history["events"] if e["pos"] in positions] == [{}] * len(BAD_STORED)
    # The client shows the withheld events as warnings and still reads what came after.
    got = await alice.messages.sync()
    assert [m.body for m in got if m.body is not None] == ["after the poison"]
