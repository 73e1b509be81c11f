"""Adding a device: at most MAX_DEVICES_PER_USER per account (exactly at the limit is refused), a device id
the account already has is refused, the addition is audited and announced to every room the user is in
(so senders share keys with it), and key claims are capped per request."""

from __future__ import annotations

import httpx
import pytest

from tests.support import add_device, client_auth
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.events import DEVICE_LIST
from tokenim.server.storage.audit import AuditStore
from tokenim.server.storage.database import Database


async def test_an_account_holds_at_most_the_device_limit(
    alice: Client, bob: Client, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tokenim.server.services.keys.MAX_DEVICES_PER_USER", 3)
    await add_device(bob, clock)  # another account's devices do not count
    await add_device(alice, clock)
    await add_device(alice, clock)
    with pytest.raises(TokenIMError) as info:
        await add_device(alice, clock)
    assert info.value.code is ErrorCode.TOO_MANY_KEYS
    assert len((await alice.devices.all()).devices) == 3


async def test_a_device_id_the_account_already_has_is_refused(alice: Client, clock: FakeClock) -> None:
    second = await add_device(alice, clock)
    with pytest.raises(TokenIMError) as info:
        await add_device(alice, clock, device_id=second.device_id)
    assert info.value.code is ErrorCode.DEVICE_EXISTS


async def test_an_added_device_is_audited_and_announced_in_the_users_rooms(
    http: httpx.AsyncClient, alice: Client, bob: Client, clock: FakeClock, database: Database
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    second = await add_device(alice, clock)
    async with database.read() as tx:
        events = await AuditStore().for_user(tx, alice.user_id)
    added = [(e.user_id, e.device_id, e.details) for e in events if e.event == "device.added"]
    assert added == [(alice.user_id, second.device_id, {"by_device": alice.device_id})]
    resp = await http.get("/v1/sync", params={"since": 0}, headers=client_auth(bob))
    announced = [e for e in resp.json()["events"] if e["type"] == DEVICE_LIST and e["room_id"] == room]
    assert [(e["sender"], e["content"]) for e in announced] == [
        (alice.user_id, {"user_id": alice.user_id, "device_id": second.device_id, "change": "added"})
    ]


async def test_a_claim_names_at_most_1000_devices(http: httpx.AsyncClient, alice: Client) -> None:
    def claim(n: int) -> dict[str, object]:
        return {"devices": {alice.user_id: [f"DEV{i:05d}" for i in range(n)]}}

    assert (await http.post("/v1/keys/claim", json=claim(1000), headers=client_auth(alice))).status_code == 200
    resp = await http.post("/v1/keys/claim", json=claim(1001), headers=client_auth(alice))
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, "invalid_request")
