"""tokenim.protocol.keys (shape and signatures of key objects) and the login challenge payload."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import pytest

from tokenim.core.canonical import canonical_json
from tokenim.core.encoding import b64encode
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.signing import SigningKey, sign_json, verify_ed25519
from tokenim.protocol.auth import LOGIN_CHALLENGE_TYPE, login_challenge_payload
from tokenim.protocol.keys import (
    DEVICE_ALGORITHMS,
    MEGOLM_ALGORITHM,
    OLM_ALGORITHM,
    ONE_TIME_KEY_ALGORITHM,
    parse_device_keys,
    parse_master_key,
    parse_one_time_keys,
    verify_device_keys,
    verify_master_key,
    verify_one_time_key,
)

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
NOW = 1_800_000_000_000


class User:
    """A user with a master key and devices whose Ed25519 keys are plain `SigningKey`s."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.master = SigningKey.generate()
        self.devices: dict[str, SigningKey] = {}

    def master_object(self) -> dict[str, Any]:
        pub = self.master.public_key
        obj = {"user_id": self.user_id, "usage": ["master"], "keys": {f"ed25519:{pub}": pub}, "version": 1, "created_at": NOW}
        return sign_json(obj, self.user_id, pub, self.master)

    def unsigned_device_object(self, device_id: str) -> dict[str, Any]:
        device = self.devices.setdefault(device_id, SigningKey.generate())
        return {
            "user_id": self.user_id,
            "device_id": device_id,
            "algorithms": list(DEVICE_ALGORITHMS),
            "keys": {f"curve25519:{device_id}": _random_key(), f"ed25519:{device_id}": device.public_key},
            "master_key_version": 1,
            "created_at": NOW,
        }

    def device_object(self, device_id: str) -> dict[str, Any]:
        obj = self.unsigned_device_object(device_id)
        obj = sign_json(obj, self.user_id, device_id, self.devices[device_id])
        return sign_json(obj, self.user_id, self.master.public_key, self.master)

    def one_time_key(self, device_id: str, *, fallback: bool = False, key_id: str = "AAAAAQ") -> dict[str, Any]:
        body: dict[str, Any] = {"key": _random_key()}
        if fallback:
            body["fallback"] = True
        return {f"{ONE_TIME_KEY_ALGORITHM}:{key_id}": sign_json(body, self.user_id, device_id, self.devices[device_id])}


def _random_key() -> str:
    return b64encode(os.urandom(32))


@pytest.fixture
def alice() -> User:
    user = User(ALICE)
    user.device_object("ALICEDEV01")
    return user


@pytest.fixture
def bob() -> User:
    user = User(BOB)
    user.device_object("BOBDEVICE1")
    return user


def _assert_bad_key_object(parse: Callable[[], object]) -> None:
    with pytest.raises(TokenIMError) as exc:
        parse()
    assert exc.value.code is ErrorCode.BAD_KEY_OBJECT
    assert exc.value.status == 400


def _assert_bad_signature(check: Callable[[], None]) -> None:
    with pytest.raises(TokenIMError) as exc:
        check()
    assert exc.value.code is ErrorCode.BAD_SIGNATURE


# --- master key ---------------------------------------------------------------------------------


def test_parse_master_key(alice: User) -> None:
    raw = alice.master_object()
    mk = parse_master_key(raw)
    assert mk.user_id == ALICE
    assert mk.public_key == alice.master.public_key
    assert mk.version == 1
    assert mk.created_at == NOW
    assert mk.raw is raw
    verify_master_key(mk)


def _master_mutations() -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    def set_(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda obj: obj.__setitem__(field, value)

    def drop(field: str) -> Callable[[dict[str, Any]], None]:
        return lambda obj: obj.pop(field)

    def key_value(value: Any) -> Callable[[dict[str, Any]], None]:
        def apply(obj: dict[str, Any]) -> None:
            (key_id,) = obj["keys"]
            obj["keys"][key_id] = value

        return apply

    def add_key(obj: dict[str, Any]) -> None:
        k = _random_key()
        obj["keys"][f"ed25519:{k}"] = k

    def wrong_key_id(obj: dict[str, Any]) -> None:
        ((_, pub),) = obj["keys"].items()
        obj["keys"] = {"ed25519:MASTER": pub}

    def wrong_algorithm(obj: dict[str, Any]) -> None:
        ((_, pub),) = obj["keys"].items()
        obj["keys"] = {f"curve25519:{pub}": pub}

    return [
        ("no user_id", drop("user_id")),
        ("bad user_id", set_("user_id", "alice")),
        ("user_id not a string", set_("user_id", 7)),
        ("no usage", drop("usage")),
        ("usage device", set_("usage", ["device"])),
        ("usage string", set_("usage", "master")),
        ("usage extra", set_("usage", ["master", "device"])),
        ("no keys", drop("keys")),
        ("keys list", set_("keys", [])),
        ("keys empty", set_("keys", {})),
        ("two keys", add_key),
        ("key id not the key", wrong_key_id),
        ("key id not ed25519", wrong_algorithm),
        ("key not a string", key_value(12)),
        ("key not base64", key_value("!!not base64!!")),
        ("key too short", key_value(b64encode(os.urandom(31)))),
        ("key too long", key_value(b64encode(os.urandom(33)))),
        ("no version", drop("version")),
        ("negative version", set_("version", -1)),
        ("bool version", set_("version", True)),
        ("string version", set_("version", "1")),
        ("float version", set_("version", 1.0)),
        ("no created_at", drop("created_at")),
        ("negative created_at", set_("created_at", -5)),
        ("string created_at", set_("created_at", "now")),
        # docs/protocol.md says what a master key holds and that times are milliseconds; keys unpadded
        ("created_at in seconds", set_("created_at", 1_800_000_000)),
        ("created_at past year 5138", set_("created_at", 10**15)),
        ("extra member", set_("comment", "hello")),
        ("unsigned member", set_("unsigned", {"note": "not covered by the signature"})),
        ("signatures not objects", set_("signatures", {"@alice:example.com": "sig"})),
        ("padded key", key_value(b64encode(os.urandom(32)) + "=")),
    ]


@pytest.mark.parametrize(("label", "mutate"), _master_mutations(), ids=[m[0] for m in _master_mutations()])
def test_parse_master_key_shape_errors(alice: User, label: str, mutate: Callable[[dict[str, Any]], None]) -> None:
    raw = alice.master_object()
    mutate(raw)
    _assert_bad_key_object(lambda: parse_master_key(raw))


@pytest.mark.parametrize("value", [None, "master", [], 42])
def test_parse_master_key_needs_an_object(value: Any) -> None:
    _assert_bad_key_object(lambda: parse_master_key(value))


def test_master_key_must_be_self_signed(alice: User, bob: User) -> None:
    unsigned = alice.master_object()
    del unsigned["signatures"]
    _assert_bad_signature(lambda: verify_master_key(parse_master_key(unsigned)))

    # Signed by another key under this key's id.
    forged = alice.master_object()
    del forged["signatures"]
    pub = alice.master.public_key
    forged["signatures"] = {ALICE: {f"ed25519:{pub}": bob.master.sign(canonical_json(forged))}}
    _assert_bad_signature(lambda: verify_master_key(parse_master_key(forged)))

    # A valid self-signature filed under another user id.
    misfiled = alice.master_object()
    misfiled["signatures"] = {BOB: misfiled["signatures"][ALICE]}
    _assert_bad_signature(lambda: verify_master_key(parse_master_key(misfiled)))


def test_master_key_tampering_breaks_the_self_signature(alice: User) -> None:
    raw = alice.master_object()
    raw["version"] = 2
    _assert_bad_signature(lambda: verify_master_key(parse_master_key(raw)))
    raw = alice.master_object()
    raw["created_at"] = NOW + 1
    _assert_bad_signature(lambda: verify_master_key(parse_master_key(raw)))


def test_master_key_for_another_user_id_fails(alice: User) -> None:
    # Alice's key, re-labelled as Bob's and signed again by Alice: the signature is under Alice's
    # user id, so it does not count for Bob.
    raw = alice.master_object()
    del raw["signatures"]
    raw["user_id"] = BOB
    raw = sign_json(raw, ALICE, alice.master.public_key, alice.master)
    _assert_bad_signature(lambda: verify_master_key(parse_master_key(raw)))


# --- device keys --------------------------------------------------------------------------------


def test_parse_and_verify_device_keys(alice: User) -> None:
    raw = alice.device_object("ALICEDEV01")
    dk = parse_device_keys(raw)
    assert dk.user_id == ALICE
    assert dk.device_id == "ALICEDEV01"
    assert dk.ed25519 == alice.devices["ALICEDEV01"].public_key
    assert dk.curve25519 == raw["keys"]["curve25519:ALICEDEV01"]
    assert dk.master_key_version == 1
    assert dk.created_at == NOW
    assert dk.raw is raw
    assert DEVICE_ALGORITHMS == [OLM_ALGORITHM, MEGOLM_ALGORITHM]
    verify_device_keys(dk, parse_master_key(alice.master_object()))


def _device_mutations() -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    def set_(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda obj: obj.__setitem__(field, value)

    def drop(field: str) -> Callable[[dict[str, Any]], None]:
        return lambda obj: obj.pop(field)

    def set_key(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda obj: obj["keys"].__setitem__(name, value)

    def drop_key(name: str) -> Callable[[dict[str, Any]], None]:
        return lambda obj: obj["keys"].pop(name)

    return [
        ("no user_id", drop("user_id")),
        ("bad user_id", set_("user_id", "@Alice:example.com")),
        ("no device_id", drop("device_id")),
        ("lower-case device_id", set_("device_id", "alicedev01")),
        ("short device_id", set_("device_id", "ABC")),
        ("no algorithms", drop("algorithms")),
        ("algorithms reversed", set_("algorithms", list(reversed(DEVICE_ALGORITHMS)))),
        ("algorithms olm only", set_("algorithms", [OLM_ALGORITHM])),
        ("algorithms extra", set_("algorithms", [*DEVICE_ALGORITHMS, "m.megolm.v1.aes-sha2"])),
        ("no keys", drop("keys")),
        ("keys list", set_("keys", [])),
        ("no curve25519", drop_key("curve25519:ALICEDEV01")),
        ("no ed25519", drop_key("ed25519:ALICEDEV01")),
        ("extra key", set_key("ed25519:OTHERDEVICE", _random_key())),
        ("keys for another device", set_("device_id", "OTHERDEV01")),
        ("curve25519 not base64", set_key("curve25519:ALICEDEV01", "***")),
        ("curve25519 short", set_key("curve25519:ALICEDEV01", b64encode(os.urandom(16)))),
        ("ed25519 not a string", set_key("ed25519:ALICEDEV01", None)),
        ("ed25519 long", set_key("ed25519:ALICEDEV01", b64encode(os.urandom(64)))),
        ("no master_key_version", drop("master_key_version")),
        ("negative master_key_version", set_("master_key_version", -1)),
        ("bool master_key_version", set_("master_key_version", False)),
        ("no created_at", drop("created_at")),
        ("string created_at", set_("created_at", "1800000000000")),
        ("created_at in seconds", set_("created_at", 1_800_000_000)),
        ("extra member", set_("display_name", "laptop")),
        ("unsigned member", set_("unsigned", {"device_display_name": "Alice's laptop"})),
        ("signatures a list", set_("signatures", [])),
        ("padded curve25519", set_key("curve25519:ALICEDEV01", b64encode(os.urandom(32)) + "=")),
    ]


@pytest.mark.parametrize(("label", "mutate"), _device_mutations(), ids=[m[0] for m in _device_mutations()])
def test_parse_device_keys_shape_errors(alice: User, label: str, mutate: Callable[[dict[str, Any]], None]) -> None:
    raw = alice.device_object("ALICEDEV01")
    mutate(raw)
    _assert_bad_key_object(lambda: parse_device_keys(raw))


@pytest.mark.parametrize("value", [None, "device", [], 3])
def test_parse_device_keys_needs_an_object(value: Any) -> None:
    _assert_bad_key_object(lambda: parse_device_keys(value))


def test_device_keys_need_the_device_signature(alice: User) -> None:
    raw = alice.unsigned_device_object("ALICEDEV02")
    only_master = sign_json(raw, ALICE, alice.master.public_key, alice.master)
    master = parse_master_key(alice.master_object())
    _assert_bad_signature(lambda: verify_device_keys(parse_device_keys(only_master), master))


def test_device_keys_need_the_master_signature(alice: User) -> None:
    raw = alice.unsigned_device_object("ALICEDEV02")
    only_device = sign_json(raw, ALICE, "ALICEDEV02", alice.devices["ALICEDEV02"])
    master = parse_master_key(alice.master_object())
    with pytest.raises(TokenIMError) as exc:
        verify_device_keys(parse_device_keys(only_device), master)
    assert exc.value.code is ErrorCode.BAD_SIGNATURE
    assert "master" in exc.value.message


def test_device_signed_by_another_users_master_fails(alice: User, bob: User) -> None:
    master = parse_master_key(alice.master_object())
    # Bob's master key certifies a device that claims to be Alice's.
    raw = alice.unsigned_device_object("ALICEDEV03")
    raw = sign_json(raw, ALICE, "ALICEDEV03", alice.devices["ALICEDEV03"])
    raw = sign_json(raw, ALICE, bob.master.public_key, bob.master)
    _assert_bad_signature(lambda: verify_device_keys(parse_device_keys(raw), master))

    # Bob's signature filed under Alice's master key id.
    forged = copy.deepcopy(raw)
    sigs = forged["signatures"][ALICE]
    sigs[f"ed25519:{alice.master.public_key}"] = sigs.pop(f"ed25519:{bob.master.public_key}")
    _assert_bad_signature(lambda: verify_device_keys(parse_device_keys(forged), master))

    # Bob's own, properly signed device checked against Alice's master key.
    bobs = parse_device_keys(bob.device_object("BOBDEVICE1"))
    verify_device_keys(bobs, parse_master_key(bob.master_object()))
    _assert_bad_key_object(lambda: verify_device_keys(bobs, master))


def test_device_keys_tampering_breaks_the_signatures(alice: User) -> None:
    master = parse_master_key(alice.master_object())
    raw = alice.device_object("ALICEDEV01")
    raw["keys"]["curve25519:ALICEDEV01"] = _random_key()
    _assert_bad_signature(lambda: verify_device_keys(parse_device_keys(raw), master))

    raw = alice.device_object("ALICEDEV01")
    raw["master_key_version"] = 2
    _assert_bad_signature(lambda: verify_device_keys(parse_device_keys(raw), master))


def test_key_objects_refuse_unsigned_data(alice: User) -> None:
    """Nothing the signatures don't cover is stored and relayed to other users (docs/protocol.md)."""
    raw = alice.device_object("ALICEDEV01")
    raw["unsigned"] = {"device_display_name": "Alice's laptop"}
    _assert_bad_key_object(lambda: parse_device_keys(raw))
    master = alice.master_object()
    master["unsigned"] = {}
    _assert_bad_key_object(lambda: parse_master_key(master))


# --- one-time keys ------------------------------------------------------------------------------


def test_parse_and_verify_one_time_keys(alice: User) -> None:
    device = parse_device_keys(alice.device_object("ALICEDEV01"))
    mapping = {**alice.one_time_key("ALICEDEV01", key_id="AAAAAQ"), **alice.one_time_key("ALICEDEV01", key_id="AAAAAg")}
    otks = parse_one_time_keys(mapping, fallback=False)
    assert sorted(o.key_id for o in otks) == ["AAAAAQ", "AAAAAg"]
    for otk in otks:
        assert not otk.fallback
        assert otk.raw is mapping[f"{ONE_TIME_KEY_ALGORITHM}:{otk.key_id}"]
        assert otk.public_key == otk.raw["key"]
        verify_one_time_key(otk, device)

    (fb,) = parse_one_time_keys(alice.one_time_key("ALICEDEV01", fallback=True), fallback=True)
    assert fb.fallback
    verify_one_time_key(fb, device)
    assert parse_one_time_keys({}, fallback=False) == []


_DROP = object()


def _otk_mutations() -> list[tuple[str, Callable[[dict[str, Any]], Any]]]:
    def only(mapping: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ((full_id, obj),) = mapping.items()
        return full_id, obj

    def rename(new_id: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def apply(mapping: dict[str, Any]) -> dict[str, Any]:
            return {new_id: only(mapping)[1]}

        return apply

    def body(value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def apply(mapping: dict[str, Any]) -> dict[str, Any]:
            return {only(mapping)[0]: value}

        return apply

    def field(name: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def apply(mapping: dict[str, Any]) -> dict[str, Any]:
            full_id, obj = only(mapping)
            if value is _DROP:
                obj.pop(name)
            else:
                obj[name] = value
            return {full_id: obj}

        return apply

    return [
        ("map not an object", lambda mapping: list(mapping.values())),
        ("wrong algorithm", rename("curve25519:AAAAAQ")),
        ("no algorithm", rename("AAAAAQ")),
        ("empty id", rename(f"{ONE_TIME_KEY_ALGORITHM}:")),
        ("id too long", rename(f"{ONE_TIME_KEY_ALGORITHM}:{'A' * 65}")),
        ("body not an object", body("key")),
        ("body null", body(None)),
        ("no key", field("key", _DROP)),
        ("key not base64", field("key", "@@@")),
        ("key short", field("key", b64encode(os.urandom(31)))),
        ("key not a string", field("key", 5)),
        ("fallback flag on a one-time key", field("fallback", True)),
        ("fallback flag not a boolean", field("fallback", 1)),
        ("extra member", field("unsigned", {})),
        ("padded key", field("key", b64encode(os.urandom(32)) + "=")),
        ("id with padding", rename(f"{ONE_TIME_KEY_ALGORITHM}:AAAAAQ==")),
        ("id with a space", rename(f"{ONE_TIME_KEY_ALGORITHM}:AAA AQ")),
    ]


@pytest.mark.parametrize(("label", "mutate"), _otk_mutations(), ids=[m[0] for m in _otk_mutations()])
def test_parse_one_time_keys_shape_errors(alice: User, label: str, mutate: Callable[[dict[str, Any]], Any]) -> None:
    mapping = mutate(alice.one_time_key("ALICEDEV01"))
    _assert_bad_key_object(lambda: parse_one_time_keys(mapping, fallback=False))


def test_parse_fallback_key_needs_the_flag(alice: User) -> None:
    _assert_bad_key_object(lambda: parse_one_time_keys(alice.one_time_key("ALICEDEV01"), fallback=True))
    ok = alice.one_time_key("ALICEDEV01", fallback=True)
    assert len(parse_one_time_keys(ok, fallback=True)) == 1


def test_one_time_key_signed_by_another_device_fails(alice: User) -> None:
    device_1 = parse_device_keys(alice.device_object("ALICEDEV01"))
    alice.device_object("ALICEDEV02")
    (from_2,) = parse_one_time_keys(alice.one_time_key("ALICEDEV02"), fallback=False)
    verify_one_time_key(from_2, parse_device_keys(alice.device_object("ALICEDEV02")))
    _assert_bad_signature(lambda: verify_one_time_key(from_2, device_1))

    # Device 2's signature filed under device 1's key id.
    mapping = alice.one_time_key("ALICEDEV02")
    (obj,) = mapping.values()
    obj["signatures"][ALICE] = {"ed25519:ALICEDEV01": obj["signatures"][ALICE]["ed25519:ALICEDEV02"]}
    (forged,) = parse_one_time_keys(mapping, fallback=False)
    _assert_bad_signature(lambda: verify_one_time_key(forged, device_1))


def test_one_time_key_of_another_user_fails(alice: User, bob: User) -> None:
    (bobs,) = parse_one_time_keys(bob.one_time_key("BOBDEVICE1"), fallback=False)
    _assert_bad_signature(lambda: verify_one_time_key(bobs, parse_device_keys(alice.device_object("ALICEDEV01"))))


def test_one_time_key_tampering_breaks_the_signature(alice: User) -> None:
    device = parse_device_keys(alice.device_object("ALICEDEV01"))
    mapping = alice.one_time_key("ALICEDEV01")
    (obj,) = mapping.values()
    obj["key"] = _random_key()
    (otk,) = parse_one_time_keys(mapping, fallback=False)
    _assert_bad_signature(lambda: verify_one_time_key(otk, device))

    # The fallback flag is signed too: a fallback key cannot be passed off as a one-time key.
    mapping = alice.one_time_key("ALICEDEV01", fallback=True)
    (obj,) = mapping.values()
    del obj["fallback"]
    (stripped,) = parse_one_time_keys(mapping, fallback=False)
    _assert_bad_signature(lambda: verify_one_time_key(stripped, device))


# --- login challenge ----------------------------------------------------------------------------

_CHALLENGE = {"server_name": "example.com", "user_id": ALICE, "device_id": "ALICEDEV01", "nonce": "n0nce"}


def test_login_challenge_payload_is_canonical_json() -> None:
    payload = login_challenge_payload(**_CHALLENGE)
    assert payload == canonical_json({**_CHALLENGE, "type": LOGIN_CHALLENGE_TYPE})
    assert payload == (
        b'{"device_id":"ALICEDEV01","nonce":"n0nce","server_name":"example.com",'
        b'"type":"tokenim.login.v1","user_id":"@alice:example.com"}'
    )
    assert login_challenge_payload(**_CHALLENGE) == payload


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("server_name", "evil.example.com"),
        ("user_id", BOB),
        ("device_id", "ALICEDEV02"),
        ("nonce", "n0ncf"),
    ],
)
def test_login_challenge_binds_every_field(field: str, value: str) -> None:
    device = SigningKey.generate()
    original = login_challenge_payload(**_CHALLENGE)
    changed = login_challenge_payload(**{**_CHALLENGE, field: value})
    assert changed != original
    signature = device.sign(original)
    assert verify_ed25519(device.public_key, original, signature)
    assert not verify_ed25519(device.public_key, changed, signature)


# --- signatures nobody checks -----------------------------------------------------------------------

_SIGNATURE = b64encode(os.urandom(64))
# Entries a verified object may not carry besides its expected signatures: all would be relayed unchecked.
_EXTRA_SIGNATURES: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("another user", lambda sigs: sigs.update({BOB: {"ed25519:BOBDEVICE1": _SIGNATURE}})),
    ("another key id", lambda sigs: sigs[ALICE].update({"ed25519:OTHERDEV01": _SIGNATURE})),
    ("another algorithm", lambda sigs: sigs[ALICE].update({"curve25519:ALICEDEV01": _SIGNATURE})),
    ("NUL and bidi in the key id", lambda sigs: sigs[ALICE].update({"ed25519:\u0000\u202e": _SIGNATURE})),
    ("a value that is not base64", lambda sigs: sigs[ALICE].update({"ed25519:X": "not base64!\u202e"})),
    ("an empty signer", lambda sigs: sigs.update({BOB: {}})),
    ("2,000 fake entries", lambda sigs: sigs[ALICE].update({f"ed25519:F{i}": _SIGNATURE for i in range(2000)})),
]


def _with_extra(obj: dict[str, Any], add: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    add(obj["signatures"])
    return obj


@pytest.mark.parametrize(("label", "add"), _EXTRA_SIGNATURES, ids=[e[0] for e in _EXTRA_SIGNATURES])
def test_key_objects_carry_only_the_signatures_that_are_checked(
    alice: User, label: str, add: Callable[[dict[str, Any]], None]
) -> None:
    master = parse_master_key(alice.master_object())
    _assert_bad_key_object(lambda: verify_master_key(parse_master_key(_with_extra(alice.master_object(), add))))
    device_raw = _with_extra(alice.device_object("ALICEDEV01"), add)
    _assert_bad_key_object(lambda: verify_device_keys(parse_device_keys(device_raw), master))
    device = parse_device_keys(alice.device_object("ALICEDEV01"))
    for fallback in (False, True):
        ((full_id, obj),) = alice.one_time_key("ALICEDEV01", fallback=fallback).items()
        (otk,) = parse_one_time_keys({full_id: _with_extra(obj, add)}, fallback=fallback)
        _assert_bad_key_object(lambda otk=otk: verify_one_time_key(otk, device))  # type: ignore[misc]
