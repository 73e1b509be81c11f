"""The security review flags what looks wrong, read from the user's audit records by event name: a new device,
a login from a new address, a burst of failed attempts, a lost or revoked device trying to log in, a recovery
in progress; and nothing on an account used as usual."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.identity_kit import Account, register, revocation_object
from tests.server.test_login_audit import signed_login
from tokenim.core.clock import FakeClock
from tokenim.server.services.audit import Auditor
from tokenim.server.services.common import Origin
from tokenim.server.services.security import BURST_COUNT, BURST_WINDOW_MS
from tokenim.server.storage.audit import AuditStore
from tokenim.server.storage.database import Database

FAR = ("198.51.100.23", 5555)


@pytest.fixture
async def far(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=FAR)
    async with httpx.AsyncClient(transport=transport, base_url="http://tokenim.test") as c:
        yield c


@pytest.fixture
async def alice(http: httpx.AsyncClient) -> Account:
    return await register(http, "alice")


async def review(acc: Account, **query: int) -> dict[str, Any]:
    resp = await acc.http.get("/v1/security/review", params=query, headers=acc.auth())
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def kinds(r: dict[str, Any]) -> list[str]:
    return [f["kind"] for f in r["flags"]]


async def test_an_account_used_as_usual_shows_nothing_wrong(alice: Account) -> None:
    await alice.login(alice.devices[alice.first])
    r = await review(alice)
    assert r["flags"] == []
    assert [(x["outcome"], x["device_id"], x["ip"]) for x in r["logins"]] == [("success", alice.first, "127.0.0.1")] * 2
    assert [a["event"] for a in r["activity"]] == ["account.registered"]


async def test_a_new_device_and_a_login_from_a_new_address_are_flagged(
    far: httpx.AsyncClient, alice: Account, clock: FakeClock
) -> None:
    clock.advance(seconds=5)
    second, _ = await alice.add_device()
    from_far = dataclasses.replace(alice, http=far)
    clock.advance(seconds=5)
    assert (await from_far.login(second)).status_code == 200
    clock.advance(seconds=5)
    assert (await from_far.login(second)).status_code == 200  # the second time the address is known
    r = await review(alice)
    assert kinds(r) == ["new_ip", "new_device"]
    new_ip, new_device = r["flags"]
    assert (new_ip["ip"], new_ip["device_id"]) == (FAR[0], second.device_id)
    assert FAR[0] in new_ip["message"]
    assert new_device["device_id"] == second.device_id and second.device_id in new_device["message"]


async def test_a_burst_of_failed_logins_is_flagged_and_a_few_spread_out_are_not(
    far: httpx.AsyncClient, alice: Account, clock: FakeClock
) -> None:
    device = alice.devices[alice.first]
    for _ in range(BURST_COUNT - 1):  # one short of a burst, close together
        assert (await signed_login(far, alice, device, spoil=True)).status_code == 400
        clock.advance(seconds=30)
    clock.advance(days=1)
    for _ in range(BURST_COUNT + 1):  # more than a burst, but never BURST_COUNT inside the window
        assert (await signed_login(far, alice, device, spoil=True)).status_code == 400
        clock.advance(ms=BURST_WINDOW_MS // (BURST_COUNT - 1) + 1000)
    assert (await alice.login(device)).status_code == 200  # a fresh token
    assert kinds(await review(alice)) == []
    clock.advance(days=1)
    for _ in range(BURST_COUNT + 2):
        assert (await signed_login(far, alice, device, spoil=True)).status_code == 400
        clock.advance(seconds=30)
    assert (await alice.login(device)).status_code == 200  # a fresh token, a day on
    r = await review(alice)
    assert kinds(r) == ["failed_burst"]
    burst = r["flags"][0]
    assert (burst["count"], burst["ip"]) == (BURST_COUNT + 2, FAR[0])
    assert "7 failed attempts (login.failed)" in burst["message"]
    assert sum(x["outcome"] == "failed" for x in r["logins"]) == 3 * BURST_COUNT + 2


async def test_a_revoked_or_lost_device_trying_to_log_in_and_a_recovery_in_progress_are_flagged(
    far: httpx.AsyncClient, http: httpx.AsyncClient, alice: Account, database: Database, clock: FakeClock
) -> None:
    lost, _ = await alice.add_device()
    resp = await http.post("/v1/keys/revoke", json={"revocation": revocation_object(lost, alice.master, 1)}, headers=alice.auth())
    assert resp.status_code == 200
    clock.advance(seconds=1)
    await far.post("/v1/login/challenge", json={"user_id": alice.user_id, "device_id": lost.device_id})
    # The events other features record (reporting a device lost, account recovery), by their documented names.
    auditor = Auditor(AuditStore(), clock)
    clock.advance(seconds=1)
    async with database.write() as tx:
        await auditor.record(tx, "login.lost_device", alice.user_id, lost.device_id, origin=Origin(FAR[0], None))
    clock.advance(seconds=1)
    async with database.write() as tx:
        await auditor.record(tx, "recovery.started", alice.user_id, None, origin=Origin("192.0.2.7", None))
    r = await review(alice)
    assert kinds(r) == ["recovery_in_progress", "lost_device_login", "revoked_device_login", "new_device"]
    assert "192.0.2.7" in r["flags"][0]["message"]
    assert [(f["device_id"], f["ip"]) for f in r["flags"][1:3]] == [(lost.device_id, FAR[0])] * 2
    assert r["logins"][0]["reason"] == "lost_device"
    clock.advance(seconds=1)
    async with database.write() as tx:
        await auditor.record(tx, "recovery.cancelled", alice.user_id, alice.first)
    assert "recovery_in_progress" not in kinds(await review(alice))


async def test_the_review_covers_the_days_asked_for(alice: Account, clock: FakeClock) -> None:
    clock.advance(days=10)
    assert (await alice.login(alice.devices[alice.first])).status_code == 200  # a fresh token
    await alice.add_device()
    assert kinds(await review(alice, days=5)) == ["new_device"]
    clock.advance(days=6)
    assert (await alice.login(alice.devices[alice.first])).status_code == 200  # a fresh token
    r = await review(alice, days=5)
    assert (r["flags"], r["activity"], [x["ts"] for x in r["logins"]]) == ([], [], [clock.now_ms()])
    assert r["since"] == clock.now_ms() - 5 * 86_400_000
    assert [a["event"] for a in (await review(alice, days=30))["activity"]] == ["device.added", "account.registered"]
    for bad in ("0", "366", "07", "-1"):
        resp = await alice.http.get(f"/v1/security/review?days={bad}", headers=alice.auth())
        assert (resp.status_code, resp.json()["error"]["code"]) == (400, "invalid_request")
