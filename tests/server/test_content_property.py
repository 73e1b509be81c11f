"""Property: whatever JSON-like content a user sends through any route that stores client JSON, the server
either refuses it with a 4xx error body or stores it and serves it back unchanged, and every recipient can
still sync over HTTP and the WebSocket and read history, on both databases.

Routes that store client JSON: room send (HTTP and WebSocket), to-device send (content and type),
one-time key upload, registration (key objects and e-mail address), adding a device (its key object), room
create and rename (names).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.server.served import auth, http_history, http_sync, raw_request, strict_json, websocket_session, websocket_sync
from tests.server.test_content import megolm, nested, olm, send_body, to_device_body
from tests.server.test_errors import new_identity, registration_body
from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.content import MAX_JSON_DEPTH
from tokenim.core.ids import new_device_id
from tokenim.core.signing import SigningKey, sign_json
from tokenim.crypto.device import DeviceIdentity
from tokenim.protocol.events import ENCRYPTED, MAX_CONTENT_BYTES

ROUTES = [
    "send",
    "send_ws",
    "to_device",
    "to_device_type",
    "keys_upload",
    "register",
    "add_device",
    "room_create",
    "room_rename",
]

# Every character, lone surrogates included, and the ones that have broken servers before.
ANY_CHAR = st.characters(exclude_categories=())
NASTY_TEXT = st.sampled_from(
    [
        "\ud800",
        "a\udfffb",
        "\x00",
        "\x1b]0;title\x07",
        "\u202egnp.exe",
        "\u2028",
        "\ufeff\uffff\U0010ffff",
        "e\u0301\U0001f468\u200d\U0001f469",
        "x" * (MAX_CONTENT_BYTES - 500),
        "é" * (MAX_CONTENT_BYTES + 1),
    ]
)
IDENTIFIER = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
TEXT = st.text(ANY_CHAR, max_size=40) | NASTY_TEXT | IDENTIFIER
NUMBERS = (
    st.integers()
    | st.sampled_from([2**53 - 1, 2**53, -(2**53), 2**63, 2**64, 10**400])
    | st.floats(allow_nan=True, allow_infinity=True)
)
LEAVES = st.none() | st.booleans() | NUMBERS | TEXT
JSON_LIKE = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
) | st.integers(MAX_JSON_DEPTH - 3, 400).map(nested)


@dataclass
class World:
    """One server and its users, reused across the examples of a test so poison would pile up."""

    http: httpx.AsyncClient
    app: FastAPI
    clock: FakeClock
    alice: Client
    bob: Client
    room: str
    group: str
    counter: Iterator[int] = field(default_factory=itertools.count)


@pytest.fixture
async def world(http: httpx.AsyncClient, app: FastAPI, clock: FakeClock, alice: Client, bob: Client) -> World:
    room = (await alice.rooms.direct("@bob")).room_id
    group = (await alice.rooms.create("group", ["@bob"])).room_id
    await bob.rooms.join(group)
    return World(http, app, clock, alice, bob, room, group)


def body_bytes(body: dict[str, Any]) -> bytes:
    """JSON as a careless client writes it: lone surrogates escaped (`\\ud800`), NaN and Infinity as bare words."""
    return json.dumps(body).encode()


def same_json(value: Any) -> Any:
    """What the value becomes after a trip through JSON text (tuples become lists, and so on)."""
    return json.loads(json.dumps(value))


async def submit(w: World, route: str, value: Any, text: str, slot: str) -> tuple[int, Any, str]:
    """Send `value` or `text` through `route`: in the field that holds text (`slot` "text"), in that field
    instead of the text ("value"), or in an extra field ("extra"). Returns the status, what should come
    back if it was accepted, and whose keys to query."""
    n = next(w.counter)
    put = value if slot != "text" else text
    if route in ("send", "send_ws"):
        content = megolm(w.bob) | ({"extra": value} if slot == "extra" else {"ciphertext": put})
        if route == "send_ws":
            frame = {"type": "send", "room_id": w.room, "txn_id": f"ws{n}", "content": content}
            last = (await websocket_session(w.app, w.bob, [frame], until=("sent", "error")))[-1]
            return (200 if last["type"] == "sent" else last["error"]["status"]), content, ""
        resp = await raw_request(w.http, "PUT", f"/v1/rooms/{w.room}/send/t{n}", body_bytes(send_body(content)), w.bob)
        return _status(resp), content, ""
    if route in ("to_device", "to_device_type"):
        content = olm(w.bob, w.alice) | {"extra": value} if slot == "extra" else olm(w.bob, w.alice, put)
        body = to_device_body(w.alice, content, text if route == "to_device_type" else ENCRYPTED)
        return _status(await raw_request(w.http, "POST", "/v1/to_device", body_bytes(body), w.bob)), content, ""
    if route == "keys_upload":
        obj = _signed_or_not({"key": SigningKey.generate().public_key, "x": put}, insides(w.bob).identity)
        body = {"one_time_keys": {f"signed_curve25519:p{n}": obj}}
        return _status(await raw_request(w.http, "POST", "/v1/keys/upload", body_bytes(body), w.bob)), obj, w.bob.user_id
    if route == "register":
        identity = new_identity(f"user{n}", w.clock)
        body = registration_body(identity, f"user{n}", w.clock.now_ms(), otks=1) | {"email": f"u{text}@example.com"}
        keys = {k: v for k, v in body["device_keys"].items() if k != "signatures"} | {"x": put}
        body["device_keys"] = _signed_or_not(keys, identity, also=identity.master)
        status = _status(await raw_request(w.http, "POST", "/v1/register", body_bytes(body), None))
        return status, body["device_keys"], str(identity.user_id)
    if route == "add_device":
        device = DeviceIdentity.create(w.bob.user_id, new_device_id(), w.clock.now_ms(), master=insides(w.bob).identity.master)
        keys = {k: v for k, v in device.device_keys_object(w.clock.now_ms()).items() if k != "signatures"} | {"x": put}
        obj = _signed_or_not(keys, device, also=device.master)
        status = _status(await raw_request(w.http, "POST", "/v1/devices", body_bytes({"device_keys": obj}), w.bob))
        return status, obj, w.bob.user_id
    path = "/v1/rooms" if route == "room_create" else f"/v1/rooms/{w.group}/name"
    return _status(await raw_request(w.http, "POST", path, body_bytes({"name": text}), w.alice)), text, ""


def _signed_or_not(obj: dict[str, Any], signer: Any, also: SigningKey | None = None) -> dict[str, Any]:
    """Sign as the device (and master) would; what can't be signed is sent with a made-up signature."""
    try:
        signed = sign_json(obj, signer.user_id, signer.device_id, signer)
        return sign_json(signed, signer.user_id, also.public_key, also) if also else signed
    except Exception:
        return obj | {"signatures": {signer.user_id: {f"ed25519:{signer.device_id}": "A" * 86}}}


def _status(resp: httpx.Response) -> int:
    """The status, after checking a refusal is the error model in strict JSON, never a server error."""
    assert resp.status_code < 500, resp.text
    if resp.status_code != 200:
        err = strict_json(resp.content)["error"]
        assert err["status"] == resp.status_code and err["code"] and err["message"].strip(), err
    return resp.status_code


async def everyone_can_read(w: World) -> dict[str, Any]:
    """Alice and Bob (the people anything sent reaches) sync over HTTP and the WebSocket and read the
    rooms' history; returns Alice's sync."""
    pages = {}
    for client in (w.alice, w.bob):
        pages[client.user_id] = await http_sync(w.http, client, limit=1000)
        await websocket_sync(w.app, client)
    for client in (w.alice, w.bob):
        for room in (w.room, w.group):
            await http_history(w.http, client, room)
    return pages[w.alice.user_id]


async def check_served_back(w: World, route: str, sent: Any, owner: str, alice_page: dict[str, Any]) -> None:
    """What was accepted comes back unchanged to the people it was for."""
    if route in ("send", "send_ws"):
        events = [e["content"] for e in alice_page["events"] if e["type"] == ENCRYPTED]
        assert events[-1] == same_json(sent)
    elif route in ("to_device", "to_device_type"):
        assert alice_page["to_device"][-1]["content"] == same_json(sent)
    elif route in ("keys_upload", "register", "add_device"):
        resp = await w.http.post("/v1/keys/query", json={"user_ids": [owner]}, headers=auth(w.alice))
        assert resp.status_code == 200, resp.text
        devices = strict_json(resp.content)["users"][owner]["devices"]
        if route == "register":
            assert list(devices.values()) == [same_json(sent)]
        if route == "add_device":
            assert devices[sent["device_id"]] == same_json(sent)
            mine = strict_json((await w.http.get("/v1/devices", headers=auth(w.bob))).content)["devices"]
            assert [d["keys"] for d in mine if d["device_id"] == sent["device_id"]] == [same_json(sent)]
        claim = {"devices": {owner: list(devices)}}
        resp = await w.http.post("/v1/keys/claim", json=claim, headers=auth(w.alice))
        assert resp.status_code == 200 and strict_json(resp.content), resp.text
    else:
        rooms = strict_json((await w.http.get("/v1/rooms", headers=auth(w.alice))).content)["rooms"]
        assert sent.strip() in {r["name"] for r in rooms}


@pytest.mark.parametrize("route", ROUTES)
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@example(value="\ud800", text="\ud800", slot="value")
@example(value={"a": ["\udc00"]}, text="a\udfffb", slot="extra")
@example(value=nested(300), text="\x1b]0;owned\x07", slot="value")
@example(value=nested(MAX_JSON_DEPTH), text="\u202etxt", slot="extra")
@example(value=float("nan"), text="\u2028", slot="value")
@example(value=[float("-inf"), 1.5], text="", slot="extra")
@example(value=2**200, text="\x00", slot="value")
@example(value={"big": 10**400, "ok": 2**53 - 1}, text="x" * 300, slot="extra")
@example(value="x" * (MAX_CONTENT_BYTES + 1), text="é" * 255, slot="value")
@example(value={"nul": "a\x00b", "emoji": "\U0001f600\u200d", "bom": "\ufeff"}, text="Équipe 🚀", slot="extra")
@given(value=JSON_LIKE, text=TEXT, slot=st.sampled_from(["text", "value", "extra"]))
async def test_whatever_is_sent_everyone_can_still_sync_and_read(
    world: World, route: str, value: Any, text: str, slot: str
) -> None:
    status, sent, owner = await submit(world, route, value, text, slot)
    event(f"status {status}")
    alice_page = await everyone_can_read(world)
    if status == 200:
        await check_served_back(world, route, sent, owner, alice_page)
