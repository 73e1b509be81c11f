"""Login by signed challenge over HTTP, token rotation, expiry, logout, device removal, and secrets kept only as hashes."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import httpx
from sqlalchemy import select

from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.ids import new_device_id
from tokenim.core.limits import ACCESS_TOKEN_TTL_MS, CHALLENGE_TTL_MS, REFRESH_TOKEN_TTL_MS
from tokenim.crypto.device import DeviceIdentity
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import audit_log, login_challenges, metadata, tokens

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def get_challenge(http: httpx.AsyncClient, identity: DeviceIdentity) -> dict[str, Any]:
    resp = await http.post("/v1/login/challenge", json={"user_id": identity.user_id, "device_id": identity.device_id})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def login(http: httpx.AsyncClient, identity: DeviceIdentity) -> dict[str, Any]:
    """Log in over HTTP by signing the server's challenge with the device's own key."""
    ch = await get_challenge(http, identity)
    signature = identity.sign_login_challenge(server_name=ch["server_name"], nonce=ch["nonce"])
    body = {"user_id": identity.user_id, "device_id": identity.device_id, "nonce": ch["nonce"], "signature": signature}
    resp = await http.post("/v1/login", json=body)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def refresh(http: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await http.post("/v1/token/refresh", json={"refresh_token": refresh_token})


async def status_with(http: httpx.AsyncClient, access_token: str) -> tuple[int, str | None]:
    """(HTTP status, error code) of a whoami made with this access token."""
    resp = await http.get("/v1/whoami", headers=bearer(access_token))
    return resp.status_code, (resp.json()["error"]["code"] if resp.status_code >= 400 else None)


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def rows(database: Database, table: Any) -> list[Any]:
    async with database.read() as tx:
        return list(await tx.execute(select(table)))


async def all_stored_text(database: Database) -> str:
    """Every value in every table, as one string to search for secrets."""
    parts = []
    for table in metadata.sorted_tables:
        for row in await rows(database, table):
            parts.extend(str(v) for v in row)
    return "\n".join(parts)


async def add_second_device(http: httpx.AsyncClient, client: Client, clock: FakeClock) -> DeviceIdentity:
    """Another device of the same user, its keys signed by the user's master key, added by `client`."""
    ident = insides(client).identity
    second = DeviceIdentity.create(ident.user_id, new_device_id(), clock.now_ms(), master=ident.master)
    upload = second.keys_to_upload(0, need_fallback=True)
    body = {
        "device_keys": second.device_keys_object(clock.now_ms()),
        "one_time_keys": upload.one_time_keys,
        "fallback_keys": upload.fallback_keys,
    }
    token = client.account.access_token()
    resp = await http.post("/v1/devices", json=body, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    return second


# ---- login ---------------------------------------------------------------------------------------


async def test_login_by_signed_challenge(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    clock.advance(seconds=5)
    now = clock.now_ms()
    ch = await get_challenge(http, insides(alice).identity)
    assert set(ch) == {"nonce", "server_name", "expires_at"}
    assert ch["server_name"] == "tokenim.test"
    assert ch["expires_at"] == now + CHALLENGE_TTL_MS
    assert len(ch["nonce"]) >= 40  # 32 random bytes, URL-safe

    signature = insides(alice).identity.sign_login_challenge(server_name=ch["server_name"], nonce=ch["nonce"])
    body = {"user_id": alice.user_id, "device_id": alice.device_id, "nonce": ch["nonce"], "signature": signature}
    resp = await http.post("/v1/login", json=body)
    assert resp.status_code == 200, resp.text
    tokens_ = resp.json()
    assert tokens_["user_id"] == alice.user_id and tokens_["device_id"] == alice.device_id
    assert tokens_["access_expires_at"] == now + ACCESS_TOKEN_TTL_MS
    assert tokens_["refresh_expires_at"] == now + REFRESH_TOKEN_TTL_MS
    assert tokens_["access_token"] != tokens_["refresh_token"]

    who = await http.get("/v1/whoami", headers=bearer(tokens_["access_token"]))
    assert who.status_code == 200
    assert who.json() == {
        "user_id": alice.user_id,
        "device_id": alice.device_id,
        "is_admin": True,
        "email": None,
        "key_rotation_days": 365,  # the server's setting (config `key_rotation_days`)
    }
    # Logging in records the device as seen now.
    devices = (await http.get("/v1/devices", headers=bearer(tokens_["access_token"]))).json()["devices"]
    assert [(d["device_id"], d["last_seen_at"]) for d in devices] == [(alice.device_id, now)]
    # A device may hold several sessions: the SDK's own login is still valid.
    assert (await alice.account.whoami()).device_id == alice.device_id


async def test_each_challenge_is_fresh_and_independent(http: httpx.AsyncClient, bob: Client) -> None:
    first, second = await get_challenge(http, insides(bob).identity), await get_challenge(http, insides(bob).identity)
    assert first["nonce"] != second["nonce"]
    # Asking again doesn't cancel an earlier challenge: both can be answered, in any order.
    for ch in (second, first):
        sig = insides(bob).identity.sign_login_challenge(server_name=ch["server_name"], nonce=ch["nonce"])
        body = {"user_id": bob.user_id, "device_id": bob.device_id, "nonce": ch["nonce"], "signature": sig}
        assert (await http.post("/v1/login", json=body)).status_code == 200


async def test_sessions_are_per_login_and_tokens_are_unique(http: httpx.AsyncClient, alice: Client) -> None:
    a, b = await login(http, insides(alice).identity), await login(http, insides(alice).identity)
    assert len({a["access_token"], a["refresh_token"], b["access_token"], b["refresh_token"]}) == 4
    assert await status_with(http, a["access_token"]) == (200, None)
    assert await status_with(http, b["access_token"]) == (200, None)


# ---- refresh -------------------------------------------------------------------------------------


async def test_refresh_rotates_the_pair(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    old = await login(http, insides(alice).identity)
    clock.advance(seconds=30)
    resp = await refresh(http, old["refresh_token"])
    assert resp.status_code == 200, resp.text
    new = resp.json()
    assert (new["user_id"], new["device_id"]) == (alice.user_id, alice.device_id)
    assert new["access_token"] not in (old["access_token"], old["refresh_token"])
    assert new["refresh_token"] not in (old["access_token"], old["refresh_token"])
    assert new["access_expires_at"] == clock.now_ms() + ACCESS_TOKEN_TTL_MS
    assert new["refresh_expires_at"] == clock.now_ms() + REFRESH_TOKEN_TTL_MS

    # The old pair stopped working, both halves.
    assert await status_with(http, old["access_token"]) == (401, "unauthorized")
    resp = await refresh(http, old["refresh_token"])
    assert (resp.status_code, error_code(resp)) == (401, "unauthorized")
    # The new pair works, and rotates again.
    assert await status_with(http, new["access_token"]) == (200, None)
    again = await refresh(http, new["refresh_token"])
    assert again.status_code == 200
    assert await status_with(http, again.json()["access_token"]) == (200, None)
    assert await status_with(http, new["access_token"]) == (401, "unauthorized")


async def test_refresh_accepts_only_a_refresh_token(http: httpx.AsyncClient, alice: Client) -> None:
    pair = await login(http, insides(alice).identity)
    for token in (pair["access_token"], "garbage", ""):
        resp = await refresh(http, token)
        assert (resp.status_code, error_code(resp)) == (401, "unauthorized"), token
    # Presenting the access token there did not spend anything.
    assert await status_with(http, pair["access_token"]) == (200, None)
    assert (await refresh(http, pair["refresh_token"])).status_code == 200


async def test_a_refresh_token_is_spent_once_even_when_raced(http: httpx.AsyncClient, alice: Client) -> None:
    """Two concurrent refreshes with the same token: one new pair, never two live sessions from one token."""
    pair = await login(http, insides(alice).identity)
    results = await asyncio.gather(*(refresh(http, pair["refresh_token"]) for _ in range(5)))
    winners = [r for r in results if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in results]
    assert all((r.status_code, error_code(r)) == (401, "unauthorized") for r in results if r is not winners[0])
    assert await status_with(http, winners[0].json()["access_token"]) == (200, None)


async def test_an_expired_access_token_is_refreshed(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    pair = await login(http, insides(alice).identity)
    clock.advance(ms=ACCESS_TOKEN_TTL_MS)
    assert await status_with(http, pair["access_token"]) == (401, "token_expired")
    resp = await refresh(http, pair["refresh_token"])
    assert resp.status_code == 200
    assert await status_with(http, resp.json()["access_token"]) == (200, None)
    # The SDK does the same by itself when its access token has expired.
    before = alice.account.access_token()
    assert (await alice.account.whoami()).user_id == alice.user_id
    assert alice.account.access_token() != before


async def test_an_expired_refresh_token_is_token_expired(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    still_good, expiring = await login(http, insides(alice).identity), await login(http, insides(alice).identity)
    clock.advance(ms=REFRESH_TOKEN_TTL_MS - 1)
    resp = await refresh(http, still_good["refresh_token"])
    assert resp.status_code == 200, resp.text
    clock.advance(ms=1)
    resp = await refresh(http, expiring["refresh_token"])
    assert (resp.status_code, error_code(resp)) == (401, "token_expired")
    # The expired session is gone altogether: asking again is simply unauthorized.
    resp = await refresh(http, expiring["refresh_token"])
    assert (resp.status_code, error_code(resp)) == (401, "unauthorized")
    assert await status_with(http, expiring["access_token"]) == (401, "unauthorized")


# ---- logout and device removal -------------------------------------------------------------------


async def test_logout_kills_both_tokens_of_that_session_only(http: httpx.AsyncClient, alice: Client, database: Database) -> None:
    pair, other = await login(http, insides(alice).identity), await login(http, insides(alice).identity)
    resp = await http.post("/v1/logout", headers=bearer(pair["access_token"]))
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    assert await status_with(http, pair["access_token"]) == (401, "unauthorized")
    resp = await refresh(http, pair["refresh_token"])
    assert (resp.status_code, error_code(resp)) == (401, "unauthorized")
    # Logging out twice is refused like any dead token.
    resp = await http.post("/v1/logout", headers=bearer(pair["access_token"]))
    assert (resp.status_code, error_code(resp)) == (401, "unauthorized")
    # Other sessions of the same device live on.
    assert await status_with(http, other["access_token"]) == (200, None)
    assert (await alice.account.whoami()).user_id == alice.user_id
    events = [r.event for r in await rows(database, audit_log) if r.user_id == alice.user_id]
    assert events.count("logout") == 1


async def test_removing_a_device_kills_its_tokens(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    second = await add_second_device(http, alice, clock)
    pair = await login(http, second)
    assert (await http.get("/v1/whoami", headers=bearer(pair["access_token"]))).json()["device_id"] == second.device_id

    await alice.devices.remove(second.device_id)
    assert await status_with(http, pair["access_token"]) == (401, "unauthorized")
    resp = await refresh(http, pair["refresh_token"])
    assert (resp.status_code, error_code(resp)) == (401, "unauthorized")
    # The removed device can't log in again, and is gone from the list.
    resp = await http.post("/v1/login/challenge", json={"user_id": second.user_id, "device_id": second.device_id})
    assert (resp.status_code, error_code(resp)) == (404, "unknown_device")
    assert [d.device_id for d in (await alice.devices.all()).devices] == [alice.device_id]
    # The device that removed it is unaffected.
    assert (await alice.account.whoami()).device_id == alice.device_id


async def test_a_device_removing_itself_ends_its_own_session(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    second = await add_second_device(http, alice, clock)
    pair = await login(http, second)
    resp = await http.delete(f"/v1/devices/{second.device_id}", headers=bearer(pair["access_token"]))
    assert resp.status_code == 200, resp.text
    assert await status_with(http, pair["access_token"]) == (401, "unauthorized")
    assert (await alice.account.whoami()).device_id == alice.device_id


async def test_nobody_removes_another_users_device(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    token = alice.account.access_token().encode()
    assert token is not None
    for device_id in (bob.device_id, "NOSUCHDEVICE"):
        resp = await http.delete(f"/v1/devices/{device_id}", headers=bearer(token.decode()))
        assert (resp.status_code, error_code(resp)) == (404, "unknown_device")
    assert (await bob.account.whoami()).device_id == bob.device_id
    assert [d.device_id for d in (await bob.devices.all()).devices] == [bob.device_id]


# ---- secrets at rest ------------------------------------------------------------------------------


async def test_tokens_are_stored_only_as_sha256_hashes(http: httpx.AsyncClient, alice: Client, database: Database) -> None:
    pair = await login(http, insides(alice).identity)
    stored = await rows(database, tokens)
    assert stored, "no tokens stored"
    assert all(SHA256_HEX.fullmatch(r.token_hash) for r in stored)
    by_hash = {r.token_hash: r for r in stored}
    access, refresh_row = by_hash[sha256(pair["access_token"])], by_hash[sha256(pair["refresh_token"])]
    assert (access.kind, refresh_row.kind) == ("access", "refresh")
    assert access.session_id == refresh_row.session_id
    assert (access.user_id, access.device_id) == (alice.user_id, alice.device_id)
    everything = await all_stored_text(database)
    sdk_tokens = [insides(alice).store.get_secret(name) for name in ("access_token", "refresh_token")]
    for secret in [pair["access_token"], pair["refresh_token"], *(t.decode() for t in sdk_tokens if t is not None)]:
        assert secret not in everything
        assert sha256(secret) in by_hash


async def test_login_nonces_are_stored_only_as_hashes_and_consumed(
    http: httpx.AsyncClient, alice: Client, database: Database, clock: FakeClock
) -> None:
    ch = await get_challenge(http, insides(alice).identity)
    stored = await rows(database, login_challenges)
    assert [(r.nonce_hash, r.user_id, r.device_id, r.expires_at) for r in stored] == [
        (sha256(ch["nonce"]), alice.user_id, alice.device_id, ch["expires_at"])
    ]
    assert ch["nonce"] not in await all_stored_text(database)

    sig = insides(alice).identity.sign_login_challenge(server_name=ch["server_name"], nonce=ch["nonce"])
    body = {"user_id": alice.user_id, "device_id": alice.device_id, "nonce": ch["nonce"], "signature": sig}
    assert (await http.post("/v1/login", json=body)).status_code == 200
    assert await rows(database, login_challenges) == []  # consumed by the login

    # Unanswered challenges don't pile up: expired ones are purged when the next is issued.
    stale = await get_challenge(http, insides(alice).identity)
    clock.advance(ms=CHALLENGE_TTL_MS + 1)
    fresh = await get_challenge(http, insides(alice).identity)
    assert [r.nonce_hash for r in await rows(database, login_challenges)] == [sha256(fresh["nonce"])]
    assert stale["nonce"] != fresh["nonce"]
