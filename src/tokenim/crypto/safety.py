"""Safety numbers: one number two people compare to check each other's master keys (Signal's construction).

For each person, iterated SHA-512 over a version, their master key and their user id gives 30 digits; the
two halves, sorted, make 60 digits that both people see in the same order. docs/protocol.md, "Safety
numbers", defines it exactly and gives a test vector. Pure: no I/O.
"""

from __future__ import annotations

import hashlib

from tokenim.core.encoding import b64decode

SAFETY_NUMBER_VERSION = 1
ITERATIONS = 5200  # as Signal's NumericFingerprintGenerator: slows a search for a colliding key


def half(user_id: str, master_key: str) -> str:
    """The 30 digits one person contributes: 6 groups of 5 from the iterated hash of their key and id."""
    key = b64decode(master_key)
    if len(key) != 32:
        raise ValueError("a master key is 32 bytes")
    digest = hashlib.sha512(SAFETY_NUMBER_VERSION.to_bytes(2, "big") + key + user_id.encode()).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + key).digest()
    return "".join(f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5))


def safety_number(user_a: str, key_a: str, user_b: str, key_b: str) -> str:
    """The pair's safety number: 12 groups of 5 digits, the same whichever side computes it."""
    digits = "".join(sorted([half(user_a, key_a), half(user_b, key_b)]))
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))


__all__ = ["ITERATIONS", "SAFETY_NUMBER_VERSION", "half", "safety_number"]
