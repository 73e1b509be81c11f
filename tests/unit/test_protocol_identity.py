"""tokenim.protocol.identity: rotation and revocation objects, and the chain that links master keys.

Every failure path has its own test naming the exact problem, so a check removed from verify_* fails one."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.identity_kit import Device, master_key_object, revocation_object, rotation_object
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.signing import SigningKey, sign_json
from tokenim.protocol.identity import (
    MAX_CHAIN_LENGTH,
    ChainError,
    ChainProblem,
    parse_revocation,
    parse_rotation,
    verify_chain,
    verify_revocation,
    verify_revocation_by_current,
    verify_rotation,
)
from tokenim.protocol.keys import parse_master_key

ALICE = "@alice:example.com"
MALLORY = "@mallory:example.com"


def keys(n: int) -> list[SigningKey]:
    return [SigningKey.generate() for _ in range(n)]


def chain_of(ks: list[SigningKey], user: str = ALICE) -> tuple[Any, list[Any]]:
    """The current master key (version len(ks)) and the rotations 1→2→…→n."""
    current = parse_master_key(master_key_object(user, ks[-1], len(ks)))
    rotations = [parse_rotation(rotation_object(user, ks[i], i + 1, ks[i + 1])) for i in range(len(ks) - 1)]
    return current, rotations


def problem_of(fn: Any, *args: Any) -> ChainProblem:
    with pytest.raises(ChainError) as info:
        fn(*args)
    assert info.value.details == {"problem": info.value.problem.value}
    return info.value.problem


# ---- shape ---------------------------------------------------------------------------------------


def test_a_good_rotation_parses_and_verifies() -> None:
    old, new = keys(2)
    rot = parse_rotation(rotation_object(ALICE, old, 1, new))
    assert (rot.old_key, rot.old_version, rot.new_key, rot.new_version) == (old.public_key, 1, new.public_key, 2)
    verify_rotation(rot)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda o: o.update(type="tokenim.something_else"), "type"),
        (lambda o: o.pop("type"), "type"),
        (lambda o: o.update(extra=1), "members"),
        (lambda o: o.update(user_id="alice"), "user_id"),
        (lambda o: o.update(old_key="short"), "old_key"),
        (lambda o: o.update(new_key=123), "new_key"),
        (lambda o: o.update(old_version=0), "old_version"),
        (lambda o: o.update(new_version=True), "new_version"),
        (lambda o: o.update(ts=1_800_000_000), "ts"),
        (lambda o: o.update(signatures={ALICE: {"ed25519:x": 5}}), "signatures"),
    ],
)
def test_a_malformed_rotation_is_a_bad_key_object(change: Any, why: str) -> None:
    old, new = keys(2)
    obj = rotation_object(ALICE, old, 1, new)
    change(obj)
    with pytest.raises(TokenIMError) as info:
        parse_rotation(obj)
    assert info.value.code is ErrorCode.BAD_KEY_OBJECT
    assert why in info.value.message


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda o: o.update(type="tokenim.master_key_rotation.v1"), "type"),
        (lambda o: o.update(device_id="lower"), "device_id"),
        (lambda o: o.update(keys={"curve25519:OTHERID": "x"}), "keys"),
        (lambda o: o.update(master_key_version=0), "master_key_version"),
        (lambda o: o.update(unsigned={}), "members"),
        (lambda o: o.pop("ts"), "ts"),
    ],
)
def test_a_malformed_revocation_is_a_bad_key_object(change: Any, why: str) -> None:
    obj = revocation_object(Device(ALICE, "DEVICEAAAA"), SigningKey.generate(), 1)
    change(obj)
    with pytest.raises(TokenIMError) as info:
        parse_revocation(obj)
    assert info.value.code is ErrorCode.BAD_KEY_OBJECT
    assert why in info.value.message


# ---- one rotation --------------------------------------------------------------------------------


def test_a_rotation_must_go_to_the_next_version() -> None:
    old, new = keys(2)
    assert problem_of(verify_rotation, parse_rotation(rotation_object(ALICE, old, 1, new, 3))) is ChainProblem.VERSION_GAP
    assert problem_of(verify_rotation, parse_rotation(rotation_object(ALICE, old, 2, new, 2))) is ChainProblem.VERSION_GAP


def test_a_rotation_must_change_the_key() -> None:
    (same,) = keys(1)
    assert problem_of(verify_rotation, parse_rotation(rotation_object(ALICE, same, 1, same))) is ChainProblem.BROKEN_LINK


@pytest.mark.parametrize("which", ["old", "new"])
def test_a_rotation_missing_either_signature_is_refused(which: str) -> None:
    old, new = keys(2)
    obj = rotation_object(ALICE, old, 1, new)
    del obj["signatures"][ALICE][f"ed25519:{(old if which == 'old' else new).public_key}"]
    with pytest.raises(ChainError) as info:
        verify_rotation(parse_rotation(obj))
    assert info.value.problem is ChainProblem.BAD_SIGNATURE
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    assert f"({which} key)" in info.value.message


@pytest.mark.parametrize("which", ["old", "new"])
def test_a_rotation_signed_by_another_key_is_refused(which: str) -> None:
    old, new, other = keys(3)
    obj = rotation_object(ALICE, old, 1, new)
    signer = old if which == "old" else new
    obj["signatures"][ALICE][f"ed25519:{signer.public_key}"] = other.sign(b"not the payload")
    assert problem_of(verify_rotation, parse_rotation(obj)) is ChainProblem.BAD_SIGNATURE


def test_a_rotation_altered_after_signing_is_refused() -> None:
    old, new = keys(2)
    obj = rotation_object(ALICE, old, 1, new)
    obj["ts"] += 1
    assert problem_of(verify_rotation, parse_rotation(obj)) is ChainProblem.BAD_SIGNATURE


def test_a_signature_made_for_another_kind_of_object_does_not_pass() -> None:
    """The old key signs a device-like object with the same members: the `type` keeps it from passing."""
    old, new = keys(2)
    obj = rotation_object(ALICE, old, 1, new)
    body = {k: v for k, v in obj.items() if k not in ("signatures", "type")}
    forged = sign_json(sign_json(body, ALICE, old.public_key, old), ALICE, new.public_key, new)
    forged["type"] = obj["type"]
    assert problem_of(verify_rotation, parse_rotation(forged)) is ChainProblem.BAD_SIGNATURE


# ---- chains --------------------------------------------------------------------------------------


def test_a_chain_with_no_rotation_is_version_one() -> None:
    (k,) = keys(1)
    chain = verify_chain(*chain_of([k]))
    assert (chain.version, chain.current_key, chain.key_at(1), chain.key_at(2)) == (1, k.public_key, k.public_key, None)


def test_a_good_chain_verifies_in_any_order() -> None:
    ks = keys(4)
    current, rotations = chain_of(ks)
    chain = verify_chain(current, list(reversed(rotations)))
    assert chain.keys == tuple(k.public_key for k in ks)
    assert chain.version == 4 and chain.key_at(0) is None


def test_a_current_key_above_one_needs_rotations() -> None:
    k = SigningKey.generate()
    current = parse_master_key(master_key_object(ALICE, k, 2))
    assert problem_of(verify_chain, current, []) is ChainProblem.MISSING_LINK


def test_a_missing_link_is_reported() -> None:
    current, rotations = chain_of(keys(4))
    del rotations[1]  # 2→3 gone
    assert problem_of(verify_chain, current, rotations) is ChainProblem.MISSING_LINK


def test_a_chain_must_start_at_version_one() -> None:
    current, rotations = chain_of(keys(3))
    assert problem_of(verify_chain, current, rotations[1:]) is ChainProblem.NOT_FROM_ONE


def test_a_version_gap_in_the_chain_is_reported() -> None:
    a, b, c = keys(3)
    current = parse_master_key(master_key_object(ALICE, c, 3))
    rotations = [parse_rotation(rotation_object(ALICE, a, 1, c, 3))]
    assert problem_of(verify_chain, current, rotations) is ChainProblem.VERSION_GAP
    assert b.public_key not in current.raw["keys"]


def test_a_rotation_from_another_key_breaks_the_chain() -> None:
    a, b, c, stranger = keys(4)
    current = parse_master_key(master_key_object(ALICE, c, 3))
    rotations = [parse_rotation(rotation_object(ALICE, a, 1, b)), parse_rotation(rotation_object(ALICE, stranger, 2, c))]
    assert problem_of(verify_chain, current, rotations) is ChainProblem.BROKEN_LINK


def test_two_different_rotations_from_one_version_are_a_fork() -> None:
    a, b, b2 = keys(3)
    current = parse_master_key(master_key_object(ALICE, b, 2))
    rotations = [parse_rotation(rotation_object(ALICE, a, 1, b)), parse_rotation(rotation_object(ALICE, a, 1, b2))]
    assert problem_of(verify_chain, current, rotations) is ChainProblem.FORK


def test_the_same_rotation_twice_is_no_fork() -> None:
    ks = keys(2)
    current, rotations = chain_of(ks)
    assert verify_chain(current, rotations + rotations).version == 2


def test_a_bad_signature_anywhere_in_the_chain_is_reported() -> None:
    ks = keys(3)
    current = parse_master_key(master_key_object(ALICE, ks[2], 3))
    second = rotation_object(ALICE, ks[1], 2, ks[2])
    del second["signatures"][ALICE][f"ed25519:{ks[1].public_key}"]
    rotations = [parse_rotation(rotation_object(ALICE, ks[0], 1, ks[1])), parse_rotation(second)]
    assert problem_of(verify_chain, current, rotations) is ChainProblem.BAD_SIGNATURE


def test_the_chain_must_end_at_the_current_key() -> None:
    ks = keys(3)
    _, rotations = chain_of(ks)
    other = parse_master_key(master_key_object(ALICE, SigningKey.generate(), 3))
    assert problem_of(verify_chain, other, rotations) is ChainProblem.HEAD_MISMATCH
    behind = parse_master_key(master_key_object(ALICE, ks[1], 2))
    assert problem_of(verify_chain, behind, rotations) is ChainProblem.HEAD_MISMATCH


def test_a_current_key_beyond_the_last_rotation_is_a_missing_link() -> None:
    _, rotations = chain_of(keys(3))
    ahead = parse_master_key(master_key_object(ALICE, SigningKey.generate(), 4))
    assert problem_of(verify_chain, ahead, rotations) is ChainProblem.MISSING_LINK


def test_a_rotation_of_another_user_is_refused() -> None:
    ks = keys(2)
    current = parse_master_key(master_key_object(ALICE, ks[1], 2))
    rotations = [parse_rotation(rotation_object(MALLORY, ks[0], 1, ks[1]))]
    assert problem_of(verify_chain, current, rotations) is ChainProblem.WRONG_USER


def test_a_chain_has_a_length_limit() -> None:
    current, rotations = chain_of(keys(2))
    assert problem_of(verify_chain, current, rotations * (MAX_CHAIN_LENGTH + 1)) is ChainProblem.TOO_LONG


# ---- revocations ---------------------------------------------------------------------------------


def test_a_revocation_verifies_against_the_key_of_its_version() -> None:
    ks = keys(3)
    chain = verify_chain(*chain_of(ks))
    device = Device(ALICE, "DEVICEAAAA")
    for version in (1, 2, 3):
        verify_revocation(parse_revocation(revocation_object(device, ks[version - 1], version)), chain)


def test_a_revocation_signed_by_another_versions_key_is_refused() -> None:
    ks = keys(2)
    chain = verify_chain(*chain_of(ks))
    rev = parse_revocation(revocation_object(Device(ALICE, "DEVICEAAAA"), ks[0], 2))
    assert problem_of(verify_revocation, rev, chain) is ChainProblem.BAD_SIGNATURE


def test_a_revocation_naming_a_version_the_chain_lacks_is_refused() -> None:
    ks = keys(2)
    chain = verify_chain(*chain_of(ks))
    rev = parse_revocation(revocation_object(Device(ALICE, "DEVICEAAAA"), ks[1], 3))
    assert problem_of(verify_revocation, rev, chain) is ChainProblem.MISSING_LINK


def test_a_revocation_for_another_user_is_refused() -> None:
    ks = keys(1)
    chain = verify_chain(*chain_of(ks))
    rev = parse_revocation(revocation_object(Device(MALLORY, "DEVICEAAAA"), ks[0], 1))
    assert problem_of(verify_revocation, rev, chain) is ChainProblem.WRONG_USER


def test_a_revocation_altered_after_signing_is_refused() -> None:
    ks = keys(1)
    chain = verify_chain(*chain_of(ks))
    obj = revocation_object(Device(ALICE, "DEVICEAAAA"), ks[0], 1)
    tampered = copy.deepcopy(obj)
    tampered["keys"]["ed25519:DEVICEAAAA"] = SigningKey.generate().public_key
    assert problem_of(verify_revocation, parse_revocation(tampered), chain) is ChainProblem.BAD_SIGNATURE


def test_the_server_accepts_only_revocations_by_the_current_key() -> None:
    ks = keys(2)
    current = parse_master_key(master_key_object(ALICE, ks[1], 2))
    device = Device(ALICE, "DEVICEAAAA")
    verify_revocation_by_current(parse_revocation(revocation_object(device, ks[1], 2)), current)
    old = parse_revocation(revocation_object(device, ks[0], 1))
    assert problem_of(verify_revocation_by_current, old, current) is ChainProblem.HEAD_MISMATCH
    lying = parse_revocation(revocation_object(device, ks[0], 2))
    assert problem_of(verify_revocation_by_current, lying, current) is ChainProblem.BAD_SIGNATURE
    other = parse_revocation(revocation_object(Device(MALLORY, "DEVICEAAAA"), ks[1], 2))
    assert problem_of(verify_revocation_by_current, other, current) is ChainProblem.WRONG_USER
