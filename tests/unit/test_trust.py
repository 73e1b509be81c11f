"""tokenim.crypto.trust.decide: one verdict per case, the pin to keep, and which devices are trusted or revoked."""

from __future__ import annotations

from typing import Any

from tests.identity_kit import Device, master_key_object, resign, revocation_object, rotation_object
from tokenim.core.signing import SigningKey
from tokenim.crypto.trust import Pin, Verdict, decide
from tokenim.protocol.identity import ChainProblem

ALICE = "@alice:example.com"
NOW = 1_800_000_500_000


class Shown:
    """What a server shows for Alice: her chain of master keys and her devices."""

    def __init__(self, n: int = 1) -> None:
        self.keys = [SigningKey.generate() for _ in range(n)]
        self.devices = [Device(ALICE, "DEVICEAAAA"), Device(ALICE, "DEVICEBBBB")]
        self.revocations: list[dict[str, Any]] = []

    def pin(self, version: int | None = None) -> Pin:
        v = version or len(self.keys)
        return Pin(ALICE, self.keys[v - 1].public_key, v, 1)

    def rotate(self) -> None:
        self.keys.append(SigningKey.generate())

    def answer(self) -> dict[str, Any]:
        ks, n = self.keys, len(self.keys)
        return {
            "master_key": master_key_object(ALICE, ks[-1], n),
            "rotations": [rotation_object(ALICE, ks[i], i + 1, ks[i + 1]) for i in range(n - 1)],
            "devices": {d.device_id: resign(d.keys_object(ks[0], 1), ALICE, ks[-1]) for d in self.devices},
            "revocations": self.revocations,
        }


def test_first_sight_pins_the_current_key() -> None:
    shown = Shown(2)
    d = decide(ALICE, None, shown.answer(), NOW)
    assert d.verdict is Verdict.FIRST_SEEN and d.verdict.trusted
    assert d.pin == Pin(ALICE, shown.keys[1].public_key, 2, NOW, (shown.keys[1].public_key,))
    assert set(d.devices) == {"DEVICEAAAA", "DEVICEBBBB"} and d.unverified == ()


def test_the_same_key_is_trusted_and_the_pin_kept() -> None:
    shown = Shown()
    pin = shown.pin()
    d = decide(ALICE, pin, shown.answer(), NOW)
    assert d.verdict is Verdict.TRUSTED_SAME
    assert d.pin is pin
    assert set(d.devices) == {"DEVICEAAAA", "DEVICEBBBB"}


def test_a_signed_rotation_is_followed() -> None:
    shown = Shown()
    pin = shown.pin()
    shown.rotate()
    shown.rotate()
    d = decide(ALICE, pin, shown.answer(), NOW)
    assert d.verdict is Verdict.ROTATED_SIGNED and d.verdict.trusted
    keys = tuple(k.public_key for k in shown.keys)
    assert d.pin == Pin(ALICE, keys[2], 3, NOW, keys)  # the pinned key, then each one followed, oldest first
    assert set(d.devices) == {"DEVICEAAAA", "DEVICEBBBB"}
    shown.rotate()
    again = decide(ALICE, d.pin, shown.answer(), NOW + 1)
    assert again.pin is not None and again.pin.followed == (*keys, shown.keys[3].public_key)


def test_a_pin_followed_from_a_later_version_lists_only_what_it_followed() -> None:
    shown = Shown(2)
    pin = shown.pin()  # pinned at version 2: version 1 was never trusted here
    shown.rotate()
    d = decide(ALICE, pin, shown.answer(), NOW)
    assert d.pin is not None and d.pin.followed == (shown.keys[1].public_key, shown.keys[2].public_key)


def test_a_new_key_without_a_rotation_is_a_warning() -> None:
    shown = Shown()
    pin = shown.pin()
    shown.keys = [SigningKey.generate()]
    d = decide(ALICE, pin, shown.answer(), NOW)
    assert d.verdict is Verdict.CHANGED_UNSIGNED and not d.verdict.trusted
    assert d.pin is pin
    assert d.devices == {} and d.unverified == ("DEVICEAAAA", "DEVICEBBBB")


def test_a_chain_with_a_bad_signature_is_broken() -> None:
    shown = Shown()
    pin = shown.pin()
    shown.rotate()
    answer = shown.answer()
    del answer["rotations"][0]["signatures"][ALICE][f"ed25519:{shown.keys[0].public_key}"]
    d = decide(ALICE, pin, answer, NOW)
    assert (d.verdict, d.problem, d.pin, d.devices) == (Verdict.BROKEN_CHAIN, ChainProblem.BAD_SIGNATURE, pin, {})


def test_a_chain_with_a_missing_link_is_broken() -> None:
    shown = Shown()
    pin = shown.pin()
    shown.rotate()
    shown.rotate()
    answer = shown.answer()
    del answer["rotations"][0]
    d = decide(ALICE, pin, answer, NOW)
    assert (d.verdict, d.problem, d.pin) == (Verdict.BROKEN_CHAIN, ChainProblem.NOT_FROM_ONE, pin)
    answer = shown.answer()
    del answer["rotations"][1]
    assert decide(ALICE, pin, answer, NOW).problem is ChainProblem.MISSING_LINK


def test_a_malformed_answer_is_broken_never_an_exception() -> None:
    shown = Shown()
    pin = shown.pin()
    for answer in ({}, {"master_key": "x"}, {**shown.answer(), "rotations": "x"}, {**shown.answer(), "rotations": [{}]}):
        d = decide(ALICE, pin, answer, NOW)
        assert d.verdict is Verdict.BROKEN_CHAIN and d.pin is pin and d.devices == {}


def test_a_master_key_of_another_user_or_unsigned_is_broken() -> None:
    shown = Shown()
    answer = shown.answer()
    assert decide("@bob:example.com", None, answer, NOW).problem is ChainProblem.WRONG_USER
    answer["master_key"]["signatures"] = {}
    d = decide(ALICE, None, answer, NOW)
    assert (d.verdict, d.problem, d.pin) == (Verdict.BROKEN_CHAIN, ChainProblem.BAD_SIGNATURE, None)


def test_a_chain_that_forks_is_forked() -> None:
    shown = Shown(2)
    pin = shown.pin()
    answer = shown.answer()
    answer["rotations"].append(rotation_object(ALICE, shown.keys[0], 1, SigningKey.generate()))
    d = decide(ALICE, pin, answer, NOW)
    assert (d.verdict, d.problem, d.pin, d.devices) == (Verdict.FORKED, ChainProblem.FORK, pin, {})


def test_another_history_than_the_one_followed_is_forked() -> None:
    """The client followed 1→2; the server now shows a valid chain 1→2'→3 that never held the pinned key."""
    shown = Shown(2)
    pin = shown.pin()
    shown.keys[1] = SigningKey.generate()
    shown.rotate()
    d = decide(ALICE, pin, shown.answer(), NOW)
    assert (d.verdict, d.pin, d.devices) == (Verdict.FORKED, pin, {})


def test_an_older_version_than_pinned_is_a_rollback() -> None:
    shown = Shown(3)
    pin = shown.pin()
    shown.keys.pop()
    d = decide(ALICE, pin, shown.answer(), NOW)
    assert (d.verdict, d.pin, d.devices) == (Verdict.ROLLED_BACK, pin, {})


def test_a_device_not_signed_by_the_current_key_is_unverified() -> None:
    shown = Shown()
    shown.rotate()
    answer = shown.answer()
    answer["devices"]["DEVICEBBBB"] = shown.devices[1].keys_object(shown.keys[0], 1)  # only the old key signed it
    answer["devices"]["DEVICECCCC"] = answer["devices"]["DEVICEAAAA"]  # filed under another id
    d = decide(ALICE, shown.pin(1), answer, NOW)
    assert d.verdict is Verdict.ROTATED_SIGNED
    assert set(d.devices) == {"DEVICEAAAA"} and d.unverified == ("DEVICEBBBB", "DEVICECCCC")


def test_a_revoked_device_is_never_trusted_and_its_keys_remembered() -> None:
    shown = Shown()
    shown.rotate()
    gone = shown.devices[1]
    shown.revocations = [revocation_object(gone, shown.keys[0], 1)]  # signed by version 1: still valid
    d = decide(ALICE, shown.pin(1), shown.answer(), NOW)
    assert d.verdict is Verdict.ROTATED_SIGNED
    assert set(d.devices) == {"DEVICEAAAA"} and d.unverified == ()
    assert d.revoked == {"DEVICEBBBB"} and d.revoked_keys == {gone.ed25519, gone.curve25519}


def test_a_revoked_key_stays_refused_when_the_server_hides_the_revocation() -> None:
    shown = Shown()
    gone = shown.devices[1]
    known = frozenset({gone.ed25519, gone.curve25519})
    d = decide(ALICE, shown.pin(), shown.answer(), NOW, known_revoked_keys=known)
    assert set(d.devices) == {"DEVICEAAAA"} and d.unverified == ("DEVICEBBBB",)
    assert d.revoked_keys == known


def test_a_forged_revocation_is_ignored() -> None:
    shown = Shown()
    shown.revocations = [revocation_object(shown.devices[1], SigningKey.generate(), 1), {"junk": True}]
    d = decide(ALICE, shown.pin(), shown.answer(), NOW)
    assert d.revoked == frozenset() and set(d.devices) == {"DEVICEAAAA", "DEVICEBBBB"}


def test_a_revocation_by_the_pinned_key_counts_even_when_the_chain_is_not_trusted() -> None:
    shown = Shown()
    pin = shown.pin()
    gone = shown.devices[1]
    shown.revocations = [revocation_object(gone, shown.keys[0], 1)]
    shown.keys = [SigningKey.generate()]  # the server swaps the key
    d = decide(ALICE, pin, shown.answer(), NOW)
    assert d.verdict is Verdict.CHANGED_UNSIGNED
    assert d.revoked == {"DEVICEBBBB"} and d.unverified == ("DEVICEAAAA",)


def test_a_revoked_device_id_stays_untrusted_under_new_keys() -> None:
    """A server that shows the revoked id again, with fresh keys signed by the master key, is not believed."""
    shown = Shown()
    gone = shown.devices[1]
    shown.revocations = [revocation_object(gone, shown.keys[0], 1)]
    shown.devices[1] = Device(ALICE, gone.device_id)
    d = decide(ALICE, shown.pin(), shown.answer(), NOW)
    assert set(d.devices) == {"DEVICEAAAA"} and d.revoked == {"DEVICEBBBB"}


def test_an_untrusted_chain_lets_only_the_pinned_version_vouch_for_a_revocation() -> None:
    shown = Shown(2)
    pin = shown.pin()
    gone = shown.devices[1]
    shown.revocations = [revocation_object(gone, shown.keys[1], 1)]  # the pinned key, claiming to be version 1
    shown.keys = [SigningKey.generate()]
    d = decide(ALICE, pin, shown.answer(), NOW)
    assert d.verdict is Verdict.ROLLED_BACK and d.revoked == frozenset()
