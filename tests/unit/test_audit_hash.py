"""The audit entry hash is the documented construction: the test vector of docs/protocol.md, computed here
with hashlib and json alone, and every field (and the previous hash) changes it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tokenim.protocol.audit import GENESIS_HASH, audit_entry_hash

VECTOR: dict[str, Any] = {
    "seq": 1,
    "ts": 1800000000000,
    "event": "invite.bootstrap",
    "user_id": None,
    "device_id": None,
    "ip": None,
    "user_agent": None,
    "details": {"expires_at": 1800086400000},
    "prev_hash": "0" * 64,
}
VECTOR_HASH = "b5a96c332b629d395da70e9c13aaa8b4b01879fbc67a3c0d2a1120c228bdf447"


def test_the_documented_vector() -> None:
    body = json.dumps({**VECTOR, "type": "tokenim.audit.v1"}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(body.encode()).hexdigest() == VECTOR_HASH
    assert audit_entry_hash(**VECTOR) == VECTOR_HASH
    assert GENESIS_HASH == "0" * 64
    assert VECTOR_HASH in (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()


def test_every_field_is_covered() -> None:
    changed = {
        "seq": 2,
        "ts": 1800000000001,
        "event": "login",
        "user_id": "@a:b",
        "device_id": "ABCDEF",
        "ip": "192.0.2.1",
        "user_agent": "x",
        "details": {"expires_at": 1},
        "prev_hash": "1" * 64,
    }
    for field, value in changed.items():
        assert audit_entry_hash(**{**VECTOR, field: value}) != VECTOR_HASH, field
