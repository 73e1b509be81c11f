"""A contact's master key changes (here: the server swaps it): nobody is left out silently, the real
contact is never stuck out after the swap ends, and a new key is accepted only deliberately."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from tests.conftest import MakeUser
from tests.support import insides
from tokenim.client import Client
from tokenim.client.contacts import ExcludedDevice
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import DeviceId, UserId
from tokenim.core.signing import SigningKey, fingerprint
from tokenim.crypto.device import DeviceIdentity
from tokenim.server.storage.accounts import AccountStore, DeviceRow
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import devices, master_keys

FAKE_VERSION = 99


async def swap_master(database: Database, user_id: str, now: int) -> SigningKey:
    """What a malicious server can do: present a master key of its own, with a device signed by it."""
    fake = DeviceIdentity.create(UserId(user_id), DeviceId("FAKEDEVICE1"), now)
    obj = fake.master_key_object()
    async with database.write() as tx:
        store = AccountStore()
        await store.insert_master_key(tx, user_id, FAKE_VERSION, fake.master.public_key, obj, now)
        keys = fake.device_keys_object(now)
        row = DeviceRow(user_id, fake.device_id, fake.ed25519, fake.curve25519, FAKE_VERSION, keys, now, None)
        await store.insert_device(tx, row)
    return fake.master


async def end_swap(database: Database, user_id: str) -> None:
    async with database.write() as tx:
        await tx.execute(delete(master_keys).where(master_keys.c.user_id == user_id, master_keys.c.version == FAKE_VERSION))
        await tx.execute(delete(devices).where(devices.c.user_id == user_id, devices.c.device_id == "FAKEDEVICE1"))


async def test_a_send_that_leaves_out_a_changed_key_says_who_and_why(
    alice: Client, bob: Client, carol: Client, database: Database, clock: FakeClock
) -> None:
    room = (await alice.rooms.create("team", ["@bob", "@carol"])).room_id
    await bob.rooms.join(room)
    await carol.rooms.join(room)
    first = await alice.messages.send_text(room, "before")
    assert first.excluded == []
    real = bob.keys.info().master_key

    fake = await swap_master(database, bob.user_id, clock.now_ms())
    clock.advance(seconds=600)  # the member-device cache has expired: the next send asks the server again
    sent = await alice.messages.send_text(room, "during the swap")
    assert [(e.user_id, e.device_id, e.reason) for e in sent.excluded] == [(bob.user_id, None, "master_key_changed")]
    message = sent.excluded[0].message
    assert fingerprint(real) in message and fingerprint(fake.public_key) in message
    assert "tokenim keys accept" in message
    assert sent.model_dump()["excluded"][0]["reason"] == "master_key_changed"  # in the JSON form too
    # Nothing readable reached the swapped-in key or Bob's devices; Carol reads everything.
    assert [m.body for m in await carol.messages.sync()] == ["before", "during the swap"]
    got = await bob.messages.sync()
    assert [m.body for m in got] == ["before", None] and got[1].warning

    # Every later send says so again, not just the first one.
    again = await alice.messages.send_text(room, "still during the swap")
    assert [e.reason for e in again.excluded] == ["master_key_changed"]

    # The swap ends: the pinned key is back and Bob is included again, with nothing to do.
    await end_swap(database, bob.user_id)
    clock.advance(seconds=600)
    after = await alice.messages.send_text(room, "after the swap")
    assert after.excluded == []
    assert [m.body for m in await bob.messages.sync()] == [None, "after the swap"]
    assert insides(alice).machine.pinned_masters[bob.user_id] == real


async def test_a_key_first_seen_during_a_swap_can_be_replaced_deliberately(
    alice: Client, bob: Client, database: Database, clock: FakeClock
) -> None:
    fake = await swap_master(database, bob.user_id, clock.now_ms())
    room = (await alice.rooms.create("pair", ["@bob"])).room_id
    await bob.rooms.join(room)
    await alice.messages.send_text(room, "first contact")  # Alice pins the server's key: she has never seen Bob's
    assert insides(alice).machine.pinned_masters[bob.user_id] == fake.public_key

    await end_swap(database, bob.user_id)
    clock.advance(seconds=600)
    sent = await alice.messages.send_text(room, "the real bob is back")
    assert [e.reason for e in sent.excluded] == ["master_key_changed"]

    shown = await alice.keys.contact("@bob")
    assert shown.status == "changed"
    assert shown.pinned_fingerprint == fingerprint(fake.public_key)
    assert shown.current_fingerprint == fingerprint(bob.keys.info().master_key)
    assert {d["device_id"] for d in shown.devices} == {bob.device_id}

    with pytest.raises(TokenIMError) as wrong:
        await alice.keys.accept("@bob", fingerprint(SigningKey.generate().public_key))
    assert wrong.value.code is ErrorCode.FINGERPRINT_MISMATCH
    assert shown.current_fingerprint.split()[0] not in wrong.value.message  # compared, never handed over to copy
    assert insides(alice).machine.pinned_masters[bob.user_id] == fake.public_key  # nothing changed

    accepted = await alice.keys.accept("@bob", shown.current_fingerprint.replace(" ", ""))
    assert (accepted.old_fingerprint, accepted.new_fingerprint) == (shown.pinned_fingerprint, shown.current_fingerprint)
    later = await alice.messages.send_text(room, "now you can read me")
    assert later.excluded == []
    assert [m.body for m in await bob.messages.sync()][-1] == "now you can read me"
    assert (await alice.keys.contact("@bob")).status == "trusted"
    with pytest.raises(TokenIMError) as nothing:
        await alice.keys.accept("@bob", shown.current_fingerprint)
    assert nothing.value.code is ErrorCode.INVALID_REQUEST


async def test_the_accepted_key_survives_a_restart(
    make_user: MakeUser, alice: Client, bob: Client, database: Database, clock: FakeClock
) -> None:
    await swap_master(database, bob.user_id, clock.now_ms())
    assert (await alice.keys.contact("@bob")).status == "pinned_now"
    await end_swap(database, bob.user_id)
    current = (await alice.keys.contact("@bob")).current_fingerprint
    await alice.keys.accept("bob", current)
    path = insides(alice).store.path.parent
    await alice.close()
    reopened = await Client.open(
        path, "correct horse battery staple", clock=clock, transport=insides(alice).transport.http._transport
    )
    try:
        assert (await reopened.keys.contact("@bob")).status == "trusted"
    finally:
        await reopened.close()


async def test_a_device_without_a_valid_signature_or_a_session_is_named(
    alice: Client, bob: Client, database: Database, clock: FakeClock
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    now = clock.now_ms()
    # A device the server adds to Bob's account that his master key never signed.
    forged = DeviceIdentity.create(UserId(bob.user_id), DeviceId("FORGEDDEV1"), now)
    # A genuine second device of Bob's whose one-time keys are all used up (none were ever uploaded).
    second = DeviceIdentity.create(UserId(bob.user_id), DeviceId("BOBSECOND1"), now, master=insides(bob).identity.master)
    # And one whose id is built to take over a terminal.
    evil = "EVIL\x1b]0;owned\x07"
    async with database.write() as tx:
        store = AccountStore()
        for ident in (forged, second):
            keys = ident.device_keys_object(now)
            await store.insert_device(
                tx, DeviceRow(bob.user_id, ident.device_id, ident.ed25519, ident.curve25519, 1, keys, now, None)
            )
        keys = {**forged.device_keys_object(now), "device_id": evil}
        await store.insert_device(tx, DeviceRow(bob.user_id, evil, forged.ed25519, forged.curve25519, 1, keys, now, None))
    sent = await alice.messages.send_text(room, "hello")
    reasons = sorted((e.device_id, e.reason) for e in sent.excluded)
    assert reasons == [
        ("'EVIL\\x1b]0;owned\\x07'", "bad_device_signature"),
        ("BOBSECOND1", "no_session"),
        ("FORGEDDEV1", "bad_device_signature"),
    ]
    assert not any(c in e.message for e in sent.excluded for c in "\x1b\x07")
    assert all(isinstance(e, ExcludedDevice) and e.message for e in sent.excluded)
    assert [m.body for m in await bob.messages.sync()] == ["hello"]
