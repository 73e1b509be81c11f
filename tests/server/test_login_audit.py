"""Every login attempt is on the record with where it came from: the client's address, its User-Agent
(cleaned and capped), the device, the outcome and, for a failure, the reason."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.identity_kit import Account, Device, register, revocation_object
from tokenim.core.clock import FakeClock
from tokenim.core.ids import new_device_id
from tokenim.protocol.auth import login_challenge_payload
from tokenim.server.services.common import MAX_USER_AGENT, Origin
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import audit_log

FAR = ("203.0.113.9", 40000)
AGENT = "tokenim-test/1.0 (e2e)"


@pytest.fixture
async def far(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Requests from another address, with a User-Agent of their own."""
    transport = httpx.ASGITransport(app=app, client=FAR)
    async with httpx.AsyncClient(transport=transport, base_url="http://tokenim.test", headers={"User-Agent": AGENT}) as c:
        yield c


@pytest.fixture
async def alice(http: httpx.AsyncClient) -> Account:
    return await register(http, "alice")


async def records(database: Database, *events: str) -> list[Any]:
    async with database.read() as tx:
        q = select(audit_log).where(audit_log.c.event.in_(events)).order_by(audit_log.c.id)
        return list(await tx.execute(q))


def summary(row: Any) -> tuple[Any, ...]:
    return (row.event, row.user_id, row.device_id, row.ip, row.user_agent, json.loads(row.details_json))


async def signed_login(http: httpx.AsyncClient, acc: Account, device: Device, *, spoil: bool = False) -> httpx.Response:
    ident = {"user_id": acc.user_id, "device_id": device.device_id}
    c = (await http.post("/v1/login/challenge", json=ident)).json()
    payload = login_challenge_payload(
        server_name=c["server_name"], user_id=acc.user_id, device_id=device.device_id, nonce=c["nonce"]
    )
    signature = device.signing.sign(b"something else" if spoil else payload)
    return await http.post("/v1/login", json={**ident, "nonce": c["nonce"], "signature": signature})


async def test_each_login_attempt_is_recorded_with_its_origin_outcome_and_reason(
    far: httpx.AsyncClient, alice: Account, database: Database, clock: FakeClock
) -> None:
    me = dataclasses.replace(alice, http=far)
    device = alice.devices[alice.first]
    ident = {"user_id": alice.user_id, "device_id": alice.first}
    ua = (FAR[0], AGENT)

    assert (await me.login(device)).status_code == 200
    assert (await signed_login(far, alice, device, spoil=True)).json()["error"]["code"] == "bad_signature"
    # A replayed challenge, and a late one.
    c = (await far.post("/v1/login/challenge", json=ident)).json()
    good = device.signing.sign(
        login_challenge_payload(server_name=c["server_name"], user_id=alice.user_id, device_id=alice.first, nonce=c["nonce"])
    )
    assert (await far.post("/v1/login", json={**ident, "nonce": c["nonce"], "signature": good})).status_code == 200
    resp = await far.post("/v1/login", json={**ident, "nonce": c["nonce"], "signature": good})
    assert resp.json()["error"]["code"] == "challenge_invalid"
    c = (await far.post("/v1/login/challenge", json=ident)).json()
    clock.advance(seconds=61)
    resp = await far.post("/v1/login", json={**ident, "nonce": c["nonce"], "signature": good})
    assert resp.json()["error"]["code"] == "challenge_expired"
    # A device the account does not have, and an account that does not exist: each gets a challenge like
    # anyone (nobody learns who has an account), and the login fails as a wrong signature does.
    stranger = new_device_id()
    for who in ({**ident, "device_id": stranger}, {"user_id": "@nobody:tokenim.test", "device_id": stranger}):
        c = (await far.post("/v1/login/challenge", json=who)).json()
        payload = login_challenge_payload(
            server_name=c["server_name"], user_id=who["user_id"], device_id=stranger, nonce=c["nonce"]
        )
        resp = await far.post("/v1/login", json={**who, "nonce": c["nonce"], "signature": device.signing.sign(payload)})
        assert resp.json()["error"]["code"] == "bad_signature"

    rows = [summary(r) for r in await records(database, "login", "login.failed") if r.ip == FAR[0]]
    assert rows == [
        ("login", alice.user_id, alice.first, *ua, {}),
        ("login.failed", alice.user_id, alice.first, *ua, {"reason": "bad_signature", "stage": "login"}),
        ("login", alice.user_id, alice.first, *ua, {}),
        ("login.failed", alice.user_id, alice.first, *ua, {"reason": "challenge_invalid", "stage": "login"}),
        ("login.failed", alice.user_id, alice.first, *ua, {"reason": "challenge_expired", "stage": "login"}),
        ("login.failed", alice.user_id, stranger, *ua, {"reason": "bad_signature", "stage": "login"}),
        (
            "login.failed",
            None,
            None,
            *ua,
            {"reason": "bad_signature", "stage": "login", "user": "@nobody:tokenim.test", "device": stranger},
        ),
    ]
    # The user sees their own attempts, with where they came from, in their security review.
    review = (await far.get("/v1/security/review", headers=me.auth())).json()
    assert [(x["outcome"], x["reason"], x["ip"], x["user_agent"]) for x in review["logins"]][:3] == [
        ("failed", "bad_signature", *ua),
        ("failed", "challenge_expired", *ua),
        ("failed", "challenge_invalid", *ua),
    ]


async def test_a_revoked_device_trying_to_log_in_is_recorded(
    far: httpx.AsyncClient, http: httpx.AsyncClient, alice: Account, database: Database
) -> None:
    lost, resp = await alice.add_device()
    assert resp.status_code == 200
    resp = await http.post("/v1/keys/revoke", json={"revocation": revocation_object(lost, alice.master, 1)}, headers=alice.auth())
    assert resp.status_code == 200, resp.text
    resp = await far.post("/v1/login/challenge", json={"user_id": alice.user_id, "device_id": lost.device_id})
    assert resp.json()["error"]["code"] == "device_revoked"
    rows = [summary(r) for r in await records(database, "login.failed")]
    assert rows == [
        ("login.failed", alice.user_id, lost.device_id, FAR[0], AGENT, {"reason": "device_revoked", "stage": "challenge"})
    ]


async def test_registration_and_a_master_key_add_record_their_origin(far: httpx.AsyncClient, database: Database) -> None:
    acc = await register(far, "carol")
    rows = await records(database, "account.registered", "login")
    assert [(r.event, r.ip, r.user_agent) for r in rows] == [("account.registered", *FAR[:1], AGENT), ("login", *FAR[:1], AGENT)]
    assert acc.user_id == rows[0].user_id


def test_the_user_agent_is_read_as_utf8_stripped_of_controls_and_capped() -> None:
    raw = "Evil\x1b[31m\u202eAgent\r\n\x00 ".encode().decode("latin-1")  # as the ASGI server hands it over
    assert Origin.of("198.51.100.1", raw) == Origin("198.51.100.1", "Evil[31mAgent")
    assert Origin.of("198.51.100.1", "Ünïcode/1".encode().decode("latin-1")).user_agent == "Ünïcode/1"
    assert Origin.of(None, "x" * 1000) == Origin(None, "x" * MAX_USER_AGENT)
    assert Origin.of("", "\x07\x08") == Origin(None, None)


async def test_a_user_agent_with_control_characters_is_stored_clean(app: FastAPI, database: Database) -> None:
    transport = httpx.ASGITransport(app=app, client=FAR)
    agent = "Mozilla/5.0 \x1b]0;owned\x07 " + "y" * 400
    async with httpx.AsyncClient(transport=transport, base_url="http://tokenim.test") as c:
        c.headers["User-Agent"] = agent
        await register(c, "dave")
    (row,) = await records(database, "account.registered")
    assert row.user_agent == ("Mozilla/5.0 ]0;owned " + "y" * 400)[:MAX_USER_AGENT]
    assert len(row.user_agent) == MAX_USER_AGENT
