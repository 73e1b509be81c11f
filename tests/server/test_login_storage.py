"""Login, tokens and invites, each check tested on its own: the storage layer's guards (an invite is used
once, a revoked one never; removing a device ends only that user's device's tokens, not another user's
device of the same id), the audit records of
failed logins and logouts, and a logout closing the session's open WebSocket at once.

Several of these checks are made twice (the service looks, then the SQL statement guards against a race);
each layer is tested here without the other, so that removing either one fails a test."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.support import WebSocketSession, add_device, bearer, client_auth, insides, login_token
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.server.storage.audit import AuditStore
from tokenim.server.storage.auth import AuthStore, InviteRow
from tokenim.server.storage.database import Database

HASH_A, HASH_B = "a" * 64, "b" * 64


async def test_an_invite_is_used_once_and_a_revoked_one_never(database: Database) -> None:
    store = AuthStore()
    async with database.write() as tx:
        await store.insert_invite(tx, HASH_A, "@admin:tokenim.test", 1, 100, grants_admin=False)
        await store.insert_invite(tx, HASH_B, None, 1, 100, grants_admin=True)
        assert await store.get_invite(tx, HASH_A) == InviteRow("@admin:tokenim.test", 100, False, None, False)
        assert await store.get_invite(tx, HASH_B) == InviteRow(None, 100, True, None, False)
        assert await store.use_invite(tx, HASH_A, "@first:tokenim.test", 5)
        assert not await store.use_invite(tx, HASH_A, "@second:tokenim.test", 6)
        assert await store.get_invite(tx, HASH_A) == InviteRow("@admin:tokenim.test", 100, False, "@first:tokenim.test", False)
        await store.revoke_bootstrap_invites(tx)
        assert await store.get_invite(tx, HASH_B) == InviteRow(None, 100, True, None, True)
        assert not await store.use_invite(tx, HASH_B, "@third:tokenim.test", 7)
        # Revoking bootstrap invites leaves an admin's invite alone.
        await store.insert_invite(tx, "c" * 64, "@admin:tokenim.test", 1, 100, grants_admin=False)
        await store.revoke_bootstrap_invites(tx)
        assert await store.use_invite(tx, "c" * 64, "@fourth:tokenim.test", 8)


async def test_removing_a_device_leaves_another_users_device_of_the_same_id_logged_in(
    http: httpx.AsyncClient, alice: Client, bob: Client, clock: FakeClock
) -> None:
    second = await add_device(alice, clock)
    twin = await add_device(bob, clock, device_id=second.device_id)
    second_token, twin_token = await login_token(http, second), await login_token(http, twin)
    first_token = client_auth(alice)["Authorization"].removeprefix("Bearer ")
    await alice.devices.remove(second.device_id)
    assert (await http.get("/v1/whoami", headers=bearer(second_token))).status_code == 401
    assert (await http.get("/v1/whoami", headers=bearer(first_token))).status_code == 200  # the remover's own session
    resp = await http.get("/v1/whoami", headers=bearer(twin_token))
    assert (resp.status_code, resp.json()["user_id"]) == (200, bob.user_id)


async def test_failed_logins_and_logouts_are_audited_with_user_device_and_reason(
    http: httpx.AsyncClient, alice: Client, database: Database
) -> None:
    ident = {"user_id": alice.user_id, "device_id": alice.device_id}
    nonce = (await http.post("/v1/login/challenge", json=ident)).json()["nonce"]
    resp = await http.post(
        "/v1/login", json={**ident, "nonce": nonce, "signature": insides(alice).identity.sign(b"not the challenge")}
    )
    assert resp.json()["error"]["code"] == "bad_signature"
    await alice.account.logout()
    async with database.read() as tx:
        events = await AuditStore().for_user(tx, alice.user_id)
    failed = [(e.user_id, e.device_id, e.details) for e in events if e.event == "login.failed"]
    assert failed == [(alice.user_id, alice.device_id, {"reason": "bad_signature", "stage": "login"})]
    assert [(e.user_id, e.device_id) for e in events if e.event == "logout"] == [(alice.user_id, alice.device_id)]


async def test_logout_everywhere_is_audited(http: httpx.AsyncClient, alice: Client, database: Database) -> None:
    resp = await http.post("/v1/logout/all", headers=client_auth(alice))
    assert (resp.status_code, resp.json()["sessions_ended"]) == (200, 1)
    async with database.read() as tx:
        events = await AuditStore().for_user(tx, alice.user_id)
    assert [(e.user_id, e.device_id) for e in events if e.event == "logout_all"] == [(alice.user_id, alice.device_id)]


async def test_logout_closes_the_sessions_open_websocket_at_once(app: FastAPI, http: httpx.AsyncClient, alice: Client) -> None:
    token = client_auth(alice)["Authorization"].removeprefix("Bearer ")
    async with WebSocketSession(app, token) as ws:
        await ws.send({"type": "ping"})
        await ws.wait_for(lambda: len(ws.frames) == 1)
        assert (await http.post("/v1/logout", headers=bearer(token))).status_code == 200
        await ws.wait_for(lambda: ws.close_code is not None)
        assert ws.close_code == 4401


async def test_logout_everywhere_closes_every_open_websocket_of_the_account(
    app: FastAPI, http: httpx.AsyncClient, alice: Client, clock: FakeClock
) -> None:
    first = client_auth(alice)["Authorization"].removeprefix("Bearer ")
    second = await login_token(http, await add_device(alice, clock))
    async with WebSocketSession(app, first) as ws1, WebSocketSession(app, second) as ws2:
        for ws in (ws1, ws2):
            await ws.send({"type": "ping"})
            await ws.wait_for(lambda ws=ws: len(ws.frames) == 1)  # type: ignore[misc]
        assert (await http.post("/v1/logout/all", headers=bearer(first))).json()["sessions_ended"] == 2
        for ws in (ws1, ws2):
            await ws.wait_for(lambda ws=ws: ws.close_code is not None)  # type: ignore[misc]
            assert ws.close_code == 4401
