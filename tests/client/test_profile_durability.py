"""The profile holds ratchet state: a Megolm index that left the device must never be used again,
even when the process dies right after sending and the profile is reopened from disk."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import vodozemac

from tests.conftest import FAST_KDF, PASSPHRASE, MakeUser
from tests.support import insides
from tokenim.client import Client
from tokenim.client.store import ProfileStore
from tokenim.core.clock import FakeClock
from tokenim.protocol.api import HistoryResponse
from tokenim.protocol.events import ENCRYPTED


class Crash(BaseException):
    """Stands for the process being killed: nothing after it runs, nothing is closed cleanly."""


class CrashAfterSend(httpx.AsyncBaseTransport):
    """Delivers requests to the server; once armed, the process 'dies' right after a room message is delivered."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.armed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.armed and request.method == "PUT" and "/send/" in request.url.path:
            await response.aread()
            raise Crash
        return response


def test_profile_database_is_fully_synchronous(tmp_path: Path) -> None:
    """WAL with synchronous=NORMAL can lose the last commits on power loss; the ratchet state must not be lost."""
    store = ProfileStore.create(tmp_path / "p", PASSPHRASE, FAST_KDF)
    try:
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()
    store = ProfileStore.open(tmp_path / "p", PASSPHRASE)
    try:
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        store.close()


async def _indexes(client: Client, room_id: str) -> list[int]:
    page = await insides(client).transport.request("GET", f"/v1/rooms/{room_id}/history?limit=100", HistoryResponse)
    events = [e for e in reversed(page.events) if e["type"] == ENCRYPTED]
    return [vodozemac.MegolmMessage.from_base64(e["content"]["ciphertext"]).message_index() for e in events]


@pytest.mark.parametrize("crash_on", [0, 1])
async def test_crash_after_send_never_reuses_an_index(
    make_user: MakeUser, transport: httpx.ASGITransport, clock: FakeClock, tmp_path: Path, crash_on: int
) -> None:
    bob = await make_user("bob")
    crashing = CrashAfterSend(transport)
    alice = await Client.register(
        tmp_path / "alice",
        PASSPHRASE,
        server_url="http://tokenim.test",
        username="alice",
        clock=clock,
        kdf=FAST_KDF,
        transport=crashing,
    )
    room = (await alice.rooms.direct("@bob")).room_id
    for i in range(crash_on):  # crash on the first message of a new session, or on a later one
        await alice.messages.send_text(room, f"before {i}")
    crashing.armed = True
    with pytest.raises(Crash):
        await alice.messages.send_text(room, "the last words")
    # Killed: no close, no checkpoint. Only the lock goes with the process; the open connection is abandoned.
    abandoned = insides(alice).store._conn
    os.close(insides(alice).store._lock)
    insides(alice).store._lock = -1

    reopened = await Client.open(tmp_path / "alice", PASSPHRASE, clock=clock, transport=transport)
    try:
        await reopened.messages.send_text(room, "after the crash")
        indexes = await _indexes(reopened, room)
        assert len(indexes) == crash_on + 2
        assert len(set(indexes)) == len(indexes), f"a Megolm index was used twice: {indexes}"
        got = await bob.messages.sync()
        assert [m.body for m in got] == [*(f"before {i}" for i in range(crash_on)), "the last words", "after the crash"]
        assert all(m.warning is None for m in got)
    finally:
        await reopened.close()
        await insides(alice).transport.http.aclose()
        abandoned.close()
