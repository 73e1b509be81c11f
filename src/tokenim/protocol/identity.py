"""The master-key chain: rotations (signed by the old and the new master key) and device revocations
(signed by the master key of the version they name).

Like `protocol.keys`, parsing checks shape only and `verify_*` checks signatures with `core.signing`;
every object keeps its raw JSON so the server stores and relays it byte-for-byte. Each object has a
`type` member inside what is signed, so a signature made for one kind of object never passes for another.
The verify functions are pure: server and client call the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import DeviceId, UserId, check_device_id, check_user_id
from tokenim.core.signing import verify_json
from tokenim.protocol.keys import (
    MasterKey,
    bad_key_object,
    check_int,
    check_key_b64,
    check_time,
    require_dict,
    require_members,
)

ROTATION_TYPE = "tokenim.master_key_rotation.v1"
REVOCATION_TYPE = "tokenim.device_revocation.v1"
ROTATION_MEMBERS = frozenset({"type", "user_id", "old_key", "old_version", "new_key", "new_version", "ts", "signatures"})
REVOCATION_MEMBERS = frozenset({"type", "user_id", "device_id", "keys", "master_key_version", "ts", "signatures"})
MAX_CHAIN_LENGTH = 1000  # rotations per user: far beyond a yearly rotation, small enough to verify at once
MAX_REVOCATIONS = 1000  # revocations per user: each adds a device_list event to every room of the user


class ChainProblem(StrEnum):
    """Why a chain of master keys does not verify; clients turn each into a trust verdict."""

    WRONG_USER = "wrong_user"  # an object names another user
    NOT_FROM_ONE = "not_from_one"  # the chain does not start at version 1
    VERSION_GAP = "version_gap"  # a rotation does not go from version n to n + 1
    MISSING_LINK = "missing_link"  # no rotation leads to a version the chain needs
    BROKEN_LINK = "broken_link"  # a rotation's old key is not the key the chain holds for that version
    FORK = "fork"  # two different rotations leave the same version
    BAD_SIGNATURE = "bad_signature"  # a signature is missing or does not verify
    HEAD_MISMATCH = "head_mismatch"  # the current master key is not where the chain ends
    TOO_LONG = "too_long"


class ChainError(TokenIMError):
    """A chain or revocation that does not verify; `problem` says exactly why."""

    def __init__(self, problem: ChainProblem, message: str) -> None:
        code = ErrorCode.BAD_SIGNATURE if problem is ChainProblem.BAD_SIGNATURE else ErrorCode.KEY_CHAIN_INVALID
        super().__init__(code, message, details={"problem": problem.value})
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Rotation:
    """The user's master key moves from `old_key` (version n) to `new_key` (version n + 1)."""

    user_id: UserId
    old_key: str
    old_version: int
    new_key: str
    new_version: int
    ts: int
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Revocation:
    """A device, named with its keys, that must never be trusted, encrypted to or accepted again."""

    user_id: UserId
    device_id: DeviceId
    curve25519: str
    ed25519: str
    master_key_version: int
    ts: int
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Chain:
    """A verified chain: `keys[v - 1]` is the public master key of version v; the last one is current."""

    user_id: UserId
    keys: tuple[str, ...]

    @property
    def version(self) -> int:
        """The current version."""
        return len(self.keys)

    @property
    def current_key(self) -> str:
        """The current master public key."""
        return self.keys[-1]

    def key_at(self, version: int) -> str | None:
        """The master public key of `version`, or None if the chain has no such version."""
        return self.keys[version - 1] if 1 <= version <= len(self.keys) else None


def _user(raw: dict[str, Any], what: str) -> UserId:
    try:
        return check_user_id(raw.get("user_id"))
    except TokenIMError:
        raise bad_key_object(what, "user_id is not a user id") from None


def _version(value: object, what: str, field: str) -> int:
    v = check_int(value, what, field)
    if v < 1:
        raise bad_key_object(what, f"{field} must be at least 1")
    return v


def parse_rotation(value: object) -> Rotation:
    """Check the shape of a rotation object."""
    what = "master key rotation"
    raw = require_dict(value, what)
    require_members(raw, ROTATION_MEMBERS, what)
    if raw.get("type") != ROTATION_TYPE:
        raise bad_key_object(what, f"type must be {ROTATION_TYPE!r}")
    return Rotation(
        user_id=_user(raw, what),
        old_key=check_key_b64(raw.get("old_key"), what, "old_key"),
        old_version=_version(raw.get("old_version"), what, "old_version"),
        new_key=check_key_b64(raw.get("new_key"), what, "new_key"),
        new_version=_version(raw.get("new_version"), what, "new_version"),
        ts=check_time(raw.get("ts"), what, "ts"),
        raw=raw,
    )


def parse_revocation(value: object) -> Revocation:
    """Check the shape of a device revocation object."""
    what = "device revocation"
    raw = require_dict(value, what)
    require_members(raw, REVOCATION_MEMBERS, what)
    if raw.get("type") != REVOCATION_TYPE:
        raise bad_key_object(what, f"type must be {REVOCATION_TYPE!r}")
    uid = _user(raw, what)
    try:
        did = check_device_id(raw.get("device_id"))
    except TokenIMError:
        raise bad_key_object(what, "device_id is not a device id") from None
    keys = raw.get("keys")
    if not isinstance(keys, dict) or set(keys) != {f"curve25519:{did}", f"ed25519:{did}"}:
        raise bad_key_object(what, "keys must hold curve25519:<device id> and ed25519:<device id>")
    return Revocation(
        user_id=uid,
        device_id=did,
        curve25519=check_key_b64(keys[f"curve25519:{did}"], what, "the curve25519 key"),
        ed25519=check_key_b64(keys[f"ed25519:{did}"], what, "the ed25519 key"),
        master_key_version=_version(raw.get("master_key_version"), what, "master_key_version"),
        ts=check_time(raw.get("ts"), what, "ts"),
        raw=raw,
    )


def _signed_by(raw: dict[str, Any], user_id: str, key: str, what: str) -> None:
    try:
        verify_json(raw, user_id, key, key, what=what)
    except TokenIMError as exc:
        raise ChainError(ChainProblem.BAD_SIGNATURE, exc.message) from None


def verify_rotation(rot: Rotation) -> None:
    """A rotation must go from version n to n + 1, to another key, signed by both the old and the new key."""
    if rot.new_version != rot.old_version + 1:
        raise ChainError(
            ChainProblem.VERSION_GAP, f"A rotation must go from version n to n + 1, not {rot.old_version} to {rot.new_version}."
        )
    if rot.new_key == rot.old_key:
        raise ChainError(ChainProblem.BROKEN_LINK, "A rotation must move to a new key.")
    _signed_by(rot.raw, rot.user_id, rot.old_key, f"rotation to version {rot.new_version} (old key)")
    _signed_by(rot.raw, rot.user_id, rot.new_key, f"rotation to version {rot.new_version} (new key)")


def _links_by_version(user_id: str, rotations: list[Rotation]) -> dict[int, Rotation]:
    if len(rotations) > MAX_CHAIN_LENGTH:
        raise ChainError(ChainProblem.TOO_LONG, f"A chain holds at most {MAX_CHAIN_LENGTH} rotations.")
    links: dict[int, Rotation] = {}
    for rot in rotations:
        if rot.user_id != user_id:
            raise ChainError(ChainProblem.WRONG_USER, f"A rotation in {user_id}'s chain belongs to {rot.user_id}.")
        verify_rotation(rot)
        seen = links.get(rot.old_version)
        if seen is not None and seen.new_key != rot.new_key:
            raise ChainError(ChainProblem.FORK, f"Two different rotations leave version {rot.old_version}: the chain forks.")
        links[rot.old_version] = rot
    return links


def verify_chain(current: MasterKey, rotations: list[Rotation]) -> Chain:
    """Check that `rotations` lead, link by link, from version 1 to the current master key.

    Each rotation must be valid on its own (`verify_rotation`), start where the previous one ended
    (same key, same version), and no version may be left twice (a fork). With no rotations, the
    current master key must be version 1. Raises `ChainError` naming the first problem found.
    """
    links = _links_by_version(current.user_id, rotations)
    if links and min(links) != 1:
        raise ChainError(ChainProblem.NOT_FROM_ONE, f"The chain starts at version {min(links)}, not 1.")
    keys: list[str] = [links[1].old_key] if links else [current.public_key]
    for version in range(1, len(links) + 1):
        rot = links.get(version)
        if rot is None:
            raise ChainError(ChainProblem.MISSING_LINK, f"No rotation leaves version {version}: a link is missing.")
        if rot.old_key != keys[-1]:
            raise ChainError(ChainProblem.BROKEN_LINK, f"The rotation from version {version} starts from another key.")
        keys.append(rot.new_key)
    if len(keys) < current.version:
        raise ChainError(
            ChainProblem.MISSING_LINK, f"No rotation leads from version {len(keys)} to the current version {current.version}."
        )
    if len(keys) != current.version or keys[-1] != current.public_key:
        raise ChainError(
            ChainProblem.HEAD_MISMATCH,
            f"The chain ends at version {len(keys)}, but the current master key is version {current.version}"
            + ("." if len(keys) != current.version else " with another key."),
        )
    return Chain(user_id=current.user_id, keys=tuple(keys))


def verify_revocation(rev: Revocation, chain: Chain) -> None:
    """A revocation must be signed by the chain's master key of the version it names."""
    if rev.user_id != chain.user_id:
        raise ChainError(ChainProblem.WRONG_USER, f"The revocation is for {rev.user_id}, not {chain.user_id}.")
    key = chain.key_at(rev.master_key_version)
    if key is None:
        raise ChainError(
            ChainProblem.MISSING_LINK, f"The revocation names master key version {rev.master_key_version}, which the chain lacks."
        )
    _signed_by(rev.raw, rev.user_id, key, f"revocation of device {rev.device_id}")


def verify_revocation_by_current(rev: Revocation, current: MasterKey) -> None:
    """What the server checks: the revocation is signed by the user's current master key and says so."""
    if rev.user_id != current.user_id:
        raise ChainError(ChainProblem.WRONG_USER, f"The revocation is for {rev.user_id}, not {current.user_id}.")
    if rev.master_key_version != current.version:
        raise ChainError(
            ChainProblem.HEAD_MISMATCH,
            f"The revocation must be signed by the current master key (version {current.version}), "
            f"not version {rev.master_key_version}.",
        )
    _signed_by(rev.raw, rev.user_id, current.public_key, f"revocation of device {rev.device_id}")
