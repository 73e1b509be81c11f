"""A device's send numbers (`device_seq`, see "Forked profiles" in docs/protocol.md) cost the server the
same whatever number a device sends: a jump to the largest allowed number is a plain send, not work or
memory in proportion to the jump, and never a 500 (found from outside: 2^31 took 1.3 s and 290 MB in the
writer every user's sends go through, and 2^53 - 1 ended in MemoryError)."""

from __future__ import annotations

import tracemalloc

import httpx
import pytest
from fastapi import FastAPI

from tests.server.served import auth, websocket_session
from tests.server.test_content import megolm, send_body
from tokenim.client import Client
from tokenim.core.limits import MAX_POSITION
from tokenim.protocol.events import ENCRYPTED


def numbered(body: dict[str, object], seq: int) -> dict[str, object]:
    return {**body, "device_seq": seq}


async def test_a_huge_jump_in_send_numbers_is_cheap_and_remembered(
    http: httpx.AsyncClient, app: FastAPI, alice: Client, bob: Client
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    to_device = {"type": ENCRYPTED, "messages": {}}
    tracemalloc.start()
    try:
        for n, seq in enumerate([1, 2**31, MAX_POSITION - 100, MAX_POSITION - 1]):
            resp = await http.put(f"/v1/rooms/{room}/send/j{n}", json=numbered(send_body(megolm(bob)), seq), headers=auth(bob))
            assert resp.status_code == 200, resp.text
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # a shift by 2^53 bits would need 2^50 bytes
    # The window below the highest number still works after the jump: each number once, then refused.
    resp = await http.post("/v1/to_device", json=numbered(to_device, MAX_POSITION - 2), headers=auth(bob))
    assert resp.status_code == 200, resp.text
    for seq in (MAX_POSITION - 2, MAX_POSITION - 1, MAX_POSITION - 100):
        resp = await http.post("/v1/to_device", json=numbered(to_device, seq), headers=auth(bob))
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "profile_forked", (seq, resp.text)
    resp = await http.post("/v1/to_device", json=numbered(to_device, MAX_POSITION), headers=auth(bob))
    assert resp.status_code == 200, resp.text
    frames = await websocket_session(
        app,
        bob,
        [{"type": "send", "room_id": room, "txn_id": "ws", "content": megolm(bob), "device_seq": MAX_POSITION}],
        until="error",
    )
    assert frames[-1]["error"]["code"] == "profile_forked"


@pytest.mark.parametrize("seq", [0, MAX_POSITION + 1, -1])
async def test_send_numbers_outside_the_range_are_invalid(http: httpx.AsyncClient, alice: Client, seq: int) -> None:
    resp = await http.post("/v1/to_device", json={"type": ENCRYPTED, "messages": {}, "device_seq": seq}, headers=auth(alice))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_request", resp.text


async def test_a_repeated_transaction_id_gets_the_first_answer_whatever_its_send_number(
    http: httpx.AsyncClient, alice: Client, bob: Client
) -> None:
    """As docs/protocol.md says: a retry is recognised by its txn id alone, so a repeat carrying the same, another
    used, a new or no send number is answered with the first result (and a new number is not spent by it)."""
    room = (await alice.rooms.direct("@bob")).room_id
    first = await http.put(f"/v1/rooms/{room}/send/t1", json=numbered(send_body(megolm(bob)), 5), headers=auth(bob))
    assert first.status_code == 200, first.text
    other = await http.put(f"/v1/rooms/{room}/send/t2", json=numbered(send_body(megolm(bob)), 6), headers=auth(bob))
    assert other.status_code == 200, other.text
    for body in (
        numbered(send_body(megolm(bob)), 5),
        numbered(send_body(megolm(bob)), 6),
        numbered(send_body(megolm(bob)), 9),
        send_body(megolm(bob)),
    ):
        resp = await http.put(f"/v1/rooms/{room}/send/t1", json=body, headers=auth(bob))
        assert resp.status_code == 200 and resp.json() == first.json(), resp.text
    resp = await http.put(f"/v1/rooms/{room}/send/t3", json=numbered(send_body(megolm(bob)), 9), headers=auth(bob))
    assert resp.status_code == 200, resp.text
