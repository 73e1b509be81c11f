"""Key objects: the user's master key, device keys and one-time keys, with their structure and signatures.

Parsing checks shape only; `verify_*` checks the signatures with `core.signing`. Every object keeps
its raw JSON so it can be stored and relayed byte-for-byte as signed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tokenim.core.content import check_client_json
from tokenim.core.encoding import b64decode
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import DeviceId, UserId, check_device_id, check_user_id
from tokenim.core.signing import verify_json

OLM_ALGORITHM = "tokenim.olm.v1.curve25519-aes-sha2"
MEGOLM_ALGORITHM = "tokenim.megolm.v1.aes-sha2"
DEVICE_ALGORITHMS = [OLM_ALGORITHM, MEGOLM_ALGORITHM]
ONE_TIME_KEY_ALGORITHM = "signed_curve25519"
# A one-time key id: 1 to 64 base64 characters (vodozemac and libolm make ids such as "AAAAAAAAAAE").
ONE_TIME_KEY_ID = re.compile(r"[A-Za-z0-9+/_-]{1,64}")
# Times are milliseconds since the Unix epoch: from 2001-09-09 (10^12) to year 5138 (10^14). A time in
# seconds (about 1.8 * 10^9 today) is refused rather than read as 1970.
MIN_TIME_MS = 10**12
MAX_TIME_MS = 10**14
# The members each key object may have; anything else (`unsigned` included) is refused, so nothing the
# signatures do not cover is ever stored and relayed to other users.
MASTER_KEY_MEMBERS = frozenset({"user_id", "usage", "keys", "version", "created_at", "signatures"})
DEVICE_KEYS_MEMBERS = frozenset({"user_id", "device_id", "algorithms", "keys", "master_key_version", "created_at", "signatures"})
ONE_TIME_KEY_MEMBERS = frozenset({"key", "fallback", "signatures"})


def bad_key_object(what: str, why: str) -> TokenIMError:
    """A `bad_key_object` error naming the object and what is wrong with it."""
    return TokenIMError(ErrorCode.BAD_KEY_OBJECT, f"The {what} is malformed: {why}.")


def check_key_b64(value: object, what: str, field: str) -> str:
    """A base64 string of a 32-byte key, or `bad_key_object`."""
    if not isinstance(value, str):
        raise bad_key_object(what, f"{field} must be a base64 string")
    try:
        raw = b64decode(value)
    except ValueError:
        raise bad_key_object(what, f"{field} is not valid base64") from None
    if len(raw) != 32:
        raise bad_key_object(what, f"{field} must be a 32-byte key")
    return value


def check_int(value: object, what: str, field: str) -> int:
    """A non-negative integer (not a bool), or `bad_key_object`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise bad_key_object(what, f"{field} must be a non-negative integer")
    return value


def check_time(value: object, what: str, field: str) -> int:
    """An integer time in milliseconds within the accepted range, or `bad_key_object`."""
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_TIME_MS <= value <= MAX_TIME_MS:
        raise bad_key_object(what, f"{field} must be an integer time in milliseconds since the Unix epoch")
    return value


def require_dict(value: object, what: str) -> dict[str, Any]:
    """A JSON object that can be stored and served back, or `bad_key_object`."""
    if not isinstance(value, dict):
        raise bad_key_object(what, "it must be a JSON object")
    check_client_json(value, what, ErrorCode.BAD_KEY_OBJECT)  # relayed to every client: it must be servable
    return value


def require_members(raw: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    """Only the documented members, and `signatures` shaped as {signer: {key id: signature}}."""
    extra = sorted(set(raw) - allowed)
    if extra:
        raise bad_key_object(what, f"it has members that are not part of it: {', '.join(repr(e[:40]) for e in extra[:5])}")
    sigs = raw.get("signatures")
    if sigs is None:
        return
    if not isinstance(sigs, dict) or not all(
        isinstance(by, dict) and all(isinstance(v, str) for v in by.values()) for by in sigs.values()
    ):
        raise bad_key_object(what, "signatures must map each signer to an object of key id -> signature strings")


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The user's long-term identity key (Ed25519). `version` grows with each rotation."""

    user_id: UserId
    public_key: str
    version: int
    created_at: int
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    """A device's identity keys (Curve25519 for Olm, Ed25519 for signing), signed by device and master key."""

    user_id: UserId
    device_id: DeviceId
    curve25519: str
    ed25519: str
    master_key_version: int
    created_at: int
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OneTimeKey:
    """A signed Curve25519 one-time (or fallback) key, published so others can start Olm sessions."""

    key_id: str
    public_key: str
    fallback: bool
    raw: dict[str, Any]


def parse_master_key(value: object) -> MasterKey:
    """Check the shape of a master-key object."""
    what = "master key"
    raw = require_dict(value, what)
    require_members(raw, MASTER_KEY_MEMBERS, what)
    user_id = raw.get("user_id")
    try:
        uid = check_user_id(user_id)
    except TokenIMError:
        raise bad_key_object(what, "user_id is not a user id") from None
    if raw.get("usage") != ["master"]:
        raise bad_key_object(what, 'usage must be ["master"]')
    keys = raw.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise bad_key_object(what, "keys must hold exactly one ed25519 key")
    ((key_id, public),) = keys.items()
    check_key_b64(public, what, "the key")
    if key_id != f"ed25519:{public}":
        raise bad_key_object(what, "the key id must be ed25519:<public key>")
    return MasterKey(
        user_id=uid,
        public_key=public,
        version=check_int(raw.get("version"), what, "version"),
        created_at=check_time(raw.get("created_at"), what, "created_at"),
        raw=raw,
    )


def _require_exact_signatures(raw: dict[str, Any], signer: str, key_ids: list[str], what: str) -> None:
    """After the expected signatures verified: the object carries no other signature entry.

    Entries under other signers or key ids (whatever their text or value) would be stored and relayed to every
    client though nobody checked them, so they are refused rather than dropped (the object is stored as signed).
    """
    sigs: dict[str, dict[str, str]] = raw["signatures"]  # verify_json found the expected ones in it
    if set(sigs) - {signer}:
        raise bad_key_object(what, f"it carries signatures by others than {signer}, which nobody checks")
    mine = sigs[signer]
    expected = {f"ed25519:{k}" for k in key_ids}
    if set(mine) - expected:
        raise bad_key_object(
            what, f"it carries signatures by keys nobody checks; only {' and '.join(sorted(expected))} may sign it"
        )


def verify_master_key(mk: MasterKey) -> None:
    """A master key must be signed by itself, and by nothing else."""
    verify_json(mk.raw, mk.user_id, mk.public_key, mk.public_key, what="master key")
    _require_exact_signatures(mk.raw, mk.user_id, [mk.public_key], "master key")


def parse_device_keys(value: object) -> DeviceKeys:
    """Check the shape of a device-keys object."""
    what = "device keys object"
    raw = require_dict(value, what)
    require_members(raw, DEVICE_KEYS_MEMBERS, what)
    try:
        uid = check_user_id(raw.get("user_id"))
        did = check_device_id(raw.get("device_id"))
    except TokenIMError as exc:
        raise bad_key_object(what, exc.message.rstrip(".")) from None
    if raw.get("algorithms") != DEVICE_ALGORITHMS:
        raise bad_key_object(what, f"algorithms must be {DEVICE_ALGORITHMS}")
    keys = raw.get("keys")
    if not isinstance(keys, dict) or set(keys) != {f"curve25519:{did}", f"ed25519:{did}"}:
        raise bad_key_object(what, "keys must hold curve25519:<device id> and ed25519:<device id>")
    return DeviceKeys(
        user_id=uid,
        device_id=did,
        curve25519=check_key_b64(keys[f"curve25519:{did}"], what, "the curve25519 key"),
        ed25519=check_key_b64(keys[f"ed25519:{did}"], what, "the ed25519 key"),
        master_key_version=check_int(raw.get("master_key_version"), what, "master_key_version"),
        created_at=check_time(raw.get("created_at"), what, "created_at"),
        raw=raw,
    )


def verify_device_keys(dk: DeviceKeys, master: MasterKey) -> None:
    """Device keys must be signed by the device itself and by the user's master key, and by nothing else."""
    if dk.user_id != master.user_id:
        raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, "The device keys belong to another user than the master key.")
    verify_json(dk.raw, dk.user_id, dk.device_id, dk.ed25519, what="device keys object")
    verify_json(dk.raw, dk.user_id, master.public_key, master.public_key, what="device keys object (master signature)")
    _require_exact_signatures(dk.raw, dk.user_id, [dk.device_id, master.public_key], "device keys object")


def parse_one_time_keys(value: object, *, fallback: bool) -> list[OneTimeKey]:
    """Check the shape of `{"signed_curve25519:<id>": {"key": ..., "signatures": ...}}`."""
    what = "fallback key" if fallback else "one-time key"
    mapping = require_dict(value, what + " map")
    out: list[OneTimeKey] = []
    for full_id, obj in mapping.items():
        algorithm, _, key_id = full_id.partition(":")
        if algorithm != ONE_TIME_KEY_ALGORITHM or not ONE_TIME_KEY_ID.fullmatch(key_id):
            raise bad_key_object(what, f"key ids must look like {ONE_TIME_KEY_ALGORITHM}:<1 to 64 base64 characters>")
        raw = require_dict(obj, what)
        require_members(raw, ONE_TIME_KEY_MEMBERS, what)
        if fallback and raw.get("fallback") is not True:
            raise bad_key_object(what, 'a fallback key must hold "fallback": true (inside the signed object)')
        if not fallback and "fallback" in raw:
            raise bad_key_object(what, 'a one-time key has no "fallback" member (only a fallback key has one, and it is true)')
        out.append(OneTimeKey(key_id=key_id, public_key=check_key_b64(raw.get("key"), what, "key"), fallback=fallback, raw=raw))
    return out


def verify_one_time_key(otk: OneTimeKey, device: DeviceKeys) -> None:
    """A one-time key must be signed by the device that publishes it, and by nothing else."""
    what = "fallback key" if otk.fallback else "one-time key"
    verify_json(otk.raw, device.user_id, device.device_id, device.ed25519, what=what)
    _require_exact_signatures(otk.raw, device.user_id, [device.device_id], what)
