"""Registration on an invite-only server: the bootstrap invite, admin invites, used and expired codes, taken names, audit."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import FAST_KDF, PASSPHRASE
from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import TokenIMError
from tokenim.core.ids import UserId, new_device_id
from tokenim.core.limits import DEFAULT_INVITE_TTL_MS
from tokenim.crypto.device import DeviceIdentity
from tokenim.server.api.routes import Services
from tokenim.server.app import build_app, build_services
from tokenim.server.config import ServerConfig
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import audit_log, invites, users

Register = Callable[..., Awaitable[Client]]


@pytest.fixture
def invite_config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(registration=RegistrationMode.INVITE, server_name="tokenim.test", data_dir=tmp_path / "data")


@pytest.fixture
def services(invite_config: ServerConfig, database: Database, clock: FakeClock) -> Services:
    return build_services(invite_config, database, clock)


@pytest.fixture
def transport(invite_config: ServerConfig, database: Database, clock: FakeClock, services: Services) -> httpx.ASGITransport:
    """An invite-only server of our own (this overrides the open-registration one from conftest)."""
    return httpx.ASGITransport(app=build_app(invite_config, database, clock, services))


@pytest.fixture
async def register(tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock) -> AsyncIterator[Register]:
    """Register through the SDK, as `tokenim register` does, with an optional invite code."""
    made: list[Client] = []

    async def make(username: str, invite: str | None = None) -> Client:
        client = await Client.register(
            tmp_path / f"profile-{username}",
            PASSPHRASE,
            server_url="http://tokenim.test",
            username=username,
            invite=invite,
            clock=clock,
            kdf=FAST_KDF,
            transport=transport,
        )
        made.append(client)
        return client

    yield make
    for c in made:
        await c.close()


def auth(client: Client) -> dict[str, str]:
    token = client.account.access_token()
    return {"Authorization": f"Bearer {token}"}


def registration_body(username: str, invite: str | None, clock: FakeClock) -> dict[str, Any]:
    """A correctly signed registration made by hand, for raw HTTP."""
    ident = DeviceIdentity.create(UserId(f"@{username}:tokenim.test"), new_device_id(), clock.now_ms())
    upload = ident.keys_to_upload(0, need_fallback=True)
    return {
        "username": username,
        "invite": invite,
        "master_key": ident.master_key_object(),
        "device_keys": ident.device_keys_object(clock.now_ms()),
        "one_time_keys": upload.one_time_keys,
        "fallback_keys": upload.fallback_keys,
    }


async def refused(register: Register, username: str, invite: str | None, code: str) -> TokenIMError:
    with pytest.raises(TokenIMError) as info:
        await register(username, invite)
    assert info.value.code.value == code, info.value
    return info.value


async def user_ids(database: Database) -> list[str]:
    async with database.read() as tx:
        return sorted(r.user_id for r in await tx.execute(select(users.c.user_id)))


async def bootstrap(services: Services, ttl_ms: int = DEFAULT_INVITE_TTL_MS) -> str:
    invite = await services.accounts.do_bootstrap_invite(ttl_ms)
    assert invite is not None
    return invite.code


async def test_registration_without_an_invite_is_refused(
    http: httpx.AsyncClient, register: Register, database: Database, clock: FakeClock, tmp_path: Path
) -> None:
    err = await refused(register, "alice", None, "invite_required")
    assert err.status == 403
    assert not (tmp_path / "profile-alice").exists()  # the SDK removed the half-made profile
    resp = await http.post("/v1/register", json=registration_body("alice", None, clock))
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "invite_required"
    assert await user_ids(database) == []


async def test_the_bootstrap_invite_makes_the_first_user_admin(
    register: Register, services: Services, database: Database, clock: FakeClock
) -> None:
    invite = await services.accounts.do_bootstrap_invite(DEFAULT_INVITE_TTL_MS)
    assert invite is not None and invite.expires_at == clock.now_ms() + DEFAULT_INVITE_TTL_MS
    alice = await register("alice", invite.code)
    me = await alice.account.whoami()
    assert (me.user_id, me.is_admin) == ("@alice:tokenim.test", True)

    async with database.read() as tx:
        (row,) = list(await tx.execute(select(invites)))
    assert row.code_hash == hashlib.sha256(invite.code.encode()).hexdigest()
    assert (row.created_by, row.used_by, bool(row.grants_admin), bool(row.revoked)) == (None, alice.user_id, True, False)
    # Once someone has registered there is no more bootstrapping, and the code is spent.
    assert await services.accounts.do_bootstrap_invite(DEFAULT_INVITE_TTL_MS) is None
    await refused(register, "mallory", invite.code, "invite_invalid")
    assert await user_ids(database) == [alice.user_id]


async def test_a_new_bootstrap_invite_revokes_the_previous_one(
    register: Register, services: Services, database: Database
) -> None:
    first, second = await bootstrap(services), await bootstrap(services)
    assert first != second
    await refused(register, "early", first, "invite_invalid")
    alice = await register("alice", second)
    assert (await alice.account.whoami()).is_admin
    async with database.read() as tx:
        revoked = {bool(r.revoked) for r in await tx.execute(select(invites)) if r.used_by is None}
    assert revoked == {True}


async def test_no_bootstrap_invite_on_an_open_server(database: Database, clock: FakeClock) -> None:
    config = ServerConfig(registration=RegistrationMode.OPEN, server_name="tokenim.test")
    assert await build_services(config, database, clock).accounts.do_bootstrap_invite(DEFAULT_INVITE_TTL_MS) is None


async def test_an_admin_invites_and_the_invitee_is_not_admin(
    http: httpx.AsyncClient, register: Register, services: Services, clock: FakeClock
) -> None:
    alice = await register("alice", await bootstrap(services))
    resp = await http.post("/v1/admin/invites", json={"expires_in_seconds": 3600}, headers=auth(alice))
    assert resp.status_code == 200, resp.text
    created = resp.json()
    assert set(created) == {"code", "expires_at"} and created["expires_at"] == clock.now_ms() + 3600 * 1000
    bob = await register("bob", created["code"])
    assert (await bob.account.whoami()).is_admin is False
    # Without a lifetime, an invite lasts a week.
    resp = await http.post("/v1/admin/invites", json={}, headers=auth(alice))
    assert resp.json()["expires_at"] == clock.now_ms() + 7 * 86400 * 1000


async def test_a_non_admin_cannot_create_invites(http: httpx.AsyncClient, register: Register, services: Services) -> None:
    alice = await register("alice", await bootstrap(services))
    bob = await register("bob", (await alice.admin.create_invite(3600)).code)
    resp = await http.post("/v1/admin/invites", json={"expires_in_seconds": 3600}, headers=auth(bob))
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "forbidden"
    with pytest.raises(TokenIMError) as info:
        await bob.admin.create_invite(3600)
    assert info.value.code.value == "forbidden"


async def test_an_invite_works_once(register: Register, services: Services, database: Database) -> None:
    alice = await register("alice", await bootstrap(services))
    code = (await alice.admin.create_invite(3600)).code
    bob = await register("bob", code)
    err = await refused(register, "carol", code, "invite_invalid")
    assert "already been used" in err.message
    assert await user_ids(database) == sorted([alice.user_id, bob.user_id])


async def test_an_unknown_invite_is_invalid(register: Register, services: Services) -> None:
    await register("alice", await bootstrap(services))
    await refused(register, "bob", "no-such-code", "invite_invalid")


async def test_an_expired_invite_is_invalid(register: Register, services: Services, clock: FakeClock) -> None:
    alice = await register("alice", await bootstrap(services))
    just_in_time, too_late = (await alice.admin.create_invite(60)).code, (await alice.admin.create_invite(60)).code
    clock.advance(ms=59_999)
    await register("bob", just_in_time)
    clock.advance(ms=1)  # an invite expires at exactly its creation time + lifetime
    err = await refused(register, "carol", too_late, "invite_invalid")
    assert "expired" in err.message


async def test_the_bootstrap_invite_expires_too(register: Register, services: Services, clock: FakeClock) -> None:
    code = await bootstrap(services, ttl_ms=60_000)
    clock.advance(seconds=61)
    await refused(register, "alice", code, "invite_invalid")


async def test_a_taken_username_is_409_and_does_not_spend_the_invite(
    http: httpx.AsyncClient, register: Register, services: Services, database: Database, clock: FakeClock
) -> None:
    alice = await register("alice", await bootstrap(services))
    code = (await alice.admin.create_invite(3600)).code
    resp = await http.post("/v1/register", json=registration_body("alice", code, clock))
    assert resp.status_code == 409
    assert resp.json()["error"] == {"code": "username_taken", "message": "The username 'alice' is taken.", "status": 409}
    # The failed registration rolled back whole: the invite is still good for someone else.
    bob = await register("bob", code)
    assert await user_ids(database) == sorted([alice.user_id, bob.user_id])


async def test_two_registrations_racing_for_one_invite(
    http: httpx.AsyncClient, register: Register, services: Services, database: Database, clock: FakeClock
) -> None:
    alice = await register("alice", await bootstrap(services))
    code = (await alice.admin.create_invite(3600)).code
    results = await asyncio.gather(*(http.post("/v1/register", json=registration_body(n, code, clock)) for n in ("bob", "carol")))
    assert sorted(r.status_code for r in results) == [200, 403], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 403)
    assert loser.json()["error"]["code"] == "invite_invalid"
    assert len(await user_ids(database)) == 2


async def test_registration_and_login_are_audited(
    register: Register, services: Services, database: Database, clock: FakeClock
) -> None:
    alice = await register("alice", await bootstrap(services))
    bob = await register("bob", (await alice.admin.create_invite(3600)).code)
    async with database.read() as tx:
        log = [(r.event, r.user_id, r.device_id, json.loads(r.details_json)) for r in await tx.execute(select(audit_log))]
    events = [e[0] for e in log]
    assert events.index("invite.bootstrap") < events.index("account.registered")
    assert ("account.registered", alice.user_id, alice.device_id, {"is_admin": True}) in log
    assert ("account.registered", bob.user_id, bob.device_id, {"is_admin": False}) in log
    assert ("login", alice.user_id, alice.device_id, {}) in log
    assert ("login", bob.user_id, bob.device_id, {}) in log
    created = [e for e in log if e[0] == "invite.created"]
    assert [(e[1], e[2]) for e in created] == [(alice.user_id, alice.device_id)]
    assert created[0][3] == {"expires_at": clock.now_ms() + 3600 * 1000}
    # The audit log names events, never secrets: no invite code, token or nonce in it.
    secrets = [
        s.decode()
        for c in (alice, bob)
        for s in (c.account.access_token().encode(), insides(c).store.get_secret("refresh_token"))
        if s
    ]
    text = json.dumps(log)
    assert secrets and not any(s in text for s in secrets)
