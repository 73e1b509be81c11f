"""Revoking a device through the SDK: the master key signs the revocation; other members stop encrypting to
the device and give the room a new key before the next message; its keys are refused for good, even when a
server shows the device again and hides the revocation; and the revoked device's profile says what happened."""

from __future__ import annotations

import argparse

import httpx
import pytest
from sqlalchemy import delete

from tests.client.test_encryption import raw_event, session_of
from tests.client.test_key_lifecycle import second_device
from tests.support import insides
from tokenim.cli import account as cli_account
from tokenim.cli.account import _remove_device, cmd_logout, human_devices
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import new_device_id
from tokenim.core.signing import sign_json
from tokenim.crypto.machine import RejectedMessage, RoomMessage
from tokenim.protocol.api import OkResponse
from tokenim.protocol.identity import REVOCATION_TYPE, parse_revocation
from tokenim.server.storage.accounts import AccountStore, DeviceRow
from tokenim.server.storage.database import Database
from tokenim.server.storage.identity import IdentityStore
from tokenim.server.storage.tables import device_revocations


async def test_a_revoked_device_reads_nothing_sent_after(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = await second_device(alice, clock, transport)
    try:
        room = (await alice.rooms.create("team", ["@bob"])).room_id
        await bob.rooms.join(room)
        before = await bob.messages.send_text(room, "before")
        assert before.excluded == []
        assert [m.body for m in await second.messages.sync()] == ["before"]
        first_session = session_of(bob, room)
        assert (alice.user_id, second.device_id) in insides(bob).machine.rooms.outbound[room].shared_with

        revoked = await alice.keys.revoke(second.device_id)
        assert (revoked.device_id, revoked.master_key_version) == (second.device_id, 1)
        assert {d.device_id for d in (await alice.devices.all()).devices} == {alice.device_id}

        await bob.messages.sync()  # sees the device-list event ("revoked"): no waiting for the cache to expire
        after = await bob.messages.send_text(room, "after")
        assert after.excluded == []
        assert session_of(bob, room) != first_session  # a new room key, never given to the revoked device
        assert (alice.user_id, second.device_id) not in insides(bob).machine.rooms.outbound[room].shared_with
        assert [m.body for m in await alice.messages.sync() if m.sender == bob.user_id] == ["before", "after"]
        # Whatever the revoked device gets hold of, it cannot read what was sent after.
        got = insides(second).machine.decrypt_room_event(await raw_event(bob, room, after.event_id))
        assert isinstance(got, RejectedMessage)
        old = insides(second).machine.decrypt_room_event(await raw_event(bob, room, before.event_id))
        assert isinstance(old, RoomMessage)

        # Its profile's next command says it was revoked, not "unauthorized".
        for command in (second.messages.sync(), second.account.login()):
            with pytest.raises(TokenIMError) as refused:
                await command
            assert refused.value.code is ErrorCode.DEVICE_REVOKED
            assert f"This device ({second.device_id}) was revoked" in refused.value.message

        # `logout` says so too (not "you are still logged in") and forgets the tokens here.
        async def opened(_args: argparse.Namespace) -> Client:
            return second

        monkeypatch.setattr(cli_account, "open_client", opened)
        with pytest.raises(TokenIMError) as logout:
            await cmd_logout(argparse.Namespace(all=False))
        assert logout.value.code is ErrorCode.DEVICE_REVOKED
        assert "was revoked" in logout.value.message and "still logged in" not in logout.value.message
        assert "forgotten" in logout.value.message and not second.account.logged_in
    finally:
        await second.close()


async def test_revoked_keys_are_refused_even_when_the_server_shows_them_again(
    alice: Client, bob: Client, database: Database, clock: FakeClock, transport: httpx.AsyncBaseTransport
) -> None:
    second = await second_device(alice, clock, transport)
    await second.close()
    room = (await bob.rooms.direct("@alice")).room_id
    assert (await bob.messages.send_text(room, "to both")).excluded == []
    shown = (await bob.keys.query([alice.user_id]))[alice.user_id].devices[second.device_id]
    await alice.keys.revoke(second.device_id)
    await bob.messages.sync()
    assert (await bob.messages.send_text(room, "to one")).excluded == []  # Bob learns the revocation here

    # The server brings the device back and hides the revocation.
    async with database.write() as tx:
        await tx.execute(delete(device_revocations).where(device_revocations.c.user_id == alice.user_id))
        row = DeviceRow(alice.user_id, second.device_id, shown.ed25519, shown.curve25519, 1, shown.raw, 0, None)
        await AccountStore().insert_device(tx, row)
    clock.advance(seconds=600)
    sent = await bob.messages.send_text(room, "not to the revoked one")
    assert [(e.device_id, e.reason) for e in sent.excluded] == [(second.device_id, "revoked")]
    assert "was revoked" in sent.excluded[0].message
    contact = await bob.keys.contact("@alice")
    assert {d["device_id"]: d["status"] for d in contact.devices}[second.device_id] == "revoked"
    assert (alice.user_id, second.device_id) not in insides(bob).machine.rooms.outbound[room].shared_with
    # Remembered across a restart of Bob's profile.
    path = insides(bob).store.path.parent
    await bob.close()
    bob = await Client.open(path, "correct horse battery staple", clock=clock, transport=transport)
    try:
        again = await bob.messages.send_text(room, "still not")
        assert [(e.device_id, e.reason) for e in again.excluded] == [(second.device_id, "revoked")]
    finally:
        await bob.close()


async def test_what_cannot_be_revoked(alice: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport) -> None:
    second = await second_device(alice, clock, transport)
    await second.close()
    with pytest.raises(TokenIMError) as own:
        await alice.keys.revoke(alice.device_id)
    assert own.value.code is ErrorCode.INVALID_REQUEST and "this device" in own.value.message
    with pytest.raises(TokenIMError) as unknown:
        await alice.keys.revoke("NOSUCHDEV1")
    assert unknown.value.code is ErrorCode.UNKNOWN_DEVICE
    await alice.keys.revoke(second.device_id)
    with pytest.raises(TokenIMError) as twice:
        await alice.keys.revoke(second.device_id)
    assert twice.value.code is ErrorCode.DEVICE_REVOKED and "already revoked" in twice.value.message


async def test_devices_remove_revokes_when_it_can(alice: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport) -> None:
    second = await second_device(alice, clock, transport)
    third = await second_device(alice, clock, transport)
    fourth = await second_device(alice, clock, transport)
    try:
        # The device holding the current master key: `devices remove` revokes.
        assert await _remove_device(alice, fourth.device_id, revoke_only=False) == {"removed": fourth.device_id, "revoked": True}
        await alice.keys.rotate()
        await second.keys.status()  # sees the rotation: it no longer holds the current master key
        # Elsewhere: `revoke` refuses; `remove` refuses unless forced, then only removes, and says so.
        with pytest.raises(TokenIMError) as refused:
            await _remove_device(second, third.device_id, revoke_only=True)
        assert refused.value.code is ErrorCode.KEY_CHAIN_INVALID
        with pytest.raises(TokenIMError) as unforced:  # it may be the only device holding the current key
            await _remove_device(second, third.device_id, revoke_only=False)
        assert "--force" in unforced.value.message
        removed = await _remove_device(second, third.device_id, revoke_only=False, force=True)
        assert removed == {"removed": third.device_id, "revoked": False}
        assert "It was not revoked" in human_devices({"removed": third.device_id, "revoked": False})
        assert {d.device_id for d in (await alice.devices.all()).devices} == {alice.device_id, second.device_id}
    finally:
        for c in (second, third, fourth):
            await c.close()


def forged_revocation(attacker: Client, victim: Client, device_id: str, now: int) -> dict[str, object]:
    """A revocation the attacker signs with their own master key, naming the victim's device keys."""
    me, mine = insides(attacker).identity, insides(victim).identity
    obj = {
        "type": REVOCATION_TYPE,
        "user_id": attacker.user_id,
        "device_id": device_id,
        "keys": {f"curve25519:{device_id}": mine.curve25519, f"ed25519:{device_id}": mine.ed25519},
        "master_key_version": me.master_version,
        "ts": now,
    }
    return sign_json(obj, attacker.user_id, me.master.public_key, me.master)


async def test_another_users_revocation_never_revokes_my_device(
    alice: Client, bob: Client, carol: Client, database: Database, clock: FakeClock
) -> None:
    room = (await alice.rooms.create("team", ["@bob", "@carol"])).room_id
    for member in (bob, carol):
        await member.rooms.join(room)
    forged = forged_revocation(carol, alice, new_device_id(), clock.now_ms())
    # The server refuses it: Carol never had that device.
    with pytest.raises(TokenIMError) as refused:
        await insides(carol).transport.post("/v1/keys/revoke", {"revocation": forged}, OkResponse)
    assert refused.value.code is ErrorCode.UNKNOWN_DEVICE
    # A server that took it anyway (an older one, or a hostile one) shows it under Carol: it revokes none of Alice's.
    async with database.write() as tx:
        await IdentityStore().insert_revocation(tx, parse_revocation(forged), clock.now_ms())
    clock.advance(seconds=600)
    for observer in (alice, bob, carol):
        await observer.keys.contact("@carol")  # each sees Carol's forged revocation first
    for sender in (bob, alice, carol):
        sent = await sender.messages.send_text(room, f"from {sender.user_id}")
        assert sent.excluded == [], (sender.user_id, sent.excluded)
    for reader in (alice, bob):
        read = [m for m in await reader.messages.sync() if m.body is not None and m.sender != reader.user_id]
        assert read and all(m.warning is None for m in read)
    for observer in (alice, bob, carol):
        assert not insides(observer).machine.is_revoked(alice.user_id, insides(alice).identity.ed25519)
        assert insides(observer).machine.revoked_keys.get(alice.user_id) is None
    contact = await bob.keys.contact("@alice")
    assert {d["device_id"]: d["status"] for d in contact.devices}[alice.device_id] == "verified"
    assert insides(bob).machine.is_verified(alice.user_id, alice.device_id, insides(alice).identity.ed25519)


async def test_a_message_from_a_revoked_device_says_so_without_blaming_the_master_key(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport
) -> None:
    second = await second_device(alice, clock, transport)
    try:
        room = (await alice.rooms.create("team", ["@bob"])).room_id
        await bob.rooms.join(room)
        await second.messages.sync()
        sent = await second.messages.send_text(room, "before")
        await bob.messages.sync()
        await alice.keys.revoke(second.device_id)
        await bob.messages.sync()
        assert await bob.keys.contact("@alice")  # Bob learns the revocation
        got = bob.messages.decrypt_event(await raw_event(bob, room, sent.event_id))
        assert got.body == "before" and not got.verified
        assert got.why_not == f"device {second.device_id} of {alice.user_id} was revoked"
        assert "master key" not in (got.why_not or "")
    finally:
        await second.close()
