"""A direct chat one person left can be taken up again by either (found from outside: the one who stayed got the
same room back with only themself in it, and the one who left could not join)."""

from __future__ import annotations

import httpx
import pytest

from tests.server.served import auth
from tokenim.client import Client


async def _direct(http: httpx.AsyncClient, who: Client, other: Client) -> dict[str, object]:
    resp = await http.post("/v1/rooms/direct", json={"user_id": other.user_id}, headers=auth(who))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def _memberships(http: httpx.AsyncClient, who: Client, room: str) -> dict[str, str]:
    resp = await http.get(f"/v1/rooms/{room}/members", headers=auth(who))
    assert resp.status_code == 200, resp.text
    return {m["user_id"]: m["membership"] for m in resp.json()["members"]}


@pytest.mark.parametrize("leaver", ["alice", "bob"])
async def test_asking_again_for_a_direct_chat_invites_back_whoever_left(
    http: httpx.AsyncClient, alice: Client, bob: Client, leaver: str
) -> None:
    room = str((await _direct(http, alice, bob))["room_id"])
    gone, stayed = (alice, bob) if leaver == "alice" else (bob, alice)
    assert (await http.post(f"/v1/rooms/{room}/leave", headers=auth(gone))).status_code == 200
    again = await _direct(http, stayed, gone)
    assert again["room_id"] == room
    assert (await _memberships(http, stayed, room)) == {stayed.user_id: "join", gone.user_id: "invite"}
    resp = await http.post(f"/v1/rooms/{room}/join", headers=auth(gone))
    assert resp.status_code == 200, resp.text
    assert (await _memberships(http, gone, room)) == {alice.user_id: "join", bob.user_id: "join"}
    # Asked again with both in it, nothing changes.
    assert (await _direct(http, gone, stayed))["room_id"] == room
    assert (await _memberships(http, gone, room)) == {alice.user_id: "join", bob.user_id: "join"}


async def test_the_one_who_left_asking_again_joins_and_invites_nobody_twice(
    http: httpx.AsyncClient, alice: Client, bob: Client
) -> None:
    room = str((await _direct(http, alice, bob))["room_id"])
    for who in (alice, bob):
        assert (await http.post(f"/v1/rooms/{room}/leave", headers=auth(who))).status_code == 200
    assert (await _direct(http, bob, alice))["room_id"] == room
    assert (await _memberships(http, bob, room)) == {alice.user_id: "invite", bob.user_id: "join"}
    assert (await _direct(http, bob, alice))["room_id"] == room  # still invited: not invited again
    assert (await _direct(http, alice, bob))["room_id"] == room
    assert (await _memberships(http, alice, room)) == {alice.user_id: "join", bob.user_id: "join"}
