"""A room key goes to every device that needs it, also when only some of them need a one-time key first:
a device that opened an Olm session to us (so we hold one) is not forgotten behind the claim for others."""

from __future__ import annotations

from tests.unit.test_megolm_olm import ROOM, claim_answer, deliver, device, event
from tokenim.crypto.machine import RoomMessage
from tokenim.crypto.outgoing import KeysClaim, ToDeviceBatch

NOW = 1_800_000_000_000


def test_devices_with_a_session_get_the_key_while_others_are_claimed() -> None:
    alice, bob, carol = device("alice"), device("bob"), device("carol")
    for d in (alice, bob, carol):
        d.trust(*(o for o in (alice, bob, carol) if o is not d))
    # Bob shares his room key with Alice first: Alice now holds an Olm session with Bob's device.
    [claim] = bob.machine.share_room_key(ROOM, [alice.keys], NOW)
    assert isinstance(claim, KeysClaim)
    [batch] = bob.machine.receive_claim(claim, claim_answer(claim, alice))
    assert isinstance(batch, ToDeviceBatch)
    bob.machine.mark_sent(batch)
    deliver(dict(batch.body(1)["messages"]), bob, alice)
    assert alice.machine.olm.has_session(bob.keys)

    # Alice shares hers with Bob (session held) and Carol (needs a claim): Bob's copy is not left out.
    outgoing = alice.machine.share_room_key(ROOM, [bob.keys, carol.keys], NOW)
    assert [type(o) for o in outgoing] == [KeysClaim, ToDeviceBatch]
    claim, first = outgoing
    assert isinstance(first, ToDeviceBatch) and isinstance(claim, KeysClaim)
    assert set(first.body(2)["messages"]) == {bob.user}
    assert [d.device_id for d in claim.devices] == [carol.identity.device_id]
    alice.machine.mark_sent(first)
    [second] = alice.machine.receive_claim(claim, claim_answer(claim, carol))
    assert isinstance(second, ToDeviceBatch) and set(second.body(3)["messages"]) == {carol.user}
    alice.machine.mark_sent(second)
    assert alice.machine.without_room_key(ROOM, [bob.keys, carol.keys]) == []

    deliver(dict(first.body(2)["messages"]), alice, bob)
    deliver(dict(second.body(3)["messages"]), alice, carol)
    content = alice.machine.encrypt_room_message(ROOM, {"type": "m.text", "body": "to both"})
    for reader in (bob, carol):
        got = reader.machine.decrypt_room_event(event(content, alice, "$1"))
        assert isinstance(got, RoomMessage) and got.content["body"] == "to both"
