"""The audit log's hash chain and its wire objects: the admin's view of the log, a verification's report,
and a user's security review.

Each entry carries the hash of the one before it, so a row changed, removed or inserted behind the
server's back shows where it happened. The hash is defined here, once, so that anyone holding the rows
can check them (docs/protocol.md, "The audit log").
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import Field

from tokenim.core.canonical import canonical_json
from tokenim.protocol.api import _Wire

AUDIT_ENTRY_TYPE = "tokenim.audit.v1"
GENESIS_HASH = "0" * 64  # what the first entry names as the hash before it
MAX_ADMIN_AUDIT_LIMIT = 1000
MAX_VERIFY_PROBLEMS = 100
MAX_REVIEW_DAYS = 365


def audit_entry_hash(
    *,
    seq: int,
    ts: int,
    event: str,
    user_id: str | None,
    device_id: str | None,
    ip: str | None,
    user_agent: str | None,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 (lower-case hex) of the canonical JSON of an entry's fields and the previous entry's hash."""
    body = {
        "type": AUDIT_ENTRY_TYPE,
        "seq": seq,
        "ts": ts,
        "event": event,
        "user_id": user_id,
        "device_id": device_id,
        "ip": ip,
        "user_agent": user_agent,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


class AdminAuditEntry(_Wire):
    id: int = Field(description="the row's number: pass it as `before` to read older rows")
    seq: int | None = Field(description="the entry's number in the hash chain (null: a row the server never chained)")
    ts: int
    event: str
    user_id: str | None
    device_id: str | None
    ip: str | None = Field(description="the client address the request came from, when the event came from a request")
    user_agent: str | None = Field(description="the request's User-Agent, control characters removed, at most 256")
    details: dict[str, Any]
    prev_hash: str | None
    hash: str | None


class AdminAuditResponse(_Wire):
    events: list[AdminAuditEntry] = Field(description="newest first")
    next_before: int | None = Field(description="`before` for the next (older) page; null when there are no older rows")


ProblemKind = Literal["changed", "removed", "inserted"]


class AuditProblem(_Wire):
    entry: int | None = Field(description="the entry number (`seq`) where the chain breaks; null for a row with no number")
    kind: ProblemKind
    row_id: int | None = Field(description="the row concerned, when there is one (a removed entry has none)")
    count: int = Field(default=1, description="how many entries, for a run of removed or inserted ones")
    message: str


class AuditHead(_Wire):
    seq: int
    hash: str


class AuditVerifyResponse(_Wire):
    ok: bool
    entries: int = Field(description="how many rows were checked")
    head: AuditHead | None = Field(description="the last entry the server wrote (null: an empty log)")
    problems: list[AuditProblem] = Field(description=f"where the chain breaks, in order; at most {MAX_VERIFY_PROBLEMS}")
    truncated: bool = Field(description="more problems were found than are listed")


FlagKind = Literal["new_device", "new_ip", "failed_burst", "lost_device_login", "revoked_device_login", "recovery_in_progress"]


class ReviewLogin(_Wire):
    ts: int
    outcome: Literal["success", "failed"]
    reason: str | None = Field(description="why a failed attempt failed (`bad_signature`, `challenge_expired`, …)")
    event: str
    device_id: str | None
    ip: str | None
    user_agent: str | None


class ReviewActivity(_Wire):
    ts: int
    event: str
    device_id: str | None
    ip: str | None
    details: dict[str, Any]


class ReviewFlag(_Wire):
    kind: FlagKind
    ts: int = Field(description="when it happened (the first event of a burst)")
    message: str
    device_id: str | None = None
    ip: str | None = None
    count: int | None = Field(default=None, description="failed_burst: how many failures")


class SecurityReviewResponse(_Wire):
    since: int = Field(description="the review covers events from this time on")
    logins: list[ReviewLogin] = Field(description="login attempts, newest first")
    activity: list[ReviewActivity] = Field(description="everything else in the account's log, newest first")
    flags: list[ReviewFlag] = Field(description="what looks wrong, newest first; empty when nothing does")


__all__ = [
    "AUDIT_ENTRY_TYPE",
    "GENESIS_HASH",
    "MAX_ADMIN_AUDIT_LIMIT",
    "MAX_REVIEW_DAYS",
    "MAX_VERIFY_PROBLEMS",
    "AdminAuditEntry",
    "AdminAuditResponse",
    "AuditHead",
    "AuditProblem",
    "AuditVerifyResponse",
    "FlagKind",
    "ProblemKind",
    "ReviewActivity",
    "ReviewFlag",
    "ReviewLogin",
    "SecurityReviewResponse",
    "audit_entry_hash",
]
