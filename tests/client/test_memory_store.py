"""The SDK on an in-memory store (bots, tests): a real send and receive between two clients, a bot that is
closed and opened again from the same store, and one save per operation (a message, a synced page), made
before anything leaves the device."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import FAST_KDF, PASSPHRASE
from tokenim.client import Client, MemoryStore, ProfileStore, Store
from tokenim.core.clock import FakeClock

SERVER = "http://tokenim.test"


class WatchSends(httpx.AsyncBaseTransport):
    """Passes requests to the server; when a room message leaves, notes what the store held at that moment."""

    def __init__(self, inner: httpx.AsyncBaseTransport, store: MemoryStore) -> None:
        self.inner = inner
        self.store = store
        self.counts_at_send: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/send/" in request.url.path:
            outbound = self.store.all_records().get("outbound", {})
            self.counts_at_send.append(sum(json.loads(raw)["message_count"] for raw in outbound.values()))
        return await self.inner.handle_async_request(request)


async def _bot(name: str, store: MemoryStore, transport: httpx.AsyncBaseTransport, clock: FakeClock) -> Client:
    return await Client.register(store, server_url=SERVER, username=name, clock=clock, transport=transport)


async def test_two_clients_on_memory_stores_talk(transport: httpx.ASGITransport, clock: FakeClock) -> None:
    a_store, b_store = MemoryStore(), MemoryStore()
    assert isinstance(a_store, Store)
    async with await _bot("alice", a_store, transport, clock) as alice, await _bot("bob", b_store, transport, clock) as bob:
        room = (await alice.rooms.direct("@bob")).room_id
        sent = await alice.messages.send_text(room, "hello from memory")
        assert sent.excluded == []
        got = await bob.messages.sync()
        assert [(m.sender, m.body, m.verified) for m in got] == [(alice.user_id, "hello from memory", True)]
        await bob.messages.send_text(room, "and back")
        assert [m.body for m in await alice.messages.sync()] == ["hello from memory", "and back"]
        assert [m.body for m in await alice.messages.history(room)] == ["hello from memory", "and back"]
    # Nothing was written to disk, and what is kept is only in the store objects.
    assert b_store.get_meta("user_id") == bob.user_id
    assert b_store.get_secret("master_seed") is not None


async def test_a_bot_reopened_from_its_store_keeps_its_keys_and_sessions(
    transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    store = MemoryStore()
    bot = await _bot("bot", store, transport, clock)
    bob = await _bot("bob", MemoryStore(), transport, clock)
    room = (await bot.rooms.direct("@bob")).room_id
    await bot.messages.send_text(room, "one")
    await bot.close()
    async with await Client.open(store, clock=clock, transport=transport) as again:
        assert again.user_id == bot.user_id and again.device_id == bot.device_id
        await again.messages.send_text(room, "two")  # same outbound session: bob needs no new key
    assert [m.body for m in await bob.messages.sync()] == ["one", "two"]
    assert [m.body for m in await bob.messages.history(room)] == ["one", "two"]
    await bob.close()


async def test_a_message_is_saved_once_and_before_it_leaves(transport: httpx.ASGITransport, clock: FakeClock) -> None:
    store = MemoryStore()
    watch = WatchSends(transport, store)
    alice = await _bot("alice", store, watch, clock)
    bob_store = MemoryStore()
    bob = await _bot("bob", bob_store, transport, clock)
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "first")  # shares the room key too
    await bob.messages.sync()
    before = store.saves
    for i in range(3):
        await alice.messages.send_text(room, f"n{i}")
    assert store.saves - before == 3  # one transaction per message: ratchet, send number, shared devices
    # Each message's ratchet advance was in the store before the message left.
    assert watch.counts_at_send == [1, 2, 3, 4]
    before = bob_store.saves
    assert [m.body for m in await bob.messages.sync()] == ["n0", "n1", "n2"]
    assert bob_store.saves - before == 1  # a synced page: keys, seen indexes and the position together
    await alice.close()
    await bob.close()


async def test_a_profile_on_disk_and_a_memory_store_are_both_stores(tmp_path: Path) -> None:
    profile = ProfileStore.create(tmp_path / "p", PASSPHRASE, FAST_KDF)
    try:
        assert isinstance(profile, Store)
    finally:
        profile.close()
