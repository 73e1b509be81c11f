"""The message path over HTTP: idempotent sends, ciphertext only, sync order and paging,
to-device delivery until acknowledged, history paging, and the batching event writer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tokenim.client import Client
from tokenim.protocol.events import ENCRYPTED
from tokenim.protocol.keys import MEGOLM_ALGORITHM, OLM_ALGORITHM
from tokenim.server.storage.database import Database
from tokenim.server.storage.events import EventStore


def auth(client: Client) -> dict[str, str]:
    token = client.account.access_token()
    return {"Authorization": f"Bearer {token}"}


def ciphertext(client: Client, n: int | str = 0) -> dict[str, Any]:
    """Content shaped like Megolm ciphertext (the server only checks the shape)."""
    return {
        "algorithm": MEGOLM_ALGORITHM,
        "ciphertext": f"AwgAEhA{n}",
        "session_id": "session",
        "sender_key": client.keys.info().device_curve25519,
        "device_id": client.device_id,
    }


async def put(http: httpx.AsyncClient, client: Client, room_id: str, txn_id: str, content: dict[str, Any]) -> httpx.Response:
    return await http.put(
        f"/v1/rooms/{room_id}/send/{txn_id}", json={"type": ENCRYPTED, "content": content}, headers=auth(client)
    )


async def send(http: httpx.AsyncClient, client: Client, room_id: str, txn_id: str, n: int | str = 0) -> dict[str, Any]:
    resp = await put(http, client, room_id, txn_id, ciphertext(client, n))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def sync_page(http: httpx.AsyncClient, client: Client, **params: int) -> dict[str, Any]:
    resp = await http.get("/v1/sync", params=params, headers=auth(client))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def history_page(http: httpx.AsyncClient, client: Client, room_id: str, **params: int) -> dict[str, Any]:
    resp = await http.get(f"/v1/rooms/{room_id}/history", params=params, headers=auth(client))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def count_events(database: Database, room_id: str) -> int:
    async with database.read() as tx:
        return await EventStore().count_for_room(tx, room_id)


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def test_send_is_idempotent(http: httpx.AsyncClient, alice: Client, bob: Client, database: Database) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    before = await count_events(database, room)
    first = await send(http, bob, room, "txn-1", "a")
    again = await send(http, bob, room, "txn-1", "b")  # a retry: the content is not looked at again
    assert again == first
    assert await count_events(database, room) == before + 1
    events = (await history_page(http, alice, room))["events"]
    sent = [e for e in events if e["type"] == ENCRYPTED]
    assert [(e["event_id"], e["pos"], e["seq"]) for e in sent] == [(first["event_id"], first["pos"], first["seq"])]
    assert sent[0]["content"]["ciphertext"] == "AwgAEhAa"

    # Another transaction id is another event; the same id from another device or user is independent.
    other = await send(http, bob, room, "txn-2")
    assert other["event_id"] != first["event_id"]
    assert (other["pos"], other["seq"]) == (first["pos"] + 1, first["seq"] + 1)
    from_alice = await send(http, alice, room, "txn-1")
    assert from_alice["event_id"] != first["event_id"]
    assert await count_events(database, room) == before + 3

    # Reusing a transaction id for another room is refused.
    group = (await bob.rooms.create("elsewhere")).room_id
    resp = await put(http, bob, group, "txn-1", ciphertext(bob))
    assert (resp.status_code, error_code(resp)) == (400, "invalid_request")
    # Malformed transaction ids are refused.
    resp = await put(http, bob, room, "x" * 65, ciphertext(bob))
    assert error_code(resp) == "invalid_request"


async def test_server_stores_ciphertext_only(http: httpx.AsyncClient, alice: Client, bob: Client, database: Database) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    before = await count_events(database, room)
    plain = await http.put(
        f"/v1/rooms/{room}/send/t1", json={"type": "m.room.message", "content": {"body": "hello"}}, headers=auth(bob)
    )
    assert (plain.status_code, error_code(plain)) == (400, "invalid_request")
    # Encrypted type but with a plaintext body alongside, or with another algorithm, or without ciphertext.
    for content in (
        {**ciphertext(bob), "body": "hello"},
        {**ciphertext(bob), "algorithm": "m.plaintext"},
        {k: v for k, v in ciphertext(bob).items() if k != "ciphertext"},
        {**ciphertext(bob), "ciphertext": {"nested": "object"}},
    ):
        resp = await put(http, bob, room, "t2", content)
        assert (resp.status_code, error_code(resp)) == (400, "invalid_request"), content
    too_big = await put(http, bob, room, "t3", {**ciphertext(bob), "ciphertext": "A" * (65 * 1024)})
    assert (too_big.status_code, error_code(too_big)) == (413, "body_too_large")
    assert await count_events(database, room) == before
    # Without a token nothing is accepted.
    anon = await http.put(f"/v1/rooms/{room}/send/t4", json={"type": ENCRYPTED, "content": ciphertext(bob)})
    assert anon.status_code == 401


async def test_sync_order_across_pages(http: httpx.AsyncClient, alice: Client, bob: Client, carol: Client) -> None:
    room = (await alice.rooms.create("busy", ["@bob", "@carol"])).room_id
    await bob.rooms.join(room)
    await carol.rooms.join(room)
    other = (await alice.rooms.direct("@bob")).room_id  # traffic carol must not see
    start = (await sync_page(http, carol))["next_pos"]

    sent: list[str] = []
    for batch in range(15):
        # Two senders at once, ten messages each round.
        results = await asyncio.gather(
            *(send(http, alice if i % 2 else bob, room, f"b{batch}-{i}", i) for i in range(20)),
            send(http, alice, other, f"o{batch}"),
        )
        sent.extend(r["event_id"] for r in sorted(results[:-1], key=lambda r: r["pos"]))
    assert len(sent) == 300

    got: list[dict[str, Any]] = []
    since, pages = start, 0
    while True:
        page = await sync_page(http, carol, since=since, limit=50)
        pages += 1
        assert pages <= 10, "sync paging does not move forwards"  # a failure, not a hang
        assert len(page["events"]) <= 50
        got.extend(page["events"])
        assert page["next_pos"] >= since
        since = page["next_pos"]
        if not page["limited"]:
            break
        assert len(page["events"]) == 50
    assert pages >= 6
    positions = [e["pos"] for e in got]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert [e["event_id"] for e in got] == sent
    assert {e["room_id"] for e in got} == {room}
    assert {e["sender"] for e in got} == {alice.user_id, bob.user_id}
    seqs = [e["seq"] for e in got]
    assert seqs == list(range(seqs[0], seqs[0] + 300))
    # Caught up: nothing more, and the position stays put.
    page = await sync_page(http, carol, since=since, limit=50)
    assert (page["events"], page["limited"], page["next_pos"]) == ([], False, since)


async def test_to_device_until_acknowledged(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    def olm(n: int) -> dict[str, Any]:
        return {
            "algorithm": OLM_ALGORITHM,
            "sender_key": bob.keys.info().device_curve25519,
            "ciphertext": {alice.keys.info().device_curve25519: {"type": 0, "body": f"b{n}"}},
        }

    for n in range(3):
        resp = await http.post(
            "/v1/to_device",
            json={"type": ENCRYPTED, "messages": {alice.user_id: {alice.device_id: olm(n), "NOSUCHDEVICE": olm(n)}}},
            headers=auth(bob),
        )
        assert resp.status_code == 200, resp.text
    first = await sync_page(http, alice)
    msgs = first["to_device"]
    assert [m["content"] for m in msgs] == [olm(0), olm(1), olm(2)]
    assert all((m["sender"], m["sender_device"], m["type"]) == (bob.user_id, bob.device_id, ENCRYPTED) for m in msgs)
    ids = [m["id"] for m in msgs]
    assert ids == sorted(ids)
    # Not acknowledged: delivered again, and `to_device_after` skips what the device already holds.
    assert (await sync_page(http, alice))["to_device"] == msgs
    assert (await sync_page(http, alice, to_device_after=ids[0]))["to_device"] == msgs[1:]
    # Other devices, and other users, never see them.
    assert (await sync_page(http, bob))["to_device"] == []

    resp = await http.post("/v1/to_device/ack", json={"up_to": ids[1]}, headers=auth(alice))
    assert resp.status_code == 200
    assert (await sync_page(http, alice))["to_device"] == msgs[2:]
    resp = await http.post("/v1/to_device/ack", json={"up_to": ids[2]}, headers=auth(alice))
    assert (await sync_page(http, alice))["to_device"] == []

    # Plaintext to-device messages are refused.
    resp = await http.post(
        "/v1/to_device",
        json={"type": "m.room_key", "messages": {alice.user_id: {alice.device_id: {"room_id": "!x", "session_key": "k"}}}},
        headers=auth(bob),
    )
    assert error_code(resp) == "invalid_request"
    assert (await sync_page(http, alice))["to_device"] == []


async def test_history_pages_backwards(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    sent = [(await send(http, alice if i % 3 else bob, room, f"h{i}", i))["event_id"] for i in range(120)]

    collected: list[dict[str, Any]] = []
    before: int | None = None
    pages = 0
    while True:
        params = {"limit": 25} | ({"before": before} if before is not None else {})
        page = await history_page(http, alice, room, **params)
        pages += 1
        assert pages <= 10, "history paging does not move backwards"  # a failure, not a hang
        assert len(page["events"]) <= 25
        collected.extend(page["events"])
        if page["next_before"] is None:
            break
        assert page["next_before"] == page["events"][-1]["seq"]
        before = page["next_before"]
    assert pages >= 5
    seqs = [e["seq"] for e in collected]
    assert seqs == sorted(seqs, reverse=True)
    assert len(set(seqs)) == len(seqs)
    assert seqs[-1] == 1  # all the way back to the room's creation
    messages = [e["event_id"] for e in reversed(collected) if e["type"] == ENCRYPTED]
    assert messages == sent


async def test_history_needs_membership(http: httpx.AsyncClient, alice: Client, bob: Client, carol: Client) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    await send(http, alice, room, "secret")
    resp = await http.get(f"/v1/rooms/{room}/history", headers=auth(carol))
    assert (resp.status_code, error_code(resp)) == (403, "forbidden")
    page = await sync_page(http, carol)
    assert all(e["room_id"] != room for e in page["events"])


async def test_writer_batches_concurrent_sends(
    http: httpx.AsyncClient, app: FastAPI, alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 50
    room = (await alice.rooms.direct("@bob")).room_id
    hub = app.state.services.hub
    published: list[int] = []  # events per committed batch: the writer publishes once per commit
    publish = hub.publish_events

    def counting_publish(items: Any, *args: Any, **kwargs: Any) -> Any:
        items = list(items)
        published.append(len(items))
        return publish(items, *args, **kwargs)

    monkeypatch.setattr(hub, "publish_events", counting_publish)
    results = await asyncio.gather(*(send(http, alice if i % 2 else bob, room, f"c{i}", i) for i in range(n)))
    seqs = sorted(r["seq"] for r in results)
    assert seqs == list(range(seqs[0], seqs[0] + n))
    positions = sorted(r["pos"] for r in results)
    assert positions == list(range(positions[0], positions[0] + n))
    assert len({r["event_id"] for r in results}) == n
    # Fewer commits than sends: the writer took several queued jobs per transaction.
    assert sum(published) == n
    assert len(published) < n
    assert max(published) > 1
    # And every event is stored once, readable in order.
    page = await history_page(http, alice, room, limit=1000)
    stored = [e for e in page["events"] if e["type"] == ENCRYPTED]
    assert sorted(e["event_id"] for e in stored) == sorted(r["event_id"] for r in results)
    assert [e["seq"] for e in stored] == sorted((e["seq"] for e in stored), reverse=True)


async def test_writer_isolates_a_failing_job(http: httpx.AsyncClient, alice: Client, bob: Client, carol: Client) -> None:
    """One send that fails inside a batch (not a member) does not fail the others sent with it."""
    room = (await alice.rooms.direct("@bob")).room_id
    responses = await asyncio.gather(
        *(put(http, alice, room, f"ok{i}", ciphertext(alice, i)) for i in range(10)),
        put(http, carol, room, "bad", ciphertext(carol)),
        *(put(http, bob, room, f"ok{i}", ciphertext(bob, i)) for i in range(10)),
    )
    assert [r.status_code for r in responses] == [200] * 10 + [403] + [200] * 10
    seqs = sorted(r.json()["seq"] for r in responses if r.status_code == 200)
    assert seqs == list(range(seqs[0], seqs[0] + 20))
