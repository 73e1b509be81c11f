"""Membership on the server: a user sees a room's events only from the periods they were in it (an
invitation shows just the invitation), through history and sync alike; sending follows membership at once."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support import client_auth, insides
from tokenim.client import Client
from tokenim.protocol.events import ENCRYPTED
from tokenim.protocol.keys import MEGOLM_ALGORITHM


def _ciphertext(client: Client, n: int) -> dict[str, Any]:
    return {
        "algorithm": MEGOLM_ALGORITHM,
        "ciphertext": f"AwgAEhA{n}",
        "session_id": "session",
        "sender_key": insides(client).identity.curve25519,
        "device_id": client.device_id,
    }


async def _send(http: httpx.AsyncClient, client: Client, room_id: str, n: int) -> httpx.Response:
    body = {"type": ENCRYPTED, "content": _ciphertext(client, n)}
    return await http.put(f"/v1/rooms/{room_id}/send/t{n}", json=body, headers=client_auth(client))


async def _sent(http: httpx.AsyncClient, client: Client, room_id: str, n: int) -> str:
    resp = await _send(http, client, room_id, n)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["event_id"])


async def _history(http: httpx.AsyncClient, client: Client, room_id: str) -> list[dict[str, Any]]:
    resp = await http.get(f"/v1/rooms/{room_id}/history", params={"limit": 100}, headers=client_auth(client))
    assert resp.status_code == 200, resp.text
    return list(reversed(resp.json()["events"]))


async def _synced(http: httpx.AsyncClient, client: Client, room_id: str) -> list[dict[str, Any]]:
    resp = await http.get("/v1/sync", params={"since": 0, "limit": 1000}, headers=client_auth(client))
    assert resp.status_code == 200, resp.text
    return [e for e in resp.json()["events"] if e["room_id"] == room_id]


def _summary(events: list[dict[str, Any]], bob: Client) -> list[str]:
    """Each event as `message <event id>` or `<membership>` (Bob's own membership events)."""
    out = []
    for e in events:
        if e["type"] == ENCRYPTED:
            out.append(f"message {e['event_id']}")
        elif e["type"] == "m.room.member" and e["content"]["user_id"] == bob.user_id:
            out.append(e["content"]["membership"])
        else:
            out.append(e["type"])
    return out


async def test_a_user_sees_only_the_periods_they_were_in_the_room(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    room = (await alice.rooms.create("Periods", [])).room_id
    before = await _sent(http, alice, room, 0)
    await alice.rooms.invite(room, "@bob")
    invited_while = await _sent(http, alice, room, 1)
    # Invited, not joined: the history shows the invitation and nothing else.
    assert _summary(await _history(http, bob, room), bob) == ["invite"]
    assert _summary(await _synced(http, bob, room), bob) == ["invite"]

    await bob.rooms.join(room)
    inside = await _sent(http, alice, room, 2)
    await bob.rooms.leave(room)
    while_away = await _sent(http, alice, room, 3)
    await alice.rooms.invite(room, "@bob")
    await bob.rooms.join(room)
    back = await _sent(http, alice, room, 4)

    expected = ["invite", "join", f"message {inside}", "leave", "invite", "join", f"message {back}"]
    assert _summary(await _history(http, bob, room), bob) == expected
    assert _summary(await _synced(http, bob, room), bob) == expected
    seen = {e["event_id"] for e in await _history(http, bob, room)}
    assert not seen & {before, invited_while, while_away}
    # Alice, in the room throughout, sees all five messages.
    assert sum(e["type"] == ENCRYPTED for e in await _history(http, alice, room)) == 5


async def test_sending_follows_removal_and_return_at_once(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    room = (await alice.rooms.create("Cached", ["@bob"])).room_id
    await bob.rooms.join(room)
    await _sent(http, bob, room, 0)  # the room's members are now cached for the send path
    await alice.rooms.remove(room, "@bob")
    refused = await _send(http, bob, room, 1)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    await alice.rooms.invite(room, "@bob")
    invited = await _send(http, bob, room, 2)
    assert invited.status_code == 403, invited.text
    await bob.rooms.join(room)
    await _sent(http, bob, room, 3)
