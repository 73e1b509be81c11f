"""A group room is never left without an admin while it has members (found from outside: the only admin
could leave or remove themself, and then nobody could rename the room or remove anyone), and nobody is
removed from a direct chat (either person could remove the other; it is for leaving)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.server.served import auth
from tokenim.client import Client


async def _call(http: httpx.AsyncClient, who: Client, method: str, path: str, body: Any = None) -> httpx.Response:
    return await http.request(method, path, json=body, headers=auth(who))


async def _roles(http: httpx.AsyncClient, who: Client, room: str) -> dict[str, tuple[str, str]]:
    resp = await _call(http, who, "GET", f"/v1/rooms/{room}/members")
    assert resp.status_code == 200, resp.text
    return {m["user_id"]: (m["membership"], m["role"]) for m in resp.json()["members"]}


async def _group(http: httpx.AsyncClient, alice: Client, *others: Client) -> str:
    resp = await _call(http, alice, "POST", "/v1/rooms", {"name": "plans", "invite": [o.user_id for o in others]})
    assert resp.status_code == 200, resp.text
    room = str(resp.json()["room_id"])
    for other in others:
        assert (await _call(http, other, "POST", f"/v1/rooms/{room}/join")).status_code == 200
    return room


async def test_when_the_only_admin_leaves_the_longest_member_becomes_admin(
    http: httpx.AsyncClient, alice: Client, bob: Client, carol: Client
) -> None:
    room = await _group(http, alice, bob, carol)
    assert (await _call(http, alice, "POST", f"/v1/rooms/{room}/leave")).status_code == 200
    roles = await _roles(http, bob, room)
    assert roles[bob.user_id] == ("join", "admin")  # joined before carol
    assert roles[carol.user_id] == ("join", "member")
    resp = await _call(http, bob, "POST", f"/v1/rooms/{room}/name", {"name": "plans 2"})
    assert resp.status_code == 200, resp.text
    resp = await _call(http, bob, "POST", f"/v1/rooms/{room}/remove", {"user_id": carol.user_id})
    assert resp.status_code == 200, resp.text


async def test_an_admin_removing_themself_hands_the_room_on(
    http: httpx.AsyncClient, alice: Client, bob: Client, carol: Client
) -> None:
    room = await _group(http, alice, bob)
    assert (await _call(http, alice, "POST", f"/v1/rooms/{room}/remove", {"user_id": alice.user_id})).status_code == 200
    assert (await _roles(http, bob, room))[bob.user_id] == ("join", "admin")
    # With another admin still there, nobody is promoted.
    resp = await _call(http, bob, "POST", f"/v1/rooms/{room}/invite", {"user_id": carol.user_id})
    assert resp.status_code == 200, resp.text
    assert (await _call(http, carol, "POST", f"/v1/rooms/{room}/join")).status_code == 200
    assert (await _call(http, bob, "POST", f"/v1/rooms/{room}/leave")).status_code == 200
    assert (await _roles(http, carol, room))[carol.user_id] == ("join", "admin")


async def test_nobody_is_removed_from_a_direct_chat(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    resp = await _call(http, alice, "POST", "/v1/rooms/direct", {"user_id": bob.user_id})
    room = resp.json()["room_id"]
    resp = await _call(http, alice, "POST", f"/v1/rooms/{room}/remove", {"user_id": bob.user_id})
    assert resp.status_code == 400 and "leave it instead" in resp.json()["error"]["message"], resp.text
    assert (await _roles(http, alice, room))[bob.user_id] == ("join", "admin")


async def test_an_invitee_joining_a_room_with_no_admin_left_becomes_admin(
    http: httpx.AsyncClient, alice: Client, bob: Client, carol: Client
) -> None:
    """The admin leaves while the others are only invited (found from outside: they then joined as members, and
    nobody could rename the room or remove anyone). The first to join becomes admin; the next is a member."""
    resp = await _call(http, alice, "POST", "/v1/rooms", {"name": "plans", "invite": [bob.user_id, carol.user_id]})
    room = resp.json()["room_id"]
    assert (await _call(http, alice, "POST", f"/v1/rooms/{room}/leave")).status_code == 200
    assert (await _call(http, bob, "POST", f"/v1/rooms/{room}/join")).status_code == 200
    assert (await _call(http, carol, "POST", f"/v1/rooms/{room}/join")).status_code == 200
    roles = await _roles(http, bob, room)
    assert roles[bob.user_id] == ("join", "admin")
    assert roles[carol.user_id] == ("join", "member")
    assert (await _call(http, bob, "POST", f"/v1/rooms/{room}/name", {"name": "plans 2"})).status_code == 200
    assert (await _call(http, bob, "POST", f"/v1/rooms/{room}/remove", {"user_id": carol.user_id})).status_code == 200


async def test_an_invitee_joining_after_everyone_left_becomes_admin(
    http: httpx.AsyncClient, alice: Client, bob: Client, carol: Client
) -> None:
    """Everyone joined leaves (the hand-on at leave finds nobody), and an invitee joins later."""
    room = await _group(http, alice, bob)
    resp = await _call(http, bob, "POST", f"/v1/rooms/{room}/invite", {"user_id": carol.user_id})
    assert resp.status_code == 200, resp.text
    assert (await _call(http, alice, "POST", f"/v1/rooms/{room}/leave")).status_code == 200
    assert (await _roles(http, bob, room))[bob.user_id] == ("join", "admin")  # handed on at leave
    assert (await _call(http, bob, "POST", f"/v1/rooms/{room}/leave")).status_code == 200
    assert (await _call(http, carol, "POST", f"/v1/rooms/{room}/join")).status_code == 200
    assert (await _roles(http, carol, room))[carol.user_id] == ("join", "admin")
    resp = await _call(http, carol, "POST", f"/v1/rooms/{room}/invite", {"user_id": alice.user_id})
    assert resp.status_code == 200, resp.text
    assert (await _call(http, alice, "POST", f"/v1/rooms/{room}/join")).status_code == 200
    assert (await _roles(http, carol, room))[alice.user_id] == ("join", "member")  # an admin is there now
    assert (await _call(http, carol, "POST", f"/v1/rooms/{room}/name", {"name": "plans 2"})).status_code == 200
