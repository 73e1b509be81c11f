"""Server checks that docs/protocol.md and docs/threat-model.md promise, each tested so that removing
the check fails a test: the login challenge is spent whatever the outcome, to-device messages are per
device (acknowledging on one device never deletes another's), and a WebSocket lives only as long as its token."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.support import WebSocketSession, add_device, bearer, client_auth, insides, login_token
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.limits import ACCESS_TOKEN_TTL_MS, CHALLENGE_TTL_MS
from tokenim.protocol.api import OkResponse, SendResponse
from tokenim.protocol.auth import login_challenge_payload
from tokenim.protocol.events import ENCRYPTED
from tokenim.protocol.keys import OLM_ALGORITHM
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import login_challenges

# ---- login: the challenge is consumed whatever the outcome ---------------------------------------


async def _challenge(http: httpx.AsyncClient, client: Client) -> str:
    resp = await http.post("/v1/login/challenge", json={"user_id": client.user_id, "device_id": client.device_id})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["nonce"])


def _answer(client: Client, nonce: str) -> dict[str, str]:
    payload = login_challenge_payload(server_name="tokenim.test", user_id=client.user_id, device_id=client.device_id, nonce=nonce)
    return {
        "user_id": client.user_id,
        "device_id": client.device_id,
        "nonce": nonce,
        "signature": insides(client).identity.sign(payload),
    }


def _code(resp: httpx.Response) -> str:
    assert resp.status_code >= 400, resp.text
    return str(resp.json()["error"]["code"])


async def _challenges_stored(database: Database) -> int:
    async with database.read() as tx:
        return int((await tx.execute(select(func.count()).select_from(login_challenges))).scalar_one())


async def test_a_challenge_answered_for_another_user_or_device_is_spent(
    http: httpx.AsyncClient, alice: Client, bob: Client, database: Database
) -> None:
    # Bob answers Alice's nonce (another user), then Alice's user id with Bob's device: each spends it.
    wrong_user = lambda nonce: _answer(bob, nonce)  # noqa: E731
    wrong_device = lambda nonce: _answer(bob, nonce) | {"user_id": alice.user_id}  # noqa: E731
    for attempt in (wrong_user, wrong_device):
        nonce = await _challenge(http, alice)
        assert _code(await http.post("/v1/login", json=attempt(nonce))) == "challenge_invalid"
        assert await _challenges_stored(database) == 0
        # The right answer to that nonce no longer works either.
        assert _code(await http.post("/v1/login", json=_answer(alice, nonce))) == "challenge_invalid"


async def test_an_expired_challenge_is_spent_by_the_late_answer(
    http: httpx.AsyncClient, alice: Client, clock: FakeClock, database: Database
) -> None:
    nonce = await _challenge(http, alice)
    clock.advance(ms=CHALLENGE_TTL_MS)
    assert _code(await http.post("/v1/login", json=_answer(alice, nonce))) == "challenge_expired"
    assert await _challenges_stored(database) == 0
    # Asked again, it is unknown now (spent), not merely expired.
    assert _code(await http.post("/v1/login", json=_answer(alice, nonce))) == "challenge_invalid"


async def test_a_challenge_is_usable_until_just_before_it_expires_and_only_once(
    http: httpx.AsyncClient, alice: Client, clock: FakeClock
) -> None:
    nonce = await _challenge(http, alice)
    clock.advance(ms=CHALLENGE_TTL_MS - 1)
    assert (await http.post("/v1/login", json=_answer(alice, nonce))).status_code == 200
    assert _code(await http.post("/v1/login", json=_answer(alice, nonce))) == "challenge_invalid"


# ---- to-device: per device, kept until that device acknowledges -------------------------------------


def _olm(sender: Client, n: int, to: str) -> dict[str, Any]:
    """Olm-shaped content from `sender`'s device for the device whose Curve25519 key is `to`."""
    return {
        "algorithm": OLM_ALGORITHM,
        "sender_key": sender.keys.info().device_curve25519,
        "ciphertext": {to: {"type": 0, "body": f"b{n}"}},
    }


async def _pending(http: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    resp = await http.get("/v1/sync", params={"to_device_after": 0}, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    return list(resp.json()["to_device"])


async def _ack(http: httpx.AsyncClient, token: str, up_to: int) -> None:
    resp = await http.post("/v1/to_device/ack", json={"up_to": up_to}, headers=bearer(token))
    assert resp.status_code == 200, resp.text


async def test_acknowledging_on_one_device_keeps_the_other_devices_messages(
    http: httpx.AsyncClient, alice: Client, bob: Client, clock: FakeClock
) -> None:
    second = await add_device(alice, clock)
    # Bob has a device with the same id as Alice's first one: device ids are unique per user only.
    twin = await add_device(bob, clock, device_id=alice.device_id)
    tokens = {"first": _token(alice), "second": await login_token(http, second), "twin": await login_token(http, twin)}
    for n in range(2):
        messages = {
            alice.user_id: {
                alice.device_id: _olm(bob, n, alice.keys.info().device_curve25519),
                second.device_id: _olm(bob, 10 + n, second.curve25519),
            }
        }
        resp = await http.post("/v1/to_device", json={"type": ENCRYPTED, "messages": messages}, headers=client_auth(bob))
        assert resp.status_code == 200, resp.text
    first_msgs, second_msgs = await _pending(http, tokens["first"]), await _pending(http, tokens["second"])
    assert [m["content"] for m in first_msgs] == [
        _olm(bob, 0, alice.keys.info().device_curve25519),
        _olm(bob, 1, alice.keys.info().device_curve25519),
    ]
    assert [m["content"] for m in second_msgs] == [_olm(bob, 10, second.curve25519), _olm(bob, 11, second.curve25519)]
    # Bob's device of the same id sees none of them, and acknowledging "everything" touches only its own queue.
    assert await _pending(http, tokens["twin"]) == []
    await _ack(http, tokens["twin"], 2**53 - 1)
    assert await _pending(http, tokens["first"]) == first_msgs
    assert await _pending(http, tokens["second"]) == second_msgs
    # The first device acknowledges everything it holds, and more: the second device's queue is untouched.
    await _ack(http, tokens["first"], max(m["id"] for m in first_msgs + second_msgs))
    assert await _pending(http, tokens["first"]) == []
    assert await _pending(http, tokens["second"]) == second_msgs
    # The second device acknowledges its first message only.
    await _ack(http, tokens["second"], second_msgs[0]["id"])
    assert await _pending(http, tokens["second"]) == second_msgs[1:]


async def test_to_device_messages_reach_only_the_device_they_name(
    http: httpx.AsyncClient, alice: Client, bob: Client, clock: FakeClock
) -> None:
    second = await add_device(alice, clock)
    twin = await add_device(bob, clock, device_id=second.device_id)
    second_token, twin_token = await login_token(http, second), await login_token(http, twin)
    messages = {alice.user_id: {second.device_id: _olm(bob, 7, second.curve25519)}}
    assert (await http.post("/v1/to_device", json={"type": ENCRYPTED, "messages": messages}, headers=client_auth(bob))).is_success
    assert [m["content"] for m in await _pending(http, second_token)] == [_olm(bob, 7, second.curve25519)]
    assert await _pending(http, _token(alice)) == []
    assert await _pending(http, _token(bob)) == []
    assert await _pending(http, twin_token) == []


def _token(client: Client) -> str:
    return client_auth(client)["Authorization"].removeprefix("Bearer ")


# ---- WebSocket: a frame after the token expired is not served ----------------------------------------


async def test_a_frame_after_the_token_expired_is_not_served(app: FastAPI, alice: Client, clock: FakeClock) -> None:
    async with WebSocketSession(app, _token(alice)) as ws:
        await ws.send({"type": "ping"})
        await ws.wait_for(lambda: len(ws.frames) == 1)
        assert ws.frames == [{"type": "pong"}]
        clock.advance(ms=ACCESS_TOKEN_TTL_MS)
        await ws.send({"type": "ping"})
        await ws.wait_for(lambda: ws.close_code is not None or len(ws.frames) > 1)
        assert ws.frames == [{"type": "pong"}]
        assert ws.close_code == 4401
        await ws.ended()


async def test_a_sync_frame_after_the_token_expired_sends_no_backlog(
    app: FastAPI, http: httpx.AsyncClient, alice: Client, bob: Client, clock: FakeClock
) -> None:
    messages = {alice.user_id: {alice.device_id: _olm(bob, 1, alice.keys.info().device_curve25519)}}
    assert (await http.post("/v1/to_device", json={"type": ENCRYPTED, "messages": messages}, headers=client_auth(bob))).is_success
    async with WebSocketSession(app, _token(alice)) as ws:
        await ws.send({"type": "ping"})
        await ws.wait_for(lambda: len(ws.frames) == 1)
        clock.advance(ms=ACCESS_TOKEN_TTL_MS + 1)
        await ws.send({"type": "sync", "since": 0, "to_device_after": 0})
        await ws.wait_for(lambda: ws.close_code is not None or len(ws.frames) > 1)
        assert ws.frames == [{"type": "pong"}]
        assert ws.close_code == 4401
        await ws.ended()


async def test_a_socket_opened_with_an_expired_token_is_refused(app: FastAPI, alice: Client, clock: FakeClock) -> None:
    token = _token(alice)
    clock.advance(ms=ACCESS_TOKEN_TTL_MS)
    async with WebSocketSession(app, token) as ws:
        await ws.wait_for(lambda: ws.close_code is not None)
        await ws.ended()
    assert [f["error"]["code"] for f in ws.frames] == ["token_expired"]
    assert ws.close_code == 4401


async def _live_socket(ws: WebSocketSession) -> None:
    await ws.send({"type": "sync", "since": 0, "to_device_after": 0})
    await ws.wait_for(lambda: any(f["type"] == "synced" for f in ws.frames))


async def test_a_live_event_after_the_token_expired_is_not_pushed(
    app: FastAPI, alice: Client, bob: Client, clock: FakeClock
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    async with WebSocketSession(app, _token(alice)) as ws:
        await _live_socket(ws)
        seen = len(ws.frames)
        clock.advance(ms=ACCESS_TOKEN_TTL_MS)
        # Bob's client refreshes its own expired token and sends; Alice's socket must not carry the event.
        content = {
            "algorithm": "tokenim.megolm.v1.aes-sha2",
            "ciphertext": "AwgAEhA",
            "session_id": "s",
            "sender_key": bob.keys.info().device_curve25519,
            "device_id": bob.device_id,
        }
        await insides(bob).transport.request(
            "PUT", f"/v1/rooms/{room}/send/t1", SendResponse, body={"type": ENCRYPTED, "content": content}
        )
        await ws.wait_for(lambda: ws.close_code is not None or len(ws.frames) > seen)
        assert ws.frames[seen:] == []
        assert ws.close_code == 4401


async def test_a_live_to_device_message_after_the_token_expired_is_not_pushed(
    app: FastAPI, alice: Client, bob: Client, clock: FakeClock
) -> None:
    async with WebSocketSession(app, _token(alice)) as ws:
        await _live_socket(ws)
        seen = len(ws.frames)
        clock.advance(ms=ACCESS_TOKEN_TTL_MS)
        messages = {alice.user_id: {alice.device_id: _olm(bob, 1, alice.keys.info().device_curve25519)}}
        await insides(bob).transport.post("/v1/to_device", {"type": ENCRYPTED, "messages": messages}, OkResponse)
        await ws.wait_for(lambda: ws.close_code is not None or len(ws.frames) > seen)
        assert ws.frames[seen:] == []
        assert ws.close_code == 4401


async def test_a_live_to_device_message_reaches_only_the_socket_of_its_device(
    app: FastAPI, http: httpx.AsyncClient, alice: Client, bob: Client, clock: FakeClock
) -> None:
    second = await add_device(alice, clock)
    async with WebSocketSession(app, _token(alice)) as first_ws, WebSocketSession(app, await login_token(http, second)) as ws:
        await _live_socket(first_ws)
        await _live_socket(ws)
        first_seen = len(first_ws.frames)
        for target, key in ((second.device_id, second.curve25519), (alice.device_id, alice.keys.info().device_curve25519)):
            messages = {alice.user_id: {target: _olm(bob, 1, key)}}
            await insides(bob).transport.post("/v1/to_device", {"type": ENCRYPTED, "messages": messages}, OkResponse)
        await first_ws.wait_for(lambda: len(first_ws.frames) > first_seen)
        await ws.wait_for(lambda: any(f["type"] == "to_device" for f in ws.frames))
        # Each socket got exactly the message for its own device (the first device's came last).
        assert [f["message"]["id"] for f in ws.frames if f["type"] == "to_device"] == [1]
        assert [f["type"] for f in first_ws.frames[first_seen:]] == ["to_device"]
        assert first_ws.frames[first_seen]["message"]["id"] == 2
