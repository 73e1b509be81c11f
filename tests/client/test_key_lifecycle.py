"""Master key rotation through the SDK, and what each trust verdict does to sending: a signed rotation is
followed without a word, while an unsigned change, a fork, a rollback or a broken chain leaves the user's
devices out, saying which. A rotation survives a lost answer, and a device that no longer holds the current
master key says so instead of failing on the server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from tests.conftest import PASSPHRASE
from tests.identity_kit import master_key_object, rotation_object
from tests.support import LyingServer, insides
from tokenim.cli.keys import contact_keys_text
from tokenim.client import Client, MemoryStore, Store
from tokenim.core.clock import Clock, FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import DeviceId, UserId, new_device_id
from tokenim.core.signing import SigningKey, fingerprint
from tokenim.crypto.device import DeviceIdentity
from tokenim.protocol.api import OkResponse
from tokenim.protocol.identity import parse_rotation
from tokenim.server.storage.accounts import AccountStore, DeviceRow
from tokenim.server.storage.database import Database
from tokenim.server.storage.identity import IdentityStore
from tokenim.server.storage.tables import master_key_rotations, master_keys


async def second_device(
    client: Client,
    clock: Clock,
    transport: httpx.AsyncBaseTransport | None,
    store: Store | None = None,
    server_url: str = "http://tokenim.test",
) -> Client:
    """Another device of `client`'s user holding the same master key, as a logged-in `Client` (on a MemoryStore
    unless `store` is given): what device linking will make, built by hand."""
    now_ms = clock.now_ms()
    identity = DeviceIdentity.create(UserId(client.user_id), new_device_id(), now_ms, master=insides(client).identity.master)
    upload = identity.keys_to_upload(0, need_fallback=True)
    body = {"device_keys": identity.device_keys_object(now_ms), "one_time_keys": upload.one_time_keys}
    await insides(client).transport.post("/v1/devices", body | {"fallback_keys": upload.fallback_keys}, OkResponse)
    identity.mark_keys_as_published()
    store = store or MemoryStore()
    now = str(now_ms)
    store.set_meta(
        {
            "server_url": server_url,
            "server_name": client.server_name,
            "user_id": client.user_id,
            "device_id": identity.device_id,
            "master_key_version": str(insides(client).identity.master_version),
            "master_created_at": str(insides(client).identity.master_created_at),
            "device_created_at": now,
        }
    )
    store.set_secrets({"master_seed": identity.master.seed(), "olm_account": identity.pickle_account(store.pickle_key).encode()})
    second = await Client.open(store, clock=clock, transport=transport)
    await second.account.login()
    return second


async def reopen(client: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport) -> Client:
    """Close `client`'s profile and open it again over `transport`."""
    path = insides(client).store.path.parent
    await client.close()
    return await Client.open(path, PASSPHRASE, clock=clock, transport=transport)


async def chat(alice: Client, bob: Client) -> str:
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "hello")
    assert [m.body for m in await bob.messages.sync()] == ["hello"]
    await alice.messages.sync()
    return room


async def test_a_signed_rotation_is_followed_as_routine(alice: Client, bob: Client, clock: FakeClock) -> None:
    room = await chat(alice, bob)
    old = alice.keys.info()
    rotated = await alice.keys.rotate()
    assert (rotated.old_version, rotated.new_version) == (1, 2)
    assert rotated.devices == [alice.device_id]
    new = alice.keys.info()
    assert new.master_key_version == 2 and new.master_key != old.master_key
    assert rotated.new_fingerprint == new.fingerprint

    clock.advance(seconds=600)  # member devices are asked for again
    sent = await bob.messages.send_text(room, "still there?")
    assert sent.excluded == []
    got = await alice.messages.sync()
    assert [(m.event, m.body, m.verified) for m in got] == [("key_rotated", None, True), (None, "still there?", True)]
    reply = await alice.messages.send_text(room, "yes, with a new key")
    assert reply.excluded == []
    seen = await bob.messages.sync()
    assert [(m.body, m.verified) for m in seen if m.event is None][-1] == ("yes, with a new key", True)
    # The rotation shows as one line in the room they share, followed: no warning.
    notices = [m for m in seen if m.event == "key_rotated"]
    assert [(m.sender, m.notice, m.warning) for m in notices] == [
        (alice.user_id, f"{alice.user_id} rotated their master key (version 2)", None)
    ]
    assert notices[0].to_json()["event"] == "key_rotated" and "body" in notices[0].to_json()
    history = await bob.messages.history(room)  # reading the room again shows the same line
    assert [m.notice for m in history if m.event] == [notices[0].notice]
    # Bob followed the chain: both keys, oldest first; the contact view shows no change.
    assert bob.keys.followed_keys("@alice") == (old.master_key, new.master_key)
    shown = await bob.keys.contact("@alice")
    assert shown.status == "trusted" and shown.current_master == new.master_key and shown.version == 2
    # Alice's own pin moved with her.
    assert alice.keys.followed_keys(alice.user_id) == (old.master_key, new.master_key)
    assert alice.keys.holds_current_master()


async def test_a_rotation_survives_a_restart_of_both_sides(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport
) -> None:
    room = await chat(alice, bob)
    await alice.keys.rotate()
    await alice.keys.rotate()
    alice = await reopen(alice, clock, transport)
    try:
        assert alice.keys.info().master_key_version == 3
        clock.advance(seconds=600)
        assert (await alice.messages.send_text(room, "after two rotations")).excluded == []
        assert [m.body for m in await bob.messages.sync() if m.event is None] == ["after two rotations"]
        await bob.keys.contact("@alice")  # Bob looks at her keys again
        assert len(bob.keys.followed_keys("@alice")) == 3
    finally:
        await alice.close()


async def _replace_chain(database: Database, user_id: str, keep_versions: int) -> None:
    """What a server can do: forget the rotations and master keys above `keep_versions`."""
    async with database.write() as tx:
        await tx.execute(delete(master_keys).where(master_keys.c.user_id == user_id, master_keys.c.version > keep_versions))
        await tx.execute(
            delete(master_key_rotations).where(
                master_key_rotations.c.user_id == user_id, master_key_rotations.c.old_version >= keep_versions
            )
        )


async def _left_out(alice: Client, bob: Client, room: str, clock: FakeClock, text: str) -> tuple[str | None, str]:
    """Bob sends to Alice: the verdict his client gives for her (None: she was included) and its message.
    Alice's device never gets the room key when she was left out."""
    clock.advance(seconds=600)
    sent = await bob.messages.send_text(room, text)
    mine = [e for e in sent.excluded if e.user_id == alice.user_id]
    got = [m for m in await alice.messages.sync() if m.id == sent.event_id]
    if not mine:
        assert [m.body for m in got] == [text]
        return None, ""
    assert [(e.device_id, e.reason) for e in mine] == [(None, "master_key_changed")]
    assert [m.body for m in got] == [None]  # no room key reached any of Alice's devices
    return mine[0].verdict, mine[0].message


async def test_a_rollback_leaves_the_user_out(alice: Client, bob: Client, database: Database, clock: FakeClock) -> None:
    room = await chat(alice, bob)
    await alice.keys.rotate()
    assert (await _left_out(alice, bob, room, clock, "followed"))[0] is None
    await _replace_chain(database, alice.user_id, keep_versions=1)  # the server shows version 1 again
    verdict, message = await _left_out(alice, bob, room, clock, "after the rollback")
    assert verdict == "rolled_back"
    assert "older master key" in message and "version 1" in message and "tokenim keys accept" in message
    assert bob.keys.followed_keys("@alice")[-1] == alice.keys.info().master_key  # the pin did not move back


async def test_a_fork_leaves_the_user_out(alice: Client, bob: Client, database: Database, clock: FakeClock) -> None:
    room = await chat(alice, bob)
    first = insides(alice).identity.master
    await alice.keys.rotate()
    assert (await _left_out(alice, bob, room, clock, "followed"))[0] is None
    # The server replaces version 2 by another key, with a rotation the version 1 key really signed (it leaked).
    await _replace_chain(database, alice.user_id, keep_versions=1)
    other = SigningKey.generate()
    async with database.write() as tx:
        mk = master_key_object(alice.user_id, other, 2)
        await AccountStore().insert_master_key(tx, alice.user_id, 2, other.public_key, mk, clock.now_ms())
        rot = parse_rotation(rotation_object(alice.user_id, first, 1, other))
        await IdentityStore().insert_rotation(tx, rot, clock.now_ms())
    verdict, message = await _left_out(alice, bob, room, clock, "after the fork")
    assert verdict == "forked"
    assert "forked chain" in message and fingerprint(other.public_key) in message


async def test_a_broken_chain_leaves_the_user_out_and_cannot_be_accepted(
    alice: Client, bob: Client, database: Database, clock: FakeClock
) -> None:
    room = await chat(alice, bob)
    await alice.keys.rotate()
    async with database.write() as tx:  # the server loses the rotation: version 2 has no link to version 1
        await tx.execute(delete(master_key_rotations).where(master_key_rotations.c.user_id == alice.user_id))
    verdict, message = await _left_out(alice, bob, room, clock, "after the loss")
    assert verdict == "broken_chain"
    assert "does not verify (missing link)" in message
    shown = await bob.keys.contact("@alice")
    assert shown.status == "changed" and shown.verdict == "broken_chain"
    with pytest.raises(TokenIMError) as refused:
        await bob.keys.accept("@alice", shown.current_fingerprint)
    assert refused.value.code is ErrorCode.KEY_CHAIN_INVALID and "Nothing was accepted" in refused.value.message
    # The room shows the rotation event as a warning, not as a routine rotation.
    lines = [m for m in await bob.messages.sync() if m.event == "key_rotated"]
    assert [(m.notice, m.verified) for m in lines] == [(None, False)]
    assert lines[0].warning is not None and "does not verify (broken chain)" in lines[0].warning


async def test_an_unsigned_change_leaves_the_user_out_until_accepted(
    alice: Client, bob: Client, database: Database, clock: FakeClock
) -> None:
    room = await chat(alice, bob)
    fake = SigningKey.generate()
    async with database.write() as tx:  # another version-1 key, with no rotation to it
        await tx.execute(delete(master_keys).where(master_keys.c.user_id == alice.user_id))
        mk = master_key_object(alice.user_id, fake, 1)
        await AccountStore().insert_master_key(tx, alice.user_id, 1, fake.public_key, mk, clock.now_ms())
    verdict, message = await _left_out(alice, bob, room, clock, "after the swap")
    assert verdict == "changed_unsigned"
    assert "without a signed rotation" in message and fingerprint(fake.public_key) in message
    await bob.keys.accept("@alice", fingerprint(fake.public_key))
    assert bob.keys.followed_keys("@alice") == (fake.public_key,)  # accepting starts the list afresh


async def test_a_lost_rotation_answer_is_settled_on_the_next_command(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport
) -> None:
    room = await chat(alice, bob)
    old = alice.keys.info().master_key

    class AnswerLost(httpx.AsyncBaseTransport):
        """The server does the rotation, then the connection drops before its answer arrives."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await transport.handle_async_request(request)
            if request.url.path == "/v1/keys/rotate":
                raise httpx.ReadError("connection reset")
            return response

    alice = await reopen(alice, clock, AnswerLost())
    try:
        with pytest.raises(TokenIMError) as lost:
            await alice.keys.rotate()
        assert lost.value.code is ErrorCode.SERVER_UNREACHABLE and "may or may not" in lost.value.message
        assert alice.keys.info().master_key == old  # not switched yet: the server's answer never came
    finally:
        await alice.close()
    alice = await reopen(alice, clock, transport)  # as after a crash: the pending key is in the profile
    try:
        status = await alice.keys.status()  # any look at her own keys settles it
        assert status.master_key_version == 2 and not status.outdated
        assert alice.keys.info().master_key != old
        clock.advance(seconds=600)
        assert (await alice.messages.send_text(room, "after the lost answer")).excluded == []
        assert [m.body for m in await bob.messages.sync() if m.event is None] == ["after the lost answer"]
        # And it rotates again from there.
        assert (await alice.keys.rotate()).new_version == 3
    finally:
        await alice.close()


async def test_a_refused_rotation_keeps_the_old_key(alice: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport) -> None:
    old = alice.keys.info().master_key

    class Refuses(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/keys/rotate":
                return httpx.Response(409, json={"error": {"code": "key_chain_invalid", "message": "no", "status": 409}})
            return await transport.handle_async_request(request)

    alice = await reopen(alice, clock, Refuses())
    try:
        with pytest.raises(TokenIMError) as refused:
            await alice.keys.rotate()
        assert refused.value.code is ErrorCode.KEY_CHAIN_INVALID and "Another of your devices" in refused.value.message
        assert insides(alice).store.get_secret("master_seed_pending") is None
        assert (await alice.keys.status()).master_key_version == 1 and alice.keys.info().master_key == old
    finally:
        await alice.close()


async def test_a_device_without_the_current_master_key_says_so(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport
) -> None:
    room = await chat(alice, bob)
    second = await second_device(alice, clock, transport)
    try:
        await alice.keys.rotate()  # the first device rotates; the second still holds version 1
        status = await second.keys.status()
        assert status.outdated and not second.keys.holds_current_master()
        for attempt in (second.keys.rotate(), second.keys.revoke(alice.device_id)):
            with pytest.raises(TokenIMError) as refused:
                await attempt
            assert refused.value.code is ErrorCode.KEY_CHAIN_INVALID
            assert "This device no longer holds your current master key (version 2" in refused.value.message
        # It still chats: its device keys were re-signed by the new master key.
        clock.advance(seconds=600)
        sent = await bob.messages.send_text(room, "to both of alice's devices")
        assert sent.excluded == []
        assert [m.body for m in await second.messages.sync()][-1] == "to both of alice's devices"
    finally:
        await second.close()


async def test_a_rotation_refuses_to_vouch_for_a_device_the_master_key_never_signed(
    alice: Client, database: Database, clock: FakeClock
) -> None:
    forged = DeviceIdentity.create(UserId(alice.user_id), DeviceId("FORGEDDEV1"), clock.now_ms())
    row = DeviceRow(alice.user_id, forged.device_id, forged.ed25519, forged.curve25519, 1, forged.device_keys_object(0), 0, None)
    async with database.write() as tx:  # a device the server adds that Alice's master key never signed
        await AccountStore().insert_device(tx, row)
    with pytest.raises(TokenIMError) as refused:
        await alice.keys.rotate()
    assert "FORGEDDEV1" in refused.value.message and "nothing was rotated" in refused.value.message
    assert insides(alice).store.get_secret("master_seed_pending") is None
    assert alice.keys.info().master_key_version == 1


async def test_a_malformed_rotation_event_is_skipped(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport
) -> None:
    room = await chat(alice, bob)
    lying = LyingServer(transport)
    bad = {"user_id": "not a user\x1b[2J", "device_id": "X", "change": "rotated"}

    def add_event(_request: httpx.Request, body: Any) -> Any:
        event = {"pos": body["next_pos"], "event_id": "$forged", "room_id": room, "seq": 99, "ts": 0}
        body["events"] = [*body["events"], {**event, "type": "tokenim.device_list", "sender": alice.user_id, "content": bad}]
        return body

    lying.rewrites["/v1/sync"] = add_event
    bob = await reopen(bob, clock, lying)
    try:
        await alice.messages.send_text(room, "next")
        got = await bob.messages.sync()
        assert [(m.event, m.body) for m in got] == [(None, "next")]  # and the sync was not stopped by it
    finally:
        await bob.close()


def test_the_contact_text_names_a_chain_that_cannot_be_accepted() -> None:
    base = {"user_id": "@a:x", "pinned_master": "k", "pinned_fingerprint": "1 2", "current_master": "", "devices": []}
    broken = {**base, "status": "changed", "current_fingerprint": "", "message": "the chain does not verify"}
    text = contact_keys_text(broken)
    assert "do not verify" in text and "keys accept" not in text and "New key:     (does not verify)" in text
    unsigned = {**base, "status": "changed", "current_fingerprint": "3 4", "message": "run `tokenim keys accept @a:x`."}
    assert "run `tokenim keys accept @a:x`" in contact_keys_text(unsigned).splitlines()[1]
