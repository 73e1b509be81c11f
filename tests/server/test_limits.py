"""Limits on guessing and flooding (docs/threat-model.md, "Guessing and flooding"), on both databases:
lockouts per account and per address and their expiry, 429 `rate_limited` with `retry_after_ms` and
Retry-After, quotas per user with clear errors, and login answers that do not tell whether an account exists.
Small limits here; the defaults are far above what the suite does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support import bearer
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import UserId, new_device_id
from tokenim.crypto.device import DeviceIdentity
from tokenim.protocol.events import ENCRYPTED
from tokenim.protocol.keys import OLM_ALGORITHM
from tokenim.server.config import Config, LimitsConfig, ServerConfig
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.services.limits import Kind, Limiter, Policy
from tokenim.server.storage.database import Database

LOCKOUT_MS = 900_000
SMALL = LimitsConfig(
    login_failures_per_account=3,
    login_failures_per_address=5,
    login_challenges_per_address=8,
    invite_failures_per_address=2,
    lookup_failures_per_address=2,
    to_device_per_minute=4,
    key_claims_per_minute=3,
    blob_quota_bytes=1000,
)


@pytest.fixture
def config(tmp_path: Path) -> Config:  # overrides conftest's: the app and `http` are built with these limits
    server = ServerConfig(registration=RegistrationMode.OPEN, server_name="tokenim.test", data_dir=tmp_path / "data")
    return Config(server=server, limits=SMALL)


@pytest.fixture
async def elsewhere(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The same server, reached from another client address than `http` (127.0.0.1)."""
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://tokenim.test") as client:
        yield client


async def register(
    http: httpx.AsyncClient, username: str, clock: FakeClock, invite: str | None = None
) -> tuple[httpx.Response, DeviceIdentity]:
    ident = DeviceIdentity.create(UserId(f"@{username}:tokenim.test"), new_device_id(), clock.now_ms())
    upload = ident.keys_to_upload(0, need_fallback=True)
    body = {
        "username": username,
        "invite": invite,
        "master_key": ident.master_key_object(),
        "device_keys": ident.device_keys_object(clock.now_ms()),
        "one_time_keys": upload.one_time_keys,
        "fallback_keys": upload.fallback_keys,
    }
    return await http.post("/v1/register", json=body), ident


async def user(http: httpx.AsyncClient, username: str, clock: FakeClock) -> DeviceIdentity:
    """A registered user's device, made by hand (no profile: cheap)."""
    resp, ident = await register(http, username, clock)
    assert resp.status_code == 200, resp.text
    return ident


async def refused_invite(http: httpx.AsyncClient, username: str, clock: FakeClock) -> httpx.Response:
    return (await register(http, username, clock, invite="NOT-A-CODE"))[0]


async def attempt(
    http: httpx.AsyncClient, user_id: str, device_id: str, signer: DeviceIdentity | None, nonce: str | None = None
) -> httpx.Response:
    """A login: the challenge (returned if refused), then its answer signed by `signer` (None: a made-up signature)."""
    ident = {"user_id": user_id, "device_id": device_id}
    if nonce is None:
        challenge = await http.post("/v1/login/challenge", json=ident)
        if challenge.status_code != 200:
            return challenge
        nonce = str(challenge.json()["nonce"])
    signature = signer.sign_login_challenge(server_name="tokenim.test", nonce=nonce) if signer else "A" * 86
    return await http.post("/v1/login", json={**ident, "nonce": nonce, "signature": signature})


async def log_in(http: httpx.AsyncClient, ident: DeviceIdentity) -> httpx.Response:
    return await attempt(http, ident.user_id, ident.device_id, ident)


async def wrong(http: httpx.AsyncClient, ident: DeviceIdentity) -> httpx.Response:
    """A login for `ident`'s device signed with a made-up signature."""
    return await attempt(http, ident.user_id, ident.device_id, None)


def error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), resp.text
    return dict(resp.json()["error"])


def limited(resp: httpx.Response, scope: str, retry_after_ms: int | None = None) -> dict[str, Any]:
    """A 429 `rate_limited` naming its scope, with `retry_after_ms` and a Retry-After header that agree."""
    err = error(resp, 429, "rate_limited")
    wait = err["details"]["retry_after_ms"]
    assert err["details"]["scope"] == scope
    assert isinstance(wait, int) and wait > 0
    assert resp.headers["Retry-After"] == str(-(-wait // 1000))
    assert "try again in" in err["message"]
    if retry_after_ms is not None:
        assert wait == retry_after_ms
    return err


# ---- logins ---------------------------------------------------------------------------------------


async def test_failed_logins_lock_the_account_until_the_lockout_ends(http: httpx.AsyncClient, clock: FakeClock) -> None:
    alice = await user(http, "alice", clock)
    early = (await http.post("/v1/login/challenge", json={"user_id": alice.user_id, "device_id": alice.device_id})).json()
    for _ in range(3):
        error(await wrong(http, alice), 400, "bad_signature")
    # Locked: no challenge, and not even the right answer to a challenge asked for before.
    ident = {"user_id": alice.user_id, "device_id": alice.device_id}
    err = limited(await http.post("/v1/login/challenge", json=ident), "account", LOCKOUT_MS)
    assert err["message"] == f"Too many failed logins for {alice.user_id}: try again in 15 minutes."
    limited(await attempt(http, alice.user_id, alice.device_id, alice, early["nonce"]), "account")
    clock.advance(ms=LOCKOUT_MS - 1)
    limited(await log_in(http, alice), "account", 1)
    clock.advance(ms=1)
    assert (await log_in(http, alice)).status_code == 200


async def test_a_login_forgets_the_accounts_failures_but_not_the_addresss(http: httpx.AsyncClient, clock: FakeClock) -> None:
    alice = await user(http, "alice", clock)
    for _ in range(2):
        error(await wrong(http, alice), 400, "bad_signature")
    assert (await log_in(http, alice)).status_code == 200
    for _ in range(2):  # 4 failures in all, but only 2 since the login
        error(await wrong(http, alice), 400, "bad_signature")
    assert (await log_in(http, alice)).status_code == 200
    # The address kept all 4: one more failure (on any account) locks it.
    error(await attempt(http, "@nobody:tokenim.test", "NOBODY1", None), 400, "bad_signature")
    limited(await log_in(http, alice), "address")


async def test_an_account_lock_holds_everywhere_and_an_address_lock_only_there(
    http: httpx.AsyncClient, elsewhere: httpx.AsyncClient, clock: FakeClock
) -> None:
    alice, bob = await user(http, "alice", clock), await user(http, "bob", clock)
    for _ in range(3):
        error(await wrong(http, bob), 400, "bad_signature")
    limited(await log_in(elsewhere, bob), "account")  # Bob's account, from any address
    assert (await log_in(http, alice)).status_code == 200  # other accounts from that address are fine
    # Five failures from the other address, each on a different (made-up) account, lock that address only.
    for n in range(5):
        error(await attempt(elsewhere, f"@guess{n}:tokenim.test", "GUESSDEV", None), 400, "bad_signature")
    err = limited(await log_in(elsewhere, alice), "address")
    assert err["message"] == "Too many failed logins from your address: try again in 15 minutes."
    assert (await log_in(http, alice)).status_code == 200


async def test_made_up_nonces_count_against_the_address_only(http: httpx.AsyncClient, clock: FakeClock) -> None:
    """A nonce is bound to no account until the server issued it: garbage must not lock an account out."""
    alice = await user(http, "alice", clock)
    for n in range(4):
        error(await attempt(http, alice.user_id, alice.device_id, alice, f"made-up-{n}"), 401, "challenge_invalid")
    assert (await log_in(http, alice)).status_code == 200
    error(await attempt(http, alice.user_id, alice.device_id, alice, "made-up-5"), 401, "challenge_invalid")
    limited(await log_in(http, alice), "address")


async def test_unknown_and_known_accounts_get_the_same_answers(http: httpx.AsyncClient, clock: FakeClock) -> None:
    """Challenge, failed login and lockout look the same for a real account, a made-up device of it and a
    made-up account (same status, code, sentence, body shape), so none of them tells who exists."""
    alice = await user(http, "alice", clock)
    cases = {
        "real device, wrong signature": (alice.user_id, alice.device_id),
        "real account, made-up device": (alice.user_id, "NOSUCHDEV"),
        "made-up account": ("@nobody:tokenim.test", "NOSUCHDEV"),
    }
    seen: dict[str, list[Any]] = {}
    for how, (user_id, device_id) in cases.items():
        ident = {"user_id": user_id, "device_id": device_id}
        answers: list[Any] = []
        for _ in range(3):
            challenge = await http.post("/v1/login/challenge", json=ident)
            answers.append((challenge.status_code, sorted(challenge.json())))
            resp = await attempt(http, user_id, device_id, None, challenge.json()["nonce"])
            answers.append((resp.status_code, resp.json()))
        locked = await http.post("/v1/login/challenge", json=ident)
        answers.append((locked.status_code, locked.text.replace(user_id, "USER"), locked.headers["Retry-After"]))
        seen[how] = answers
        clock.advance(ms=LOCKOUT_MS)  # the address's count ends with the lockout too
    assert seen["real device, wrong signature"] == seen["real account, made-up device"] == seen["made-up account"]
    assert seen["made-up account"][1][0] == 400 and seen["made-up account"][-1][0] == 429


async def test_login_challenges_are_capped_per_address(
    http: httpx.AsyncClient, elsewhere: httpx.AsyncClient, clock: FakeClock
) -> None:
    ident = {"user_id": "@anyone:tokenim.test", "device_id": "ANYDEVICE"}
    for _ in range(8):
        assert (await http.post("/v1/login/challenge", json=ident)).status_code == 200
    clock.advance(seconds=20)
    limited(await http.post("/v1/login/challenge", json=ident), "address", 40_000)
    assert (await elsewhere.post("/v1/login/challenge", json=ident)).status_code == 200
    clock.advance(seconds=40)
    assert (await http.post("/v1/login/challenge", json=ident)).status_code == 200


# ---- registration and other unauthenticated routes ------------------------------------------------------


async def test_invalid_invite_codes_lock_the_address(
    http: httpx.AsyncClient, elsewhere: httpx.AsyncClient, clock: FakeClock
) -> None:
    for n in range(2):
        error(await refused_invite(http, f"guess{n}", clock), 403, "invite_invalid")
    err = limited(await refused_invite(http, "guess2", clock), "address", LOCKOUT_MS)
    assert err["message"] == "Too many invalid invite codes from your address: try again in 15 minutes."
    error(await refused_invite(elsewhere, "guess3", clock), 403, "invite_invalid")
    clock.advance(ms=LOCKOUT_MS)
    error(await refused_invite(http, "guess4", clock), 403, "invite_invalid")


async def test_naming_accounts_that_do_not_exist_is_limited_per_address(
    http: httpx.AsyncClient, elsewhere: httpx.AsyncClient, clock: FakeClock
) -> None:
    """The routes that must name an unknown account (opening a link, the add-device challenge) share one
    count per address, so listing accounts through them is slow."""
    alice = await user(http, "alice", clock)
    error(await http.post("/v1/link", json={"user_id": "@nobody:tokenim.test"}), 404, "unknown_user")
    body = {"user_id": "@nobody2:tokenim.test", "device_id": new_device_id()}
    error(await http.post("/v1/devices/by_master_key/challenge", json=body), 404, "unknown_user")
    limited(await http.post("/v1/link", json={"user_id": alice.user_id}), "address", LOCKOUT_MS)
    body = {"user_id": alice.user_id, "device_id": new_device_id()}
    limited(await http.post("/v1/devices/by_master_key/challenge", json=body), "address")
    assert (await elsewhere.post("/v1/link", json={"user_id": alice.user_id})).status_code == 200


# ---- quotas per user ----------------------------------------------------------------------------------


def _olm(sender: DeviceIdentity, n: int) -> dict[str, Any]:
    return {"algorithm": OLM_ALGORITHM, "sender_key": sender.curve25519, "ciphertext": {"K" * 43: {"type": 0, "body": f"b{n}"}}}


async def test_to_device_messages_per_minute(http: httpx.AsyncClient, clock: FakeClock) -> None:
    alice = await user(http, "alice", clock)
    auth = bearer((await log_in(http, alice)).json()["access_token"])

    async def send(n: int) -> httpx.Response:
        messages = {"@bob:tokenim.test": {f"DEVICE{i}": _olm(alice, i) for i in range(n)}}
        return await http.post("/v1/to_device", json={"type": ENCRYPTED, "messages": messages}, headers=auth)

    first = await send(3)
    assert first.status_code == 200, first.text
    clock.advance(seconds=15)
    err = limited(await send(2), "account", 45_000)  # 3 + 2 > 4: refused whole, and counts nothing
    assert err["message"] == "You may make at most 4 to-device messages a minute: try again in 45 seconds."
    assert (await send(1)).status_code == 200
    limited(await send(1), "account")
    clock.advance(seconds=45)
    assert (await send(4)).status_code == 200


async def test_one_time_key_claims_per_minute(http: httpx.AsyncClient, clock: FakeClock) -> None:
    alice = await user(http, "alice", clock)
    auth = bearer((await log_in(http, alice)).json()["access_token"])

    async def claim(*devices: str) -> httpx.Response:
        return await http.post("/v1/keys/claim", json={"devices": {alice.user_id: list(devices)}}, headers=auth)

    assert (await claim(alice.device_id, "OTHERDEV1", "OTHERDEV1")).status_code == 200  # asked twice, counted once
    limited(await claim(alice.device_id, "OTHERDEV2"), "account", 60_000)  # 2 + 2 > 3: refused, counts nothing
    assert (await claim("OTHERDEV2")).status_code == 200
    limited(await claim("OTHERDEV3"), "account")
    clock.advance(seconds=60)
    assert (await claim("OTHERDEV3", "OTHERDEV4", "OTHERDEV5")).status_code == 200


async def test_blob_storage_quota_per_user(http: httpx.AsyncClient, config: Config, clock: FakeClock) -> None:
    alice, bob = await user(http, "alice", clock), await user(http, "bob", clock)
    auth = bearer((await log_in(http, alice)).json()["access_token"])
    first = await http.post("/v1/blobs", content=b"x" * 600, headers=auth)
    assert first.status_code == 200, first.text
    err = error(await http.post("/v1/blobs", content=b"y" * 600, headers=auth), 413, "quota_exceeded")
    assert "at most 1000 bytes in all" in err["message"] and "600 bytes are taken" in err["message"]
    assert err["details"] == {"quota_bytes": 1000, "used_bytes": 600}
    assert [p.name for p in (config.server.data_dir / "blobs").iterdir()] == [first.json()["blob_id"]]
    assert (await http.post("/v1/blobs", content=b"z" * 400, headers=auth)).status_code == 200  # exactly full
    error(await http.post("/v1/blobs", content=b"!", headers=auth), 413, "quota_exceeded")
    # Each user has a quota of their own.
    other = bearer((await log_in(http, bob)).json()["access_token"])
    assert (await http.post("/v1/blobs", content=b"b" * 1000, headers=other)).status_code == 200


async def test_a_quota_is_checked_before_and_while_the_file_arrives(http: httpx.AsyncClient, clock: FakeClock) -> None:
    """A file that cannot fit is refused as soon as it passes the quota, not after the whole body was stored;
    with the quota full, before any of it is read."""
    alice = await user(http, "alice", clock)
    auth = bearer((await log_in(http, alice)).json()["access_token"])
    read = 0

    async def body(chunks: int, size: int) -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(chunks):
            read += 1
            yield b"x" * size

    error(await http.post("/v1/blobs", content=body(10, 300), headers=auth), 413, "quota_exceeded")
    assert read < 10
    assert (await http.post("/v1/blobs", content=b"x" * 1000, headers=auth)).status_code == 200
    read = 0
    error(await http.post("/v1/blobs", content=body(3, 10), headers=auth), 413, "quota_exceeded")
    assert read == 0


async def test_two_uploads_at_once_cannot_both_squeeze_into_the_quota(
    http: httpx.AsyncClient, config: Config, clock: FakeClock
) -> None:
    alice = await user(http, "alice", clock)
    auth = bearer((await log_in(http, alice)).json()["access_token"])
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * 300
        await gate.wait()
        yield b"a" * 300

    slow_upload = asyncio.create_task(http.post("/v1/blobs", content=slow(), headers=auth))
    blob_dir = config.server.data_dir / "blobs"
    deadline = asyncio.get_running_loop().time() + 10
    while not (blob_dir.exists() and any(p.name.startswith(".upload-") for p in blob_dir.iterdir())):
        assert asyncio.get_running_loop().time() < deadline, "the slow upload never started"
        await asyncio.sleep(0.01)
    # The slow upload has passed its first checks with nothing stored yet; this one commits meanwhile.
    assert (await http.post("/v1/blobs", content=b"b" * 600, headers=auth)).status_code == 200
    gate.set()
    err = error(await slow_upload, 413, "quota_exceeded")
    assert err["details"] == {"quota_bytes": 1000, "used_bytes": 600}


# ---- the limiter itself -------------------------------------------------------------------------------

POLICY = Policy(per_account=3, per_address=100, window_ms=60_000, lockout_ms=300_000)


def limiter(database: Database, clock: FakeClock) -> Limiter:
    return Limiter(database, clock, {kind: POLICY for kind in Kind})


async def _locked(lim: Limiter, database: Database, user_id: str | None = None, address: str = "") -> bool:
    async with database.read() as tx:
        try:
            await lim.check(tx, Kind.TOTP, user_id=user_id, address=address)
        except TokenIMError as err:
            assert err.code is ErrorCode.RATE_LIMITED, err
            return True
    return False


async def test_failures_older_than_the_window_are_forgotten(database: Database, clock: FakeClock) -> None:
    # A window shorter than the purge interval: the count itself must forget, not only the purge of old rows.
    lim = Limiter(database, clock, {kind: replace(POLICY, window_ms=30_000) for kind in Kind})
    strikes = [await lim.record_failure(Kind.TOTP, user_id="@a:x") for _ in range(2)]
    assert [s.remaining for s in strikes] == [2, 1] and strikes[-1].retry_after_ms is None
    clock.advance(ms=30_000)
    strike = await lim.record_failure(Kind.TOTP, user_id="@a:x")
    assert strike.remaining == 2 and not await _locked(lim, database, "@a:x")
    await lim.record_failure(Kind.TOTP, user_id="@a:x")
    strike = await lim.record_failure(Kind.TOTP, user_id="@a:x")
    assert (strike.remaining, strike.retry_after_ms) == (0, POLICY.lockout_ms)
    assert await _locked(lim, database, "@a:x") and not await _locked(lim, database, "@b:x")
    clock.advance(ms=POLICY.lockout_ms)
    assert not await _locked(lim, database, "@a:x")


async def test_two_nodes_on_one_database_share_the_counts(database: Database, clock: FakeClock) -> None:
    first, second = limiter(database, clock), limiter(database, clock)
    for lim in (first, second, first):
        await lim.record_failure(Kind.TOTP, user_id="@a:x")
    assert await _locked(second, database, "@a:x")


async def test_concurrent_failures_are_all_counted(database: Database, clock: FakeClock) -> None:
    lim = Limiter(database, clock, {kind: Policy(100, 100, 60_000, 60_000) for kind in Kind})
    strikes = await asyncio.gather(*(lim.record_failure(Kind.TOTP, user_id="@a:x", address="10.0.0.1") for _ in range(20)))
    assert sorted(s.remaining for s in strikes) == list(range(80, 100))


async def test_addresses_are_counted_by_ip_and_ipv6_by_its_64(database: Database, clock: FakeClock) -> None:
    lim = Limiter(database, clock, {kind: Policy(0, 2, 60_000, 60_000) for kind in Kind})
    await lim.record_failure(Kind.TOTP, address="2001:db8:1:2::1")
    await lim.record_failure(Kind.TOTP, address="2001:db8:1:2:ffff::9")  # the same /64
    assert await _locked(lim, database, address="2001:db8:1:2::77")
    assert not await _locked(lim, database, address="2001:db8:1:3::1")
    await lim.record_failure(Kind.TOTP, address="10.1.2.3")
    await lim.record_failure(Kind.TOTP, address="::ffff:10.1.2.3")  # IPv4 mapped into IPv6: the same client
    assert await _locked(lim, database, address="10.1.2.3") and not await _locked(lim, database, address="10.1.2.4")
