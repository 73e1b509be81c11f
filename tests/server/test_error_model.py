"""One error model: every client-visible failure is a 4xx with {"error": {code, message, status}}."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.limits import ACCESS_TOKEN_TTL_MS, MAX_BODY_BYTES
from tokenim.protocol.auth import login_challenge_payload


def _error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["code"] == code and err["status"] == status
    assert isinstance(err["message"], str) and err["message"].endswith(".") and "Traceback" not in err["message"]
    return err  # type: ignore[no-any-return]


def _auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.account.access_token()}"}


async def test_malformed_json_wrong_types_missing_and_extra_fields(http: httpx.AsyncClient) -> None:
    _error(
        await http.post("/v1/login/challenge", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "bad_json",
    )
    _error(await http.post("/v1/login/challenge", json=["a", "list"]), 400, "invalid_request")
    _error(await http.post("/v1/login/challenge", json="a string"), 400, "invalid_request")
    err = _error(await http.post("/v1/login/challenge", json={"user_id": 5, "device_id": "ABCDEFG"}), 400, "invalid_request")
    assert "user_id" in err["message"]
    err = _error(await http.post("/v1/login/challenge", json={"user_id": "@a:b"}), 400, "invalid_request")
    assert "'device_id' is missing" in err["message"]
    err = _error(
        await http.post("/v1/login/challenge", json={"user_id": "@a:b", "device_id": "ABCDEFG", "x": 1}), 400, "invalid_request"
    )
    assert "'x' is not an accepted field" in err["message"]
    _error(
        await http.post("/v1/register", json={"username": "Bad Name!", "master_key": {}, "device_keys": {}}),
        400,
        "invalid_request",
    )
    _error(await http.post("/v1/register", json={"username": "ok", "master_key": [], "device_keys": {}}), 400, "invalid_request")


async def test_oversized_bodies_announced_or_streamed(http: httpx.AsyncClient) -> None:
    big = b"x" * (MAX_BODY_BYTES + 1)
    _error(await http.post("/v1/register", content=big, headers={"content-type": "application/json"}), 413, "body_too_large")

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b" " * 4096

    _error(await http.post("/v1/register", content=stream(), headers={"content-type": "application/json"}), 413, "body_too_large")


async def test_unknown_route_wrong_method_and_tokens(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    _error(await http.get("/v1/nothing-here"), 404, "not_found")
    _error(await http.delete("/v1/whoami"), 405, "method_not_allowed")
    _error(await http.get("/v1/whoami"), 401, "unauthorized")
    _error(await http.get("/v1/whoami", headers={"Authorization": "Bearer garbage"}), 401, "unauthorized")
    _error(await http.get("/v1/whoami", headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    _error(await http.get("/v1/whoami", headers={"Authorization": "Bearer " + "x" * 5000}), 401, "unauthorized")
    assert (await http.get("/v1/whoami", headers=_auth(alice))).status_code == 200
    clock.advance(ms=ACCESS_TOKEN_TTL_MS + 1)
    _error(await http.get("/v1/whoami", headers=_auth(alice)), 401, "token_expired")
    await alice.account.refresh()
    assert (await http.get("/v1/whoami", headers=_auth(alice))).status_code == 200


async def test_login_errors(http: httpx.AsyncClient, alice: Client, bob: Client, clock: FakeClock) -> None:
    # An account or device that never existed gets a challenge like any other (docs/threat-model.md).
    for who in (
        {"user_id": "@nobody:tokenim.test", "device_id": "ABCDEFG"},
        {"user_id": alice.user_id, "device_id": "NOSUCHDEV"},
    ):
        assert (await http.post("/v1/login/challenge", json=who)).status_code == 200

    async def challenge(c: Client) -> str:
        r = await http.post("/v1/login/challenge", json={"user_id": c.user_id, "device_id": c.device_id})
        assert r.status_code == 200
        return str(r.json()["nonce"])

    def answer(c: Client, nonce: str, server_name: str = "tokenim.test") -> dict[str, str]:
        sig = insides(c).identity.sign(
            login_challenge_payload(server_name=server_name, user_id=c.user_id, device_id=c.device_id, nonce=nonce)
        )
        return {"user_id": c.user_id, "device_id": c.device_id, "nonce": nonce, "signature": sig}

    nonce = await challenge(alice)
    assert (await http.post("/v1/login", json=answer(alice, nonce))).status_code == 200
    _error(await http.post("/v1/login", json=answer(alice, nonce)), 401, "challenge_invalid")  # replay

    nonce = await challenge(alice)
    clock.advance(seconds=61)
    _error(await http.post("/v1/login", json=answer(alice, nonce)), 401, "challenge_expired")

    nonce = await challenge(alice)  # bound to alice's device: bob can't use it
    _error(await http.post("/v1/login", json=answer(bob, nonce)), 401, "challenge_invalid")

    nonce = await challenge(alice)  # signed for another server: refused, and the challenge is spent
    _error(await http.post("/v1/login", json=answer(alice, nonce, "evil.example")), 400, "bad_signature")
    _error(await http.post("/v1/login", json=answer(alice, nonce)), 401, "challenge_invalid")

    nonce = await challenge(alice)  # signed by another device's key
    forged = answer(alice, nonce) | {"signature": answer(bob, nonce)["signature"]}
    _error(await http.post("/v1/login", json=forged), 400, "bad_signature")


async def test_registration_with_bad_signatures_stores_nothing(http: httpx.AsyncClient, make_user: Any, clock: FakeClock) -> None:
    from tokenim.core.ids import DeviceId, UserId
    from tokenim.crypto.device import DeviceIdentity

    ident = DeviceIdentity.create(UserId("@mallory:tokenim.test"), DeviceId("MALLORY1"), clock.now_ms())
    upload = ident.keys_to_upload(0, need_fallback=True)
    good = {
        "username": "mallory",
        "master_key": ident.master_key_object(),
        "device_keys": ident.device_keys_object(clock.now_ms()),
        "one_time_keys": upload.one_time_keys,
        "fallback_keys": upload.fallback_keys,
    }
    tampered_master = {**good, "master_key": {**good["master_key"], "created_at": clock.now_ms() + 1}}
    _error(await http.post("/v1/register", json=tampered_master), 400, "bad_signature")
    tampered_device = {**good, "device_keys": {**good["device_keys"], "created_at": clock.now_ms() + 1}}
    _error(await http.post("/v1/register", json=tampered_device), 400, "bad_signature")
    first = next(iter(good["one_time_keys"]))
    bad_otks = dict(good["one_time_keys"])
    bad_otks[first] = {**bad_otks[first], "key": good["device_keys"]["keys"]["curve25519:MALLORY1"]}
    _error(await http.post("/v1/register", json={**good, "one_time_keys": bad_otks}), 400, "bad_signature")
    _error(await http.post("/v1/register", json={**good, "device_keys": {"user_id": 1}}), 400, "bad_key_object")
    # Nothing was stored by the failures: the real registration still works.
    ok = await http.post("/v1/register", json=good)
    assert ok.status_code == 200 and ok.json()["user_id"] == "@mallory:tokenim.test"
    _error(await http.post("/v1/register", json=good), 409, "username_taken")


POST_ROUTES = [
    "/v1/register",
    "/v1/login/challenge",
    "/v1/login",
    "/v1/token/refresh",
    "/v1/keys/upload",
    "/v1/keys/query",
    "/v1/keys/claim",
    "/v1/devices",
    "/v1/admin/invites",
    "/v1/rooms",
    "/v1/rooms/direct",
    "/v1/to_device",
    "/v1/to_device/ack",
]


def _junk(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.randrange(-(2**70), 2**70)
    if kind == 1:
        return "".join(rng.choice("ab@:!$\u00e9\u4e2d\n\x00 _-") for _ in range(rng.randrange(0, 40)))
    if kind == 2:
        return rng.choice([None, True, False, 1.5, -0.0])
    if kind == 3:
        return "@alice:tokenim.test"
    if kind == 4:
        return "ABCDEFGH"
    if kind == 5:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    keys = [
        "user_id",
        "device_id",
        "keys",
        "signatures",
        "one_time_keys",
        "devices",
        "messages",
        "type",
        "content",
        "name",
        "up_to",
    ]
    return {rng.choice(keys): _junk(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


@pytest.mark.parametrize("seed", range(4))
async def test_random_bodies_never_cause_a_server_error(http: httpx.AsyncClient, alice: Client, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        route = rng.choice(POST_ROUTES)
        body = _junk(rng)
        if rng.random() < 0.5 and isinstance(body, dict):
            body = {
                **{"user_ids": [alice.user_id], "devices": {alice.user_id: [alice.device_id]}, "type": "m.room.encrypted"},
                **body,
            }
        resp = await http.post(route, json=body, headers=_auth(alice))
        assert resp.status_code < 500, (route, body, resp.text)
        if resp.status_code >= 400:
            assert resp.json()["error"]["code"]
