"""The link rendezvous on the server, both databases: a slot per new device, claimed once by a device of the
same user, mailboxes only the two sides can use, expiry, caps per address and server-wide (never per user), nothing useful stored
in clear, and audit records for opened, approved and failed links."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.identity_kit import Account, register
from tokenim.core.clock import FakeClock
from tokenim.protocol.link import MAX_LINK_BODY, MAX_NEW_SIDE_CHARS, MAX_OPEN_LINKS_PER_ADDRESS
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import audit_log, link_messages, link_slots


def code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def open_link(http: httpx.AsyncClient, user_id: str, address: str | None = None) -> dict[str, Any]:
    resp = await http.post("/v1/link", json={"user_id": user_id})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def link_auth(opened: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {opened['token']}"}


async def audit(database: Database, user_id: str) -> list[tuple[str, str | None]]:
    async with database.read() as tx:
        rows = await tx.execute(
            select(audit_log.c.event, audit_log.c.details_json).where(audit_log.c.user_id == user_id).order_by(audit_log.c.id)
        )
        return [(r.event, r.details_json) for r in rows if r.event.startswith("link.")]


@pytest.fixture
async def alice(http: httpx.AsyncClient) -> Account:
    return await register(http, "alice")


async def test_a_slot_is_claimed_once_and_its_mailboxes_carry_messages_both_ways(
    http: httpx.AsyncClient, alice: Account, database: Database
) -> None:
    opened = await open_link(http, alice.user_id)
    assert opened["policy"] == "master_key"
    path = f"/v1/link/{opened['link_id']}"
    assert (await http.put(f"{path}/messages/1", json={"body": "AAEC"}, headers=link_auth(opened))).status_code == 200
    claim = await http.post(f"{path}/claim", headers=alice.auth())
    assert claim.status_code == 200, claim.text
    again = await http.post(f"{path}/claim", headers=alice.auth())
    assert again.status_code == 409 and code(again) == "link_used"
    page = await http.get(f"{path}/messages?after=0", headers=alice.auth())
    assert page.json() == {"messages": [{"seq": 1, "body": "AAEC"}], "state": "claimed"}
    assert (await http.put(f"{path}/messages/1", json={"body": "BBBB"}, headers=alice.auth())).status_code == 200
    mine = await http.get(f"{path}/messages?after=0", headers=link_auth(opened))
    assert mine.json()["messages"] == [{"seq": 1, "body": "BBBB"}]
    # The same message again is harmless; another one under the same number is refused.
    assert (await http.put(f"{path}/messages/1", json={"body": "BBBB"}, headers=alice.auth())).status_code == 200
    assert code(await http.put(f"{path}/messages/1", json={"body": "CCCC"}, headers=alice.auth())) == "invalid_request"
    done = await http.post(f"{path}/close", json={"outcome": "approved"}, headers=alice.auth())
    assert done.status_code == 200, done.text
    assert (await http.get(f"{path}/messages", headers=link_auth(opened))).json() == {"messages": [], "state": "approved"}
    assert code(await http.put(f"{path}/messages/2", json={"body": "AA"}, headers=link_auth(opened))) == "link_used"
    assert [e for e, _ in await audit(database, alice.user_id)] == ["link.claimed", "link.approved"]
    async with database.read() as tx:  # an ended link's mailbox is emptied
        assert (await tx.execute(select(link_messages))).first() is None


async def test_nothing_that_helps_an_attacker_is_stored_in_clear(
    http: httpx.AsyncClient, alice: Account, database: Database
) -> None:
    opened = await open_link(http, alice.user_id)
    async with database.read() as tx:
        row = (await tx.execute(select(link_slots))).one()
    stored = " ".join(str(v) for v in row)
    assert opened["link_id"] not in stored and opened["token"] not in stored and "127.0.0.1" not in stored


async def test_only_the_slots_user_and_its_claiming_device_reach_it(http: httpx.AsyncClient, alice: Account) -> None:
    bob = await register(http, "bob")
    opened = await open_link(http, alice.user_id)
    path = f"/v1/link/{opened['link_id']}"
    assert code(await http.post(f"{path}/claim", headers=bob.auth())) == "not_found"
    assert code(await http.get(f"{path}/messages", headers=bob.auth())) == "not_found"
    assert code(await http.get(f"{path}/messages", headers=alice.auth())) == "forbidden"  # nobody claimed it yet
    other = await open_link(http, alice.user_id)
    assert code(await http.get(f"{path}/messages", headers=link_auth(other))) == "unauthorized"
    assert code(await http.get(f"{path}/messages", headers={"Authorization": "Bearer link_forged"})) == "unauthorized"
    assert code(await http.get(f"{path}/messages")) == "unauthorized"
    assert code(await http.post("/v1/link/ZZZZZZ/claim", headers=alice.auth())) == "not_found"
    assert code(await http.post("/v1/link", json={"user_id": "@nobody:tokenim.test"})) == "unknown_user"


async def test_a_slot_expires_after_ten_minutes(http: httpx.AsyncClient, alice: Account, clock: FakeClock) -> None:
    opened = await open_link(http, alice.user_id)
    clock.advance(seconds=10 * 60)
    resp = await http.post(f"/v1/link/{opened['link_id']}/claim", headers=alice.auth())
    assert resp.status_code == 410 and code(resp) == "link_expired"
    assert code(await http.get(f"/v1/link/{opened['link_id']}/messages", headers=link_auth(opened))) == "link_expired"


async def test_a_failure_reaches_the_other_side_with_its_reason(
    http: httpx.AsyncClient, alice: Account, database: Database
) -> None:
    opened = await open_link(http, alice.user_id)
    path = f"/v1/link/{opened['link_id']}"
    await http.post(f"{path}/claim", headers=alice.auth())
    resp = await http.post(f"{path}/close", json={"outcome": "failed", "reason": "mismatch"}, headers=alice.auth())
    assert resp.status_code == 200, resp.text
    told = await http.get(f"{path}/messages", headers=link_auth(opened))
    assert told.status_code == 409 and told.json()["error"]["details"] == {"reason": "mismatch"}
    # The new device can't report the link approved; only the approver of a live slot can.
    assert code(await http.post(f"{path}/close", json={"outcome": "approved"}, headers=link_auth(opened))) == "forbidden"
    events = await audit(database, alice.user_id)
    assert events[-1][0] == "link.failed" and "mismatch" in str(events[-1][1])


def from_address(app: FastAPI, host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://tokenim.test")


async def test_nobody_else_can_block_a_users_linking(
    app: FastAPI, http: httpx.AsyncClient, alice: Account, clock: FakeClock
) -> None:
    async with from_address(app, "203.0.113.7") as attacker:
        for _ in range(MAX_OPEN_LINKS_PER_ADDRESS):  # all the attacker's address may open, all for alice
            assert (await attacker.post("/v1/link", json={"user_id": alice.user_id})).status_code == 200
        refused = await attacker.post("/v1/link", json={"user_id": alice.user_id})
        assert (refused.status_code, code(refused)) == (429, "rate_limited")
        message = refused.json()["error"]["message"]
        assert "from this address" in message and "approve" not in message and "in 10 minutes" in message
        assert refused.json()["error"]["details"] == {"retry_after_ms": 10 * 60 * 1000}
        assert refused.headers["Retry-After"] == "600"
    opened = await open_link(http, alice.user_id)  # alice's own new device, elsewhere, still gets a slot
    claim = await http.post(f"/v1/link/{opened['link_id']}/claim", headers=alice.auth())
    assert claim.status_code == 200, claim.text
    clock.advance(seconds=10 * 60)  # expired slots no longer count
    async with from_address(app, "203.0.113.7") as attacker:
        assert (await attacker.post("/v1/link", json={"user_id": alice.user_id})).status_code == 200


async def test_a_stranger_can_neither_churn_slots_nor_write_in_the_users_log(
    app: FastAPI, alice: Account, database: Database
) -> None:
    async with from_address(app, "203.0.113.9") as attacker:
        answers = []
        for _ in range(MAX_OPEN_LINKS_PER_ADDRESS + 5):  # open, give up at once, open again
            resp = await attacker.post("/v1/link", json={"user_id": alice.user_id})
            answers.append(resp.status_code)
            if resp.status_code == 200:
                opened = resp.json()
                close = {"outcome": "failed", "reason": "cancelled"}
                closed = await attacker.post(f"/v1/link/{opened['link_id']}/close", json=close, headers=link_auth(opened))
                assert closed.status_code == 200, closed.text
    assert answers == [200] * MAX_OPEN_LINKS_PER_ADDRESS + [429] * 5  # an ended slot keeps its place 10 minutes
    assert await audit(database, alice.user_id) == []  # nothing a stranger did is in alice's log


async def test_open_slots_are_bounded_server_wide(app: FastAPI, alice: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tokenim.server.services.link.MAX_OPEN_LINKS", 12)
    answers = []
    for host in ("198.51.100.1", "198.51.100.2"):
        async with from_address(app, host) as client:
            for _ in range(MAX_OPEN_LINKS_PER_ADDRESS):
                answers.append((await client.post("/v1/link", json={"user_id": alice.user_id})).status_code)
    assert answers == [200] * 12 + [429] * 8


def test_the_link_policy_is_a_setting() -> None:
    from tokenim.core.errors import TokenIMError
    from tokenim.protocol.link import LinkPolicy
    from tokenim.server.config import load_config

    assert load_config(config_file=None, env={}, flags={}).server.link_policy is LinkPolicy.MASTER_KEY
    env = {"TOKENIM_LINK_POLICY": "signature_only"}
    assert load_config(config_file=None, env=env, flags={}).server.link_policy is LinkPolicy.SIGNATURE_ONLY
    with pytest.raises(TokenIMError) as err:
        load_config(config_file=None, env={"TOKENIM_LINK_POLICY": "everything"}, flags={})
    assert err.value.code.value == "bad_config"


async def test_the_new_side_may_post_only_what_the_protocol_needs(http: httpx.AsyncClient, alice: Account) -> None:
    opened = await open_link(http, alice.user_id)
    path, new = f"/v1/link/{opened['link_id']}", link_auth(opened)
    before_claim = await http.put(f"{path}/messages/2", json={"body": "AAAA"}, headers=new)
    assert (before_claim.status_code, code(before_claim)) == (403, "forbidden")  # nobody has claimed it yet
    assert (await http.put(f"{path}/messages/1", json={"body": "A" * 44}, headers=new)).status_code == 200
    assert (await http.post(f"{path}/claim", headers=alice.auth())).status_code == 200
    big = "A" * MAX_LINK_BODY  # one message the approver may send, too big for the new side
    assert code(await http.put(f"{path}/messages/2", json={"body": big}, headers=new)) == "invalid_request"
    keys = "A" * 17_000  # about N2's real size (50 one-time keys)
    assert (await http.put(f"{path}/messages/2", json={"body": keys}, headers=new)).status_code == 200
    too_much = "A" * (MAX_NEW_SIDE_CHARS - 44 - 17_000 + 4)
    assert code(await http.put(f"{path}/messages/3", json={"body": too_much}, headers=new)) == "invalid_request"
    assert (await http.put(f"{path}/messages/3", json={"body": "AAAA"}, headers=new)).status_code == 200
    fourth = await http.put(f"{path}/messages/4", json={"body": "AAAA"}, headers=new)
    assert (fourth.status_code, code(fourth)) == (400, "invalid_request")
    assert "at most 3 messages" in fourth.json()["error"]["message"]
    # The approver (authenticated) keeps the large limit.
    assert (await http.put(f"{path}/messages/1", json={"body": big}, headers=alice.auth())).status_code == 200
    assert (await http.put(f"{path}/messages/5", json={"body": "AAAA"}, headers=alice.auth())).status_code == 200
