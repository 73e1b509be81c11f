"""The key backup routes on their own: versions, compare-and-swap uploads, limits, every error code, the
audit records, and one user's backup out of another's reach (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.support import client_auth
from tokenim.client import Client
from tokenim.protocol.backup import BACKUP_ALGORITHM, MAX_ENTRIES_PER_UPLOAD, MAX_ENTRY_CHARS
from tokenim.server.services import backup as backup_service
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import audit_log

METADATA = {"algorithm": BACKUP_ALGORITHM, "key_check": "K" * 43, "kdf": None}


def manifest(version: int, counter: int, count: int) -> dict[str, Any]:
    return {"version": version, "counter": counter, "count": count, "digest": "D" * 43, "mac": "M" * 43}


def entries(*names: str) -> list[dict[str, str]]:
    return [{"entry_id": n * 43, "ciphertext": "Q0lQSEVS"} for n in names]


def upload(expected: int, m: dict[str, Any], items: list[dict[str, str]]) -> dict[str, Any]:
    return {"expected_counter": expected, "manifest": m, "entries": items}


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def audit_events(database: Database, user_id: str) -> list[str]:
    async with database.read() as tx:
        rows = await tx.execute(select(audit_log.c.event).where(audit_log.c.user_id == user_id).order_by(audit_log.c.id))
        return [r.event for r in rows if r.event.startswith("backup.")]


async def test_without_a_backup_every_route_says_no_backup(http: httpx.AsyncClient, alice: Client) -> None:
    auth = client_auth(alice)
    for resp in [
        await http.get("/v1/backup", headers=auth),
        await http.put("/v1/backup/1/keys", json=upload(0, manifest(1, 1, 0), []), headers=auth),
        await http.get("/v1/backup/1/keys", headers=auth),
        await http.delete("/v1/backup/1", headers=auth),
    ]:
        assert (resp.status_code, error_code(resp)) == (404, "no_backup")


async def test_versions_grow_and_an_old_one_is_outdated(http: httpx.AsyncClient, alice: Client, database: Database) -> None:
    auth = client_auth(alice)
    first = await http.post("/v1/backup", json={"metadata": METADATA}, headers=auth)
    assert first.json() == {"version": 1}
    ok = await http.put("/v1/backup/1/keys", json=upload(0, manifest(1, 1, 2), entries("A", "B")), headers=auth)
    assert ok.json() == {"counter": 1, "count": 2}
    assert (await http.post("/v1/backup", json={"metadata": METADATA}, headers=auth)).json() == {"version": 2}

    info = (await http.get("/v1/backup", headers=auth)).json()
    assert (info["version"], info["manifest"], info["count"]) == (2, None, 0)  # the old entries went with version 1
    for resp in [
        await http.put("/v1/backup/1/keys", json=upload(1, manifest(1, 2, 3), entries("C")), headers=auth),
        await http.get("/v1/backup/1/keys", headers=auth),
        await http.delete("/v1/backup/1", headers=auth),
    ]:
        assert (resp.status_code, error_code(resp)) == (409, "backup_outdated")
        assert resp.json()["error"]["details"] == {"current_version": 2}

    assert (await http.delete("/v1/backup/2", headers=auth)).json() == {"ok": True}
    assert error_code(await http.get("/v1/backup", headers=auth)) == "no_backup"
    assert (await http.post("/v1/backup", json={"metadata": METADATA}, headers=auth)).json() == {"version": 3}
    await http.get("/v1/backup/3/keys", headers=auth)
    assert await audit_events(database, alice.user_id) == [
        "backup.created",
        "backup.created",
        "backup.deleted",
        "backup.created",
        "backup.downloaded",
    ]


async def test_uploads_are_compare_and_swap_and_a_refused_one_stores_nothing(http: httpx.AsyncClient, alice: Client) -> None:
    auth = client_auth(alice)
    await http.post("/v1/backup", json={"metadata": METADATA}, headers=auth)
    assert (await http.put("/v1/backup/1/keys", json=upload(0, manifest(1, 1, 1), entries("A")), headers=auth)).status_code == 200

    stale = await http.put("/v1/backup/1/keys", json=upload(0, manifest(1, 1, 2), entries("B")), headers=auth)
    assert (stale.status_code, error_code(stale)) == (409, "backup_conflict")
    assert stale.json()["error"]["details"] == {"current_counter": 1}

    refused = [
        upload(1, manifest(1, 3, 2), entries("B")),  # counter must be expected + 1
        upload(1, manifest(2, 2, 2), entries("B")),  # another version's manifest
        upload(1, manifest(1, 2, 3), entries("B", "B")),  # the same id twice
        upload(1, manifest(1, 2, 5), entries("B")),  # the count is not what the backup would hold
        upload(1, manifest(1, 2, 2), [{"entry_id": "B" * 43, "ciphertext": "Q" * (MAX_ENTRY_CHARS + 1)}]),
        upload(1, manifest(1, 2, 2), [{"entry_id": "B" * 42, "ciphertext": "QQ"}]),
        upload(1, manifest(1, 2, 2), [{"entry_id": "B" * 43, "ciphertext": "not base64!"}]),
        upload(
            1, manifest(1, 2, 60), entries(*[chr(65 + i % 26) + chr(97 + i // 26) for i in range(MAX_ENTRIES_PER_UPLOAD + 1)])
        ),
    ]
    for body in refused:
        resp = await http.put("/v1/backup/1/keys", json=body, headers=auth)
        assert (resp.status_code, error_code(resp)) == (400, "invalid_request"), body
    info = (await http.get("/v1/backup", headers=auth)).json()
    assert (info["manifest"]["counter"], info["count"]) == (1, 1)

    replaced = await http.put("/v1/backup/1/keys", json=upload(1, manifest(1, 2, 2), entries("A", "B")), headers=auth)
    assert replaced.json() == {"counter": 2, "count": 2}  # A replaced by id, B added
    got = (await http.get("/v1/backup/1/keys", headers=auth)).json()
    assert got["manifest"]["counter"] == 2 and [e["entry_id"][0] for e in got["entries"]] == ["A", "B"]


async def test_a_backup_holds_at_most_the_limit(http: httpx.AsyncClient, alice: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_service, "MAX_BACKUP_ENTRIES", 2)
    auth = client_auth(alice)
    await http.post("/v1/backup", json={"metadata": METADATA}, headers=auth)
    await http.put("/v1/backup/1/keys", json=upload(0, manifest(1, 1, 2), entries("A", "B")), headers=auth)
    over = await http.put("/v1/backup/1/keys", json=upload(1, manifest(1, 2, 3), entries("C")), headers=auth)
    assert (over.status_code, error_code(over)) == (400, "too_many_keys")
    assert (await http.get("/v1/backup", headers=auth)).json()["count"] == 2


async def test_one_users_backup_is_out_of_anothers_reach(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    await http.post("/v1/backup", json={"metadata": METADATA}, headers=client_auth(alice))
    await http.put("/v1/backup/1/keys", json=upload(0, manifest(1, 1, 1), entries("A")), headers=client_auth(alice))
    for resp in [
        await http.get("/v1/backup", headers=client_auth(bob)),
        await http.get("/v1/backup/1/keys", headers=client_auth(bob)),
        await http.delete("/v1/backup/1", headers=client_auth(bob)),
    ]:
        assert error_code(resp) == "no_backup"
    assert (await http.get("/v1/backup", headers=client_auth(alice))).json()["count"] == 1
    assert (await http.get("/v1/backup")).status_code == 401


async def test_metadata_is_strict(http: httpx.AsyncClient, alice: Client) -> None:
    auth = client_auth(alice)
    kdf = {"algorithm": "argon2id", "salt": "S" * 22, "time_cost": 3, "memory_kib": 65536, "parallelism": 4}
    assert (await http.post("/v1/backup", json={"metadata": METADATA | {"kdf": kdf}}, headers=auth)).status_code == 200
    for bad in [
        METADATA | {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2"},
        METADATA | {"key_check": "short"},
        METADATA | {"kdf": kdf | {"memory_kib": 1 << 40}},
        METADATA | {"kdf": kdf | {"salt": "S"}},
        METADATA | {"extra": True},
    ]:
        resp = await http.post("/v1/backup", json={"metadata": bad}, headers=auth)
        assert (resp.status_code, error_code(resp)) == (400, "invalid_request"), bad
