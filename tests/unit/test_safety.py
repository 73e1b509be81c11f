"""Safety numbers (crypto/safety.py) against the test vector in docs/protocol.md and an independent
computation of the definition, and what "verified" means (crypto/verified.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tokenim.core.encoding import b64encode
from tokenim.crypto.safety import half, safety_number
from tokenim.crypto.verified import VerificationRecord, VerifiedBy, verification_status

KEY_A = b64encode(bytes(range(32)))
KEY_B = b64encode(bytes(range(32, 64)))
VECTOR = "31335 61659 47602 17677 77659 44234 47317 75674 76504 20386 27709 16319"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _by_the_definition(user_id: str, key: bytes) -> str:
    """docs/protocol.md, "Safety numbers", step by step."""
    h = hashlib.sha512(b"\x00\x01" + key + user_id.encode("utf-8")).digest()
    for _ in range(5200):
        h = hashlib.sha512(h + key).digest()
    return "".join(str(int.from_bytes(h[i * 5 : i * 5 + 5], "big") % 100000).zfill(5) for i in range(6))


def test_the_documented_test_vector() -> None:
    assert safety_number("@alice:example.com", KEY_A, "@bob:example.com", KEY_B) == VECTOR
    text = DOCS.read_text()
    assert VECTOR in text and KEY_A in text and KEY_B in text


def test_the_number_follows_the_definition_and_is_the_same_on_both_sides() -> None:
    a = _by_the_definition("@alice:example.com", bytes(range(32)))
    b = _by_the_definition("@bob:example.com", bytes(range(32, 64)))
    assert half("@alice:example.com", KEY_A) == a and half("@bob:example.com", KEY_B) == b
    assert VECTOR.replace(" ", "") == "".join(sorted([a, b]))
    assert safety_number("@bob:example.com", KEY_B, "@alice:example.com", KEY_A) == VECTOR


def test_another_key_or_another_user_id_changes_the_number() -> None:
    other_key = b64encode(bytes(range(1, 33)))
    assert safety_number("@alice:example.com", KEY_A, "@bob:example.com", other_key) != VECTOR
    assert safety_number("@alice:example.com", KEY_A, "@bobby:example.com", KEY_B) != VECTOR


def test_a_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        half("@a:x", b64encode(bytes(31)))


def _record(key: str) -> VerificationRecord:
    return VerificationRecord("@bob:x", key, VerifiedBy.SAS, 1, "BOBDEV0001", "ed")


def test_verified_means_the_pinned_key_is_the_verified_one() -> None:
    assert verification_status("@bob:x", _record(KEY_A), KEY_A).verified_by is VerifiedBy.SAS
    never = verification_status("@bob:x", None, KEY_A)
    assert never.verified_by is None and "not verified" in (never.why_not or "") and not never.verify_again
    changed = verification_status("@bob:x", _record(KEY_A), KEY_B)
    assert not changed.verified and changed.verify_again and "verify again" in (changed.why_not or "")


def test_a_verification_carries_over_signed_rotations_it_followed() -> None:
    """Keys followed through signed rotations (oldest first) keep a verification of any of them."""
    assert verification_status("@bob:x", _record(KEY_A), KEY_B, [KEY_A, KEY_B]).verified
    assert not verification_status("@bob:x", _record(KEY_A), KEY_B, [KEY_B]).verified  # restarted: unsigned change


def test_a_record_round_trips() -> None:
    record = _record(KEY_A)
    assert VerificationRecord.from_bytes(record.to_bytes()) == record
