"""Verifying people through the SDK, over the in-process server: safety numbers, SAS between two clients
(both verified afterwards, and what `read` says about the sender), mismatches, and a key that changed
since it was verified."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.client.test_key_change import end_swap, swap_master
from tests.support import insides
from tokenim.cli.verify import safety_number_text
from tokenim.client import Client, SasShown
from tokenim.client.verification import RECORD_KIND
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.limits import MAX_POSITION
from tokenim.crypto.safety import safety_number
from tokenim.crypto.sas import TIMEOUT_MS
from tokenim.protocol.api import SyncResponse
from tokenim.server.storage.database import Database

FAST = 0.01  # poll interval: the two clients share one event loop


def answer(ok: bool, seen: list[SasShown]) -> Callable[[SasShown], Awaitable[bool]]:
    async def confirm(shown: SasShown) -> bool:
        seen.append(shown)
        return ok

    return confirm


async def verify_both(alice: Client, bob: Client, *, alice_ok: bool = True, bob_ok: bool = True) -> tuple[list[SasShown], ...]:
    seen_a: list[SasShown] = []
    seen_b: list[SasShown] = []
    async with asyncio.timeout(60):
        results = await asyncio.gather(
            alice.verification.sas("@bob", answer(alice_ok, seen_a), poll_interval=FAST),
            bob.verification.sas("@alice", answer(bob_ok, seen_b), poll_interval=FAST),
            return_exceptions=True,
        )
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, TokenIMError):
            raise r
    return seen_a, seen_b, list(results)  # type: ignore[return-value]


async def test_the_safety_number_is_the_same_on_both_sides(alice: Client, bob: Client) -> None:
    a = await alice.verification.safety_number("@bob")
    b = await bob.verification.safety_number("@alice")
    assert a.safety_number == b.safety_number
    expected = safety_number(alice.user_id, alice.keys.info().master_key, bob.user_id, bob.keys.info().master_key)
    assert a.safety_number == expected and len(a.safety_number.replace(" ", "")) == 60
    assert not a.key_changed and a.current_safety_number is None
    assert not a.verified and a.verified_by is None and "not verified" in (a.why_not or "")


async def test_marking_verified_needs_the_right_number(alice: Client, bob: Client) -> None:
    shown = await alice.verification.safety_number("@bob")
    with pytest.raises(TokenIMError) as wrong:
        await alice.verification.mark_verified("@bob", "12345 " * 12)
    assert wrong.value.code is ErrorCode.FINGERPRINT_MISMATCH
    assert shown.safety_number.split()[0] not in wrong.value.message  # compared, never handed over to copy
    assert not alice.verification.status("@bob").verified
    text = safety_number_text(shown.to_json())
    assert "Verified: no" in text and "--mark-verified" in text
    done = await alice.verification.mark_verified("@bob", shown.safety_number.replace(" ", ""))
    assert done.verified and done.verified_by == "safety_number"
    assert alice.verification.status("@bob").verified_by == "safety_number"
    with pytest.raises(TokenIMError) as me:
        await alice.verification.safety_number("@alice")
    assert me.value.code is ErrorCode.INVALID_REQUEST


async def test_sas_between_two_clients_verifies_both(alice: Client, bob: Client) -> None:
    room = (await alice.rooms.create("pair", ["@bob"])).room_id
    await bob.rooms.join(room)
    await bob.messages.send_text(room, "before")
    before = await alice.messages.sync()
    assert before[0].verified and before[0].verified_by is None and "not verified" in (before[0].why_not or "")

    seen_a, seen_b, results = await verify_both(alice, bob)
    assert len(seen_a) == len(seen_b) == 1
    assert seen_a[0].emoji == seen_b[0].emoji and len(seen_a[0].emoji) == 7
    assert seen_a[0].decimals == seen_b[0].decimals
    assert (seen_a[0].device_id, seen_b[0].device_id) == (bob.device_id, alice.device_id)
    a_result, b_result = results
    assert not isinstance(a_result, BaseException) and not isinstance(b_result, BaseException)
    assert (a_result.user_id, a_result.device_id, a_result.master_key) == (bob.user_id, bob.device_id, bob.keys.info().master_key)
    assert b_result.master_key == alice.keys.info().master_key
    assert alice.verification.status("@bob").verified_by == "sas"
    assert bob.verification.status("@alice").verified_by == "sas"

    # What `read` says about the sender, for old and new messages alike.
    await bob.messages.send_text(room, "after")
    await alice.messages.sync()
    got = await alice.messages.history(room)
    assert [(m.body, m.verified, m.verified_by, m.why_not) for m in got] == [
        ("before", True, "sas", None),
        ("after", True, "sas", None),
    ]
    assert got[0].to_json()["verified_by"] == "sas" and got[0].to_json()["why_not"] is None
    mine = await bob.messages.history(room)
    assert mine[-1].sender == bob.user_id and mine[-1].verified_by is None and mine[-1].why_not is None


async def test_a_verification_survives_a_restart_of_the_profile(alice: Client, bob: Client, clock: FakeClock) -> None:
    await verify_both(alice, bob)
    record = insides(alice).store.get_record(RECORD_KIND, bob.user_id)
    assert record is not None and bob.keys.info().master_key.encode() in record
    path = insides(alice).store.path.parent
    await alice.close()
    transport = insides(alice).transport.http._transport
    async with await Client.open(path, "correct horse battery staple", clock=clock, transport=transport) as reopened:
        assert reopened.verification.status("@bob").verified_by == "sas"


async def test_emoji_that_differ_cancel_both_sides(alice: Client, bob: Client) -> None:
    _seen_a, _seen_b, results = await verify_both(alice, bob, bob_ok=False)
    a_error, b_error = results
    assert isinstance(a_error, TokenIMError) and isinstance(b_error, TokenIMError)
    assert a_error.code is ErrorCode.VERIFICATION_FAILED and a_error.details == {"cancel_code": "m.mismatched_sas", "by": "them"}
    assert b_error.details == {"cancel_code": "m.mismatched_sas", "by": "you"}
    assert not alice.verification.status("@bob").verified and not bob.verification.status("@alice").verified


async def test_a_key_changed_since_verification_says_verify_again(
    alice: Client, bob: Client, database: Database, clock: FakeClock
) -> None:
    """Verified, then the server shows another key and the user accepts it: unverified, "verify again"."""
    room = (await alice.rooms.create("pair", ["@bob"])).room_id
    await bob.rooms.join(room)
    await verify_both(alice, bob)
    await end_swap(database, bob.user_id)  # nothing to end: makes sure the helper is harmless here
    await swap_master(database, bob.user_id, clock.now_ms())
    clock.advance(seconds=600)
    shown = await alice.verification.safety_number("@bob")
    assert shown.key_changed and shown.current_safety_number not in (None, shown.safety_number)
    assert shown.verified  # the pinned key is still the verified one
    with pytest.raises(TokenIMError) as refused:
        await alice.verification.mark_verified("@bob", shown.current_safety_number or "")
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(TokenIMError) as no_sas:
        await alice.verification.sas("@bob", answer(True, []), poll_interval=FAST)
    assert no_sas.value.code is ErrorCode.INVALID_REQUEST and "keys accept" in no_sas.value.message

    contact = await alice.keys.contact("@bob")
    await alice.keys.accept("@bob", contact.current_fingerprint)
    status = alice.verification.status("@bob")
    assert not status.verified and status.verify_again and "verify again" in (status.why_not or "")


async def _pending_to_device(client: Client) -> int:
    """How many to-device messages wait for `client` (looked at, not acknowledged)."""
    page = await insides(client).transport.request("GET", f"/v1/sync?since={MAX_POSITION}&limit=1", SyncResponse)
    return len(page.to_device)


async def test_a_peer_that_never_answers_times_out(alice: Client, bob: Client, clock: FakeClock) -> None:
    """Bob never runs verify: after 10 minutes (on the fake clock) alice's side cancels with m.timeout."""
    task = asyncio.ensure_future(alice.verification.sas("@bob", answer(True, []), poll_interval=FAST))
    async with asyncio.timeout(30):
        while not await _pending_to_device(bob):  # alice's request has reached bob's queue
            await asyncio.sleep(FAST)
        assert not task.done()
        clock.advance(seconds=TIMEOUT_MS // 1000 + 1)
        with pytest.raises(TokenIMError) as timed_out:
            await task
    assert timed_out.value.code is ErrorCode.VERIFICATION_FAILED
    assert timed_out.value.details == {"cancel_code": "m.timeout", "by": "you"}
    assert not alice.verification.status("@bob").verified


async def test_stopping_one_side_cancels_the_other(alice: Client, bob: Client) -> None:
    """Alice gives up (Ctrl-C) while the emoji are shown: bob's side ends at once, told by her cancel."""
    shown = asyncio.Event()

    async def wait_forever(_shown: SasShown) -> bool:
        shown.set()
        await asyncio.Event().wait()
        return True

    async with asyncio.timeout(60):
        a_task = asyncio.ensure_future(alice.verification.sas("@bob", wait_forever, poll_interval=FAST))
        b_task = asyncio.ensure_future(bob.verification.sas("@alice", wait_forever, poll_interval=FAST))
        await shown.wait()
        a_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await a_task
        with pytest.raises(TokenIMError) as told:
            await b_task
    assert told.value.details == {"cancel_code": "m.user", "by": "them"}
    assert not bob.verification.status("@alice").verified


async def test_verifying_yourself_or_nobody_is_refused(alice: Client) -> None:
    with pytest.raises(TokenIMError) as me:
        await alice.verification.sas("@alice", answer(True, []))
    assert me.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(TokenIMError) as nobody:
        await alice.verification.sas("@nobody", answer(True, []))
    assert nobody.value.code is ErrorCode.UNKNOWN_USER


async def test_a_signed_rotation_keeps_a_verified_person_verified(alice: Client, bob: Client, clock: FakeClock) -> None:
    """Verified by SAS, then alice rotates her master key: bob follows the signed chain, and the verification
    of her old key still vouches for her (it would not if the check looked only at the pinned key)."""
    room = (await alice.rooms.create("pair", ["@bob"])).room_id
    await bob.rooms.join(room)
    await verify_both(alice, bob)
    old_key = alice.keys.info().master_key
    await alice.keys.rotate()
    clock.advance(seconds=600)  # member devices are asked for again
    await alice.messages.send_text(room, "new key, same person")
    got = [m for m in await bob.messages.sync() if m.event is None]
    assert [(m.body, m.verified_by) for m in got] == [("new key, same person", "sas")]
    assert bob.keys.followed_keys("@alice") == (old_key, alice.keys.info().master_key)
    status = bob.verification.status("@alice")
    assert status.verified and status.verified_by == "sas" and not status.verify_again


async def test_a_verification_is_filed_in_the_audit_record(alice: Client, bob: Client) -> None:
    """Point 8 of the key lifecycle: verifying someone is on the user's record, whom and how."""
    await verify_both(alice, bob)
    shown = await alice.verification.safety_number("@bob")
    await alice.verification.mark_verified("@bob", shown.safety_number)
    events = [(e.event, e.details) for e in (await alice.audit.events()).events if e.event == "client.person.verified"]
    assert events == [
        ("client.person.verified", {"peer": bob.user_id, "method": "safety_number"}),
        ("client.person.verified", {"peer": bob.user_id, "method": "sas"}),
    ]


async def test_reading_many_messages_reads_each_sender_status_once(
    alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who verified the sender is decided once per sender per batch, and whether this device backs up once per
    client: neither is a read of the profile per message or per send."""
    room = (await alice.rooms.create("busy", ["@bob"])).room_id
    await bob.rooms.join(room)
    for i in range(12):
        await bob.messages.send_text(room, f"message {i}")
    store = insides(alice).store
    reads: list[str] = []
    real = store.get_record

    def counting(kind: str, name: str) -> bytes | None:
        reads.append(kind)
        return real(kind, name)

    monkeypatch.setattr(store, "get_record", counting)
    got = await alice.messages.sync()
    assert len([m for m in got if m.body]) == 12
    assert reads.count(RECORD_KIND) == 1
    for _ in range(3):
        await alice.messages.send_text(room, "and back")
    assert reads.count("backup_secret") <= 1
