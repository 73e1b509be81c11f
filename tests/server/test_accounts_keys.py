"""Accounts, invites, tokens and keys at the service and HTTP level, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import FAST_KDF, PASSPHRASE, PG_URL, MakeUser
from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import TokenIMError
from tokenim.core.limits import REFRESH_TOKEN_TTL_MS
from tokenim.protocol.keys import parse_device_keys, parse_one_time_keys, verify_one_time_key
from tokenim.server.app import build_app, build_services
from tokenim.server.config import ServerConfig
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.storage.database import Database


def _auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.account.access_token()}"}


async def test_invite_mode_bootstrap_admin_and_invites(database: Database, clock: FakeClock, tmp_path: Path) -> None:
    config = ServerConfig(registration=RegistrationMode.INVITE, server_name="tokenim.test")
    services = build_services(config, database, clock)
    transport = httpx.ASGITransport(app=build_app(config, database, clock, services))

    async def register(name: str, invite: str | None) -> Client:
        return await Client.register(
            tmp_path / name,
            PASSPHRASE,
            server_url="http://t",
            username=name,
            clock=clock,
            kdf=FAST_KDF,
            invite=invite,
            transport=transport,
        )

    with pytest.raises(TokenIMError) as err:
        await register("early", None)
    assert err.value.code.value == "invite_required"
    assert not (tmp_path / "early").exists()  # a refused registration leaves no profile behind

    first = await services.accounts.do_bootstrap_invite(60_000)
    second = await services.accounts.do_bootstrap_invite(60_000)
    assert first and second and first.code != second.code
    with pytest.raises(TokenIMError) as err:
        await register("old", first.code)  # only the newest bootstrap invite works
    assert err.value.code.value == "invite_invalid"
    admin = await register("admin", second.code)
    assert (await admin.account.whoami()).is_admin
    assert await services.accounts.do_bootstrap_invite(60_000) is None  # never again once someone exists

    invite = await admin.admin.create_invite(3600)
    bob = await register("bob", invite.code)
    assert not (await bob.account.whoami()).is_admin
    with pytest.raises(TokenIMError) as err:
        await register("carol", invite.code)
    assert err.value.code.value == "invite_invalid" and "already been used" in err.value.message
    with pytest.raises(TokenIMError) as err:
        await bob.admin.create_invite(3600)
    assert err.value.code.value == "forbidden"
    late = await admin.admin.create_invite(60)
    clock.advance(seconds=61)
    with pytest.raises(TokenIMError) as err:
        await register("dave", late.code)
    assert "expired" in err.value.message

    async with database.read() as tx:
        stored = [r[0] for r in await tx.execute(text("SELECT code_hash FROM invites"))]
        events = [r[0] for r in await tx.execute(text("SELECT event FROM audit_log ORDER BY id"))]
    assert hashlib.sha256(invite.code.encode()).hexdigest() in stored and invite.code not in stored
    assert {"invite.bootstrap", "account.registered", "login", "invite.created"} <= set(events)
    await admin.close()
    await bob.close()


async def test_tokens_refresh_logout_device_removal_and_hashing(
    http: httpx.AsyncClient, alice: Client, clock: FakeClock, database: Database
) -> None:
    old_access, old_refresh = alice.account.access_token(), insides(alice).store.get_secret("refresh_token")
    assert old_refresh is not None
    await alice.account.refresh()
    assert (await http.get("/v1/whoami", headers={"Authorization": f"Bearer {old_access}"})).status_code == 401
    reuse = await http.post("/v1/token/refresh", json={"refresh_token": old_refresh.decode()})
    assert reuse.status_code == 401 and reuse.json()["error"]["code"] == "unauthorized"
    assert (await http.get("/v1/whoami", headers=_auth(alice))).status_code == 200

    async with database.read() as tx:
        hashes = [r[0] for r in await tx.execute(text("SELECT token_hash FROM tokens"))]
    token = alice.account.access_token()
    assert hashlib.sha256(token.encode()).hexdigest() in hashes and token not in str(hashes)

    clock.advance(ms=REFRESH_TOKEN_TTL_MS + 1)
    with pytest.raises(TokenIMError) as err:
        await alice.account.refresh()
    assert err.value.code.value == "token_expired"
    await alice.account.login()

    token = alice.account.access_token()
    await alice.account.logout()
    assert (await http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})).status_code == 401

    await alice.account.login()
    token = alice.account.access_token()
    await alice.devices.remove(alice.device_id)
    assert (await http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})).status_code == 401
    with pytest.raises(TokenIMError) as err:
        await alice.account.login()
    assert err.value.code.value == "unknown_device"


async def test_keys_upload_query_claim(alice: Client, bob: Client, http: httpx.AsyncClient) -> None:
    counts = await alice.keys.counts()
    assert counts.one_time_keys == 50 and counts.has_fallback_key
    # Re-sending already published keys is harmless; the same id with another key is a conflict.
    upload = insides(alice).identity.keys_to_upload(0, need_fallback=False)
    ids = list(upload.one_time_keys)[:1]
    again = await http.post(
        "/v1/keys/upload", json={"one_time_keys": {i: upload.one_time_keys[i] for i in ids}}, headers=_auth(alice)
    )
    assert again.status_code == 200
    resp = await http.post("/v1/keys/claim", json={"devices": {alice.user_id: [alice.device_id]}}, headers=_auth(bob))
    claimed = resp.json()["one_time_keys"][alice.user_id][alice.device_id]
    device = parse_device_keys((await bob.keys.query([alice.user_id]))[alice.user_id].devices[alice.device_id].raw)
    otk = parse_one_time_keys({claimed["key_id"]: claimed["key"]}, fallback=False)[0]
    verify_one_time_key(otk, device)

    users = await bob.keys.query([alice.user_id, "@ghost:tokenim.test"])
    assert set(users) == {alice.user_id}
    assert users[alice.user_id].master.public_key == alice.keys.info().master_key


async def test_client_ignores_tampered_key_objects(alice: Client, bob: Client, database: Database) -> None:
    async with database.write() as tx:
        raw = json.loads(
            (await tx.execute(text("SELECT keys_json FROM devices WHERE user_id = :u"), {"u": alice.user_id})).scalar_one()
        )
        raw["created_at"] += 1  # the server relays whatever it holds: the client must notice
        await tx.execute(text("UPDATE devices SET keys_json = :j WHERE user_id = :u"), {"j": json.dumps(raw), "u": alice.user_id})
    users = await bob.keys.query([alice.user_id])
    assert users[alice.user_id].devices == {} and users[alice.user_id].rejected_devices == [alice.device_id]
    async with database.write() as tx:
        raw = json.loads(
            (await tx.execute(text("SELECT key_json FROM master_keys WHERE user_id = :u"), {"u": alice.user_id})).scalar_one()
        )
        raw["created_at"] += 1
        await tx.execute(
            text("UPDATE master_keys SET key_json = :j WHERE user_id = :u"), {"j": json.dumps(raw), "u": alice.user_id}
        )
    assert await bob.keys.query([alice.user_id]) == {}


async def _claim_all(app: Any, claimer: Client, target: Client, n: int) -> list[str]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as h:

        async def one() -> str:
            r = await h.post("/v1/keys/claim", json={"devices": {target.user_id: [target.device_id]}}, headers=_auth(claimer))
            assert r.status_code == 200, r.text
            key = r.json()["one_time_keys"][target.user_id][target.device_id]
            return f"{'F' if key['key'].get('fallback') else 'O'}:{key['key_id']}"

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_concurrent_claims_never_hand_out_a_key_twice(app: Any, make_user: MakeUser) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    got = await _claim_all(app, bob, alice, 70)
    one_time = [k for k in got if k.startswith("O:")]
    assert len(one_time) == 50 and len(set(one_time)) == 50
    assert all(k.startswith("F:") for k in got if k not in one_time)


@pytest.mark.skipif(not PG_URL, reason="TOKENIM_TEST_DATABASE_URL is not set")
async def test_concurrent_claims_from_two_server_processes_on_postgresql(
    database: Database, config: ServerConfig, clock: FakeClock, make_user: MakeUser, app: Any
) -> None:
    if database.is_sqlite:
        pytest.skip("needs PostgreSQL")
    alice, bob = await make_user("alice"), await make_user("bob")
    # A second, independent server on the same database: only the SQL keeps claims atomic.
    other_db = Database(database.url.replace("postgresql+asyncpg", "postgresql"))
    other_app = build_app(config, other_db, clock)
    try:
        results = await asyncio.gather(_claim_all(app, bob, alice, 30), _claim_all(other_app, bob, alice, 30))
    finally:
        await other_db.close()
    one_time = [k for batch in results for k in batch if k.startswith("O:")]
    assert len(one_time) == 50 and len(set(one_time)) == 50


async def test_a_refresh_token_works_once_even_when_raced(http: httpx.AsyncClient, alice: Client) -> None:
    refresh = insides(alice).store.get_secret("refresh_token")
    assert refresh is not None
    results = await asyncio.gather(*(http.post("/v1/token/refresh", json={"refresh_token": refresh.decode()}) for _ in range(8)))
    assert sorted(r.status_code for r in results) == [200] + [401] * 7
