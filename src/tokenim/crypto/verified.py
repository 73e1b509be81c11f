"""What "verified" means: a person is verified when the master key this device trusts for them is the
key that was verified (by SAS or by comparing the safety number), or one it followed from that key through
signed rotations. Pure: the record, the pin and the followed keys are passed in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum


class VerifiedBy(StrEnum):
    """How a person's master key was verified."""

    SAS = "sas"
    SAFETY_NUMBER = "safety_number"


@dataclass(frozen=True, slots=True)
class VerificationRecord:
    """A verification as kept in the profile: whose key, which key, how, when, and the device (SAS only)."""

    user_id: str
    master_key: str
    method: VerifiedBy
    verified_at: int
    device_id: str | None = None
    device_ed25519: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerificationRecord:
        d = json.loads(raw)
        return cls(
            user_id=str(d["user_id"]),
            master_key=str(d["master_key"]),
            method=VerifiedBy(d["method"]),
            verified_at=int(d["verified_at"]),
            device_id=d.get("device_id"),
            device_ed25519=d.get("device_ed25519"),
        )


@dataclass(frozen=True, slots=True)
class VerificationStatus:
    """`verified_by` is set when the person is verified; otherwise `why_not` says why, in a sentence."""

    verified_by: VerifiedBy | None
    why_not: str | None
    verify_again: bool = False  # verified once, but the key trusted now is not the verified one

    @property
    def verified(self) -> bool:
        return self.verified_by is not None


def verification_status(
    user_id: str,
    record: VerificationRecord | None,
    pinned_key: str | None,
    followed_keys: Sequence[str] = (),
) -> VerificationStatus:
    """Whether `user_id` is verified now. `followed_keys` are the master keys this device followed through
    signed rotations up to the pinned one (oldest first; restarted when the user accepted an unsigned
    change, so it always ends with the pinned key): a verification of any of them carries over; with none
    given, only the pinned key counts."""
    if record is None:
        return VerificationStatus(
            None,
            f"you have not verified {user_id} (tokenim verify {user_id}, or compare "
            f"the safety number: tokenim fingerprint {user_id})",
        )
    if pinned_key is not None and (record.master_key == pinned_key or record.master_key in followed_keys):
        return VerificationStatus(record.method, None)
    return VerificationStatus(
        None,
        f"{user_id}'s master key changed since you verified it: verify again (tokenim verify {user_id})",
        verify_again=True,
    )


__all__ = ["VerificationRecord", "VerificationStatus", "VerifiedBy", "verification_status"]
