"""Key backup through the SDK: a new device of the same user restores the room keys and reads history from
before it existed; a wrong key, a tampered, reshuffled, shortened or rolled-back backup is refused with
nothing imported; new room keys are backed up as they arrive, and a backup that can't be reached never
fails a send."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from tests.conftest import FAST_KDF, MakeUser
from tests.support import LyingServer, add_device, insides
from tokenim.client import Client, MemoryStore
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.backup import decode_recovery_key, encode_recovery_key, new_secret

SERVER = "http://tokenim.test"


async def new_device(client: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport) -> Client:
    """A second device of `client`'s user (same master key), on a fresh store, logged in."""
    identity = await add_device(client, clock)
    store = MemoryStore()
    now = str(clock.now_ms())
    store.set_meta(
        {"server_url": SERVER, "server_name": client.server_name, "user_id": client.user_id, "device_id": identity.device_id}
        | {"master_key_version": "1", "master_created_at": now, "device_created_at": now}
    )
    store.set_secrets({"master_seed": identity.master.seed(), "olm_account": identity.pickle_account(store.pickle_key).encode()})
    device = await Client.open(store, clock=clock, transport=transport)
    await device.account.login()
    return device


async def chat(alice: Client, bob: Client) -> str:
    room = await alice.rooms.resolve("@bob", create=True)
    await bob.messages.sync()
    await bob.rooms.join(room)
    await alice.messages.send_text(room, "from alice, before")
    await bob.messages.send_text(room, "from bob, before")
    await alice.messages.sync()
    return room


def bodies(messages: list[Any]) -> list[str | None]:
    return [m.body for m in messages]


def inbound_count(client: Client) -> int:
    return len(insides(client).machine.rooms.inbound)


@pytest.fixture
def lying(transport: httpx.ASGITransport) -> LyingServer:
    return LyingServer(transport)


async def test_a_new_device_restores_and_reads_history_from_before_it_existed(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.ASGITransport
) -> None:
    room = await chat(alice, bob)
    created = await alice.backup.create()
    assert created.recovery_key is not None and created.keys == 2  # alice's own session and bob's

    second = await new_device(alice, clock, transport)
    try:
        unreadable = await second.messages.history(room)
        assert bodies(unreadable) == [None, None] and all(m.warning for m in unreadable)
        restored = await second.backup.restore(recovery_key=created.recovery_key)
        assert (restored.version, restored.keys, restored.imported) == (created.version, 2, 2)
        history = await second.messages.history(room)
        assert bodies(history) == ["from alice, before", "from bob, before"]
        assert [m.sender for m in history] == [alice.user_id, bob.user_id]
        status = await second.backup.status()
        assert status.exists and status.backs_up and status.keys == 2 and status.pending == 0
    finally:
        await second.close()


async def test_a_recovery_passphrase_restores_and_a_wrong_one_imports_nothing(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.ASGITransport
) -> None:
    room = await chat(alice, bob)
    created = await alice.backup.create("a long recovery passphrase", kdf=FAST_KDF)
    assert created.recovery_key is None
    second = await new_device(alice, clock, transport)
    try:
        with pytest.raises(TokenIMError) as wrong:
            await second.backup.restore(passphrase="not the passphrase")
        assert wrong.value.code is ErrorCode.WRONG_RECOVERY_KEY
        assert inbound_count(second) == 0
        with pytest.raises(TokenIMError) as as_key:
            await second.backup.restore(recovery_key=encode_recovery_key(new_secret()))
        assert as_key.value.code is ErrorCode.WRONG_RECOVERY_KEY
        await second.backup.restore(passphrase="a long recovery passphrase")
        assert bodies(await second.messages.history(room)) == ["from alice, before", "from bob, before"]
        assert (await second.backup.status()).passphrase
    finally:
        await second.close()


async def test_a_mistyped_recovery_key_is_refused_before_anything_is_sent(
    alice: Client, bob: Client, clock: FakeClock, lying: LyingServer
) -> None:
    await chat(alice, bob)
    key = (await alice.backup.create()).recovery_key
    assert key is not None
    second = await new_device(alice, clock, lying)
    try:
        typo = key[:10] + ("2" if key[10] != "2" else "3") + key[11:]
        before = len(lying.requests)
        with pytest.raises(TokenIMError) as err:
            await second.backup.restore(recovery_key=typo)
        assert err.value.code is ErrorCode.BAD_RECOVERY_KEY
        assert lying.requests[before:] == []
        with pytest.raises(TokenIMError) as other:
            await second.backup.restore(recovery_key=encode_recovery_key(new_secret()))
        assert other.value.code is ErrorCode.WRONG_RECOVERY_KEY
        assert inbound_count(second) == 0
        # Spaces, dashes and line breaks as a person may copy them are fine.
        await second.backup.restore(recovery_key="\n" + key.replace(" ", "-") + " ")
        assert inbound_count(second) == 2
    finally:
        await second.close()


def _swap_first_two(body: dict[str, Any]) -> dict[str, Any]:
    e = body["entries"]
    e[0]["ciphertext"], e[1]["ciphertext"] = e[1]["ciphertext"], e[0]["ciphertext"]
    return body


def _flip_a_byte(body: dict[str, Any]) -> dict[str, Any]:
    ct = body["entries"][0]["ciphertext"]
    body["entries"][0]["ciphertext"] = ct[:20] + ("A" if ct[20] != "A" else "B") + ct[21:]
    return body


def _drop_one(body: dict[str, Any]) -> dict[str, Any]:
    body["entries"] = body["entries"][1:]
    return body


def _drop_one_and_recount(body: dict[str, Any]) -> dict[str, Any]:
    body["entries"] = body["entries"][1:]
    body["manifest"]["count"] -= 1
    return body


@pytest.mark.parametrize(
    "tamper",
    [_flip_a_byte, _swap_first_two, _drop_one, _drop_one_and_recount],
    ids=["altered entry", "entry moved to another session", "dropped entry", "dropped entry, count edited"],
)
async def test_a_tampered_backup_is_refused_and_nothing_is_imported(
    alice: Client, bob: Client, clock: FakeClock, lying: LyingServer, tamper: Any
) -> None:
    await chat(alice, bob)
    created = await alice.backup.create()
    second = await new_device(alice, clock, lying)
    try:
        lying.rewrites[f"/v1/backup/{created.version}/keys"] = lambda _req, body: tamper(body)
        with pytest.raises(TokenIMError) as err:
            await second.backup.restore(recovery_key=created.recovery_key)
        assert err.value.code is ErrorCode.BACKUP_TAMPERED
        assert inbound_count(second) == 0
        assert not (await second.backup.status()).backs_up
    finally:
        await second.close()


async def test_an_entry_moved_between_sessions_fails_even_when_the_ciphertexts_are_whole(
    alice: Client, bob: Client, clock: FakeClock, lying: LyingServer
) -> None:
    """Swapping the ids (not the ciphertexts) keeps the digest's ciphertext hashes but not their pairing."""
    await chat(alice, bob)
    created = await alice.backup.create()
    second = await new_device(alice, clock, lying)

    def swap_ids(_req: httpx.Request, body: dict[str, Any]) -> dict[str, Any]:
        e = body["entries"]
        e[0]["entry_id"], e[1]["entry_id"] = e[1]["entry_id"], e[0]["entry_id"]
        return body

    try:
        lying.rewrites[f"/v1/backup/{created.version}/keys"] = swap_ids
        with pytest.raises(TokenIMError) as err:
            await second.backup.restore(recovery_key=created.recovery_key)
        assert err.value.code is ErrorCode.BACKUP_TAMPERED
        assert inbound_count(second) == 0
    finally:
        await second.close()


async def test_an_altered_manifest_is_refused(alice: Client, bob: Client, clock: FakeClock, lying: LyingServer) -> None:
    await chat(alice, bob)
    created = await alice.backup.create()
    second = await new_device(alice, clock, lying)

    def bump(_req: httpx.Request, body: dict[str, Any]) -> dict[str, Any]:
        body["manifest"]["counter"] += 5  # to pass off an old state as a newer one
        return body

    try:
        lying.rewrites[f"/v1/backup/{created.version}/keys"] = bump
        with pytest.raises(TokenIMError) as err:
            await second.backup.restore(recovery_key=created.recovery_key)
        assert err.value.code is ErrorCode.BACKUP_TAMPERED
        assert inbound_count(second) == 0
    finally:
        await second.close()


async def test_a_rolled_back_backup_is_refused_by_a_device_that_saw_a_newer_one(
    alice: Client, bob: Client, carol: Client, clock: FakeClock, lying: LyingServer
) -> None:
    await chat(alice, bob)
    created = await alice.backup.create()
    version = created.version
    old_info = await raw_json(lying, alice, "/v1/backup")
    old_keys = await raw_json(lying, alice, f"/v1/backup/{version}/keys")

    room = await alice.rooms.create("later", [carol.user_id])
    await alice.messages.send_text(room.room_id, "a new room: a new session, backed up at once")
    assert (await alice.backup.status()).keys == 3

    second = await new_device(alice, clock, lying)
    try:
        await second.backup.restore(recovery_key=created.recovery_key)
        assert inbound_count(second) == 3
        lying.rewrites["/v1/backup"] = lambda _req, _body: copy.deepcopy(old_info)
        lying.rewrites[f"/v1/backup/{version}/keys"] = lambda _req, _body: copy.deepcopy(old_keys)
        with pytest.raises(TokenIMError) as err:
            await second.backup.restore(recovery_key=created.recovery_key)
        assert err.value.code is ErrorCode.BACKUP_ROLLED_BACK
        # Only the keys answer rolled back (the version's own answer is current): caught as well.
        del lying.rewrites["/v1/backup"]
        with pytest.raises(TokenIMError) as err2:
            await second.backup.restore(recovery_key=created.recovery_key)
        assert err2.value.code is ErrorCode.BACKUP_ROLLED_BACK
    finally:
        await second.close()


async def test_an_older_backup_version_is_refused(alice: Client, bob: Client, clock: FakeClock, lying: LyingServer) -> None:
    await chat(alice, bob)
    first = await alice.backup.create()
    old_info = await raw_json(lying, alice, "/v1/backup")
    old_keys = await raw_json(lying, alice, f"/v1/backup/{first.version}/keys")
    second = await new_device(alice, clock, lying)
    try:
        newer = await second.backup.create(replace=True)  # a new version with a new key, made on the second device
        assert newer.version == first.version + 1
        lying.rewrites["/v1/backup"] = lambda _req, _body: copy.deepcopy(old_info)
        lying.rewrites[f"/v1/backup/{first.version}/keys"] = lambda _req, _body: copy.deepcopy(old_keys)
        with pytest.raises(TokenIMError) as err:
            await second.backup.restore(recovery_key=first.recovery_key)
        assert err.value.code is ErrorCode.BACKUP_ROLLED_BACK
    finally:
        await second.close()


async def test_new_room_keys_are_backed_up_as_they_arrive(alice: Client, bob: Client, carol: Client) -> None:
    room = await chat(alice, bob)
    await alice.backup.create()
    assert (await alice.backup.status()).keys == 2
    group = await carol.rooms.create("team", [alice.user_id])
    await alice.rooms.join(group.room_id)
    await carol.messages.send_text(group.room_id, "carol's session reaches alice over Olm")
    await alice.messages.sync()  # the received room key is uploaded after it is stored
    assert (await alice.backup.status()).keys == 3
    await alice.messages.send_text(group.room_id, "and alice's own new session")
    status = await alice.backup.status()
    assert (status.keys, status.pending, status.backs_up) == (4, 0, True)
    await alice.messages.send_text(room, "same session as before: nothing new to upload")
    assert (await alice.backup.status()).keys == 4


class BackupDown(httpx.AsyncBaseTransport):
    """The server, except that uploads to the key backup cannot be reached while `down` is set."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down and request.method == "PUT" and request.url.path.startswith("/v1/backup/"):
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


async def test_a_send_never_fails_when_the_backup_is_unreachable_and_it_catches_up_later(
    make_user: MakeUser, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    flaky = BackupDown(transport)
    alice = await Client.register(MemoryStore(), server_url=SERVER, username="alice", clock=clock, transport=flaky)
    bob = await make_user("bob")
    try:
        room = await chat(alice, bob)
        await alice.backup.create()
        flaky.down = True
        group = await alice.rooms.create("new", [bob.user_id])
        sent = await alice.messages.send_text(group.room_id, "sent while the backup is down")
        assert sent.event_id
        await bob.messages.send_text(room, "bob's reply")
        assert bodies(await alice.messages.sync())[-1] == "bob's reply"
        status = await alice.backup.status()
        assert (status.keys, status.pending) == (2, 1)  # alice's new session waits
        flaky.down = False
        await alice.messages.send_text(room, "the next operation uploads what waited")
        status = await alice.backup.status()
        assert (status.keys, status.pending) == (3, 0)
    finally:
        await alice.close()


async def test_two_devices_backing_up_at_once_both_land(
    alice: Client, bob: Client, carol: Client, clock: FakeClock, transport: httpx.ASGITransport
) -> None:
    await chat(alice, bob)
    created = await alice.backup.create()
    second = await new_device(alice, clock, transport)
    try:
        await second.backup.restore(recovery_key=created.recovery_key)
        room = await second.rooms.create("from the second device", [carol.user_id])
        await second.messages.send_text(room.room_id, "second device's own session")  # counter 2
        group = await alice.rooms.create("from the first", [carol.user_id])
        # alice still believes counter 1: the server refuses, she reads the newer state and retries.
        await alice.messages.send_text(group.room_id, "first device's new session")
        assert (await alice.backup.status()).keys == 4
        assert inbound_count(alice) == 4  # she also took the second device's key from the backup
        assert (await second.backup.status()).pending == 0
    finally:
        await second.close()


async def test_restore_without_a_backup_says_so(alice: Client) -> None:
    with pytest.raises(TokenIMError) as err:
        await alice.backup.restore(recovery_key=encode_recovery_key(new_secret()))
    assert err.value.code is ErrorCode.NO_BACKUP
    status = await alice.backup.status()
    assert not status.exists and not status.backs_up


async def test_the_backup_secret_is_kept_encrypted_in_the_profile(alice: Client) -> None:
    created = await alice.backup.create()
    assert created.recovery_key is not None
    store = insides(alice).store
    path = store.path  # type: ignore[attr-defined]
    raw = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))
    assert decode_recovery_key(created.recovery_key) not in raw
    assert store.get_record("backup_secret", "secret") is not None


async def raw_json(lying: LyingServer, client: Client, path: str) -> Any:
    """The server's true answer to GET `path` now, to be replayed later by a lying server."""
    headers = {"Authorization": f"Bearer {client.account.access_token()}"}
    response = await lying.inner.handle_async_request(httpx.Request("GET", SERVER + path, headers=headers))
    assert response.status_code == 200
    return json.loads(await response.aread())


async def test_a_device_whose_version_was_replaced_stops_uploading(
    alice: Client, bob: Client, carol: Client, clock: FakeClock, lying: LyingServer
) -> None:
    await chat(alice, bob)
    created = await alice.backup.create()
    second = await new_device(alice, clock, lying)
    try:
        await second.backup.restore(recovery_key=created.recovery_key)
        newer = await alice.backup.create(replace=True)  # a new version with a new key: the second device does not hold it
        room = await second.rooms.create("after", [carol.user_id])
        await second.messages.send_text(room.room_id, "sent; its key can't go to the old version")
        status = await second.backup.status()
        assert (status.version, status.backs_up, status.pending) == (newer.version, False, 0)
        puts = len([r for r in lying.requests if r[0] == "PUT" and r[1].startswith("/v1/backup/")])
        await second.messages.send_text(room.room_id, "no more tries against the replaced version")
        assert len([r for r in lying.requests if r[0] == "PUT" and r[1].startswith("/v1/backup/")]) == puts
        await second.backup.restore(recovery_key=newer.recovery_key)
        assert (await second.backup.status()).backs_up
    finally:
        await second.close()


async def test_status_refuses_a_backup_rolled_back_behind_what_this_device_wrote(
    alice: Client, bob: Client, carol: Client, lying: LyingServer, clock: FakeClock
) -> None:
    await chat(alice, bob)
    created = await alice.backup.create()
    second = await new_device(alice, clock, lying)
    try:
        await second.backup.restore(recovery_key=created.recovery_key)
        old_info = await raw_json(lying, alice, "/v1/backup")
        room = await second.rooms.create("later", [carol.user_id])
        await second.messages.send_text(room.room_id, "counter 2")
        lying.rewrites["/v1/backup"] = lambda _req, _body: copy.deepcopy(old_info)
        with pytest.raises(TokenIMError) as err:
            await second.backup.status()
        assert err.value.code is ErrorCode.BACKUP_ROLLED_BACK
    finally:
        await second.close()


async def test_the_recovery_key_is_returned_even_when_the_first_upload_fails(
    make_user: MakeUser, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    flaky = BackupDown(transport)
    alice = await Client.register(MemoryStore(), server_url=SERVER, username="alice", clock=clock, transport=flaky)
    bob = await make_user("bob")
    try:
        room = await chat(alice, bob)
        flaky.down = True
        created = await alice.backup.create()
        assert created.recovery_key is not None and (created.keys, created.pending) == (0, 2)
        flaky.down = False
        await alice.messages.send_text(room, "the next send uploads both keys")
        assert (await alice.backup.status()).keys == 2
    finally:
        await alice.close()


async def test_deleting_the_backup_stops_every_device_uploading(alice: Client, bob: Client, carol: Client) -> None:
    await chat(alice, bob)
    created = await alice.backup.create()
    assert await alice.backup.delete() == created.version
    assert not (await alice.backup.status()).exists
    room = await alice.rooms.create("after", [carol.user_id])
    await alice.messages.send_text(room.room_id, "nothing to back up to")
    assert alice.backup.pending() == []
    again = await alice.backup.create()
    assert again.version == created.version + 1 and again.keys == 3


async def test_a_new_backup_over_an_existing_one_needs_replace(
    alice: Client, bob: Client, clock: FakeClock, lying: LyingServer
) -> None:
    """The old recovery key stops working when a backup is replaced: never silently."""
    await chat(alice, bob)
    created = await alice.backup.create()
    with pytest.raises(TokenIMError) as err:
        await alice.backup.create()
    assert err.value.code is ErrorCode.BACKUP_EXISTS
    assert f"version {created.version}" in err.value.message and "--replace" in err.value.message
    assert "stops working" in err.value.message
    second = await new_device(alice, clock, lying)
    try:  # nothing changed: the recovery key written down still restores
        assert (await second.backup.restore(recovery_key=created.recovery_key)).version == created.version
        replaced = await alice.backup.create(replace=True)
        assert replaced.version == created.version + 1
    finally:
        await second.close()
