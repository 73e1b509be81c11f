"""The event writer: batching, counters that survive a restart, and isolation of failing jobs."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from tests.conftest import MakeUser
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import TokenIMError
from tokenim.protocol.keys import MEGOLM_ALGORITHM
from tokenim.server.app import build_services
from tokenim.server.config import ServerConfig
from tokenim.server.services.common import Requester
from tokenim.server.storage.database import Database


def _content(sender: Client | None, n: int) -> dict[str, object]:
    """Megolm-shaped content from `sender`'s device (None: from a stranger's device the server doesn't know)."""
    device_id, key = (sender.device_id, sender.keys.info().device_curve25519) if sender else ("NOBODY1", "k")
    return {"algorithm": MEGOLM_ALGORITHM, "ciphertext": f"c{n}", "session_id": "s", "sender_key": key, "device_id": device_id}


async def test_counters_are_stored_so_a_restarted_writer_continues(
    make_user: MakeUser,
    database: Database,
    config: ServerConfig,
    clock: FakeClock,
    app,  # type: ignore[no-untyped-def]
) -> None:
    alice = await make_user("alice")
    await make_user("bob")
    room = (await alice.rooms.direct("@bob")).room_id
    services = app.state.services
    me = Requester(alice.user_id, alice.device_id, "s", False)
    await asyncio.gather(*(services.messages.do_send(me, room, f"a{i}", _content(alice, i)) for i in range(40)))

    async with database.read() as tx:
        stored = (await tx.execute(text("SELECT pos FROM stream_positions"))).scalar_one()
        top = (await tx.execute(text("SELECT max(pos) FROM events"))).scalar_one()
        last_seq = (await tx.execute(text("SELECT last_seq FROM rooms WHERE room_id = :r"), {"r": room})).scalar_one()
        max_seq = (await tx.execute(text("SELECT max(room_seq) FROM events WHERE room_id = :r"), {"r": room})).scalar_one()
    assert stored == top and last_seq == max_seq

    fresh = build_services(config, database, clock)  # a new process on the same database
    sent = await fresh.messages.do_send(me, room, "after-restart", _content(alice, 99))
    assert sent.pos == top + 1 and sent.seq == max_seq + 1
    await fresh.writer.close()


async def test_a_failing_job_does_not_fail_its_batch(make_user: MakeUser, app) -> None:  # type: ignore[no-untyped-def]
    alice = await make_user("alice")
    await make_user("bob")
    room = (await alice.rooms.direct("@bob")).room_id
    services = app.state.services
    me = Requester(alice.user_id, alice.device_id, "s", False)
    stranger = Requester("@nobody:tokenim.test", "NOBODY1", "s", False)
    jobs = [services.messages.do_send(me, room, f"ok{i}", _content(alice, i)) for i in range(10)]
    jobs.insert(5, services.messages.do_send(stranger, room, "bad", _content(None, 0)))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], TokenIMError) and errors[0].code.value == "forbidden"
    seqs = sorted(r.seq for r in results if not isinstance(r, BaseException))
    assert seqs == list(range(seqs[0], seqs[0] + 10))
    # A repeated transaction id in the same batch as new ones returns the original event.
    again = await asyncio.gather(
        services.messages.do_send(me, room, "ok3", _content(alice, 3)),
        services.messages.do_send(me, room, "new", _content(alice, 11)),
    )
    original = {r.event_id for r in results if not isinstance(r, BaseException)}
    assert again[0].event_id in original
    assert again[1].seq == seqs[-1] + 1


async def test_a_refused_job_leaves_its_batch_in_one_commit(make_user: MakeUser, app) -> None:  # type: ignore[no-untyped-def]
    alice = await make_user("alice")
    await make_user("bob")
    room = (await alice.rooms.direct("@bob")).room_id
    group = (await alice.rooms.create("g", [])).room_id
    services = app.state.services
    me = Requester(alice.user_id, alice.device_id, "s", False)
    stranger = Requester("@nobody:tokenim.test", "NOBODY1", "s", False)
    commits = 0
    publish = services.hub.publish_events

    def counting(items):  # type: ignore[no-untyped-def]
        nonlocal commits
        commits += 1
        publish(items)

    services.hub.publish_events = counting
    jobs = [services.messages.do_send(me, room, f"b{i}", _content(alice, i)) for i in range(10)]
    jobs.insert(3, services.messages.do_send(stranger, room, "bad", _content(None, 0)))  # refused in memory
    jobs.insert(7, services.rooms.do_invite(me, group, "@ghost:tokenim.test"))  # refused inside a savepoint
    results = await asyncio.gather(*jobs, return_exceptions=True)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert [type(r) for r in refused] == [TokenIMError, TokenIMError] and commits == 1
    seqs = [r.seq for r in results if not isinstance(r, BaseException) and r is not None]
    assert seqs == list(range(seqs[0], seqs[0] + 10))
