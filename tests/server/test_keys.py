"""Publishing, querying and claiming keys: counts, idempotent uploads, conflicts, signed claims handed out once,
the fallback key, clients refusing tampered key objects, and claims that stay atomic under concurrency."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.ids import UserId, new_device_id
from tokenim.core.limits import MAX_ONE_TIME_KEYS_PER_UPLOAD, MAX_ONE_TIME_KEYS_STORED, ONE_TIME_KEY_TARGET
from tokenim.core.signing import SigningKey, sign_json
from tokenim.crypto.device import DeviceIdentity
from tokenim.protocol.keys import (
    DeviceKeys,
    parse_device_keys,
    parse_master_key,
    parse_one_time_keys,
    verify_device_keys,
    verify_master_key,
    verify_one_time_key,
)
from tokenim.server.app import build_app
from tokenim.server.config import ServerConfig
from tokenim.server.storage.database import Database
from tokenim.server.storage.keys import OneTimeKeyStore
from tokenim.server.storage.tables import devices, master_keys, one_time_keys

OTK = "signed_curve25519"


def auth(client: Client) -> dict[str, str]:
    token = client.account.access_token()
    return {"Authorization": f"Bearer {token}"}


def fresh_one_time_keys(client: Client, n: int) -> dict[str, Any]:
    """`n` new one-time keys made by the client's Olm account, signed by its device key (not yet published)."""
    insides(client).identity.account.generate_one_time_keys(n)
    upload = insides(client).identity.keys_to_upload(10**6, need_fallback=False)  # a high count: generate nothing more
    assert len(upload.one_time_keys) == n
    return upload.one_time_keys


def signed_key(client: Client, *, fallback: bool = False, public_key: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": public_key or SigningKey.generate().public_key}
    if fallback:
        obj["fallback"] = True
    return sign_json(obj, client.user_id, client.device_id, insides(client).identity)


async def upload(
    http: httpx.AsyncClient, client: Client, otks: dict[str, Any], fallback: dict[str, Any] | None = None
) -> httpx.Response:
    return await http.post("/v1/keys/upload", json={"one_time_keys": otks, "fallback_keys": fallback or {}}, headers=auth(client))


async def counts(http: httpx.AsyncClient, client: Client) -> tuple[int, bool]:
    body = (await http.get("/v1/keys/counts", headers=auth(client))).json()
    return body["one_time_keys"], body["has_fallback_key"]


async def claim(http: httpx.AsyncClient, claimer: Client, wanted: dict[str, list[str]]) -> dict[str, Any]:
    resp = await http.post("/v1/keys/claim", json={"devices": wanted}, headers=auth(claimer))
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["one_time_keys"])


async def device_keys(http: httpx.AsyncClient, asker: Client, owner_user: str, owner_device: str) -> DeviceKeys:
    """The owner's device keys as the server relays them, checked against their master key."""
    resp = await http.post("/v1/keys/query", json={"user_ids": [owner_user]}, headers=auth(asker))
    user = resp.json()["users"][owner_user]
    master = parse_master_key(user["master_key"])
    verify_master_key(master)
    dk = parse_device_keys(user["devices"][owner_device])
    verify_device_keys(dk, master)
    return dk


def check_claimed(claimed: dict[str, Any], device: DeviceKeys) -> tuple[str, bool]:
    """Verify a claimed key's signature by its device; (key id, is it the fallback key)."""
    fallback = bool(claimed["key"].get("fallback", False))
    (otk,) = parse_one_time_keys({claimed["key_id"]: claimed["key"]}, fallback=fallback)
    verify_one_time_key(otk, device)
    return otk.key_id, fallback


async def stored_keys(database: Database, user_id: str, device_id: str) -> dict[tuple[bool, str], dict[str, Any]]:
    async with database.read() as tx:
        q = select(one_time_keys).where(one_time_keys.c.user_id == user_id, one_time_keys.c.device_id == device_id)
        return {(bool(r.fallback), r.key_id): json.loads(r.key_json) for r in await tx.execute(q)}


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


# ---- upload ----------------------------------------------------------------------------------------


async def test_uploading_more_one_time_keys_raises_the_count(http: httpx.AsyncClient, alice: Client) -> None:
    assert await counts(http, alice) == (ONE_TIME_KEY_TARGET, True)
    resp = await upload(http, alice, fresh_one_time_keys(alice, 10))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"one_time_keys": ONE_TIME_KEY_TARGET + 10, "has_fallback_key": True}
    assert await counts(http, alice) == (ONE_TIME_KEY_TARGET + 10, True)
    insides(alice).identity.mark_keys_as_published()
    resp = await upload(http, alice, {f"{OTK}:extra{i}": signed_key(alice) for i in range(5)})
    assert resp.json()["one_time_keys"] == ONE_TIME_KEY_TARGET + 15


async def test_re_uploading_the_same_keys_is_harmless(http: httpx.AsyncClient, alice: Client, database: Database) -> None:
    batch = fresh_one_time_keys(alice, 10)
    assert (await upload(http, alice, batch)).json()["one_time_keys"] == ONE_TIME_KEY_TARGET + 10
    before = await stored_keys(database, alice.user_id, alice.device_id)
    again = await upload(http, alice, batch)  # e.g. the response to the first upload was lost
    assert again.status_code == 200 and again.json()["one_time_keys"] == ONE_TIME_KEY_TARGET + 10
    assert await stored_keys(database, alice.user_id, alice.device_id) == before
    # Old and new keys mixed: only the new ones count.
    mixed = dict(list(batch.items())[:5]) | {f"{OTK}:new{i}": signed_key(alice) for i in range(3)}
    assert (await upload(http, alice, mixed)).json()["one_time_keys"] == ONE_TIME_KEY_TARGET + 13


async def test_the_same_key_id_with_another_key_is_a_conflict(http: httpx.AsyncClient, alice: Client, database: Database) -> None:
    first = {f"{OTK}:k1": signed_key(alice)}
    assert (await upload(http, alice, first)).status_code == 200
    before = await stored_keys(database, alice.user_id, alice.device_id)
    # Properly signed, but a different key under an id already published.
    clash = {f"{OTK}:k1": signed_key(alice), f"{OTK}:k2": signed_key(alice)}
    resp = await upload(http, alice, clash)
    assert (resp.status_code, error_code(resp)) == (409, "key_conflict")
    assert "k1" in resp.json()["error"]["message"]
    # Nothing of the refused batch was stored, not even the innocent k2.
    assert await stored_keys(database, alice.user_id, alice.device_id) == before
    # The same goes for the fallback key.
    (fallback_id,) = [kid for fb, kid in before if fb]
    resp = await upload(http, alice, {}, {f"{OTK}:{fallback_id}": signed_key(alice, fallback=True)})
    assert (resp.status_code, error_code(resp)) == (409, "key_conflict")


async def test_uploads_must_be_signed_by_the_device_and_within_limits(
    http: httpx.AsyncClient, alice: Client, bob: Client
) -> None:
    resp = await upload(http, alice, {f"{OTK}:bobs": signed_key(bob)})
    assert (resp.status_code, error_code(resp)) == (400, "bad_signature")
    resp = await upload(http, alice, {f"{OTK}:unsigned": {"key": SigningKey.generate().public_key}})
    assert (resp.status_code, error_code(resp)) == (400, "bad_signature")
    resp = await upload(http, alice, {f"{OTK}:flagged": signed_key(alice, fallback=True)})  # a fallback key in the wrong slot
    assert (resp.status_code, error_code(resp)) == (400, "bad_key_object")
    too_many = {f"{OTK}:m{i}": signed_key(alice) for i in range(MAX_ONE_TIME_KEYS_PER_UPLOAD + 1)}
    resp = await upload(http, alice, too_many)
    assert (resp.status_code, error_code(resp)) == (400, "too_many_keys")
    two_fallbacks = {f"{OTK}:f1": signed_key(alice, fallback=True), f"{OTK}:f2": signed_key(alice, fallback=True)}
    resp = await upload(http, alice, {}, two_fallbacks)
    assert (resp.status_code, error_code(resp)) == (400, "too_many_keys")
    assert await counts(http, alice) == (ONE_TIME_KEY_TARGET, True)


async def test_a_device_keeps_at_most_the_stored_limit(http: httpx.AsyncClient, alice: Client) -> None:
    room = MAX_ONE_TIME_KEYS_STORED - ONE_TIME_KEY_TARGET
    first = {f"{OTK}:a{i}": signed_key(alice) for i in range(min(room, MAX_ONE_TIME_KEYS_PER_UPLOAD))}
    assert (await upload(http, alice, first)).status_code == 200
    rest = room - len(first)
    resp = await upload(http, alice, {f"{OTK}:b{i}": signed_key(alice) for i in range(rest + 1)})
    assert (resp.status_code, error_code(resp)) == (400, "too_many_keys")
    resp = await upload(http, alice, {f"{OTK}:b{i}": signed_key(alice) for i in range(rest)})
    assert resp.json()["one_time_keys"] == MAX_ONE_TIME_KEYS_STORED


# ---- claim -----------------------------------------------------------------------------------------


async def test_claimed_keys_are_signed_by_the_device_and_never_handed_out_twice(
    http: httpx.AsyncClient, alice: Client, bob: Client, database: Database
) -> None:
    alice_device = await device_keys(http, bob, alice.user_id, alice.device_id)
    published = await stored_keys(database, alice.user_id, alice.device_id)
    seen: list[str] = []
    for _ in range(ONE_TIME_KEY_TARGET):
        got = (await claim(http, bob, {alice.user_id: [alice.device_id]}))[alice.user_id][alice.device_id]
        key_id, fallback = check_claimed(got, alice_device)
        assert not fallback
        assert published[(False, key_id)] == got["key"]  # relayed exactly as published and signed
        seen.append(key_id)
    assert len(set(seen)) == ONE_TIME_KEY_TARGET
    assert set(seen) == {kid for fb, kid in published if not fb}
    assert await counts(http, alice) == (0, True)


async def test_when_one_time_keys_run_out_the_fallback_key_is_returned(
    http: httpx.AsyncClient, alice: Client, bob: Client, database: Database
) -> None:
    alice_device = await device_keys(http, bob, alice.user_id, alice.device_id)
    for _ in range(ONE_TIME_KEY_TARGET):
        await claim(http, bob, {alice.user_id: [alice.device_id]})
    ((_, fallback_id),) = [k for k in await stored_keys(database, alice.user_id, alice.device_id) if k[0]]
    for _ in range(3):  # the fallback key is not consumed: it keeps coming back
        got = (await claim(http, bob, {alice.user_id: [alice.device_id]}))[alice.user_id][alice.device_id]
        assert check_claimed(got, alice_device) == (fallback_id, True)
    # ...but is reported as used, so the owner knows to publish a new one.
    assert await counts(http, alice) == (0, False)
    new_fallback = {f"{OTK}:fresh-fallback": signed_key(alice, fallback=True)}
    assert (await upload(http, alice, {}, new_fallback)).json() == {"one_time_keys": 0, "has_fallback_key": True}
    got = (await claim(http, bob, {alice.user_id: [alice.device_id]}))[alice.user_id][alice.device_id]
    assert check_claimed(got, alice_device) == ("fresh-fallback", True)  # the new one replaced the old
    # ...and the old one is gone from the server, not merely passed over.
    assert [k[1] for k in await stored_keys(database, alice.user_id, alice.device_id) if k[0]] == ["fresh-fallback"]


async def test_claim_for_several_devices_and_unknown_ones(
    http: httpx.AsyncClient, alice: Client, bob: Client, carol: Client
) -> None:
    wanted = {
        alice.user_id: [alice.device_id, "NOSUCHDEVICE"],
        bob.user_id: [bob.device_id, bob.device_id],  # asked twice, claimed once
        "@ghost:tokenim.test": ["GHOSTDEV"],
    }
    got = await claim(http, carol, wanted)
    assert set(got) == {alice.user_id, bob.user_id}
    assert set(got[alice.user_id]) == {alice.device_id} and set(got[bob.user_id]) == {bob.device_id}
    assert await counts(http, alice) == (ONE_TIME_KEY_TARGET - 1, True)
    assert await counts(http, bob) == (ONE_TIME_KEY_TARGET - 1, True)
    for user, device, client in [(alice.user_id, alice.device_id, alice), (bob.user_id, bob.device_id, bob)]:
        check_claimed(got[user][device], await device_keys(http, carol, user, client.device_id))


# ---- query -----------------------------------------------------------------------------------------


async def test_query_returns_master_and_devices_and_lists_unknown_users(
    http: httpx.AsyncClient, alice: Client, bob: Client, clock: FakeClock
) -> None:
    wanted = [bob.user_id, alice.user_id, "@ghost:tokenim.test", bob.user_id, "@alice:elsewhere.example"]
    resp = await http.post("/v1/keys/query", json={"user_ids": wanted}, headers=auth(alice))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert sorted(body["users"]) == sorted([alice.user_id, bob.user_id])
    assert sorted(body["unknown"]) == ["@alice:elsewhere.example", "@ghost:tokenim.test"]
    for client in (alice, bob):
        user = body["users"][client.user_id]
        # The master key is relayed byte for byte as the client signed it.
        assert user["master_key"] == insides(client).identity.master_key_object()
        master = parse_master_key(user["master_key"])
        verify_master_key(master)
        assert list(user["devices"]) == [client.device_id]
        dk = parse_device_keys(user["devices"][client.device_id])
        verify_device_keys(dk, master)
        assert (dk.ed25519, dk.curve25519) == (client.keys.info().device_ed25519, client.keys.info().device_curve25519)
    # A second device appears once it is added.
    second = DeviceIdentity.create(alice.user_id, new_device_id(), clock.now_ms(), master=insides(alice).identity.master)
    added = await http.post("/v1/devices", json={"device_keys": second.device_keys_object(clock.now_ms())}, headers=auth(alice))
    assert added.status_code == 200, added.text
    verified = await bob.keys.query([alice.user_id])
    assert sorted(verified[alice.user_id].devices) == sorted([alice.device_id, second.device_id])


async def test_the_sdk_drops_a_device_whose_stored_keys_were_tampered(
    alice: Client, bob: Client, carol: Client, database: Database
) -> None:
    async with database.read() as tx:
        q = select(devices.c.keys_json).where(devices.c.user_id == bob.user_id, devices.c.device_id == bob.device_id)
        keys = json.loads((await tx.execute(q)).scalar_one())
    # The server (or whoever holds its database) swaps in its own Curve25519 key for Bob's device.
    keys["keys"][f"curve25519:{bob.device_id}"] = SigningKey.generate().public_key
    async with database.write() as tx:
        await tx.execute(update(devices).where(devices.c.user_id == bob.user_id).values(keys_json=json.dumps(keys)))

    verified = await alice.keys.query([bob.user_id, carol.user_id])
    assert verified[bob.user_id].devices == {}
    assert verified[bob.user_id].rejected_devices == [bob.device_id]
    assert verified[bob.user_id].master.public_key == bob.keys.info().master_key
    assert list(verified[carol.user_id].devices) == [carol.device_id]  # untouched users are unaffected
    assert verified[carol.user_id].rejected_devices == []


async def test_the_sdk_drops_a_user_whose_master_key_was_tampered(
    alice: Client, bob: Client, carol: Client, database: Database
) -> None:
    async with database.read() as tx:
        raw = (await tx.execute(select(master_keys.c.key_json).where(master_keys.c.user_id == bob.user_id))).scalar_one()
    tampered = json.loads(raw) | {"created_at": 1}  # any change breaks the self-signature
    async with database.write() as tx:
        await tx.execute(update(master_keys).where(master_keys.c.user_id == bob.user_id).values(key_json=json.dumps(tampered)))

    verified = await alice.keys.query([bob.user_id, carol.user_id])
    assert bob.user_id not in verified
    assert list(verified[carol.user_id].devices) == [carol.device_id]


async def test_the_sdk_refuses_a_substituted_master_key_for_the_devices(alice: Client, bob: Client, database: Database) -> None:
    """A self-signed master key the server made up verifies on its own, but Bob's devices aren't signed by it."""
    impostor = DeviceIdentity.create(UserId(bob.user_id), new_device_id(), 0)
    async with database.write() as tx:
        await tx.execute(
            update(master_keys)
            .where(master_keys.c.user_id == bob.user_id)
            .values(key_json=json.dumps(impostor.master_key_object()))
        )
    verified = await alice.keys.query([bob.user_id])
    trusted = verified[bob.user_id].devices if bob.user_id in verified else {}
    assert trusted == {}


# ---- concurrency -----------------------------------------------------------------------------------


def registration_with_keys(username: str, clock: FakeClock, n_one_time_keys: int) -> tuple[DeviceIdentity, dict[str, Any]]:
    """A device registered by hand over HTTP with exactly `n` one-time keys and a fallback key (no login, no top-up)."""
    ident = DeviceIdentity.create(UserId(f"@{username}:tokenim.test"), new_device_id(), clock.now_ms())
    ident.account.generate_one_time_keys(n_one_time_keys)
    keys = ident.keys_to_upload(10**6, need_fallback=True)
    body = {
        "username": username,
        "master_key": ident.master_key_object(),
        "device_keys": ident.device_keys_object(clock.now_ms()),
        "one_time_keys": keys.one_time_keys,
        "fallback_keys": keys.fallback_keys,
    }
    return ident, body


async def concurrent_claims(
    clients: list[httpx.AsyncClient], claimer: Client, target: DeviceIdentity, n: int
) -> list[tuple[str, bool]]:
    """`n` claims at once, spread over the given clients; (key id, fallback?) of each."""
    body = {"devices": {target.user_id: [target.device_id]}}
    results = await asyncio.gather(
        *(clients[i % len(clients)].post("/v1/keys/claim", json=body, headers=auth(claimer)) for i in range(n))
    )
    out = []
    for resp in results:
        assert resp.status_code == 200, resp.text
        got = resp.json()["one_time_keys"][target.user_id][target.device_id]
        out.append((got["key_id"], bool(got["key"].get("fallback", False))))
    return out


async def test_concurrent_claims_never_hand_out_a_key_twice(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    dave, body = registration_with_keys("dave", clock, 10)
    assert (await http.post("/v1/register", json=body)).status_code == 200
    published = set(body["one_time_keys"])  # claims return ids as uploaded: signed_curve25519:<id>
    (fallback_id,) = list(body["fallback_keys"])

    claimed = await concurrent_claims([http], alice, dave, 20)
    one_time = [kid for kid, fb in claimed if not fb]
    assert sorted(one_time) == sorted(published)  # each of the 10 exactly once
    assert [kid for kid, fb in claimed if fb] == [fallback_id] * 10


@pytest.fixture
def postgres(database: Database) -> Database:
    if database.is_sqlite:
        pytest.skip("needs two server instances on one PostgreSQL database (TOKENIM_TEST_DATABASE_URL)")
    return database


async def test_claims_are_atomic_in_sql_across_two_server_instances(
    postgres: Database, app: FastAPI, config: ServerConfig, clock: FakeClock, alice: Client
) -> None:
    """Two apps, two engines, one PostgreSQL database: no in-process lock is shared, yet no key goes out twice."""
    other_db = Database(postgres.url)
    try:
        other_app = build_app(config, other_db, clock)
        transports = [httpx.ASGITransport(app=app), httpx.ASGITransport(app=other_app)]
        clients = [httpx.AsyncClient(transport=t, base_url="http://tokenim.test") for t in transports]
        dave, body = registration_with_keys("dave", clock, 30)
        assert (await clients[1].post("/v1/register", json=body)).status_code == 200
        published = set(body["one_time_keys"])  # claims return ids as uploaded: signed_curve25519:<id>

        claimed = await concurrent_claims(clients, alice, dave, 60)
        one_time = Counter(kid for kid, fb in claimed if not fb)
        assert set(one_time) == published and set(one_time.values()) == {1}
        assert sum(fb for _, fb in claimed) == 30
        for c in clients:
            await c.aclose()
    finally:
        await other_db.close()


class _Abort(Exception):
    pass


async def test_an_uncommitted_claim_is_skipped_not_waited_for_and_returns_on_rollback(
    postgres: Database, clock: FakeClock, alice: Client
) -> None:
    """The claim statement itself (DELETE … RETURNING with FOR UPDATE SKIP LOCKED) keeps two transactions apart."""
    store, other_db = OneTimeKeyStore(), Database(postgres.url)
    uid, did = alice.user_id, alice.device_id
    try:
        with pytest.raises(_Abort):
            async with postgres.write() as first:
                held = await store.claim(first, uid, did)
                assert held is not None
                # A second engine's transaction doesn't block on the row the first holds: it takes the next key.
                async with other_db.write() as second:
                    other = await asyncio.wait_for(store.claim(second, uid, did), timeout=5)
                assert other is not None and other.key_id != held.key_id
                raise _Abort  # roll the first claim back
        async with other_db.read() as tx:
            left = {r.key_id for r in await tx.execute(select(one_time_keys.c.key_id).where(one_time_keys.c.fallback.is_(False)))}
        assert held.key_id in left  # rolled back: the key is available again
        assert other.key_id not in left  # committed: gone for good
        assert len(left) == ONE_TIME_KEY_TARGET - 1
    finally:
        await other_db.close()
