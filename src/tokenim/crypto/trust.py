"""Whom to trust: the client's decision about a user's keys, given what it had pinned and what the
server now shows. Pure: no I/O, the time is passed in.

A client pins, per user, the master key and version it first saw (trust on first use) or last followed.
A rotation signed by the pinned key is followed as routine; anything else that changes the pinned key
is a warning, and the user's devices become unverified until the user is verified again. Devices named
in a verified revocation are never trusted again, even if the server later hides the revocation
(`known_revoked_keys`). A user's revocations only ever revoke that user's own devices: the keys are kept
per user, so one user can never revoke another's device. docs/protocol.md, "Trust decisions (client)", describes each verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tokenim.core.errors import TokenIMError
from tokenim.core.ids import UserId
from tokenim.protocol.identity import (
    Chain,
    ChainError,
    ChainProblem,
    Revocation,
    parse_revocation,
    parse_rotation,
    verify_chain,
    verify_revocation,
)
from tokenim.protocol.keys import (
    DeviceKeys,
    MasterKey,
    parse_device_keys,
    parse_master_key,
    verify_device_keys,
    verify_master_key,
)


class Verdict(StrEnum):
    """What happened to a user's master key since the client pinned it."""

    FIRST_SEEN = "first_seen"  # nothing pinned yet: pin the current key (trust on first use)
    TRUSTED_SAME = "trusted_same"  # the pinned key is still current
    ROTATED_SIGNED = "rotated_signed"  # a valid chain leads from the pinned key to a new one: follow it
    CHANGED_UNSIGNED = "changed_unsigned"  # another key, with no signed link from the pinned one
    BROKEN_CHAIN = "broken_chain"  # the chain or the current master key does not verify
    FORKED = "forked"  # the chain shows another history than the one the client followed
    ROLLED_BACK = "rolled_back"  # the server shows an older version than the one pinned

    @property
    def trusted(self) -> bool:
        """True when the user's devices may be trusted under the new pin; false means warn."""
        return self in (Verdict.FIRST_SEEN, Verdict.TRUSTED_SAME, Verdict.ROTATED_SIGNED)


@dataclass(frozen=True, slots=True)
class Pin:
    """The master key a client trusts for a user, its version, and when it was pinned.

    `followed` is every master key of the user this client trusted along the way, oldest first: the key
    first pinned (or accepted) and each key reached from it through signed rotations. A verification made
    against any of them still vouches for the user (SAS verification looks here)."""

    user_id: str
    master_key: str
    version: int
    pinned_at: int
    followed: tuple[str, ...] = ()

    @property
    def keys_followed(self) -> tuple[str, ...]:
        """`followed`, or just the pinned key for a pin made before the list was kept."""
        return self.followed or (self.master_key,)


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict, the pin to keep from now on (unchanged on a warning), and the user's devices sorted out."""

    verdict: Verdict
    pin: Pin | None
    devices: dict[str, DeviceKeys] = field(default_factory=dict)  # verified under the pinned chain, not revoked
    unverified: tuple[str, ...] = ()  # device ids shown but not trusted
    revoked: frozenset[str] = frozenset()  # device ids revoked by a verified revocation
    revoked_keys: frozenset[str] = frozenset()  # every key of this user's revoked devices: remember, refuse forever
    problem: ChainProblem | None = None  # why the chain failed, for BROKEN_CHAIN and FORKED


def _compare(pinned: Pin, chain: Chain) -> Verdict:
    if chain.key_at(pinned.version) == pinned.master_key:
        return Verdict.TRUSTED_SAME if chain.version == pinned.version else Verdict.ROTATED_SIGNED
    if chain.version < pinned.version:
        return Verdict.ROLLED_BACK
    if pinned.master_key in chain.keys or chain.version > 1:
        return Verdict.FORKED  # a chain with history, but another key at the version the client followed
    return Verdict.CHANGED_UNSIGNED


def _verify_chain(user_id: str, answer: dict[str, Any]) -> tuple[Chain, MasterKey]:
    current = parse_master_key(answer.get("master_key"))
    if current.user_id != user_id:
        raise ChainError(ChainProblem.WRONG_USER, f"The master key shown for {user_id} is {current.user_id}'s.")
    try:
        verify_master_key(current)
    except TokenIMError as exc:
        raise ChainError(ChainProblem.BAD_SIGNATURE, exc.message) from None
    rotations = answer.get("rotations", [])
    if not isinstance(rotations, list):
        raise ChainError(ChainProblem.MISSING_LINK, "The rotations are not a list.")
    return verify_chain(current, [parse_rotation(r) for r in rotations]), current


def _revocations(user_id: str, answer: dict[str, Any], chain: Chain | None, pinned: Pin | None) -> list[Revocation]:
    """The user's own revocations that verify: against the chain when it is trusted, else the pinned key."""
    anchor = chain or (Chain(user_id=UserId(pinned.user_id), keys=(pinned.master_key,) * pinned.version) if pinned else None)
    raw = answer.get("revocations", [])
    if anchor is None or not isinstance(raw, list):
        return []
    out = []
    for obj in raw:
        try:
            rev = parse_revocation(obj)
            if rev.user_id != user_id:
                continue  # filed under this user but another's: it revokes nothing here
            if chain is None and pinned is not None and rev.master_key_version != pinned.version:
                continue  # only the pinned key itself vouches when the chain is not trusted
            verify_revocation(rev, anchor)
        except TokenIMError:
            continue
        out.append(rev)
    return out


def _sort_devices(
    answer: dict[str, Any], master: MasterKey | None, revoked_ids: frozenset[str], revoked_keys: frozenset[str]
) -> tuple[dict[str, DeviceKeys], tuple[str, ...]]:
    shown = answer.get("devices", {})
    if not isinstance(shown, dict):
        return {}, ()
    verified: dict[str, DeviceKeys] = {}
    for device_id, raw in shown.items():
        if master is None or device_id in revoked_ids:
            continue
        try:
            dk = parse_device_keys(raw)
            if dk.device_id != device_id or {dk.ed25519, dk.curve25519} & revoked_keys:
                continue
            verify_device_keys(dk, master)
        except TokenIMError:
            continue
        verified[device_id] = dk
    unverified = tuple(sorted(str(d) for d in shown if d not in verified and d not in revoked_ids))
    return verified, unverified


def decide(
    user_id: str,
    pinned: Pin | None,
    answer: dict[str, Any],
    now_ms: int,
    known_revoked_keys: frozenset[str] = frozenset(),
) -> Decision:
    """Decide how far to trust `user_id`'s keys from one `POST /v1/keys/query` entry (`answer`: the
    `master_key`, `rotations`, `revocations` and `devices` as the server sent them).

    `pinned` is what the client trusted before (None the first time); `known_revoked_keys` the keys of
    `user_id`'s devices it already knows revoked (never another user's). On a warning verdict the
    returned pin is the old one, and no device is verified.
    """
    chain: Chain | None = None
    current: MasterKey | None = None
    problem: ChainProblem | None = None
    try:
        chain, current = _verify_chain(user_id, answer)
        verdict = Verdict.FIRST_SEEN if pinned is None else _compare(pinned, chain)
    except ChainError as exc:
        verdict = Verdict.FORKED if exc.problem is ChainProblem.FORK else Verdict.BROKEN_CHAIN
        chain, current, problem = None, None, exc.problem
    except TokenIMError:  # a malformed object: the chain cannot be followed
        verdict, chain, current, problem = Verdict.BROKEN_CHAIN, None, None, ChainProblem.MISSING_LINK
    trusted = verdict.trusted and chain is not None
    revocations = _revocations(user_id, answer, chain if trusted else None, pinned)
    revoked_ids = frozenset(r.device_id for r in revocations)
    revoked_keys = known_revoked_keys | {k for r in revocations for k in (r.ed25519, r.curve25519)}
    devices, unverified = _sort_devices(answer, current if trusted else None, revoked_ids, revoked_keys)
    new_pin = pinned
    if trusted and chain is not None and current is not None and verdict is not Verdict.TRUSTED_SAME:
        followed: tuple[str, ...] = (current.public_key,)
        if pinned is not None:  # a signed rotation: the keys after the pinned one, in order
            followed = pinned.keys_followed + chain.keys[pinned.version :]
        new_pin = Pin(user_id, current.public_key, current.version, now_ms, followed)
    return Decision(verdict, new_pin, devices, unverified, revoked_ids, frozenset(revoked_keys), problem)
