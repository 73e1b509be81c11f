"""The crypto machine without a server: room keys over Olm between two devices, Megolm room
messages, and every check on the way in (replay, wrong recipient, wrong sender), plus persistence."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Any

import pytest

from tokenim.core.ids import DeviceId, UserId
from tokenim.core.signing import sign_json
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.machine import CryptoMachine, RejectedMessage, RoomMessage
from tokenim.crypto.megolm import ROTATE_AFTER_MESSAGES, ROTATE_AFTER_MS
from tokenim.crypto.olm import CryptoError
from tokenim.crypto.outgoing import KeysClaim, ToDeviceBatch
from tokenim.crypto.persist import export_changes, load_records
from tokenim.crypto.rotation import revocation_object
from tokenim.crypto.trust import Verdict
from tokenim.protocol.api import KeysClaimResponse
from tokenim.protocol.events import ENCRYPTED, ROOM_KEY
from tokenim.protocol.keys import DeviceKeys, OneTimeKey, parse_device_keys, parse_one_time_keys

NOW = 1_800_000_000_000
ROOM = "!room:tokenim.test"
PICKLE_KEY = os.urandom(32)


@dataclass
class Dev:
    identity: DeviceIdentity
    machine: CryptoMachine
    keys: DeviceKeys

    @property
    def user(self) -> str:
        return str(self.identity.user_id)

    def one_time_keys(self, *, fallback: bool = False) -> list[OneTimeKey]:
        upload = self.identity.keys_to_upload(0, need_fallback=True)
        otks = parse_one_time_keys(upload.fallback_keys if fallback else upload.one_time_keys, fallback=fallback)
        self.identity.mark_keys_as_published()
        return otks

    def trust(self, *others: Dev) -> None:
        for o in others:
            answer = {"master_key": o.identity.master_key_object(), "devices": {o.identity.device_id: o.keys.raw}}
            self.machine.observe(o.user, answer, NOW)


def device(name: str, device_id: str | None = None) -> Dev:
    identity = DeviceIdentity.create(UserId(f"@{name}:tokenim.test"), DeviceId(device_id or f"{name.upper()}DEV1"), NOW)
    return Dev(identity, CryptoMachine(identity), parse_device_keys(identity.device_keys_object(NOW)))


def event(content: dict[str, Any], sender: Dev, event_id: str, room: str = ROOM) -> dict[str, Any]:
    return {"event_id": event_id, "room_id": room, "sender": sender.user, "ts": NOW, "content": content}


def claim_answer(claim: KeysClaim, *recipients: Dev, forge: bool = False) -> KeysClaimResponse:
    """The server's answer to a claim: one one-time key of each device asked for (`forge`: signed by no one)."""
    out: dict[str, dict[str, Any]] = {}
    for d in claim.devices:
        owner = next(r for r in recipients if r.keys == d)
        otk = owner.one_time_keys()[0]
        raw = {**otk.raw, "signatures": {}} if forge else otk.raw
        out.setdefault(d.user_id, {})[d.device_id] = {"key_id": f"signed_curve25519:{otk.key_id}", "key": raw}
    return KeysClaimResponse.model_validate({"one_time_keys": out})


def share_key(sender: Dev, *recipients: Dev, room: str = ROOM, now: int = NOW) -> dict[str, dict[str, dict[str, Any]]]:
    """What the SDK does before sending: ask the machine, answer its claim, carry its batch."""
    outgoing = sender.machine.share_room_key(room, [r.keys for r in recipients], now)
    if outgoing and isinstance(outgoing[0], KeysClaim):
        outgoing = sender.machine.receive_claim(outgoing[0], claim_answer(outgoing[0], *recipients))
    if not outgoing:
        return {}
    batch = outgoing[0]
    assert isinstance(batch, ToDeviceBatch)
    sender.machine.mark_sent(batch)
    return dict(batch.body(1)["messages"])


def deliver(messages: dict[str, dict[str, dict[str, Any]]], sender: Dev, *recipients: Dev) -> None:
    for r in recipients:
        content = messages[r.user][str(r.identity.device_id)]
        assert r.machine.receive_to_device(sender.user, content, sender.keys) == ROOM_KEY


@pytest.fixture
def alice() -> Dev:
    return device("alice")


@pytest.fixture
def bob() -> Dev:
    return device("bob")


@pytest.fixture
def carol() -> Dev:
    return device("carol")


def test_room_key_over_olm_then_megolm_message(alice: Dev, bob: Dev) -> None:
    alice.trust(bob)
    bob.trust(alice)
    deliver(share_key(alice, bob), alice, bob)
    content = alice.machine.encrypt_room_message(ROOM, {"type": "m.text", "body": "hello bob"})
    assert "hello bob" not in repr(content)
    assert content["session_id"] == alice.machine.rooms.outbound[ROOM].session.session_id
    assert (content["device_id"], content["sender_key"]) == (alice.identity.device_id, alice.identity.curve25519)

    got = bob.machine.decrypt_room_event(event(content, alice, "$1"))
    assert isinstance(got, RoomMessage)
    assert got.content == {"type": "m.text", "body": "hello bob"}  # the room id inside is not shown
    assert (got.sender, got.sender_device, got.verified) == (alice.user, alice.identity.device_id, True)
    # Alice reads her own message with the inbound copy she keeps of her session.
    own = alice.machine.decrypt_room_event(event(content, alice, "$1"))
    assert isinstance(own, RoomMessage)
    assert own.verified
    # The key is shared once: a second message needs no new to-device message.
    assert alice.machine.prepare_room_send(ROOM, [bob.keys], NOW) == []


def test_machine_says_what_to_send_next(alice: Dev, bob: Dev, carol: Dev) -> None:
    """Claim one-time keys for devices without a session, then a batch of the room key, then nothing."""
    first = alice.machine.share_room_key(ROOM, [bob.keys, carol.keys], NOW)
    assert len(first) == 1 and isinstance(first[0], KeysClaim)
    assert first[0].body() == {"devices": {bob.user: [bob.identity.device_id], carol.user: [carol.identity.device_id]}}
    batch = alice.machine.receive_claim(first[0], claim_answer(first[0], bob, carol))
    assert len(batch) == 1 and isinstance(batch[0], ToDeviceBatch)
    body = batch[0].body(7)
    assert (body["type"], body["device_seq"]) == (ENCRYPTED, 7)
    assert set(body["messages"]) == {bob.user, carol.user}
    # Not accepted by the server yet: the devices still lack the key, and asking again offers it again.
    assert alice.machine.without_room_key(ROOM, [bob.keys, carol.keys]) == [bob.keys, carol.keys]
    alice.machine.mark_sent(batch[0])
    assert alice.machine.without_room_key(ROOM, [bob.keys, carol.keys]) == []
    assert alice.machine.share_room_key(ROOM, [bob.keys, carol.keys], NOW) == []
    deliver(dict(body["messages"]), alice, bob, carol)


def test_claimed_key_not_signed_by_its_device_is_ignored(alice: Dev, bob: Dev, carol: Dev) -> None:
    """A server that hands out a one-time key of its own making gets no room key encrypted to it."""
    claim = alice.machine.share_room_key(ROOM, [bob.keys], NOW)[0]
    assert isinstance(claim, KeysClaim)
    assert alice.machine.receive_claim(claim, claim_answer(claim, bob, forge=True)) == []
    assert not alice.machine.olm.has_session(bob.keys)
    assert alice.machine.without_room_key(ROOM, [bob.keys]) == [bob.keys]


def test_unverified_sender_device(alice: Dev, bob: Dev) -> None:
    deliver(share_key(alice, bob), alice, bob)  # Bob never observed Alice's keys through a query
    got = bob.machine.decrypt_room_event(event(alice.machine.encrypt_room_message(ROOM, {"body": "x"}), alice, "$1"))
    assert isinstance(got, RoomMessage)
    assert not got.verified


def test_changed_master_key_refuses_devices(alice: Dev, bob: Dev) -> None:
    bob.trust(alice)
    assert bob.machine.is_verified(alice.user, alice.identity.device_id, alice.keys.ed25519)
    other = device("alice", "ALICEDEV2")
    answer = {"master_key": other.identity.master_key_object(), "devices": {"ALICEDEV2": other.keys.raw}}
    decision = bob.machine.observe(alice.user, answer, NOW)
    assert decision.verdict is Verdict.CHANGED_UNSIGNED and decision.devices == {}
    assert bob.machine.pinned_masters[alice.user] == alice.identity.master.public_key
    assert not bob.machine.is_verified(alice.user, alice.identity.device_id, alice.keys.ed25519)


def test_to_device_replay_is_rejected(alice: Dev, bob: Dev) -> None:
    messages = share_key(alice, bob)
    content = messages[bob.user][bob.identity.device_id]
    assert bob.machine.receive_to_device(alice.user, content, alice.keys) == ROOM_KEY
    with pytest.raises(CryptoError) as err:
        bob.machine.receive_to_device(alice.user, content, alice.keys)
    assert err.value.code == "replayed"
    # The session keeps working for the next message after the replay attempt.
    second = alice.machine.olm.encrypt(bob.keys, "m.dummy", {"n": 2})
    assert bob.machine.receive_to_device(alice.user, second, alice.keys) == "m.dummy"
    with pytest.raises(CryptoError) as err:
        bob.machine.receive_to_device(alice.user, second, alice.keys)
    assert err.value.code == "replayed"


def test_to_device_replay_on_fallback_key_is_rejected(alice: Dev, bob: Dev) -> None:
    """Fallback keys are not consumed by vodozemac: the replay must still be caught."""
    fallback = bob.one_time_keys(fallback=True)[0]
    alice.machine.start_session(bob.keys, fallback)
    content = alice.machine.olm.encrypt(bob.keys, "m.dummy", {"n": 1})
    assert bob.machine.receive_to_device(alice.user, content, alice.keys) == "m.dummy"
    with pytest.raises(CryptoError) as err:
        bob.machine.receive_to_device(alice.user, content, alice.keys)
    assert err.value.code == "replayed"
    assert len(bob.machine.olm.by_key[alice.identity.curve25519]) == 1


def test_reused_one_time_key_after_session_loss_is_rejected(alice: Dev, bob: Dev) -> None:
    content = share_key(alice, bob)[bob.user][bob.identity.device_id]
    bob.machine.receive_to_device(alice.user, content, alice.keys)
    bob.machine.olm.by_key.clear()  # the session is gone, the one-time key was consumed
    with pytest.raises(CryptoError) as err:
        bob.machine.receive_to_device(alice.user, content, alice.keys)
    assert err.value.code == "replayed"


def test_olm_payload_for_another_recipient(alice: Dev, bob: Dev, carol: Dev) -> None:
    # Encrypted to Carol's key: Bob can't even find his ciphertext.
    content = share_key(alice, carol)[carol.user][carol.identity.device_id]
    with pytest.raises(CryptoError) as err:
        bob.machine.receive_to_device(alice.user, content, alice.keys)
    assert err.value.code == "not_for_us"

    # Encrypted to Bob's key but naming Carol inside (a relayed or misdirected payload).
    alice.machine.start_session(bob.keys, bob.one_time_keys()[0])
    misdirected = replace(carol.keys, curve25519=bob.keys.curve25519)
    content = alice.machine.olm.encrypt(misdirected, ROOM_KEY, {"anything": 1})
    with pytest.raises(CryptoError) as err:
        bob.machine.receive_to_device(alice.user, content, alice.keys)
    assert err.value.code == "not_for_us"
    # Naming Bob's user but another of his devices.
    other_bob = replace(bob.keys, ed25519=carol.keys.ed25519)
    content = alice.machine.olm.encrypt(other_bob, ROOM_KEY, {"anything": 2})
    with pytest.raises(CryptoError) as err:
        bob.machine.receive_to_device(alice.user, content, alice.keys)
    assert err.value.code == "not_for_us"


def test_wrong_sender_device_keys(alice: Dev, bob: Dev, carol: Dev) -> None:
    content = share_key(alice, bob)[bob.user][bob.identity.device_id]
    # Each bad sender description is refused, and the room key is not stored.
    cases = [
        (alice.user, None, "unknown_device"),  # the sender's keys could not be verified
        (alice.user, carol.keys, "unknown_device"),  # keys of another user
        (alice.user, replace(alice.keys, device_id=DeviceId("ALICEDEV9")), "unknown_device"),
        (carol.user, carol.keys, "sender_mismatch"),  # the server claims Carol sent it
        (alice.user, replace(alice.keys, curve25519=carol.keys.curve25519), "sender_mismatch"),
        (alice.user, replace(alice.keys, ed25519=carol.keys.ed25519), "sender_mismatch"),
    ]
    for sender, keys, code in cases:
        # A fresh copy of Bob's device each time, so the pre-key message is new to it.
        fresh = _restart(bob, {}).machine
        with pytest.raises(CryptoError) as err:
            fresh.receive_to_device(sender, content, keys)
        assert err.value.code == code, (sender, keys)
        assert fresh.rooms.inbound == {}
    assert bob.machine.receive_to_device(alice.user, content, alice.keys) == ROOM_KEY


def test_unknown_algorithm_and_malformed(alice: Dev, bob: Dev) -> None:
    content = share_key(alice, bob)[bob.user][bob.identity.device_id]
    with pytest.raises(CryptoError) as err:
        bob.machine.receive_to_device(alice.user, {**content, "algorithm": "m.plain"}, alice.keys)
    assert err.value.code == "unknown_algorithm"
    ours = content["ciphertext"][bob.identity.curve25519]
    broken = {**content, "ciphertext": {bob.identity.curve25519: {**ours, "body": "!!notbase64!!"}}}
    with pytest.raises(CryptoError) as err:
        bob.machine.receive_to_device(alice.user, broken, alice.keys)
    assert err.value.code == "malformed"


def test_megolm_replay_tamper_room_and_sender(alice: Dev, bob: Dev, carol: Dev) -> None:
    deliver(share_key(alice, bob, carol), alice, bob, carol)
    content = alice.machine.encrypt_room_message(ROOM, {"body": "pay 10"})
    ok = bob.machine.decrypt_room_event(event(content, alice, "$1"))
    assert isinstance(ok, RoomMessage)
    assert isinstance(bob.machine.decrypt_room_event(event(content, alice, "$1")), RoomMessage)

    def rejected(ev: dict[str, Any]) -> str:
        result = bob.machine.decrypt_room_event(ev)
        assert isinstance(result, RejectedMessage)
        return result.code

    assert rejected(event(content, alice, "$2")) == "replayed"
    ct = content["ciphertext"]
    tampered = {**content, "ciphertext": ct[:20] + ("A" if ct[20] != "A" else "B") + ct[21:]}
    assert rejected(event(tampered, alice, "$3")) == "tampered"
    assert rejected(event({**content, "ciphertext": "garbage"}, alice, "$4")) == "tampered"
    assert rejected(event(content, alice, "$1", room="!other:tokenim.test")) == "missing_key"
    assert rejected(event(content, carol, "$1")) == "sender_mismatch"
    assert rejected(event({**content, "device_id": "CAROLDEV1"}, alice, "$1")) == "sender_mismatch"
    assert rejected(event({**content, "session_id": "nonexistent"}, alice, "$5")) == "missing_key"

    # Carol holds the same room key and forwards it as hers: it is filed under her device's key, so it
    # neither replaces Alice's copy nor decrypts Alice's messages as Carol's.
    key = alice.machine.rooms.outbound[ROOM].room_key()
    assert bob.machine.rooms.add_inbound(key, carol.user, "CAROLDEV1", carol.identity.curve25519, carol.keys.ed25519)
    genuine = bob.machine.decrypt_room_event(event(content, alice, "$1"))
    assert isinstance(genuine, RoomMessage) and genuine.sender == alice.user
    assert rejected(event({**content, "sender_key": carol.identity.curve25519}, alice, "$6")) in ("sender_mismatch", "tampered")


def test_room_id_is_bound_inside_the_ciphertext(alice: Dev, bob: Dev) -> None:
    deliver(share_key(alice, bob), alice, bob)
    content = alice.machine.encrypt_room_message(ROOM, {"body": "for this room"})
    sid = content["session_id"]
    other = "!other:tokenim.test"
    sender_key = content["sender_key"]
    bob.machine.rooms.inbound[(other, sid, sender_key)] = bob.machine.rooms.inbound[(ROOM, sid, sender_key)]
    result = bob.machine.decrypt_room_event(event(content, alice, "$1", room=other))
    assert isinstance(result, RejectedMessage)
    assert result.code == "replayed"
    assert isinstance(bob.machine.decrypt_room_event(event(content, alice, "$1")), RoomMessage)


def test_rotation_rules(alice: Dev, bob: Dev, carol: Dev) -> None:
    deliver(share_key(alice, bob, carol), alice, bob, carol)
    rooms = alice.machine.rooms
    first = rooms.outbound[ROOM].session.session_id
    for _ in range(ROTATE_AFTER_MESSAGES):
        assert share_key(alice, bob, carol) == {}
        content = alice.machine.encrypt_room_message(ROOM, {"body": "x"})
        assert content["session_id"] == first
    # The 101st message goes out on a new session, whose key everyone gets again.
    messages = share_key(alice, bob, carol)
    second = rooms.outbound[ROOM].session.session_id
    assert second != first
    assert set(messages) == {bob.user, carol.user}
    deliver(messages, alice, bob, carol)
    # Seven days later: a new session.
    share_key(alice, bob, carol, now=NOW + ROTATE_AFTER_MS - 1)
    assert rooms.outbound[ROOM].session.session_id == second
    deliver(share_key(alice, bob, carol, now=NOW + ROTATE_AFTER_MS), alice, bob, carol)
    third = rooms.outbound[ROOM].session.session_id
    assert third != second
    # Carol leaves: a new session, and she does not get it.
    messages = share_key(alice, bob, now=NOW + ROTATE_AFTER_MS)
    fourth = rooms.outbound[ROOM].session.session_id
    assert fourth != third
    assert set(messages) == {bob.user}
    deliver(messages, alice, bob)
    assert [reason for room, reason in rooms.rotations if room == ROOM] == ["new", "message_count", "age", "membership"]
    content = alice.machine.encrypt_room_message(ROOM, {"body": "carol is gone"})
    assert isinstance(bob.machine.decrypt_room_event(event(content, alice, "$late")), RoomMessage)
    left_out = carol.machine.decrypt_room_event(event(content, alice, "$late"))
    assert isinstance(left_out, RejectedMessage)
    assert left_out.code == "missing_key"
    # A newcomer gets the current session from its current index: nothing older.
    dave = device("dave")
    deliver(share_key(alice, bob, dave, now=NOW + ROTATE_AFTER_MS), alice, dave)
    assert rooms.outbound[ROOM].session.session_id == fourth
    late = dave.machine.decrypt_room_event(event(content, alice, "$late"))
    assert isinstance(late, RejectedMessage)
    newer = alice.machine.encrypt_room_message(ROOM, {"body": "hi dave"})
    assert isinstance(dave.machine.decrypt_room_event(event(newer, alice, "$newer")), RoomMessage)


def test_inbound_keeps_the_copy_reaching_furthest_back(alice: Dev, bob: Dev) -> None:
    share_key(alice, bob)
    early_key = alice.machine.rooms.outbound[ROOM].room_key()
    first = alice.machine.encrypt_room_message(ROOM, {"body": "index 0"})
    late_key = alice.machine.rooms.outbound[ROOM].room_key()
    args = (alice.user, alice.identity.device_id, alice.identity.curve25519, alice.keys.ed25519)
    assert bob.machine.rooms.add_inbound(late_key, *args)
    assert bob.machine.rooms.add_inbound(early_key, *args)  # reaches further back: replaces it
    assert not bob.machine.rooms.add_inbound(late_key, *args)  # does not: ignored
    assert isinstance(bob.machine.decrypt_room_event(event(first, alice, "$0")), RoomMessage)
    assert not bob.machine.rooms.add_inbound({**early_key, "session_id": "wrong"}, *args)
    assert not bob.machine.rooms.add_inbound({**early_key, "session_key": "garbage"}, *args)


def _restart(dev: Dev, records: dict[str, dict[str, bytes | None]]) -> Dev:
    """A new CryptoMachine for the same device, from a re-loaded account pickle and the exported records."""
    account = DeviceIdentity.unpickle_account(dev.identity.pickle_account(PICKLE_KEY), PICKLE_KEY)
    identity = DeviceIdentity(
        dev.identity.user_id, dev.identity.device_id, account, dev.identity.master, dev.identity.master_version, NOW
    )
    machine = CryptoMachine(identity)
    load_records(
        machine, {kind: {k: v for k, v in items.items() if v is not None} for kind, items in records.items()}, PICKLE_KEY
    )
    return Dev(identity, machine, dev.keys)


def test_persist_round_trip(alice: Dev, bob: Dev) -> None:
    alice.trust(bob)
    bob.trust(alice)
    deliver(share_key(alice, bob), alice, bob)
    first = alice.machine.encrypt_room_message(ROOM, {"body": "before restart"})
    assert isinstance(bob.machine.decrypt_room_event(event(first, alice, "$1")), RoomMessage)

    bob_records = export_changes(bob.machine, PICKLE_KEY)
    alice_records = export_changes(alice.machine, PICKLE_KEY)
    assert bob_records["inbound"] and bob_records["olm_session"] and bob_records["seen"]
    pin = json.loads(bob_records["pin"][alice.user] or b"")
    assert pin["master_key"] == alice.identity.master.public_key and pin["version"] == 1
    assert pin["followed"] == [alice.identity.master.public_key]
    assert alice_records["outbound"]
    # Nothing changed since: the next export is empty.
    assert all(not items for items in export_changes(bob.machine, PICKLE_KEY).values())
    # No plaintext key material in the records: only vodozemac pickles encrypted under the pickle key.
    session_key = alice.machine.rooms.outbound[ROOM].session.session_key.to_base64()
    assert all(session_key.encode() not in v for items in bob_records.values() for v in items.values() if v)

    bob2 = _restart(bob, bob_records)
    alice2 = _restart(alice, alice_records)
    assert bob2.machine.pins[alice.user] == bob.machine.pins[alice.user]
    again = bob2.machine.decrypt_room_event(event(first, alice, "$1"))
    assert isinstance(again, RoomMessage)
    assert again.content["body"] == "before restart"
    # Replay protection survived.
    replay = bob2.machine.decrypt_room_event(event(first, alice, "$2"))
    assert isinstance(replay, RejectedMessage)
    assert replay.code == "replayed"
    # Alice's outbound session and Olm session continue after her restart, and Bob's Olm session after his.
    assert share_key(alice2, bob2) == {}
    second = alice2.machine.encrypt_room_message(ROOM, {"body": "after restart"})
    assert second["session_id"] == first["session_id"]
    got = bob2.machine.decrypt_room_event(event(second, alice, "$3"))
    assert isinstance(got, RoomMessage)
    assert got.content["body"] == "after restart"
    assert (
        bob2.machine.receive_to_device(alice.user, alice2.machine.olm.encrypt(bob.keys, "m.dummy", {}), alice.keys) == "m.dummy"
    )
    # A restarted machine with the wrong pickle key can't load anything.
    with pytest.raises(ValueError):
        load_records(
            CryptoMachine(bob.identity), {"inbound": {k: v for k, v in bob_records["inbound"].items() if v}}, os.urandom(32)
        )


def revoking(dev: Dev, revoker: Dev, gone: DeviceKeys) -> dict[str, Any]:
    """`revoker`'s key-query answer, with a revocation naming `gone`'s keys signed by `revoker`'s master key."""
    rev = revocation_object(gone, revoker.identity.master, revoker.identity.master_version, NOW)
    if gone.user_id != revoker.user:  # a forgery: another user's keys under the revoker's own id
        rev = sign_json(
            {**{k: v for k, v in rev.items() if k != "signatures"}, "user_id": revoker.user},
            revoker.user,
            revoker.identity.master.public_key,
            revoker.identity.master,
        )
    keys = {revoker.identity.device_id: revoker.keys.raw}
    return {"master_key": revoker.identity.master_key_object(), "devices": keys, "revocations": [rev]}


def test_a_users_revocation_never_revokes_another_users_device(alice: Dev, bob: Dev) -> None:
    carol = device("carol")
    bob.trust(alice)
    alice.trust(alice)
    for observer in (alice, bob):
        observer.machine.observe(carol.user, revoking(observer, carol, alice.keys), NOW)
        assert observer.machine.revoked_keys.get(alice.user) is None
        assert not observer.machine.is_revoked(alice.user, alice.keys.ed25519)
    assert bob.machine.is_verified(alice.user, alice.identity.device_id, alice.keys.ed25519)


def test_revoked_keys_and_legacy_pins_survive_a_restart(alice: Dev, bob: Dev) -> None:
    bob.trust(alice)
    bob.machine.observe(alice.user, revoking(bob, alice, alice.keys), NOW)
    assert not bob.machine.is_verified(alice.user, alice.identity.device_id, alice.keys.ed25519)
    records = export_changes(bob.machine, PICKLE_KEY)
    assert set(records["revoked"]) == {alice.user}
    # Revoked keys saved in one set for every user can't be told apart: never applied, deleted on the next save.
    records["revoked_key"] = {bob.keys.ed25519: b""}
    # A profile saved before pins had versions holds the bare key: it is read as version 1.
    records["pinned_master"] = {"@old:tokenim.test": b"OLDKEY", bob.user: b"NOT-MINE"}
    again = _restart(bob, records)
    assert again.machine.revoked_keys == {alice.user: {alice.keys.ed25519, alice.keys.curve25519}}
    assert not again.machine.is_revoked(bob.user, bob.keys.ed25519)
    assert export_changes(again.machine, PICKLE_KEY)["revoked_key"] == {bob.keys.ed25519: None}
    assert again.machine.pins["@old:tokenim.test"].version == 1
    assert again.machine.followed_keys("@old:tokenim.test") == ("OLDKEY",)
    assert again.machine.pinned_masters[bob.user] == bob.identity.master.public_key  # one's own key is never read back
