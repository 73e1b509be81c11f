"""End-to-end encryption through the SDK: key rotation, forward secrecy for people who leave, late
joiners, replay and tampering, trust, and keeping the crypto state across a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import PASSPHRASE, MakeUser
from tests.support import add_device, bearer, insides, login_token
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.signing import SigningKey
from tokenim.crypto.machine import CryptoMachine, RejectedMessage, RoomMessage
from tokenim.crypto.megolm import ROTATE_AFTER_MESSAGES
from tokenim.crypto.trust import Pin
from tokenim.protocol.api import HistoryResponse
from tokenim.protocol.events import ENCRYPTED


async def raw_events(client: Client, room_id: str) -> list[dict[str, Any]]:
    """The room's encrypted events as the server stores them (what a malicious server could hand out), oldest first."""
    page = await insides(client).transport.request("GET", f"/v1/rooms/{room_id}/history?limit=1000", HistoryResponse)
    return [e for e in reversed(page.events) if e["type"] == ENCRYPTED]


async def raw_event(client: Client, room_id: str, event_id: str) -> dict[str, Any]:
    return next(e for e in await raw_events(client, room_id) if e["event_id"] == event_id)


def session_of(client: Client, room_id: str) -> str:
    return str(insides(client).machine.rooms.outbound[room_id].session.session_id)


async def group(alice: Client, *others: Client, name: str = "group") -> str:
    room = await alice.rooms.create(name, [o.user_id for o in others])
    for o in others:
        await o.rooms.join(room.room_id)
    return room.room_id


def assert_never_readable(secret: str, *things: object) -> None:
    for thing in things:
        assert secret not in repr(thing)


# ---- (a) people who leave or are removed read nothing sent afterwards ---------------------------


async def test_removed_member_cannot_read_later_messages(alice: Client, bob: Client, carol: Client) -> None:
    room = await group(alice, bob, carol)
    await alice.messages.send_text(room, "hello all")
    await carol.messages.send_text(room, "hi from carol")
    assert [m.body for m in await bob.messages.sync()] == ["hello all", "hi from carol"]
    assert [m.body for m in await carol.messages.sync()] == ["hello all", "hi from carol"]
    before = session_of(alice, room)

    await alice.rooms.remove(room, "@carol")
    sent = await alice.messages.send_text(room, "secret after removal")

    after = session_of(alice, room)
    assert after != before
    assert (room, "membership") in insides(alice).machine.rooms.rotations
    stored = await raw_event(alice, room, sent.event_id)
    assert stored["content"]["session_id"] == after
    assert (carol.user_id, carol.device_id) not in insides(alice).machine.rooms.outbound[room].shared_with

    # Carol: the server no longer gives her the room's events...
    got = await carol.messages.sync()
    assert sent.event_id not in [m.id for m in got]
    history = await carol.messages.history(room)
    assert [m.body for m in history] == ["hello all", "hi from carol"]
    # ...and even a server that hands her the ciphertext gives her nothing readable: she never got the new key.
    assert all(sid != after for _room, sid, _key in insides(carol).machine.rooms.inbound)
    forced = carol.messages.decrypt_event(stored)
    assert forced.body is None
    assert forced.warning is not None
    assert isinstance(insides(carol).machine.decrypt_room_event(stored), RejectedMessage)
    assert_never_readable("secret after removal", got, history, forced)

    # Bob, still in the room, reads it.
    assert [m.body for m in await bob.messages.sync()] == ["secret after removal"]


async def test_member_who_leaves_cannot_read_later_messages(alice: Client, bob: Client, carol: Client) -> None:
    room = await group(alice, bob, carol)
    await alice.messages.send_text(room, "before")
    await bob.messages.send_text(room, "before too")
    await carol.messages.sync()
    alice_before, bob_before = session_of(alice, room), session_of(bob, room)

    await carol.rooms.leave(room)
    # The others see her leave (a live client sees it at once) and rotate on their next message.
    await alice.messages.sync()
    await bob.messages.sync()
    a = await alice.messages.send_text(room, "alice secret after leave")
    b = await bob.messages.send_text(room, "bob secret after leave")
    assert session_of(alice, room) != alice_before
    assert session_of(bob, room) != bob_before
    assert (room, "membership") in insides(alice).machine.rooms.rotations
    assert (room, "membership") in insides(bob).machine.rooms.rotations

    got = await carol.messages.sync()
    assert got == []
    forced = [carol.messages.decrypt_event(await raw_event(alice, room, e.event_id)) for e in (a, b)]
    assert [m.body for m in forced] == [None, None]
    assert all(m.warning for m in forced)
    assert_never_readable("after leave", got, forced, await carol.messages.history(room))
    assert [m.body for m in await alice.messages.sync()] == ["alice secret after leave", "bob secret after leave"]


# ---- (b) rotation by message count and by age -------------------------------------------------


async def test_rotation_after_100_messages(alice: Client, bob: Client) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    sessions = []
    for i in range(ROTATE_AFTER_MESSAGES + 1):
        await alice.messages.send_text(room, f"m{i}")
        sessions.append(session_of(alice, room))
    assert len(set(sessions[:ROTATE_AFTER_MESSAGES])) == 1
    assert sessions[ROTATE_AFTER_MESSAGES] != sessions[0]
    assert [r for r in insides(alice).machine.rooms.rotations if r[0] == room] == [(room, "new"), (room, "message_count")]
    events = await raw_events(alice, room)
    assert [e["content"]["session_id"] for e in events] == sessions
    got = await bob.messages.sync()
    assert [m.body for m in got] == [f"m{i}" for i in range(ROTATE_AFTER_MESSAGES + 1)]
    assert all(m.verified for m in got)


async def test_rotation_after_seven_days(alice: Client, bob: Client, clock: FakeClock) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "monday")
    first = session_of(alice, room)
    clock.advance(days=6, seconds=86_000)
    await alice.messages.send_text(room, "six days later")
    assert session_of(alice, room) == first
    clock.advance(seconds=400)
    await alice.messages.send_text(room, "a week later")
    assert session_of(alice, room) != first
    assert (room, "age") in insides(alice).machine.rooms.rotations
    got = await bob.messages.sync()
    assert [m.body for m in got] == ["monday", "six days later", "a week later"]
    events = await raw_events(bob, room)
    assert [e["content"]["session_id"] == first for e in events] == [True, True, False]


# ---- (c) a removed device no longer gets keys ---------------------------------------------------


async def test_removed_device_triggers_rotation(alice: Client, bob: Client, clock: FakeClock, http: httpx.AsyncClient) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "to one device")
    first = session_of(alice, room)

    second = await add_device(bob, clock, "BOBSECOND1")
    assert {d.device_id for d in (await bob.devices.all()).devices} == {bob.device_id, "BOBSECOND1"}
    await alice.messages.sync()  # sees the device-list event
    sent = await alice.messages.send_text(room, "to both devices")
    assert session_of(alice, room) == first  # a new device gets the current key: no rotation needed
    assert (bob.user_id, "BOBSECOND1") in insides(alice).machine.rooms.outbound[room].shared_with

    # The second device, on its own, receives the key over Olm and reads the message from then on.
    token = await login_token(http, second)
    machine = CryptoMachine(second)
    page = (await http.get("/v1/sync", headers={"Authorization": f"Bearer {token}"})).json()
    alice_keys = (await bob.keys.query([alice.user_id]))[alice.user_id]
    answer = (await http.post("/v1/keys/query", json={"user_ids": [alice.user_id]}, headers=bearer(token))).json()
    machine.observe(alice.user_id, answer["users"][alice.user_id], clock.now_ms())
    for msg in page["to_device"]:
        machine.receive_to_device(msg["sender"], msg["content"], alice_keys.devices[msg["sender_device"]])
    read = machine.decrypt_room_event(await raw_event(alice, room, sent.event_id))
    assert isinstance(read, RoomMessage)
    assert read.content["body"] == "to both devices"
    assert read.verified

    await bob.devices.remove("BOBSECOND1")
    assert (await http.get("/v1/sync", headers={"Authorization": f"Bearer {token}"})).status_code == 401
    await alice.messages.sync()  # sees the device-list event
    later = await alice.messages.send_text(room, "after the device was removed")
    assert session_of(alice, room) != first
    assert (room, "membership") in insides(alice).machine.rooms.rotations
    assert (bob.user_id, "BOBSECOND1") not in insides(alice).machine.rooms.outbound[room].shared_with

    # The removed device, even handed the ciphertext, can't read it; Bob's remaining device can.
    forced = machine.decrypt_room_event(await raw_event(alice, room, later.event_id))
    assert isinstance(forced, RejectedMessage)
    assert forced.code == "missing_key"
    assert [m.body for m in await bob.messages.sync()] == ["to one device", "to both devices", "after the device was removed"]


# ---- (d) a late joiner reads from the moment he joined ------------------------------------------


async def test_late_joiner_reads_from_join_on(alice: Client, bob: Client, make_user: MakeUser) -> None:
    room = await group(alice, bob)
    early = [await alice.messages.send_text(room, f"early {i}") for i in range(3)]
    await bob.messages.send_text(room, "early from bob")
    dave = await make_user("dave")
    await alice.rooms.invite(room, "@dave")
    # Invited is not joined: still nothing to read.
    assert await dave.messages.sync() == []
    await dave.rooms.join(room)
    await alice.messages.sync()
    await bob.messages.sync()
    await alice.messages.send_text(room, "welcome dave")
    await bob.messages.send_text(room, "hi dave")

    got = await dave.messages.sync()
    assert [(m.sender, m.body, m.verified) for m in got] == [
        (alice.user_id, "welcome dave", True),
        (bob.user_id, "hi dave", True),
    ]
    assert [m.body for m in await dave.messages.history(room)] == ["welcome dave", "hi dave"]
    # The server does not show him what came before he joined.
    page = await insides(dave).transport.request("GET", f"/v1/rooms/{room}/history?limit=1000", HistoryResponse)
    visible = {e["event_id"] for e in page.events}
    assert not visible & {e.event_id for e in early}
    # And even handed the earlier ciphertext, his key starts where he joined: nothing readable.
    for e in early:
        forced = dave.messages.decrypt_event(await raw_event(alice, room, e.event_id))
        assert forced.body is None
        assert forced.warning
    assert [m.body for m in await bob.messages.sync()] == ["welcome dave", "hi dave"]


# ---- (e) replays, tampering, wrong room, wrong sender ------------------------------------------


async def test_replay_tamper_wrong_room_wrong_sender(alice: Client, bob: Client, carol: Client) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    sent = await alice.messages.send_text(room, "pay carol 10 euros")
    assert [m.body for m in await bob.messages.sync()] == ["pay carol 10 euros"]
    event = await raw_event(bob, room, sent.event_id)

    # The same event again (a re-sync) is fine: same event id.
    again = insides(bob).machine.decrypt_room_event(event)
    assert isinstance(again, RoomMessage)
    assert again.content["body"] == "pay carol 10 euros"

    # The server re-inserts it as another event: a replay.
    replay = insides(bob).machine.decrypt_room_event({**event, "event_id": "$replayed", "pos": 999})
    assert isinstance(replay, RejectedMessage)
    assert replay.code == "replayed"
    shown = bob.messages.decrypt_event({**event, "event_id": "$replayed2"})
    assert shown.body is None
    assert shown.warning
    assert not shown.verified

    # Tampered ciphertext.
    ct = event["content"]["ciphertext"]
    i = len(ct) // 2
    flipped = ct[:i] + ("A" if ct[i] != "A" else "B") + ct[i + 1 :]
    tampered = {**event, "event_id": "$tampered", "content": {**event["content"], "ciphertext": flipped}}
    rejected = insides(bob).machine.decrypt_room_event(tampered)
    assert isinstance(rejected, RejectedMessage)
    assert rejected.code == "tampered"
    assert bob.messages.decrypt_event(tampered).body is None

    # Moved into another room Bob is in: he has no key for that session there.
    other = (await bob.rooms.direct("@carol")).room_id
    moved = {**event, "room_id": other}
    rejected = insides(bob).machine.decrypt_room_event(moved)
    assert isinstance(rejected, RejectedMessage)
    assert rejected.code == "missing_key"
    # Even if the key were filed under the other room, the room id inside the ciphertext gives it away.
    sid = event["content"]["session_id"]
    key = event["content"]["sender_key"]
    insides(bob).machine.rooms.inbound[(other, sid, key)] = insides(bob).machine.rooms.inbound[(room, sid, key)]
    rejected = insides(bob).machine.decrypt_room_event(moved)
    assert isinstance(rejected, RejectedMessage)
    assert rejected.code == "replayed"
    del insides(bob).machine.rooms.inbound[(other, sid, key)]

    # The same content, claimed to be from Carol (or from another of Alice's devices).
    for forged in (
        {**event, "sender": carol.user_id},
        {**event, "content": {**event["content"], "device_id": "OTHERDEVICE"}},
        {**event, "content": {**event["content"], "sender_key": bob.keys.info().device_curve25519}},
    ):
        rejected = insides(bob).machine.decrypt_room_event(forged)
        assert isinstance(rejected, RejectedMessage)
        # A forged sender key finds no session filed under it; the other forgeries fail the sender check.
        assert rejected.code in ("sender_mismatch", "missing_key")
        message = bob.messages.decrypt_event(forged)
        assert (message.body, message.verified) == (None, False)

    # None of this stopped the genuine message from reading.
    assert [m.body for m in await bob.messages.history(room)] == ["pay carol 10 euros"]


async def test_forged_copy_first_does_not_block_the_genuine_event(alice: Client, bob: Client, carol: Client) -> None:
    """A copy with a forged sender, seen before the real event, must not burn the message's replay slot."""
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "warm up")
    await bob.messages.sync()
    sent = await alice.messages.send_text(room, "the real one")
    event = await raw_event(alice, room, sent.event_id)
    forged = insides(bob).machine.decrypt_room_event({**event, "event_id": "$forged", "sender": carol.user_id})
    assert isinstance(forged, RejectedMessage)
    assert forged.code == "sender_mismatch"
    assert [m.body for m in await bob.messages.sync()] == ["the real one"]


# ---- (f) verification and pinned master keys -----------------------------------------------------


async def test_messages_are_verified(alice: Client, bob: Client, carol: Client) -> None:
    room = await group(alice, bob, carol)
    await alice.messages.send_text(room, "from alice")
    await bob.messages.send_text(room, "from bob")
    got = await carol.messages.sync()
    assert [(m.sender, m.sender_device, m.body, m.verified) for m in got] == [
        (alice.user_id, alice.device_id, "from alice", True),
        (bob.user_id, bob.device_id, "from bob", True),
    ]
    # One's own messages are verified too.
    assert all(m.verified for m in await alice.messages.sync())


async def test_changed_master_key_is_not_verified(alice: Client, bob: Client) -> None:
    direct = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(direct, "before the change")
    got = await bob.messages.sync()
    assert [(m.body, m.verified) for m in got] == [("before the change", True)]

    # Alice's master key is now another one than Bob pinned (as if the server swapped it).
    insides(bob).machine.pins[alice.user_id] = Pin(alice.user_id, SigningKey.generate().public_key, 1, 0)

    room = (await alice.rooms.create("new room", ["@bob"])).room_id
    await bob.rooms.join(room)
    await alice.messages.sync()
    sent = await alice.messages.send_text(room, "after the change")
    got = await bob.messages.sync()
    new = [m for m in got if m.id == sent.event_id]
    assert len(new) == 1
    assert not new[0].verified
    assert new[0].body is None  # the key came from a device Bob no longer trusts: refused
    assert new[0].warning

    # Having noticed the change, Bob no longer shows Alice's device as verified anywhere.
    await alice.messages.send_text(direct, "old room after the change")
    got = await bob.messages.sync()
    assert [(m.body, m.verified) for m in got] == [("old room after the change", False)]


# ---- (g) the crypto state survives a restart ------------------------------------------------------


async def test_encryption_state_survives_restart(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.ASGITransport, tmp_path: Path
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    first = await alice.messages.send_text(room, "before restart")
    await bob.messages.send_text(room, "bob before restart")
    assert [m.body for m in await bob.messages.sync()] == ["before restart", "bob before restart"]
    bob_session = session_of(bob, room)
    event = await raw_event(bob, room, first.event_id)
    await bob.close()

    reopened = await Client.open(tmp_path / "profile-bob", PASSPHRASE, clock=clock, transport=transport)
    try:
        assert reopened.device_id == bob.device_id
        history = await reopened.messages.history(room)
        assert [(m.body, m.verified) for m in history] == [("before restart", True), ("bob before restart", True)]
        # Nothing new, nothing repeated: the sync position was kept.
        assert await reopened.messages.sync() == []
        # Replay detection was kept too.
        replay = insides(reopened).machine.decrypt_room_event({**event, "event_id": "$replay"})
        assert isinstance(replay, RejectedMessage)
        assert replay.code == "replayed"
        # The Olm and Megolm sessions still work both ways.
        await alice.messages.send_text(room, "after restart")
        assert [m.body for m in await reopened.messages.sync()] == ["after restart"]
        await reopened.messages.send_text(room, "bob after restart")
        assert session_of(reopened, room) == bob_session  # the outbound session continued
        assert [m.body for m in await alice.messages.sync()] == [
            "before restart",
            "bob before restart",
            "after restart",
            "bob after restart",
        ]
    finally:
        await reopened.close()


async def test_profile_holds_no_plaintext(alice: Client, bob: Client, tmp_path: Path) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "very confidential words")
    await bob.messages.sync()
    for name in ("profile-alice", "profile-bob"):
        for path in (tmp_path / name).iterdir():
            data = path.read_bytes()
            assert b"very confidential words" not in data
