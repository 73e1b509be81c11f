"""The audit log is a hash chain: verification walks all of it and names the entry where a row was changed,
removed or inserted behind the server's back (edited here directly in the database); concurrent
transactions extend one chain; the migration chains the rows stored before it; only admins reach the
admin routes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from tests.identity_kit import Account, register
from tokenim.core.clock import FakeClock
from tokenim.protocol.audit import GENESIS_HASH, audit_entry_hash
from tokenim.server.services.audit import Auditor
from tokenim.server.storage.audit import AuditStore
from tokenim.server.storage.database import MIGRATIONS_DIR, Database
from tokenim.server.storage.tables import audit_chain, audit_log


@pytest.fixture
async def admin(http: httpx.AsyncClient) -> Account:
    return await register(http, "alice")  # the first account of an open server is its admin


@pytest.fixture
async def bob(http: httpx.AsyncClient, admin: Account) -> Account:
    return await register(http, "bob")


async def verify(http: httpx.AsyncClient, admin: Account) -> dict[str, Any]:
    resp = await http.get("/v1/admin/audit/verify", headers=admin.auth())
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def chain_rows(database: Database) -> list[Any]:
    async with database.read() as tx:
        return list(await tx.execute(select(audit_log).order_by(audit_log.c.seq)))


def rehash(row: Any, **changes: Any) -> str:
    """What someone who knows the hash definition would write for `row` changed by `changes`."""
    fields = {
        "seq": row.seq,
        "ts": row.ts,
        "event": row.event,
        "user_id": row.user_id,
        "device_id": row.device_id,
        "ip": row.ip,
        "user_agent": row.user_agent,
        "details": json.loads(row.details_json),
        "prev_hash": row.prev_hash,
    }
    return audit_entry_hash(**(fields | changes))


def problems(report: dict[str, Any]) -> list[tuple[int | None, str]]:
    return [(p["entry"], p["kind"]) for p in report["problems"]]


async def test_an_untouched_log_verifies_and_every_entry_links_to_the_one_before(
    http: httpx.AsyncClient, admin: Account, bob: Account, database: Database
) -> None:
    await bob.add_device()
    report = await verify(http, admin)
    rows = await chain_rows(database)
    assert report["ok"] and report["problems"] == [] and not report["truncated"]
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert report["entries"] == len(rows) - 1 >= 5  # the last one records this verification
    assert rows[0].prev_hash == GENESIS_HASH
    for before, row in zip([None, *rows], rows, strict=False):
        assert row.prev_hash == (before.hash if before else GENESIS_HASH)
        assert row.hash == rehash(row)  # the documented definition, recomputed from the stored row
    assert report["head"] == {"seq": rows[-2].seq, "hash": rows[-2].hash}
    # The check itself is on the record.
    assert (await chain_rows(database))[-1].event == "admin.audit_verified"


async def test_a_row_edited_in_the_database_is_named_as_changed(
    http: httpx.AsyncClient, admin: Account, bob: Account, database: Database
) -> None:
    rows = await chain_rows(database)
    target = rows[2]
    async with database.write() as tx:
        await tx.execute(update(audit_log).where(audit_log.c.id == target.id).values(details_json='{"is_admin": true}'))
    report = await verify(http, admin)
    assert not report["ok"]
    assert problems(report) == [(target.seq, "changed")]
    assert report["problems"][0]["row_id"] == target.id
    assert f"Entry {target.seq}" in report["problems"][0]["message"]


async def test_a_row_edited_with_its_hash_recomputed_is_named_as_changed(
    http: httpx.AsyncClient, admin: Account, bob: Account, database: Database
) -> None:
    rows = await chain_rows(database)
    target = rows[1]
    forged = rehash(target, ip="192.0.2.66")
    async with database.write() as tx:
        await tx.execute(update(audit_log).where(audit_log.c.id == target.id).values(ip="192.0.2.66", hash=forged))
    report = await verify(http, admin)
    assert problems(report) == [(target.seq, "changed")]
    assert "hash recomputed" in report["problems"][0]["message"]


async def test_a_row_deleted_from_the_database_is_named_as_removed(
    http: httpx.AsyncClient, admin: Account, bob: Account, database: Database
) -> None:
    rows = await chain_rows(database)
    async with database.write() as tx:
        await tx.execute(delete(audit_log).where(audit_log.c.id.in_([rows[1].id, rows[2].id])))
    report = await verify(http, admin)
    assert problems(report) == [(rows[1].seq, "removed")]
    assert report["problems"][0]["count"] == 2
    assert report["problems"][0]["message"] == f"Entries {rows[1].seq} to {rows[2].seq} were removed."


async def test_the_newest_rows_deleted_are_named_as_removed(
    http: httpx.AsyncClient, admin: Account, bob: Account, database: Database
) -> None:
    rows = await chain_rows(database)
    async with database.write() as tx:
        await tx.execute(delete(audit_log).where(audit_log.c.id == rows[-1].id))
    report = await verify(http, admin)
    assert problems(report) == [(rows[-1].seq, "removed")]
    assert "(the newest)" in report["problems"][0]["message"]


async def test_rows_inserted_into_the_database_are_named_as_inserted(
    http: httpx.AsyncClient, admin: Account, bob: Account, database: Database
) -> None:
    rows = await chain_rows(database)
    last = rows[-1]
    fake = {"ts": last.ts, "event": "login", "user_id": bob.user_id, "device_id": bob.first, "details_json": "{}"}
    async with database.write() as tx:
        # Without a place in the chain, as someone unaware of it would insert a row...
        loose = (await tx.execute(insert(audit_log).values(**fake))).inserted_primary_key[0]
        # ...and chained properly onto the last entry, by someone who read the hash definition (but not the head row).
        seq = last.seq + 1
        digest = audit_entry_hash(
            seq=seq, ts=last.ts, event="login", user_id=bob.user_id, device_id=bob.first, ip=None, user_agent=None,
            details={}, prev_hash=last.hash,
        )  # fmt: skip
        forged = insert(audit_log).values(**fake, seq=seq, prev_hash=last.hash, hash=digest)
        chained = (await tx.execute(forged)).inserted_primary_key[0]
    report = await verify(http, admin)
    assert problems(report) == [(seq, "inserted"), (None, "inserted")]
    assert [p["row_id"] for p in report["problems"]] == [chained, loose]
    assert "after the last entry the server wrote" in report["problems"][0]["message"]
    # Rows written by the server after the forged one are still checked, and the two are still named.
    await bob.add_device()
    assert problems(await verify(http, admin))[:2] == [(seq, "inserted"), (None, "inserted")]


async def test_an_entry_replaced_by_a_self_consistent_forgery_is_named_as_changed(
    http: httpx.AsyncClient, admin: Account, bob: Account, database: Database
) -> None:
    rows = await chain_rows(database)
    target = rows[2]
    forged_prev = "f" * 64
    async with database.write() as tx:
        await tx.execute(
            update(audit_log)
            .where(audit_log.c.id == target.id)
            .values(prev_hash=forged_prev, hash=rehash(target, prev_hash=forged_prev))
        )
    report = await verify(http, admin)
    assert problems(report) == [(target.seq, "changed")]
    assert "replaced" in report["problems"][0]["message"]


async def test_a_missing_head_row_is_reported(http: httpx.AsyncClient, admin: Account, database: Database) -> None:
    async with database.write() as tx:
        await tx.execute(delete(audit_chain))
    report = await verify(http, admin)
    assert problems(report) == [(None, "removed")]


async def test_an_entry_rolled_back_with_its_savepoint_leaves_no_gap(database: Database, clock: FakeClock) -> None:
    auditor = Auditor(AuditStore(), clock)
    async with database.write() as tx:
        await auditor.record(tx, "kept.first", None, None)
        with pytest.raises(RuntimeError):
            async with tx.savepoint():
                await auditor.record(tx, "rolled.back", None, None)
                raise RuntimeError
        await auditor.record(tx, "kept.second", None, None)
    rows = await chain_rows(database)
    assert [(r.seq, r.event) for r in rows] == [(1, "kept.first"), (2, "kept.second")]
    assert rows[1].prev_hash == rows[0].hash
    async with database.read() as tx:
        head = (await tx.execute(select(audit_chain))).one()
    assert (head.seq, head.hash) == (2, rows[1].hash)


async def test_concurrent_transactions_extend_one_chain(database: Database, clock: FakeClock) -> None:
    """Many transactions open at once, each appending two entries: on PostgreSQL they run concurrently, and
    only the head row's lock keeps them from chaining onto the same entry."""
    auditor = Auditor(AuditStore(), clock)
    started = asyncio.Event()

    async def append(n: int) -> None:
        async with database.write() as tx:
            await auditor.record(tx, "test.first", None, None, n=n)
            await started.wait()  # every transaction is open before any commits
            await auditor.record(tx, "test.second", None, None, n=n)

    tasks = [asyncio.create_task(append(n)) for n in range(12 if database.is_sqlite else 24)]
    await asyncio.sleep(0)
    started.set()
    await asyncio.gather(*tasks)
    rows = await chain_rows(database)
    assert [r.seq for r in rows] == list(range(1, len(tasks) * 2 + 1))
    prev = GENESIS_HASH
    for row in rows:
        assert (row.prev_hash, row.hash) == (prev, rehash(row))
        prev = row.hash
    async with database.read() as tx:
        head = (await tx.execute(select(audit_chain))).one()
    assert (head.seq, head.hash) == (rows[-1].seq, rows[-1].hash)
    # A transaction's entries stay together, in the order they were recorded.
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert (first.event, second.event) == ("test.first", "test.second")
        assert json.loads(first.details_json) == json.loads(second.details_json)


def _alembic(connection: Connection, verb: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    getattr(command, verb)(cfg, revision)


async def test_the_migration_chains_the_rows_stored_before_it(
    http: httpx.AsyncClient, admin: Account, bob: Account, database: Database
) -> None:
    before = [(r.id, r.ts, r.event, r.user_id, r.device_id, r.details_json) for r in await chain_rows(database)]
    async with database.write() as tx:
        await tx.run_sync(lambda conn: _alembic(conn, "downgrade", "0008"))
    async with database.write() as tx:
        await tx.run_sync(lambda conn: _alembic(conn, "upgrade", "head"))
    rows = await chain_rows(database)
    assert [(r.id, r.ts, r.event, r.user_id, r.device_id, r.details_json) for r in rows] == before
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    report = await verify(http, admin)
    assert report["ok"], report
    assert report["entries"] == len(before)


async def test_every_admin_route_refuses_anyone_but_an_admin(app: FastAPI, http: httpx.AsyncClient, bob: Account) -> None:
    paths = app.openapi()["paths"]
    routes = [(m.upper(), p) for p, ops in paths.items() if p.startswith("/v1/admin") for m in ops]
    assert {p for _, p in routes} >= {"/v1/admin/invites", "/v1/admin/audit", "/v1/admin/audit/verify"}
    for method, path in routes:
        body = {"json": {}} if method != "GET" else {}
        resp = await http.request(method, path, headers=bob.auth(), **body)  # type: ignore[arg-type]
        assert (resp.status_code, resp.json()["error"]["code"]) == (403, "forbidden"), (method, path)
        resp = await http.request(method, path, **body)  # type: ignore[arg-type]
        assert resp.status_code == 401, (method, path)


async def test_the_admin_lists_the_log_by_user_and_pages_back(
    http: httpx.AsyncClient, admin: Account, bob: Account, database: Database
) -> None:
    resp = await http.get(f"/v1/admin/audit?limit=2&user={bob.user_id.replace(':', '%3A')}", headers=admin.auth())
    page = resp.json()
    assert resp.status_code == 200, resp.text
    assert [e["event"] for e in page["events"]] == ["login", "account.registered"]
    assert all(e["user_id"] == bob.user_id for e in page["events"])
    assert page["events"][0]["seq"] > page["events"][1]["seq"] and page["events"][0]["hash"]
    assert page["next_before"] is None
    everyone = (await http.get("/v1/admin/audit?limit=1000", headers=admin.auth())).json()["events"]
    assert {e["user_id"] for e in everyone} >= {admin.user_id, bob.user_id}
    older = (await http.get(f"/v1/admin/audit?limit=1&before={everyone[-1]['id'] + 1}", headers=admin.auth())).json()
    assert older["events"][0]["id"] == everyone[-1]["id"] and older["next_before"] is None
    # Reading the log is itself an admin action on the record.
    assert (await chain_rows(database))[-1].event == "admin.audit_listed"
