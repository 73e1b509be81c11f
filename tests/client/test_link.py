"""Linking a new device with a one-time code (docs/protocol.md, "Linking a new device"): the new device reads
old history and sends; expired, reused and wrong codes; a tampering server; an approver without the master key;
the "signature only" policy. Real crypto, both databases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FAST_KDF, PASSPHRASE
from tests.support import insides
from tokenim.client import Client
from tokenim.client.link import LinkInvitation
from tokenim.core.clock import FakeClock
from tokenim.core.encoding import b64decode, b64encode
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.link import LinkPolicy
from tokenim.server.app import build_app, build_services
from tokenim.server.config import ServerConfig
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.storage.database import Database

POLL = 0.005


class LinkRelay(httpx.AsyncBaseTransport):
    """The in-process server, with a hook that rewrites the bodies of relayed link messages: what a
    malicious server could do to the mailboxes. `rewrite(side_path, seq, raw bytes) -> bytes`."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.rewrite: Callable[[str, int, bytes], bytes] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        path = request.url.path
        if self.rewrite is None or request.method != "GET" or not path.endswith("/messages") or response.status_code != 200:
            return response
        body = json.loads(await response.aread())
        reader = "new" if request.headers.get("authorization", "").startswith("Bearer link_") else "approver"
        for m in body["messages"]:
            m["body"] = b64encode(self.rewrite(reader, m["seq"], b64decode(m["body"])))
        return httpx.Response(200, json=body)


async def link_pair(
    approver: Client,
    new_profile: Path,
    transport: httpx.AsyncBaseTransport,
    clock: FakeClock,
    *,
    approve: Callable[[str], Awaitable[Any]] | None = None,
    code_hook: Callable[[str], str] = lambda code: code,
) -> tuple[Any, Any]:
    """Run the new device and the approving device side by side; returns (new side's result, approver's result),
    each a value or the exception it raised."""
    shown: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_code(invitation: LinkInvitation) -> None:
        shown.set_result(invitation.code)

    async def new_side() -> Client:
        return await Client.link(
            new_profile,
            PASSPHRASE,
            server_url="http://tokenim.test",
            username=approver.user_id[1:].split(":")[0],
            clock=clock,
            on_code=on_code,
            kdf=FAST_KDF,
            transport=transport,
            poll_interval=POLL,
        )

    async def approver_side() -> Any:
        code = code_hook(await asyncio.wait_for(asyncio.shield(shown), 30))
        if approve is not None:
            return await approve(code)
        return await approver.linking.approve(code, poll_interval=POLL)

    async with asyncio.timeout(60):
        results = await asyncio.gather(new_side(), approver_side(), return_exceptions=True)
    return results[0], results[1]


async def group(alice: Client, *others: Client) -> str:
    room = await alice.rooms.create("group", [o.user_id for o in others])
    for o in others:
        await o.rooms.join(room.room_id)
    return room.room_id


async def test_a_linked_device_reads_old_history_and_sends(
    alice: Client, bob: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    room = await group(alice, bob)
    await alice.messages.send_text(room, "before the link, from alice")
    await bob.messages.send_text(room, "before the link, from bob")
    assert len(await alice.messages.sync()) == 2

    new, approval = await link_pair(alice, tmp_path / "new", transport, clock)
    assert isinstance(new, Client), new
    try:
        assert approval.device_id == new.device_id and approval.master_key_sent and approval.room_keys >= 2
        assert new.user_id == alice.user_id and new.device_id != alice.device_id
        read = await new.messages.history(room)
        assert [m.body for m in read] == ["before the link, from alice", "before the link, from bob"]
        # Keys handed over the link by alice's own device count as delivered by their senders: her own
        # messages read as verified, bob's as any unverified person's (with the reason).
        assert (read[0].verified, read[0].why_not) == (True, None)
        assert read[1].verified and read[1].why_not is not None and "not verified" in read[1].why_not
        assert new.keys.info().fingerprint == alice.keys.info().fingerprint
        # The people alice pinned are pinned on the new device too, with their version and the keys followed.
        assert new.keys.is_pinned(bob.user_id) and new.keys.followed_keys(bob.user_id) == alice.keys.followed_keys(bob.user_id)
        await new.messages.send_text(room, "hello from the new device")
        assert [m.body for m in await bob.messages.sync()][-1] == "hello from the new device"
        assert new.device_id in {d.device_id for d in (await alice.devices.all()).devices}
    finally:
        await new.close()
    # The profile holds the master key: it opens again and can approve a further device.
    async with await Client.open(tmp_path / "new", PASSPHRASE, clock=clock, transport=transport) as again:
        third, approval = await link_pair(again, tmp_path / "third", transport, clock)
        assert isinstance(third, Client), third
        await third.close()


async def test_an_expired_code_is_refused_on_both_sides(
    alice: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    def later(code: str) -> str:
        clock.advance(seconds=10 * 60 + 1)
        return code

    new, approved = await link_pair(alice, tmp_path / "new", transport, clock, code_hook=later)
    assert isinstance(approved, TokenIMError) and approved.code is ErrorCode.LINK_EXPIRED
    assert isinstance(new, TokenIMError) and new.code is ErrorCode.LINK_EXPIRED
    assert not (tmp_path / "new").exists()


async def test_a_code_works_once(alice: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock) -> None:
    used: list[str] = []

    def keep(code: str) -> str:
        used.append(code)
        return code

    new, _ = await link_pair(alice, tmp_path / "new", transport, clock, code_hook=keep)
    assert isinstance(new, Client)
    await new.close()
    with pytest.raises(TokenIMError) as err:
        await alice.linking.approve(used[0], poll_interval=POLL)
    assert err.value.code is ErrorCode.LINK_USED


async def test_a_wrong_code_fails_the_pake_and_both_sides_are_told(
    alice: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    def wrong(code: str) -> str:
        last = "A" if code[-1] != "A" else "B"
        return code[:-1] + last

    new, approved = await link_pair(alice, tmp_path / "new", transport, clock, code_hook=wrong)
    for err in (new, approved):
        assert isinstance(err, TokenIMError) and err.code is ErrorCode.LINK_FAILED, err
        assert err.details["reason"] == "mismatch"
        assert "stopped on the other device" not in err.message
    assert isinstance(approved, TokenIMError) and "The code you typed does not match" in approved.message
    assert isinstance(new, TokenIMError) and "did not match on the two devices" in new.message
    assert not (tmp_path / "new").exists()
    assert len((await alice.devices.all()).devices) == 1


async def test_a_code_naming_no_slot_is_not_found(alice: Client) -> None:
    with pytest.raises(TokenIMError) as err:
        await alice.linking.approve("ZZZZZZ-ABCD-EFGH")
    assert err.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(TokenIMError) as err:
        await alice.linking.approve("not a code")
    assert err.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(("reader", "seq"), [("approver", 1), ("approver", 2), ("new", 3), ("new", 4), ("approver", 3)])
async def test_a_server_that_changes_a_relayed_message_is_caught_by_both_sides(
    alice: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock, reader: str, seq: int
) -> None:
    relay = LinkRelay(transport)

    def flip(who: str, number: int, raw: bytes) -> bytes:
        if who == reader and number == seq:
            return raw[:-1] + bytes([raw[-1] ^ 1])
        return raw

    relay.rewrite = flip
    # The approver talks through the same lying server.
    insides(alice).transport.http._transport = relay  # type: ignore[attr-defined]
    try:
        new, approved = await link_pair(alice, tmp_path / "new", relay, clock)
    finally:
        insides(alice).transport.http._transport = transport  # type: ignore[attr-defined]
    for err in (new, approved):
        assert isinstance(err, TokenIMError) and err.code is ErrorCode.LINK_FAILED, err
        assert err.details["reason"] in ("mismatch", "tampered")
    assert not (tmp_path / "new").exists()
    assert len((await alice.devices.all()).devices) == 1  # a device added before the failure is removed again


async def test_a_server_that_swaps_the_master_key_it_serves_is_caught(
    alice: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    from tests.support import LyingServer
    from tokenim.core.signing import SigningKey

    liar = LyingServer(transport)
    other = SigningKey.generate().public_key

    def swap(_request: httpx.Request, body: Any) -> Any:
        for user in body["users"].values():
            user["master_key"]["keys"] = {f"ed25519:{other}": other}
        return body

    liar.rewrites["/v1/keys/query"] = swap
    new, approved = await link_pair(alice, tmp_path / "new", liar, clock)
    for err in (new, approved):
        assert isinstance(err, TokenIMError) and err.code is ErrorCode.LINK_FAILED, err
        assert err.details["reason"] == "tampered"
    assert not (tmp_path / "new").exists()


async def test_an_approver_without_the_master_key_is_refused(
    alice: Client, tmp_path: Path, database: Database, clock: FakeClock
) -> None:
    """Under the signature-only policy the new device gets no master key; it can't approve another device."""
    config = ServerConfig(registration=RegistrationMode.OPEN, server_name="tokenim.test", link_policy=LinkPolicy.SIGNATURE_ONLY)
    app = build_app(config, database, clock, build_services(config, database, clock))
    transport = httpx.ASGITransport(app=app)
    insides(alice).transport.http._transport = transport  # type: ignore[attr-defined]
    room = await group(alice)
    await alice.messages.send_text(room, "old news")
    new, approval = await link_pair(alice, tmp_path / "new", transport, clock)
    assert isinstance(new, Client), new
    try:
        assert not approval.master_key_sent
        assert insides(new).store.get_secret("master_seed") is None
        assert [m.body for m in await new.messages.history(room)] == ["old news"]
        await new.messages.send_text(room, "signed in without the master key")
        with pytest.raises(TokenIMError) as err:
            await new.linking.approve("ABCDEF-GHJK-MNPQ")
        assert err.value.code is ErrorCode.FORBIDDEN and "master key" in err.value.message
    finally:
        await new.close()
    async with await Client.open(tmp_path / "new", PASSPHRASE, clock=clock, transport=transport) as again:
        assert again.keys.info().fingerprint == alice.keys.info().fingerprint
        assert [m.body for m in await again.messages.history(room)][-1] == "signed in without the master key"


async def test_a_new_device_stopped_while_waiting_tells_the_approver_and_leaves_nothing(
    alice: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    shown: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(
        Client.link(
            tmp_path / "new",
            PASSPHRASE,
            server_url="http://tokenim.test",
            username="alice",
            clock=clock,
            on_code=lambda invitation: shown.set_result(invitation.code),
            kdf=FAST_KDF,
            transport=transport,
            poll_interval=POLL,
        )
    )
    code = await asyncio.wait_for(shown, 30)
    waiting.cancel()  # Ctrl-C on the new device
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(TokenIMError) as err:
        await alice.linking.approve(code, poll_interval=POLL)
    assert err.value.code is ErrorCode.LINK_FAILED and err.value.details["reason"] == "cancelled"
    assert not (tmp_path / "new").exists()


async def test_a_new_device_with_a_revoked_id_is_refused_before_any_secret(
    alice: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The approver checks the new device against the revocations its trust decision verified: a device that
    comes back under a revoked id is refused (`refused` on both sides), nothing is added and no profile is left."""
    from tests.client.test_key_lifecycle import second_device

    old = await second_device(alice, clock, transport)
    revoked_id = old.device_id
    await old.close()
    await alice.keys.revoke(revoked_id)
    monkeypatch.setattr("tokenim.client.link.new_device_id", lambda: revoked_id)
    new, approval = await link_pair(alice, tmp_path / "new", transport, clock)
    assert isinstance(new, TokenIMError) and isinstance(approval, TokenIMError), (new, approval)
    assert approval.code is ErrorCode.LINK_FAILED and approval.details.get("reason") == "refused", approval
    assert "revoked" in approval.message
    assert not (tmp_path / "new").exists()
    assert revoked_id not in {d.device_id for d in (await alice.devices.all()).devices}
