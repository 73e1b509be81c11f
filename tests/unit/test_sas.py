"""The SAS verification machine without a server: two machines exchange messages in memory; a relay in
the middle can drop, rewrite or swap them (a MITM), and a fake time drives the timeout."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tokenim.core.ids import DeviceId, UserId
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.sas import (
    ACCEPT,
    CANCEL,
    DONE,
    EMOJI,
    KEY,
    MAC,
    READY,
    REQUEST,
    START,
    TIMEOUT_MS,
    CancelCode,
    Outgoing,
    Party,
    SasState,
    SasVerification,
    commitment,
)

NOW = 1_800_000_000_000


def party(name: str, device_id: str) -> Party:
    identity = DeviceIdentity.create(UserId(f"@{name}:tokenim.test"), DeviceId(device_id), NOW)
    return Party(identity.user_id, identity.device_id, identity.ed25519, identity.master.public_key)


ALICE = party("alice", "ALICEDEV01")
BOB = party("bob", "BOBDEV0001")


def machine(me: Party, them: Party, *, their_master: str | None = None, their_ed: str | None = None) -> SasVerification:
    devices = {them.device_id: their_ed or them.device_ed25519}
    return SasVerification(me, them.user_id, their_master or them.master_key, devices, NOW)


Tamper = Callable[[Party, Outgoing], Outgoing | None]


@dataclass
class Pair:
    """Alice's and Bob's machines and the wire between them."""

    a: SasVerification
    b: SasVerification
    sent: list[tuple[str, str]]  # (sender user, message type), in order

    def run(self, queue: list[tuple[Party, Outgoing]], tamper: Tamper | None = None, now: int = NOW) -> None:
        while queue:
            frm, msg = queue.pop(0)
            if tamper is not None:
                changed = tamper(frm, msg)
                if changed is None:
                    continue
                msg = changed
            self.sent.append((frm.user_id, msg.type))
            target, other = (self.b, BOB) if frm is ALICE else (self.a, ALICE)
            queue += [(other, out) for out in target.receive(frm.device_id, msg.type, copy.deepcopy(msg.content), now)]

    def start(self, tamper: Tamper | None = None) -> None:
        self.run([(ALICE, m) for m in self.a.request(NOW)] + [(BOB, m) for m in self.b.request(NOW)], tamper)

    def confirm_both(self, tamper: Tamper | None = None) -> None:
        self.run([(ALICE, m) for m in self.a.confirm(NOW)] + [(BOB, m) for m in self.b.confirm(NOW)], tamper)


def pair(a: SasVerification | None = None, b: SasVerification | None = None) -> Pair:
    return Pair(a or machine(ALICE, BOB), b or machine(BOB, ALICE), [])


def test_both_sides_see_the_same_emoji_and_end_verified() -> None:
    p = pair()
    p.start()
    assert p.a.state is SasState.SHOWING and p.b.state is SasState.SHOWING
    assert p.a.sas is not None and p.a.sas == p.b.sas
    assert len(p.a.sas.emoji) == 7 and all(e in EMOJI for e in p.a.sas.emoji)
    assert all(1000 <= d <= 9191 for d in p.a.sas.decimals)
    # The requests crossed: bob (the larger user id) answered alice's; alice started, bob accepted.
    kinds = [t for _u, t in p.sent]
    assert kinds.count(READY) == 1 and kinds.count(START) == 1 and kinds.count(ACCEPT) == 1 and kinds.count(KEY) == 2
    assert (BOB.user_id, ACCEPT) in p.sent and (ALICE.user_id, START) in p.sent
    p.confirm_both()
    assert p.a.state is SasState.VERIFIED and p.b.state is SasState.VERIFIED
    assert p.a.their_device == BOB.device_id and p.b.their_device == ALICE.device_id


def test_a_request_waiting_for_a_peer_that_starts_later_is_answered() -> None:
    p = pair()
    waiting = p.b.receive(ALICE.device_id, REQUEST, p.a.request(NOW)[0].content, NOW)  # bob starts after alice asked
    assert [m.type for m in waiting] == [READY] and p.b.state is SasState.READY
    assert p.b.request(NOW) == []  # answering, so no request of its own
    p.run([(BOB, m) for m in waiting])
    assert p.a.sas is not None and p.a.sas == p.b.sas


def test_the_smaller_user_id_keeps_its_request_and_sends_it_again_to_the_other_device() -> None:
    """A request alice sent may have been read (and dropped) by bob before he started: she sends it again."""
    p = pair()
    p.a.request(NOW)  # lost
    bobs = p.b.request(NOW)[0]
    again = p.a.receive(BOB.device_id, REQUEST, bobs.content, NOW)
    assert [(m.type, m.device_id, m.content["transaction_id"]) for m in again] == [(REQUEST, BOB.device_id, p.a.txn)]
    p.run([(ALICE, m) for m in again])
    assert p.a.state is SasState.SHOWING and p.a.txn == p.b.txn


def test_a_mitm_with_its_own_keys_gives_different_emoji_and_failing_macs() -> None:
    """Mallory answers each side with a SAS key of her own (she can, if she relays the messages): each side
    agrees a secret with her, never with the other. The emoji differ, and the MACs fail even if both people
    confirmed anyway."""
    from tokenim.crypto.sas import SasVerification as Mitm

    p = pair()
    to_bob = Mitm(ALICE, BOB.user_id, BOB.master_key, {BOB.device_id: BOB.device_ed25519}, NOW)  # plays alice to bob
    to_alice = Mitm(BOB, ALICE.user_id, ALICE.master_key, {ALICE.device_id: ALICE.device_ed25519}, NOW)  # bob to alice
    fakes = {ALICE.user_id: to_alice, BOB.user_id: to_bob}

    def swap_keys(frm: Party, msg: Outgoing) -> Outgoing | None:
        if msg.type not in (KEY, ACCEPT):
            return msg
        fake = fakes[frm.user_id]
        content = dict(msg.content)
        if msg.type == KEY:
            content["key"] = fake._our_key
        else:
            assert p.b._start_content is not None
            content["commitment"] = commitment(fake._our_key, p.b._start_content)
        return Outgoing(msg.type, content, msg.device_id)

    p.start(swap_keys)
    assert p.a.sas is not None and p.b.sas is not None
    assert p.a.sas.emoji != p.b.sas.emoji and p.a.sas.decimals != p.b.sas.decimals
    p.confirm_both()
    assert p.a.state is SasState.CANCELLED and p.b.state is SasState.CANCELLED
    assert CancelCode.KEY_MISMATCH in (p.a.cancel_code, p.b.cancel_code)


def test_a_key_that_does_not_match_the_commitment_cancels() -> None:
    other = SasVerification(BOB, ALICE.user_id, ALICE.master_key, {}, NOW)._our_key

    def late_key(frm: Party, msg: Outgoing) -> Outgoing | None:
        if frm is BOB and msg.type == KEY:  # bob's key, changed after he committed to his own
            return Outgoing(KEY, {**msg.content, "key": other}, msg.device_id)
        return msg

    p = pair()
    p.start(late_key)
    assert p.a.state is SasState.CANCELLED and p.a.cancel_code is CancelCode.MISMATCHED_COMMITMENT
    assert p.b.state is SasState.CANCELLED and p.b.cancelled_by_them  # told by alice's cancel


def test_a_mac_over_another_master_key_cancels() -> None:
    """Alice holds another master key for bob than the one bob's device vouches for (a server's swap)."""
    swapped = party("bob", "BOBDEV0001").master_key
    p = pair(a=machine(ALICE, BOB, their_master=swapped))
    p.start()
    assert p.a.sas == p.b.sas  # the channel is fine: only the keys differ
    p.confirm_both()
    assert p.a.state is SasState.CANCELLED and p.a.cancel_code is CancelCode.KEY_MISMATCH
    assert p.b.state is SasState.CANCELLED and p.b.cancel_code is CancelCode.KEY_MISMATCH and p.b.cancelled_by_them


def test_a_mac_over_another_device_key_cancels() -> None:
    p = pair(a=machine(ALICE, BOB, their_ed=party("x", "XDEVICE001").device_ed25519))
    p.start()
    p.confirm_both()
    assert p.a.state is SasState.CANCELLED and p.a.cancel_code is CancelCode.KEY_MISMATCH


def test_a_tampered_mac_cancels() -> None:
    def flip(frm: Party, msg: Outgoing) -> Outgoing | None:
        if frm is BOB and msg.type == MAC:
            key_id = f"ed25519:{BOB.master_key}"
            mac = dict(msg.content["mac"])
            mac[key_id] = mac[f"ed25519:{BOB.device_id}"]  # a valid MAC, but of the other key
            return Outgoing(MAC, {**msg.content, "mac": mac}, msg.device_id)
        return msg

    p = pair()
    p.start()
    p.confirm_both(flip)
    assert p.a.state is SasState.CANCELLED and p.a.cancel_code is CancelCode.KEY_MISMATCH


def test_a_mac_missing_the_master_key_cancels() -> None:
    def drop_master(frm: Party, msg: Outgoing) -> Outgoing | None:
        if frm is BOB and msg.type == MAC:
            mac = {k: v for k, v in msg.content["mac"].items() if k == f"ed25519:{BOB.device_id}"}
            return Outgoing(MAC, {**msg.content, "mac": mac}, msg.device_id)
        return msg

    p = pair()
    p.start()
    p.confirm_both(drop_master)
    assert p.a.state is SasState.CANCELLED and p.a.cancel_code is CancelCode.KEY_MISMATCH


def test_saying_the_emoji_differ_cancels_both_sides() -> None:
    p = pair()
    p.start()
    p.run([(ALICE, m) for m in p.a.mismatch(NOW)])
    assert p.a.state is SasState.CANCELLED and p.a.cancel_code is CancelCode.MISMATCHED_SAS
    assert p.b.state is SasState.CANCELLED and p.b.cancel_code is CancelCode.MISMATCHED_SAS and p.b.cancelled_by_them
    assert p.b.confirm(NOW) == []  # nothing more is sent after a cancel


def test_a_cancel_from_the_peer_ends_it() -> None:
    p = pair()
    p.start()
    p.run([(BOB, m) for m in p.b.cancel()])
    assert p.a.state is SasState.CANCELLED and p.a.cancel_code is CancelCode.USER and p.a.cancelled_by_them
    assert p.a.confirm(NOW) == []


def test_the_verification_times_out() -> None:
    p = pair()
    p.start()
    assert p.a.tick(NOW + TIMEOUT_MS) == []
    out = p.a.tick(NOW + TIMEOUT_MS + 1)
    assert [(m.type, m.content["code"]) for m in out] == [(CANCEL, "m.timeout")]
    assert p.a.state is SasState.CANCELLED and p.a.cancel_code is CancelCode.TIMEOUT
    # A late confirmation on the other side times out too, and never verifies.
    assert [m.content.get("code") for m in p.b.confirm(NOW + TIMEOUT_MS + 1)] == ["m.timeout"]
    assert p.b.state is SasState.CANCELLED


def test_an_old_or_future_request_is_ignored() -> None:
    content = machine(ALICE, BOB).request(NOW)[0].content
    for now in (NOW + TIMEOUT_MS + 1, NOW - 5 * 60 * 1000 - 1):  # when bob starts: too late, or much too early
        b = SasVerification(BOB, ALICE.user_id, ALICE.master_key, {ALICE.device_id: ALICE.device_ed25519}, now)
        assert b.receive(ALICE.device_id, REQUEST, content, now) == []
        assert b.state is SasState.NEW
    fresh = machine(BOB, ALICE)
    assert [m.type for m in fresh.receive(ALICE.device_id, REQUEST, content, NOW + TIMEOUT_MS)] == [READY]


def test_messages_from_unknown_devices_or_other_transactions_are_ignored() -> None:
    p = pair()
    p.start()
    before = p.a.state
    assert p.a.receive("STRANGER01", CANCEL, {"transaction_id": p.a.txn, "code": "m.user"}, NOW) == []
    assert p.a.receive(BOB.device_id, CANCEL, {"transaction_id": "other", "code": "m.user"}, NOW) == []
    assert p.a.receive(BOB.device_id, "tokenim.verification.other", {"transaction_id": p.a.txn}, NOW) == []
    assert p.a.state is before


def test_an_out_of_order_or_malformed_message_cancels() -> None:
    p = pair()
    p.start()
    out = p.a.receive(BOB.device_id, DONE, {"transaction_id": p.a.txn}, NOW)  # done before any MAC
    assert [m.content["code"] for m in out] == ["m.unexpected_message"]
    q = pair()
    q.start()
    out = q.a.receive(BOB.device_id, MAC, {"transaction_id": q.a.txn, "mac": "nope", "keys": 1}, NOW)
    assert [m.content["code"] for m in out] == ["m.invalid_message"]


@pytest.mark.parametrize("field", ["key_agreement_protocols", "hashes", "message_authentication_codes"])
def test_a_start_offering_no_known_method_cancels(field: str) -> None:
    def strip(frm: Party, msg: Outgoing) -> Outgoing | None:
        return Outgoing(START, {**msg.content, field: ["other"]}, msg.device_id) if msg.type == START else msg

    p = pair()
    p.start(strip)
    assert p.b.state is SasState.CANCELLED and p.b.cancel_code is CancelCode.UNKNOWN_METHOD


def test_a_mac_of_the_key_ids_that_does_not_verify_cancels() -> None:
    """The key ids are MACed too, so a relay can't drop or add a key id unnoticed."""

    def bad_ids(frm: Party, msg: Outgoing) -> Outgoing | None:
        if frm is BOB and msg.type == MAC:
            return Outgoing(MAC, {**msg.content, "keys": msg.content["mac"][f"ed25519:{BOB.device_id}"]}, msg.device_id)
        return msg

    p = pair()
    p.start()
    p.confirm_both(bad_ids)
    assert p.a.state is SasState.CANCELLED and p.a.cancel_code is CancelCode.KEY_MISMATCH
    assert p.b.state is SasState.CANCELLED and p.b.cancelled_by_them


def test_the_emoji_table_is_matrixs() -> None:
    assert len(EMOJI) == 64 and len(set(EMOJI)) == 64
    assert (EMOJI[0], EMOJI[34], EMOJI[36], EMOJI[53], EMOJI[63]) == (
        ("🐶", "Dog"),
        ("🔧", "Spanner"),
        ("👍", "Thumbs Up"),
        ("✈️", "Aeroplane"),
        ("📌", "Pin"),
    )
