"""A copied or restored profile and the original must never both send with the same ratchet state:
the copy that is behind is refused with `profile_forked` (a per-device send counter the server checks),
and a profile file that moved rotates its outbound sessions before using them."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import FAST_KDF, PASSPHRASE
from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.api import OkResponse, SendResponse
from tokenim.protocol.events import ENCRYPTED


async def _open(path: Path, clock: FakeClock, transport: httpx.ASGITransport) -> Client:
    return await Client.open(path, PASSPHRASE, clock=clock, transport=transport)


async def test_a_copied_profile_is_refused_and_nothing_is_sent_twice(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.ASGITransport, tmp_path: Path
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "one")
    session = insides(alice).machine.rooms.outbound[room].session.session_id
    path = insides(alice).store.path.parent
    await alice.close()
    shutil.copytree(path, tmp_path / "copy")

    original = await _open(path, clock, transport)
    copy = await _open(tmp_path / "copy", clock, transport)
    try:
        # The copy's file is new: its outbound sessions may be the original's too, so they are not used again.
        assert room not in insides(copy).machine.rooms.outbound and (room, "copied") in insides(copy).machine.rooms.rotations
        assert insides(original).machine.rooms.outbound[room].session.session_id == session

        await original.messages.send_text(room, "from the original")
        with pytest.raises(TokenIMError) as err:
            await copy.messages.send_text(room, "from the copy")
        assert err.value.code is ErrorCode.PROFILE_FORKED
        assert "out-of-date copy" in err.value.message
        # It stays refused, however often it tries, so its counter can never overtake the original's.
        for _ in range(3):
            with pytest.raises(TokenIMError) as again:
                await copy.messages.send_text(room, "from the copy")
            assert again.value.code is ErrorCode.PROFILE_FORKED
        await original.messages.send_text(room, "two")
        got = await bob.messages.sync()
        assert [(m.body, m.warning) for m in got] == [("one", None), ("from the original", None), ("two", None)]
        assert await copy.messages.sync() != []  # reading still works from the stale copy
    finally:
        await original.close()
        await copy.close()


async def test_a_backup_restored_in_place_is_refused_before_it_reuses_an_index(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.ASGITransport
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "before the backup")
    path = insides(alice).store.path.parent
    await alice.close()
    backup = {p.name: p.read_bytes() for p in path.iterdir() if p.name.startswith("profile.db")}

    again = await _open(path, clock, transport)
    await again.messages.send_text(room, "after the backup")
    await again.close()
    # Restored in place (same file, same inode): nothing on the client can tell; the server's counter can.
    for p in path.iterdir():
        if p.name.startswith("profile.db") and p.name not in backup:
            p.unlink()
    for name, data in backup.items():
        with (path / name).open("r+b" if (path / name).exists() else "wb") as fh:
            fh.write(data)
            fh.truncate()

    restored = await _open(path, clock, transport)
    try:
        with pytest.raises(TokenIMError) as err:
            await restored.messages.send_text(room, "from the restored copy")
        assert err.value.code is ErrorCode.PROFILE_FORKED
        got = await bob.messages.sync()
        assert [(m.body, m.warning) for m in got] == [("before the backup", None), ("after the backup", None)]
        assert insides(restored).machine.rooms.outbound == {}
    finally:
        await restored.close()


async def test_the_server_refuses_a_used_send_number_but_answers_a_retry(alice: Client, bob: Client) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "sets up the session")
    seq = insides(alice).state.next_send_seq()
    content = insides(alice).machine.encrypt_room_message(room, {"type": "m.text", "body": "x"})
    body = {"type": ENCRYPTED, "content": content, "device_seq": seq}
    first = await insides(alice).transport.request("PUT", f"/v1/rooms/{room}/send/t1", SendResponse, body=body)
    retry = await insides(alice).transport.request("PUT", f"/v1/rooms/{room}/send/t1", SendResponse, body=body)
    assert retry == first  # the same send again (a lost answer): the first result, not a refusal

    for path, payload in [
        (f"/v1/rooms/{room}/send/t2", body),
        ("/v1/to_device", {"type": ENCRYPTED, "messages": {}, "device_seq": seq}),
        ("/v1/to_device", {"type": ENCRYPTED, "messages": {}, "device_seq": seq - 1}),
    ]:
        method = "PUT" if "/send/" in path else "POST"
        with pytest.raises(TokenIMError) as err:
            await insides(alice).transport.request(method, path, OkResponse, body=payload)
        assert err.value.code is ErrorCode.PROFILE_FORKED and err.value.status == 409
        assert err.value.details == {"device_seq": payload["device_seq"], "last_seq": seq}

    # A higher number is accepted; so are sends without one (older clients); other devices count on their own.
    await insides(alice).transport.request(
        "POST", "/v1/to_device", OkResponse, body={"type": ENCRYPTED, "messages": {}, "device_seq": seq + 5}
    )
    await insides(alice).transport.request(
        "PUT", f"/v1/rooms/{room}/send/t3", SendResponse, body={"type": ENCRYPTED, "content": content}
    )
    await insides(bob).transport.request(
        "POST", "/v1/to_device", OkResponse, body={"type": ENCRYPTED, "messages": {}, "device_seq": 1}
    )


class Reordering(httpx.AsyncBaseTransport):
    """Delivers room sends in the reverse of the order they were made (the first one waits longest)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, spread: int) -> None:
        self.inner = inner
        self.spread = spread
        self.made = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/send/" in request.url.path:
            self.made += 1
            await asyncio.sleep(max(0, self.spread - self.made) * 0.004)
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("count", [20, 80])
async def test_concurrent_sends_from_one_device_arriving_out_of_order_are_not_a_fork(
    bob: Client, clock: FakeClock, transport: httpx.ASGITransport, tmp_path: Path, count: int
) -> None:
    """Numbers in flight together may arrive in any order; the client keeps them within the server's window."""
    alice = await Client.register(
        tmp_path / "alice",
        PASSPHRASE,
        server_url="http://tokenim.test",
        username="alice",
        clock=clock,
        kdf=FAST_KDF,
        transport=Reordering(transport, count),
    )
    try:
        room = (await alice.rooms.direct("@bob")).room_id
        await alice.messages.send_text(room, "first")
        sent = await asyncio.gather(*(alice.messages.send_text(room, f"m{i}") for i in range(count)))
        assert len({s.event_id for s in sent}) == count
        got = await bob.messages.sync()
        assert sorted(m.body or "" for m in got) == sorted(["first", *(f"m{i}" for i in range(count))])
        assert all(m.warning is None for m in got)
    finally:
        await alice.close()


async def test_the_server_accepts_numbers_out_of_order_once_each(alice: Client, bob: Client) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "sets up the session")
    base = insides(alice).state.next_send_seq()

    async def to_device(seq: int) -> None:
        await insides(alice).transport.request(
            "POST", "/v1/to_device", OkResponse, body={"type": ENCRYPTED, "messages": {}, "device_seq": seq}
        )

    for seq in (base + 5, base + 3, base + 1, base + 4):  # late ones below the highest: each once
        await to_device(seq)
    for seq in (base + 3, base + 5, base + 1, base - 1):  # used, or below the highest before these
        with pytest.raises(TokenIMError) as err:
            await to_device(seq)
        assert err.value.code is ErrorCode.PROFILE_FORKED
    await to_device(base + 2)
    await to_device(base + 100)
    with pytest.raises(TokenIMError) as too_old:  # further below the highest than the server remembers
        await to_device(base + 100 - 63)
    assert too_old.value.code is ErrorCode.PROFILE_FORKED
    await to_device(base + 100 - 62)
