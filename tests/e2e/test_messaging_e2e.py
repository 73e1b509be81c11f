"""Messaging against a real server process on 127.0.0.1: durability under SIGKILL, safe retries,
catching up after being offline, and no plaintext anywhere on the server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import FAST_KDF, PASSPHRASE, PG_URL, _fresh_pg_database
from tests.e2e.conftest import RunningServer, kill_server, start_server, stop_server
from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import SystemClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.server.storage.database import Database

pytestmark = pytest.mark.e2e


async def _register(srv: RunningServer, root: Path, name: str) -> Client:
    return await Client.register(root / name, PASSPHRASE, server_url=srv.url, username=name, clock=SystemClock(), kdf=FAST_KDF)


async def _open(root: Path, name: str) -> Client:
    return await Client.open(root / name, PASSPHRASE, clock=SystemClock())


def _port(srv: RunningServer) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def _kill(srv: RunningServer) -> None:
    kill_server(srv, signal.SIGKILL)


def test_acknowledged_sends_survive_sigkill_and_unacknowledged_retry_is_safe(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = start_server(data, "--registration", "open")

    async def set_up() -> str:
        alice, bob = await _register(srv, tmp_path, "alice"), await _register(srv, tmp_path, "bob")
        room = (await alice.rooms.direct("@bob")).room_id
        await alice.close()
        await bob.close()
        return room

    room = asyncio.run(set_up())
    stop_server(srv)
    # Every commit now takes 100 ms (the server's documented test-only setting, a very slow disk): a server
    # that answered before committing would have acknowledged messages still uncommitted when killed.
    slow_disk = tmp_path / "slow-disk.toml"
    slow_disk.write_text("debug_commit_delay_ms = 100\n")
    srv = start_server(data, "--config", str(slow_disk), port=_port(srv))
    acked: list[str] = []

    async def phase_one() -> None:
        alice = await _open(tmp_path, "alice")

        async def sender(worker: int) -> None:
            for i in range(1000):
                try:
                    acked.append((await alice.messages.send_text(room, f"w{worker} m{i}")).event_id)
                except TokenIMError as err:
                    if err.code is not ErrorCode.SERVER_UNREACHABLE:
                        raise
                    return  # the server was killed: this sender stops; anything else fails the test
                if len(acked) >= 300 and worker == 0:
                    _kill(srv)  # right after an acknowledgement, with others in flight
                    return

        await asyncio.gather(*(sender(w) for w in range(8)))
        await alice.close()

    asyncio.run(phase_one())
    txn = "retry-txn-1"
    assert len(acked) >= 300

    srv = start_server(data, port=_port(srv))
    try:

        async def phase_two() -> dict[str, object]:
            # A send whose answer never comes: prepare it, fire it, and kill the server meanwhile.
            alice = await _open(tmp_path, "alice")
            await alice.messages.share_room_key(room)
            content = insides(alice).machine.encrypt_room_message(room, {"type": "m.text", "body": "the retried one"})
            insides(alice).state.persist()
            token = alice.account.access_token()
            url = f"{srv.url}/v1/rooms/{room}/send/{txn}"
            body = {"type": "m.room.encrypted", "content": content}
            async with httpx.AsyncClient() as http:
                first = asyncio.create_task(http.put(url, json=body, headers={"Authorization": f"Bearer {token}"}))
                await asyncio.sleep(0.002)
                _kill(srv)
                with contextlib.suppress(httpx.TransportError):
                    await first
            await alice.close()
            return content

        content = asyncio.run(phase_two())
        srv = start_server(data, port=_port(srv))

        async def phase_three() -> None:
            alice = await _open(tmp_path, "alice")
            token = alice.account.access_token()
            async with httpx.AsyncClient() as http:
                url = f"{srv.url}/v1/rooms/{room}/send/{txn}"
                body = {"type": "m.room.encrypted", "content": content}
                for _ in range(2):  # the retry, and a retry of the retry
                    resp = await http.put(url, json=body, headers={"Authorization": f"Bearer {token}"})
                    assert resp.status_code == 200, resp.text + "\n".join(srv.output)
            await alice.close()
            bob = await _open(tmp_path, "bob")
            messages = await bob.messages.sync()
            await bob.close()
            got = [m.id for m in messages]
            assert set(acked) <= set(got), "an acknowledged message was lost"
            assert len(got) == len(set(got)), "a message arrived twice"
            assert [m.body for m in messages].count("the retried one") == 1
            assert all(m.warning is None and m.verified for m in messages)

        asyncio.run(phase_three())
    finally:
        stop_server(srv)


def test_offline_device_catches_up_on_1000_messages_in_order_exactly_once(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "--registration", "open")
    try:

        async def scenario() -> None:
            alice, bob = await _register(srv, tmp_path, "alice"), await _register(srv, tmp_path, "bob")
            room = (await alice.rooms.create("busy", ["@bob"])).room_id
            await bob.rooms.join(room)
            # Bob goes offline while 1,000 messages arrive.
            sent = [(await alice.messages.send_text(room, f"n{i}")).event_id for i in range(1000)]

            async def collect(n: int, ready: asyncio.Event | None = None) -> list[str]:
                got: list[str] = []
                async for message in bob.messages.listen(ready=ready):
                    assert message.warning is None, message.warning
                    got.append(message.id)
                    if len(got) == n:
                        break
                return got

            got = await asyncio.wait_for(collect(1000), 60)
            assert got == sent
            # Live delivery after catching up; a reconnect repeats nothing.
            ready = asyncio.Event()
            live = asyncio.create_task(collect(1, ready))
            await asyncio.wait_for(ready.wait(), 20)  # caught up and live: the next message arrives live
            last = (await alice.messages.send_text(room, "live")).event_id
            assert await asyncio.wait_for(live, 20) == [last]
            assert await bob.messages.sync() == []
            await alice.close()
            await bob.close()

        asyncio.run(scenario())
    finally:
        stop_server(srv)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_plaintext_on_the_server(tmp_path: Path, backend: str) -> None:
    if backend == "postgresql" and not PG_URL:
        pytest.skip("TOKENIM_TEST_DATABASE_URL is not set")
    marker = "ZEBRA-7f3a9c-MARKER"
    extra = ["--registration", "open", "--log-level", "debug"]
    if backend == "postgresql":
        extra += ["--database", asyncio.run(_fresh_pg_database())]
    data = tmp_path / "data"
    srv = start_server(data, *extra)
    secret_file = tmp_path / f"{marker}.txt"
    secret_file.write_bytes((marker + "\n").encode() * 5000)
    try:

        async def scenario() -> None:
            alice, bob = await _register(srv, tmp_path, "alice"), await _register(srv, tmp_path, "bob")
            room = (await alice.rooms.direct("@bob")).room_id
            group = (await alice.rooms.create("plans", ["@bob"])).room_id
            await bob.rooms.join(group)
            for target in (room, group):
                await alice.messages.send_text(target, f"the password is {marker}")
                await bob.messages.send_text(target, f"{marker} received")
            sent = await alice.files.send(group, secret_file)
            msgs = await bob.messages.sync()
            assert sum(marker in (m.body or "") for m in msgs) == 5  # four texts and the file (named after the marker)
            out = tmp_path / "downloaded"
            await bob.files.download(sent.event_id, out)
            assert out.read_bytes() == secret_file.read_bytes()
            await alice.close()
            await bob.close()

        asyncio.run(scenario())
    finally:
        log = stop_server(srv)
    assert marker not in log
    for path in data.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), f"plaintext found in {path}"
    if backend == "postgresql":
        dumped = asyncio.run(_dump_postgres(extra[-1]))
        assert "alice" in dumped and marker not in dumped


async def _dump_postgres(url: str) -> str:
    """Every row of every table, as text."""
    db = Database(url)
    rows = []
    async with db.engine.connect() as conn:
        tables = (await conn.execute(text("select tablename from pg_tables where schemaname='public'"))).scalars().all()
        for table in tables:
            rows.extend(repr(tuple(row)) for row in await conn.execute(text(f'select * from "{table}"')))
    await db.close()
    return "\n".join(rows)
