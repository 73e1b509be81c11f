"""Delivery details that each guard a promise: transaction ids are per sender and device (another person's
or another device's identical id is a new send, and a repeat mixed into a batch with new sends returns the
original), a reused device_seq under a new transaction id is a fork, a live to-device push is exactly the
message that sync would return, a to-device request names at most 1000 devices, and a history page holds
at most the limit asked for."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from tests.support import WebSocketSession, add_device, client_auth, insides, login_token
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.protocol.api import OkResponse
from tokenim.protocol.events import ENCRYPTED
from tokenim.protocol.keys import MEGOLM_ALGORITHM, OLM_ALGORITHM


def _megolm(sender_key: str, device_id: str, n: int) -> dict[str, Any]:
    return {
        "algorithm": MEGOLM_ALGORITHM,
        "ciphertext": f"AwgAEhA{n}",
        "session_id": "session",
        "sender_key": sender_key,
        "device_id": device_id,
    }


async def _put(
    http: httpx.AsyncClient, headers: dict[str, str], room: str, txn: str, content: dict[str, Any], seq: int | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"type": ENCRYPTED, "content": content} | ({"device_seq": seq} if seq is not None else {})
    return await http.put(f"/v1/rooms/{room}/send/{txn}", json=body, headers=headers)


async def test_transaction_ids_are_per_sender_and_device(
    http: httpx.AsyncClient, alice: Client, bob: Client, clock: FakeClock
) -> None:
    room = (await alice.rooms.create("Txn", ["@bob"])).room_id
    await bob.rooms.join(room)
    second = await add_device(alice, clock)
    twin = await add_device(bob, clock, device_id=alice.device_id)  # device ids are unique per user only
    senders = [
        (client_auth(alice), _megolm(insides(alice).identity.curve25519, alice.device_id, 1)),
        (client_auth(bob), _megolm(insides(bob).identity.curve25519, bob.device_id, 2)),
        ({"Authorization": f"Bearer {await login_token(http, second)}"}, _megolm(second.curve25519, second.device_id, 3)),
        ({"Authorization": f"Bearer {await login_token(http, twin)}"}, _megolm(twin.curve25519, twin.device_id, 4)),
    ]
    first = [await _put(http, headers, room, "same", content) for headers, content in senders]
    assert [r.status_code for r in first] == [200] * 4, [r.text for r in first]
    assert len({r.json()["event_id"] for r in first}) == 4
    # Each repeat, mixed with new sends in one batch, returns its own original; the new sends are new events.
    repeats = [_put(http, headers, room, "same", content) for headers, content in senders]
    fresh = [_put(http, headers, room, f"new{i}", content) for i, (headers, content) in enumerate(senders)]
    answers = await asyncio.gather(*repeats, *fresh)
    assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
    assert [r.json()["event_id"] for r in answers[:4]] == [r.json()["event_id"] for r in first]
    assert len({r.json()["event_id"] for r in answers[4:]} | {r.json()["event_id"] for r in first}) == 8


async def test_a_reused_device_seq_under_a_new_transaction_id_is_a_fork(http: httpx.AsyncClient, alice: Client) -> None:
    room = (await alice.rooms.create("Forks", [])).room_id
    content = _megolm(insides(alice).identity.curve25519, alice.device_id, 1)
    sent = await _put(http, client_auth(alice), room, "one", content, seq=1)
    assert sent.status_code == 200, sent.text
    retry = await _put(http, client_auth(alice), room, "one", content, seq=1)
    assert retry.json()["event_id"] == sent.json()["event_id"]  # the same send again: its first answer
    forked = await _put(http, client_auth(alice), room, "two", content, seq=1)
    assert (forked.status_code, forked.json()["error"]["code"]) == (409, "profile_forked")


async def test_a_live_to_device_push_is_the_message_sync_returns(
    app: FastAPI, http: httpx.AsyncClient, alice: Client, bob: Client
) -> None:
    token = client_auth(alice)["Authorization"].removeprefix("Bearer ")
    content = {
        "algorithm": OLM_ALGORITHM,
        "sender_key": insides(bob).identity.curve25519,
        "ciphertext": {insides(alice).identity.curve25519: {"type": 0, "body": "b"}},
    }
    async with WebSocketSession(app, token) as ws:
        await ws.send({"type": "sync", "since": 0, "to_device_after": 0})
        await ws.wait_for(lambda: any(f["type"] == "synced" for f in ws.frames))
        await insides(bob).transport.post(
            "/v1/to_device", {"type": ENCRYPTED, "messages": {alice.user_id: {alice.device_id: content}}}, OkResponse
        )
        await ws.wait_for(lambda: any(f["type"] == "to_device" for f in ws.frames))
    pushed = [f["message"] for f in ws.frames if f["type"] == "to_device"]
    synced = (await http.get("/v1/sync", params={"since": 0}, headers=client_auth(alice))).json()["to_device"]
    assert pushed == synced
    assert [(m["sender"], m["sender_device"], m["type"], m["content"]) for m in synced] == [
        (bob.user_id, bob.device_id, ENCRYPTED, content)
    ]


async def test_a_to_device_request_names_at_most_1000_devices(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    content = {
        "algorithm": OLM_ALGORITHM,
        "sender_key": insides(bob).identity.curve25519,
        "ciphertext": {insides(alice).identity.curve25519: {"type": 0, "body": "b"}},
    }

    def body(n: int) -> dict[str, Any]:
        return {"type": ENCRYPTED, "messages": {alice.user_id: {f"DEV{i:05d}": content for i in range(n)}}}

    assert (await http.post("/v1/to_device", json=body(1000), headers=client_auth(bob))).status_code == 200
    resp = await http.post("/v1/to_device", json=body(1001), headers=client_auth(bob))
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, "invalid_request")


async def test_a_reused_device_seq_on_a_to_device_send_is_a_fork(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    content = {
        "algorithm": OLM_ALGORITHM,
        "sender_key": insides(bob).identity.curve25519,
        "ciphertext": {insides(alice).identity.curve25519: {"type": 0, "body": "b"}},
    }
    body = {"type": ENCRYPTED, "messages": {alice.user_id: {alice.device_id: content}}, "device_seq": 5}
    assert (await http.post("/v1/to_device", json=body, headers=client_auth(bob))).status_code == 200
    resp = await http.post("/v1/to_device", json=body, headers=client_auth(bob))
    assert (resp.status_code, resp.json()["error"]["code"]) == (409, "profile_forked")
    synced = (await http.get("/v1/sync", params={"since": 0}, headers=client_auth(alice))).json()["to_device"]
    assert len(synced) == 1


async def test_a_history_page_holds_at_most_the_limit_asked_for(http: httpx.AsyncClient, alice: Client) -> None:
    room = (await alice.rooms.create("Pages", [])).room_id
    for n in range(3):
        assert (
            await _put(http, client_auth(alice), room, f"p{n}", _megolm(insides(alice).identity.curve25519, alice.device_id, n))
        ).is_success
    resp = await http.get(f"/v1/rooms/{room}/history", params={"limit": 1}, headers=client_auth(alice))
    page = resp.json()
    assert len(page["events"]) == 1
    assert page["next_before"] == page["events"][0]["seq"]
    assert page["events"][0]["sender_device"] == alice.device_id


async def test_a_sync_page_is_limited_only_when_more_is_left(http: httpx.AsyncClient, alice: Client) -> None:
    room = (await alice.rooms.create("Sync", [])).room_id

    async def sync(**params: int) -> dict[str, Any]:
        resp = await http.get("/v1/sync", params=params, headers=client_auth(alice))
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    start = (await sync())["next_pos"]
    for n in range(2):
        assert (
            await _put(http, client_auth(alice), room, f"s{n}", _megolm(insides(alice).identity.curve25519, alice.device_id, n))
        ).is_success
    exact = await sync(since=start, limit=2)
    assert (len(exact["events"]), exact["limited"]) == (2, False)
    assert [e["sender_device"] for e in exact["events"]] == [alice.device_id] * 2
    one = await sync(since=start, limit=1)
    assert (len(one["events"]), one["limited"], one["next_pos"]) == (1, True, one["events"][0]["pos"])
    rest = await sync(since=one["next_pos"], limit=1)
    assert [e["event_id"] for e in rest["events"]] == [exact["events"][1]["event_id"]]


async def test_sync_reports_this_devices_own_one_time_key_count(http: httpx.AsyncClient, alice: Client) -> None:
    synced = (await http.get("/v1/sync", headers=client_auth(alice))).json()
    counts = (await http.get("/v1/keys/counts", headers=client_auth(alice))).json()
    assert synced["one_time_keys"] == counts["one_time_keys"] > 0
    assert synced["has_fallback_key"] is counts["has_fallback_key"] is True
