"""POST /v1/devices/by_master_key/add (a device proven by the master key, no session) and the user's own
audit records (POST /v1/audit/events, GET /v1/audit): every refusal, over raw HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.identity_kit import Account, Device, register
from tokenim.core.clock import FakeClock
from tokenim.core.ids import new_device_id
from tokenim.core.signing import SigningKey
from tokenim.protocol.auth import login_challenge_payload
from tokenim.protocol.key_lifecycle import add_device_payload


@pytest.fixture
async def alice(http: httpx.AsyncClient) -> Account:
    return await register(http, "alice")


async def challenge(http: httpx.AsyncClient, user_id: str, device_id: str) -> httpx.Response:
    return await http.post("/v1/devices/by_master_key/challenge", json={"user_id": user_id, "device_id": device_id})


async def add_body(http: httpx.AsyncClient, acc: Account, device: Device | None = None, **spoil: Any) -> dict[str, Any]:
    device = device or Device(acc.user_id, new_device_id())
    c = (await challenge(http, acc.user_id, device.device_id)).json()
    nonce = spoil.pop("nonce", c["nonce"])
    signer = spoil.pop("signer", acc.master)
    payload = add_device_payload(
        server_name=c["server_name"], user_id=acc.user_id, device_id=device.device_id, device_ed25519=device.ed25519, nonce=nonce
    )
    body = {
        "user_id": acc.user_id,
        "nonce": nonce,
        "signature": signer.sign(payload),
        "device_keys": device.keys_object(spoil.pop("device_master", acc.master), acc.version),
        "one_time_keys": device.one_time_keys(2),
    }
    return body | spoil


def code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def test_the_challenge_shows_the_current_master_key_and_its_chain(http: httpx.AsyncClient, alice: Account) -> None:
    resp = await challenge(http, alice.user_id, new_device_id())
    assert resp.status_code == 200
    body = resp.json()
    assert body["master_key"]["keys"] == {f"ed25519:{alice.master.public_key}": alice.master.public_key}
    assert body["rotations"] == [] and body["server_name"] == "tokenim.test"
    assert code(await challenge(http, "@nobody:tokenim.test", new_device_id())) == "unknown_user"
    assert code(await challenge(http, alice.user_id, alice.first)) == "device_exists"


async def test_a_device_signed_by_the_master_key_is_added_with_a_session(http: httpx.AsyncClient, alice: Account) -> None:
    device = Device(alice.user_id, new_device_id())
    resp = await http.post("/v1/devices/by_master_key/add", json=await add_body(http, alice, device))
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert tokens["device_id"] == device.device_id
    who = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert who.json()["device_id"] == device.device_id
    audit = (await http.get("/v1/audit", headers=alice.auth())).json()["events"]
    assert {"event": "device.added", "device_id": device.device_id} in [
        {"event": e["event"], "device_id": e["device_id"]} for e in audit
    ]


async def test_each_refusal_adds_nothing(http: httpx.AsyncClient, alice: Account, clock: FakeClock) -> None:
    stranger = SigningKey.generate()
    cases = [
        ("bad_signature", {"signer": stranger}),  # challenge not signed by the master key
        ("bad_signature", {"device_master": stranger}),  # device keys not signed by the master key
        ("challenge_invalid", {"nonce": "not-a-nonce"}),
    ]
    for expected, spoil in cases:
        resp = await http.post("/v1/devices/by_master_key/add", json=await add_body(http, alice, **spoil))
        assert (resp.status_code, code(resp)) == (400 if expected == "bad_signature" else 401, expected), resp.text
    devices = (await http.get("/v1/devices", headers=alice.auth())).json()["devices"]
    assert [d["device_id"] for d in devices] == [alice.first]
    events = [e["event"] for e in (await http.get("/v1/audit", headers=alice.auth())).json()["events"]]
    assert events.count("device.add_refused") == 2


async def test_a_challenge_is_used_once_expires_and_is_bound_to_its_device(
    http: httpx.AsyncClient, alice: Account, clock: FakeClock
) -> None:
    body = await add_body(http, alice)
    assert (await http.post("/v1/devices/by_master_key/add", json=body)).status_code == 200
    again = await http.post("/v1/devices/by_master_key/add", json=body)
    assert code(again) == "challenge_invalid"  # consumed

    late = await add_body(http, alice)
    clock.advance(seconds=61)
    assert code(await http.post("/v1/devices/by_master_key/add", json=late)) == "challenge_expired"

    device = Device(alice.user_id, new_device_id())
    body = await add_body(http, alice, device)
    other = Device(alice.user_id, new_device_id())
    body["device_keys"] = other.keys_object(alice.master, 1)  # a nonce asked for another device id
    assert code(await http.post("/v1/devices/by_master_key/add", json=body)) == "challenge_invalid"


async def test_a_login_nonce_can_not_add_a_device_nor_the_reverse(http: httpx.AsyncClient, alice: Account) -> None:
    device = Device(alice.user_id, new_device_id())
    login = (await http.post("/v1/login/challenge", json={"user_id": alice.user_id, "device_id": alice.first})).json()
    body = await add_body(http, alice, device, nonce=login["nonce"])
    assert code(await http.post("/v1/devices/by_master_key/add", json=body)) == "challenge_invalid"

    c = (await challenge(http, alice.user_id, device.device_id)).json()
    payload = login_challenge_payload(server_name="tokenim.test", user_id=alice.user_id, device_id=alice.first, nonce=c["nonce"])
    signature = alice.devices[alice.first].signing.sign(payload)
    ident = {"user_id": alice.user_id, "device_id": alice.first, "nonce": c["nonce"], "signature": signature}
    assert code(await http.post("/v1/login", json=ident)) == "challenge_invalid"


async def test_a_key_of_another_user_is_refused(http: httpx.AsyncClient, alice: Account) -> None:
    bob = await register(http, "bob")
    device = Device(alice.user_id, new_device_id())
    body = await add_body(http, alice, device, signer=bob.master, device_master=bob.master)
    assert code(await http.post("/v1/devices/by_master_key/add", json=body)) == "bad_signature"
    body = await add_body(http, alice)
    body["user_id"] = bob.user_id
    assert code(await http.post("/v1/devices/by_master_key/add", json=body)) == "bad_key_object"


async def test_client_audit_events_are_allow_listed_and_stamped_by_the_server(
    http: httpx.AsyncClient, alice: Account, clock: FakeClock
) -> None:
    ok = await http.post(
        "/v1/audit/events", json={"event": "room_keys.exported", "details": {"sessions": 3}}, headers=alice.auth()
    )
    assert ok.status_code == 200, ok.text
    latest = [
        {k: v for k, v in e.items() if k != "id"}
        for e in (await http.get("/v1/audit?limit=1", headers=alice.auth())).json()["events"]
    ]
    assert latest == [
        {"ts": clock.now_ms(), "event": "client.room_keys.exported", "device_id": alice.first, "details": {"sessions": 3}}
    ]
    for bad in (
        {"event": "device.added"},
        {"event": "master_key.exported", "details": {"note": "x"}},
        {"event": "room_keys.imported", "details": {"sessions": -1}},
        {"event": "master_key.exported", "ts": 1},
        {"event": "person.verified", "details": {"peer": "AAA", "method": "sas"}},
        {"event": "person.verified", "details": {"peer": "@bob:localhost"}},
        {"event": "person.verified", "details": {"peer": "@bob:localhost", "method": "sas", "sessions": 1}},
        {"event": "room_keys.exported", "details": {"peer": "@bob:localhost", "method": "sas"}},
    ):
        resp = await http.post("/v1/audit/events", json=bad, headers=alice.auth())
        assert code(resp) == "invalid_request", bad
    assert (await http.post("/v1/audit/events", json={"event": "master_key.exported"})).status_code == 401
    for limit in ("0", "1001", "-1", "x"):
        assert code(await http.get(f"/v1/audit?limit={limit}", headers=alice.auth())) == "invalid_request"


async def test_a_user_reads_only_their_own_records(http: httpx.AsyncClient, alice: Account) -> None:
    bob = await register(http, "bob")
    await http.post("/v1/audit/events", json={"event": "master_key.exported"}, headers=alice.auth())
    bobs = (await http.get("/v1/audit", headers=bob.auth())).json()["events"]
    assert bobs and all(e["event"] != "client.master_key.exported" for e in bobs)
    assert all(e["device_id"] in (None, bob.first) for e in bobs)


async def test_add_device_challenges_are_capped_per_user_so_refusals_are_bounded(
    http: httpx.AsyncClient, alice: Account, clock: FakeClock
) -> None:
    stranger = SigningKey.generate()
    answers = []
    for _ in range(20):  # an attacker with no token, trying as fast as they can
        device = Device(alice.user_id, new_device_id())
        c = await challenge(http, alice.user_id, device.device_id)
        if c.status_code != 200:
            answers.append(code(c))
            continue
        payload = add_device_payload(
            server_name="tokenim.test", user_id=alice.user_id, device_id=device.device_id,
            device_ed25519=device.ed25519, nonce=c.json()["nonce"],
        )  # fmt: skip
        body = {
            "user_id": alice.user_id,
            "nonce": c.json()["nonce"],
            "signature": stranger.sign(payload),
            "device_keys": device.keys_object(alice.master, alice.version),
        }
        answers.append(code(await http.post("/v1/devices/by_master_key/add", json=body)))
    assert answers == ["bad_signature"] * 3 + ["rate_limited"] * 17
    refused = 3
    events = [e["event"] for e in (await http.get("/v1/audit", headers=alice.auth())).json()["events"]]
    assert events.count("device.add_refused") == refused <= 3
    clock.advance(seconds=61)  # used challenges count until they expire; then the user may try again
    resp = await http.post("/v1/devices/by_master_key/add", json=await add_body(http, alice))
    assert resp.status_code == 200, resp.text


async def test_add_device_challenges_are_capped_per_address(http: httpx.AsyncClient) -> None:
    users = [await register(http, name) for name in ("ann", "ben", "cat", "dan")]
    for user in users[:3]:
        for _ in range(3):
            assert (await challenge(http, user.user_id, new_device_id())).status_code == 200
    assert (await challenge(http, users[3].user_id, new_device_id())).status_code == 200  # the address's 10th
    resp = await challenge(http, users[3].user_id, new_device_id())
    assert (resp.status_code, code(resp)) == (429, "rate_limited")
    assert "this address" in resp.json()["error"]["message"] and "in 1 minute" in resp.json()["error"]["message"]
    assert resp.json()["error"]["details"] == {"retry_after_ms": 60_000} and resp.headers["Retry-After"] == "60"


async def test_the_audit_log_pages_back_to_the_oldest_record(http: httpx.AsyncClient, alice: Account) -> None:
    device = Device(alice.user_id, new_device_id())
    assert (await http.post("/v1/devices/by_master_key/add", json=await add_body(http, alice, device))).status_code == 200
    for _ in range(7):  # newer records that would push device.added off a short page
        await http.post("/v1/audit/events", json={"event": "master_key.exported"}, headers=alice.auth())
    newest = (await http.get("/v1/audit?limit=1000", headers=alice.auth())).json()
    assert newest["next_before"] is None
    seen: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        query = "/v1/audit?limit=3" + ("" if before is None else f"&before={before}")
        page = (await http.get(query, headers=alice.auth())).json()
        assert len(page["events"]) <= 3
        seen += page["events"]
        before = page["next_before"]
        if before is None:
            break
        assert before == page["events"][-1]["id"]
    assert seen == newest["events"]  # every record once, newest first, nothing out of reach
    assert [e["id"] for e in seen] == sorted((e["id"] for e in seen), reverse=True)
    assert {"event": "device.added", "device_id": device.device_id} in [
        {"event": e["event"], "device_id": e["device_id"]} for e in seen
    ]
    for bad in ("0", "+1", "01x", "1.0", "-1"):
        assert code(await http.get(f"/v1/audit?before={bad}", headers=alice.auth())) == "invalid_request"
