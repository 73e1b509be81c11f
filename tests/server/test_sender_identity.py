"""The server relays no content that names another sender than the one sending it: a Megolm event's
`device_id` and `sender_key`, and a to-device message's `sender_key`, must be the sending device's own;
an Olm ciphertext must be addressed to the recipient device's key. Anything else is `sender_mismatch`
(or `invalid_request` for a misaddressed ciphertext) and nothing is stored."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.server.served import auth, http_sync, strict_json, websocket_session
from tests.server.test_content import megolm, olm, send_body, to_device_body
from tokenim.client import Client
from tokenim.protocol.events import ENCRYPTED


def refused(resp: httpx.Response, code: str) -> str:
    assert resp.status_code == 400, resp.text
    err = strict_json(resp.content)["error"]
    assert err["code"] == code, err
    return str(err["message"])


async def room_events(http: httpx.AsyncClient, client: Client) -> list[dict[str, Any]]:
    return [e for e in (await http_sync(http, client))["events"] if e["type"] == ENCRYPTED]


async def test_a_megolm_event_naming_another_device_is_refused(
    http: httpx.AsyncClient, app: FastAPI, alice: Client, bob: Client
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    spoofs = {
        "another user's device": megolm(bob) | {"device_id": alice.device_id},
        "a device that does not exist": megolm(bob) | {"device_id": "NOSUCHDEVICE"},
        "another device's key": megolm(bob) | {"sender_key": alice.keys.info().device_curve25519},
        "a made-up key": megolm(bob) | {"sender_key": "A" * 43},
    }
    for n, (what, content) in enumerate(spoofs.items()):
        resp = await http.put(f"/v1/rooms/{room}/send/spoof{n}", json=send_body(content), headers=auth(bob))
        message = refused(resp, "sender_mismatch")
        assert "sending device" in message, (what, message)
        frames = await websocket_session(
            app, bob, [{"type": "send", "room_id": room, "txn_id": f"ws{n}", "content": content}], until="error"
        )
        assert frames[-1]["error"]["code"] == "sender_mismatch", what
    assert await room_events(http, alice) == []
    # The honest form is accepted, over both paths.
    resp = await http.put(f"/v1/rooms/{room}/send/honest", json=send_body(megolm(bob)), headers=auth(bob))
    assert resp.status_code == 200, resp.text
    frames = await websocket_session(
        app, bob, [{"type": "send", "room_id": room, "txn_id": "ws-honest", "content": megolm(bob)}], until="sent"
    )
    assert frames[-1]["txn_id"] == "ws-honest"
    assert [e["content"] for e in await room_events(http, alice)] == [megolm(bob), megolm(bob)]


async def test_a_to_device_message_with_another_sender_key_is_refused(
    http: httpx.AsyncClient, alice: Client, bob: Client, carol: Client
) -> None:
    spoofed = olm(bob, alice) | {"sender_key": carol.keys.info().device_curve25519}
    message = refused(await http.post("/v1/to_device", json=to_device_body(alice, spoofed), headers=auth(bob)), "sender_mismatch")
    assert "sender_key" in message
    assert (await http_sync(http, alice))["to_device"] == []


async def test_a_to_device_message_must_be_addressed_to_the_recipient_key(
    http: httpx.AsyncClient, alice: Client, bob: Client, carol: Client
) -> None:
    for ciphertext in [
        {carol.keys.info().device_curve25519: {"type": 0, "body": "AwogAAAA"}},
        {
            alice.keys.info().device_curve25519: {"type": 0, "body": "AwogAAAA"},
            carol.keys.info().device_curve25519: {"type": 0, "body": "x"},
        },
        {},
    ]:
        content = olm(bob, alice) | {"ciphertext": ciphertext}
        message = refused(
            await http.post("/v1/to_device", json=to_device_body(alice, content), headers=auth(bob)), "invalid_request"
        )
        assert alice.device_id in message
    assert (await http_sync(http, alice))["to_device"] == []
    ok = await http.post("/v1/to_device", json=to_device_body(alice, olm(bob, alice)), headers=auth(bob))
    assert ok.status_code == 200, ok.text
    assert [m["content"] for m in (await http_sync(http, alice))["to_device"]] == [olm(bob, alice)]
