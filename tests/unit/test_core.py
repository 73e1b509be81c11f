"""tokenim.core: canonical JSON, base64, ids, errors, signatures, fingerprints and the fake clock."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from typing import Any

import pytest

from tokenim.core.canonical import canonical_json
from tokenim.core.clock import Clock, FakeClock, SystemClock
from tokenim.core.encoding import b64decode, b64encode
from tokenim.core.errors import ErrorCode, TokenIMError, status_for
from tokenim.core.ids import (
    check_device_id,
    check_server_name,
    check_user_id,
    check_username,
    make_user_id,
    new_device_id,
    parse_user_id,
)
from tokenim.core.signing import (
    SigningKey,
    fingerprint,
    get_signature,
    sign_json,
    signing_payload,
    verify_ed25519,
    verify_json,
)

ALICE = "@alice:example.com"
BOB = "@bob:example.com"


# --- canonical JSON ---------------------------------------------------------------------------


def test_canonical_sorts_keys_at_every_level() -> None:
    value = {"b": 1, "a": {"z": 1, "y": [{"d": 1, "c": 2}]}, "B": 0}
    assert canonical_json(value) == b'{"B":0,"a":{"y":[{"c":2,"d":1}],"z":1},"b":1}'


def test_canonical_has_no_insignificant_whitespace() -> None:
    out = canonical_json({"list": [1, 2, 3], "obj": {"k": "a value with spaces"}})
    assert out == b'{"list":[1,2,3],"obj":{"k":"a value with spaces"}}'
    assert b": " not in out
    assert b", " not in out
    assert b"\n" not in out


def test_canonical_is_independent_of_insertion_order() -> None:
    a = {"x": 1, "y": 2, "z": {"p": True, "q": None}}
    b = {"z": {"q": None, "p": True}, "y": 2, "x": 1}
    assert canonical_json(a) == canonical_json(b)


def test_canonical_writes_utf8_without_escapes() -> None:
    out = canonical_json({"name": "Zoë 日本 🙂"})
    assert out == '{"name":"Zoë 日本 🙂"}'.encode()
    assert b"\\u" not in out
    assert json.loads(out.decode("utf-8")) == {"name": "Zoë 日本 🙂"}


def test_canonical_keeps_integers_booleans_and_null() -> None:
    assert canonical_json({"big": 2**70, "neg": -5, "t": True, "f": False, "n": None}) == (
        b'{"big":1180591620717411303424,"f":false,"n":null,"neg":-5,"t":true}'
    )


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        {"a": 1.0},
        {"a": {"b": [1, 2, 0.5]}},
        [1, [2, [3.25]]],
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": (1, 2.5)},
        ({"a": 0.1},),
    ],
)
def test_canonical_rejects_floats_anywhere(value: Any) -> None:
    with pytest.raises(ValueError, match="floating point"):
        canonical_json(value)


@pytest.mark.parametrize(
    "value",
    [
        {1: "a"},
        {None: "a"},
        {"ok": {2: "nested"}},
        {"ok": [{"fine": 1}, {(1, 2): "tuple key"}]},
        {"ok": ({3: "inside a tuple"},)},
    ],
)
def test_canonical_rejects_non_string_keys(value: Any) -> None:
    with pytest.raises(ValueError, match="keys must be strings"):
        canonical_json(value)


# --- base64 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 31, 32, 33, 64, 100])
def test_b64_round_trip_is_unpadded(length: int) -> None:
    data = os.urandom(length)
    text = b64encode(data)
    assert "=" not in text
    assert text == base64.b64encode(data).decode().rstrip("=")
    assert b64decode(text) == data


@pytest.mark.parametrize("text", ["AQ==", "AQI=", "AQ=", "AR", "AQJ"])
def test_b64decode_accepts_only_the_unpadded_canonical_form(text: str) -> None:
    """docs/protocol.md: keys and signatures are base64 without padding, one spelling each."""
    with pytest.raises(ValueError):
        b64decode(text)
    assert b64decode("AQ") == b"\x01"
    assert b64decode("AQI") == b"\x01\x02"


@pytest.mark.parametrize("text", ["A", "AAAAA", "!!!!", "ab cd", "abc\n", "é", "-_-_", "A=AA"])
def test_b64decode_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError):
        b64decode(text)


@pytest.mark.parametrize("value", [b"AAAA", None, 1234])
def test_b64decode_rejects_non_strings(value: Any) -> None:
    with pytest.raises(ValueError):
        b64decode(value)


# --- ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "0", "alice", "bob.smith", "x_y=z-1", "0day", "a" * 64])
def test_valid_usernames(name: str) -> None:
    assert check_username(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Alice",
        "_alice",
        ".alice",
        "-alice",
        "=a",
        "a" * 65,
        "al ice",
        "alice\n",
        "ålice",
        "al:ice",
        "@alice",
        "al/ice",
        None,
        5,
    ],
)
def test_invalid_usernames(name: Any) -> None:
    with pytest.raises(TokenIMError) as exc:
        check_username(name)
    assert exc.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        ("@alice:example.com", ("alice", "example.com")),
        ("@bob.smith:localhost:8470", ("bob.smith", "localhost:8470")),
        ("@0:a", ("0", "a")),
    ],
)
def test_parse_user_id(user_id: str, expected: tuple[str, str]) -> None:
    assert parse_user_id(user_id) == expected
    assert check_user_id(user_id) == user_id


@pytest.mark.parametrize(
    "user_id",
    [
        "alice:example.com",
        "@alice",
        "@alice:",
        "@:example.com",
        "@Alice:example.com",
        "@alice:exa mple.com",
        "@alice:example.com:123456",
        "@alice:example.com\n",
        "@al ice:example.com",
        " @alice:example.com",
        "",
        None,
        42,
    ],
)
def test_invalid_user_ids(user_id: Any) -> None:
    with pytest.raises(TokenIMError) as exc:
        parse_user_id(user_id)
    assert exc.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(TokenIMError):
        check_user_id(user_id)


def test_make_user_id_validates_the_username() -> None:
    assert make_user_id("alice", "example.com") == "@alice:example.com"
    assert parse_user_id(make_user_id("carol", "localhost:8470")) == ("carol", "localhost:8470")
    with pytest.raises(TokenIMError) as exc:
        make_user_id("Alice", "example.com")
    assert exc.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("name", ["localhost", "example.com", "chat.example.com:8470", "127.0.0.1:8470"])
def test_valid_server_names(name: str) -> None:
    assert check_server_name(name) == name


@pytest.mark.parametrize("name", ["", "exa mple.com", "example.com:", "example.com:123456", "host/path", "example.com\n"])
def test_invalid_server_names(name: str) -> None:
    with pytest.raises(TokenIMError) as exc:
        check_server_name(name)
    assert exc.value.code is ErrorCode.BAD_CONFIG


@pytest.mark.parametrize("device_id", ["ABCDEF", "7KQ2MXR4PA", "000000", "A" * 32])
def test_valid_device_ids(device_id: str) -> None:
    assert check_device_id(device_id) == device_id


@pytest.mark.parametrize("device_id", ["ABCDE", "A" * 33, "abcdef", "ABCDEf", "ABC-DEF", "ABC DEF", "ABCDEF\n", "", None, 123456])
def test_invalid_device_ids(device_id: Any) -> None:
    with pytest.raises(TokenIMError) as exc:
        check_device_id(device_id)
    assert exc.value.code is ErrorCode.INVALID_REQUEST


def test_new_device_id_format() -> None:
    ids = {new_device_id() for _ in range(200)}
    assert len(ids) == 200
    for device_id in ids:
        assert re.fullmatch(r"[A-Z2-9]{10}", device_id)
        # Ambiguous characters are left out so an id can be read aloud and typed.
        assert not set(device_id) & set("01IO")
        assert check_device_id(device_id) == device_id


# --- errors -------------------------------------------------------------------------------------


def test_every_code_has_an_http_error_status() -> None:
    for code in ErrorCode:
        assert 400 <= status_for(code) <= 599, code
        assert TokenIMError(code, "x").status == status_for(code)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.BAD_JSON, 400),
        (ErrorCode.INVALID_REQUEST, 400),
        (ErrorCode.BODY_TOO_LARGE, 413),
        (ErrorCode.NOT_FOUND, 404),
        (ErrorCode.METHOD_NOT_ALLOWED, 405),
        (ErrorCode.UNAUTHORIZED, 401),
        (ErrorCode.TOKEN_EXPIRED, 401),
        (ErrorCode.FORBIDDEN, 403),
        (ErrorCode.BAD_SIGNATURE, 400),
        (ErrorCode.CHALLENGE_EXPIRED, 401),
        (ErrorCode.USERNAME_TAKEN, 409),
        (ErrorCode.KEY_CONFLICT, 409),
        (ErrorCode.SENDER_MISMATCH, 400),
        (ErrorCode.RATE_LIMITED, 429),
        (ErrorCode.INTERNAL, 500),
        (ErrorCode.BAD_RESPONSE, 502),
        (ErrorCode.SERVER_UNREACHABLE, 503),
    ],
)
def test_status_mapping(code: ErrorCode, status: int) -> None:
    assert status_for(code) == status


def test_codes_are_stable_strings() -> None:
    values = [c.value for c in ErrorCode]
    assert len(values) == len(set(values))
    assert ErrorCode.INTERNAL.value == "internal_error"
    assert ErrorCode.BAD_SIGNATURE.value == "bad_signature"


def test_to_json_shape() -> None:
    err = TokenIMError(ErrorCode.NOT_FOUND, "There is no such room.")
    assert err.to_json() == {"error": {"code": "not_found", "message": "There is no such room.", "status": 404}}
    assert str(err) == "There is no such room."
    with_details = TokenIMError(ErrorCode.RATE_LIMITED, "Slow down.", details={"retry_after_ms": 500})
    assert with_details.to_json()["error"]["details"] == {"retry_after_ms": 500}


@pytest.mark.parametrize("details", [None, {"field": "username", "n": 3}])
def test_json_round_trip(details: dict[str, Any] | None) -> None:
    err = TokenIMError(ErrorCode.USERNAME_TAKEN, "That username is taken.", details=details)
    wire = json.loads(json.dumps(err.to_json()))
    back = TokenIMError.from_json(wire, http_status=409)
    assert back.code is ErrorCode.USERNAME_TAKEN
    assert back.message == err.message
    assert back.status == 409
    assert back.details == (details or {})
    assert back.to_json() == err.to_json()


def test_from_json_unknown_code_becomes_bad_response() -> None:
    back = TokenIMError.from_json({"error": {"code": "no_such_code", "message": "Something odd."}}, http_status=418)
    assert back.code is ErrorCode.BAD_RESPONSE
    assert back.status == 502
    assert back.message == "Something odd."


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "oops",
        [],
        [{"error": {"code": "not_found", "message": "x"}}],
        {},
        {"error": "not_found"},
        {"error": {"code": "not_found"}},
        {"error": {"code": "not_found", "message": 5}},
        {"detail": "Not Found"},
    ],
)
def test_from_json_junk_becomes_bad_response(payload: object) -> None:
    back = TokenIMError.from_json(payload, http_status=503)
    assert back.code is ErrorCode.BAD_RESPONSE
    assert "503" in back.message


def test_from_json_ignores_details_that_are_not_objects() -> None:
    back = TokenIMError.from_json({"error": {"code": "forbidden", "message": "No.", "details": [1, 2]}}, http_status=403)
    assert back.code is ErrorCode.FORBIDDEN
    assert back.details == {}


def test_repr_names_code_and_message() -> None:
    assert repr(TokenIMError(ErrorCode.FORBIDDEN, "No.")) == "TokenIMError('forbidden', 'No.')"


# --- signing ------------------------------------------------------------------------------------


@pytest.fixture
def master() -> SigningKey:
    return SigningKey.generate()


def _key_object() -> dict[str, Any]:
    return {
        "user_id": ALICE,
        "device_id": "ALICEDEV01",
        "keys": {"curve25519:ALICEDEV01": "c" * 43, "ed25519:ALICEDEV01": "e" * 43},
        "created_at": 1_800_000_000_000,
        "list": [1, 2, 3],
    }


def _assert_bad_signature(obj: dict[str, Any], signer: str, key_id: str, public_key: str) -> None:
    with pytest.raises(TokenIMError) as exc:
        verify_json(obj, signer, key_id, public_key, what="test object")
    assert exc.value.code is ErrorCode.BAD_SIGNATURE
    assert "test object" in exc.value.message


def test_signing_key_seed_round_trip(master: SigningKey) -> None:
    seed = master.seed()
    assert len(seed) == 32
    again = SigningKey.from_seed(seed)
    assert again.public_key == master.public_key
    assert len(b64decode(master.public_key)) == 32
    assert SigningKey.generate().public_key != master.public_key


def test_sign_and_verify_raw_bytes(master: SigningKey) -> None:
    sig = master.sign(b"hello")
    assert len(b64decode(sig)) == 64
    assert verify_ed25519(master.public_key, b"hello", sig)
    assert not verify_ed25519(master.public_key, b"hellO", sig)
    assert not verify_ed25519(SigningKey.generate().public_key, b"hello", sig)


def test_sign_json_round_trip_and_leaves_input_alone(master: SigningKey) -> None:
    obj = _key_object()
    before = json.dumps(obj, sort_keys=True)
    signed = sign_json(obj, ALICE, "KEY1", master)
    assert json.dumps(obj, sort_keys=True) == before
    assert "signatures" not in obj
    assert set(signed["signatures"]) == {ALICE}
    assert set(signed["signatures"][ALICE]) == {"ed25519:KEY1"}
    verify_json(signed, ALICE, "KEY1", master.public_key, what="test object")
    assert get_signature(signed, ALICE, "KEY1") == signed["signatures"][ALICE]["ed25519:KEY1"]


def test_a_second_signature_leaves_the_once_signed_object_alone(master: SigningKey) -> None:
    once = sign_json(_key_object(), ALICE, "KEY1", master)
    before = json.dumps(once, sort_keys=True)
    sign_json(once, ALICE, "KEY2", SigningKey.generate())
    assert json.dumps(once, sort_keys=True) == before


def test_second_signer_keeps_the_first_signature(master: SigningKey) -> None:
    device = SigningKey.generate()
    bob_master = SigningKey.generate()
    once = sign_json(_key_object(), ALICE, "ALICEDEV01", device)
    twice = sign_json(once, ALICE, master.public_key, master)
    thrice = sign_json(twice, BOB, bob_master.public_key, bob_master)
    assert thrice["signatures"][ALICE]["ed25519:ALICEDEV01"] == once["signatures"][ALICE]["ed25519:ALICEDEV01"]
    verify_json(thrice, ALICE, "ALICEDEV01", device.public_key, what="test object")
    verify_json(thrice, ALICE, master.public_key, master.public_key, what="test object")
    verify_json(thrice, BOB, bob_master.public_key, bob_master.public_key, what="test object")


def _tamperings() -> list[tuple[str, Any]]:
    def change(field: str, value: Any) -> Any:
        def apply(obj: dict[str, Any]) -> None:
            obj[field] = value

        return apply

    def drop(field: str) -> Any:
        def apply(obj: dict[str, Any]) -> None:
            del obj[field]

        return apply

    def nested(obj: dict[str, Any]) -> None:
        obj["keys"]["curve25519:ALICEDEV01"] = "d" * 43

    def append(obj: dict[str, Any]) -> None:
        obj["list"].append(4)

    return [
        ("user_id", change("user_id", BOB)),
        ("device_id", change("device_id", "MALLORY001")),
        ("created_at", change("created_at", 1_800_000_000_001)),
        ("list", change("list", [1, 2])),
        ("keys.curve25519", nested),
        ("list.append", append),
        ("added field", change("extra", "x")),
        ("dropped user_id", drop("user_id")),
        ("dropped keys", drop("keys")),
    ]


@pytest.mark.parametrize(("label", "tamper"), _tamperings(), ids=[t[0] for t in _tamperings()])
def test_tampering_any_field_breaks_the_signature(master: SigningKey, label: str, tamper: Any) -> None:
    signed = sign_json(_key_object(), ALICE, "KEY1", master)
    tamper(signed)
    _assert_bad_signature(signed, ALICE, "KEY1", master.public_key)


def test_tampered_or_missing_signature_fails(master: SigningKey) -> None:
    signed = sign_json(_key_object(), ALICE, "KEY1", master)
    sig = signed["signatures"][ALICE]["ed25519:KEY1"]

    flipped = json.loads(json.dumps(signed))
    flipped["signatures"][ALICE]["ed25519:KEY1"] = ("B" if sig[0] == "A" else "A") + sig[1:]
    _assert_bad_signature(flipped, ALICE, "KEY1", master.public_key)

    other = json.loads(json.dumps(signed))
    other["signatures"][ALICE]["ed25519:KEY1"] = master.sign(b"something else")
    _assert_bad_signature(other, ALICE, "KEY1", master.public_key)

    junk = json.loads(json.dumps(signed))
    junk["signatures"][ALICE]["ed25519:KEY1"] = "not base64!"
    _assert_bad_signature(junk, ALICE, "KEY1", master.public_key)

    not_a_string = json.loads(json.dumps(signed))
    not_a_string["signatures"][ALICE]["ed25519:KEY1"] = 12345
    _assert_bad_signature(not_a_string, ALICE, "KEY1", master.public_key)

    missing = json.loads(json.dumps(signed))
    del missing["signatures"]
    _assert_bad_signature(missing, ALICE, "KEY1", master.public_key)

    # The right signature under the wrong signer or key id does not count.
    _assert_bad_signature(signed, BOB, "KEY1", master.public_key)
    _assert_bad_signature(signed, ALICE, "KEY2", master.public_key)
    # Nor does checking it against another public key.
    _assert_bad_signature(signed, ALICE, "KEY1", SigningKey.generate().public_key)


@pytest.mark.parametrize(
    "sigs", [None, "x", [], {ALICE: "x"}, {ALICE: []}, {ALICE: {"ed25519:KEY1": 5}}, {ALICE: {"ed25519:KEY1": ["x"]}}]
)
def test_malformed_signatures_member_is_not_signed(master: SigningKey, sigs: Any) -> None:
    obj = {**_key_object(), "signatures": sigs}
    assert get_signature(obj, ALICE, "KEY1") is None
    _assert_bad_signature(obj, ALICE, "KEY1", master.public_key)


def test_unsigned_and_signatures_are_not_covered(master: SigningKey) -> None:
    obj = _key_object()
    assert signing_payload(obj) == canonical_json(obj)
    decorated = {**obj, "unsigned": {"device_display_name": "Laptop"}, "signatures": {BOB: {"ed25519:X": "y"}}}
    assert signing_payload(decorated) == signing_payload(obj)
    assert b"unsigned" not in signing_payload(decorated)
    assert b"signatures" not in signing_payload(decorated)

    signed = sign_json(obj, ALICE, "KEY1", master)
    signed["unsigned"] = {"age": 1234, "anything": ["goes"]}
    verify_json(signed, ALICE, "KEY1", master.public_key, what="test object")
    signed["unsigned"]["age"] = 99
    signed["signatures"][BOB] = {"ed25519:X": "whatever"}
    verify_json(signed, ALICE, "KEY1", master.public_key, what="test object")


def test_signing_an_unsignable_object_is_a_bad_key_object(master: SigningKey) -> None:
    with pytest.raises(TokenIMError) as exc:
        sign_json({"ts": 1.5}, ALICE, "KEY1", master)
    assert exc.value.code is ErrorCode.BAD_KEY_OBJECT
    assert exc.value.message.startswith("The object cannot be signed: ")


@pytest.mark.parametrize(
    ("key", "message", "signature"),
    [
        ("not base64!", b"m", "A" * 86),
        ("", b"m", "A" * 86),
        ("AAAA", b"m", "A" * 86),
        (None, b"m", "A" * 86),
        ("VALIDKEY", b"m", "not base64!"),
        ("VALIDKEY", b"m", ""),
        ("VALIDKEY", b"m", "AAAA"),
        ("VALIDKEY", b"m", None),
        ("VALIDKEY", b"m", "A" * 86),
    ],
)
def test_verify_ed25519_is_false_on_junk(master: SigningKey, key: Any, message: bytes, signature: Any) -> None:
    if key == "VALIDKEY":
        key = master.public_key
    assert verify_ed25519(key, message, signature) is False


def test_fingerprint_format_and_determinism(master: SigningKey) -> None:
    fp = fingerprint(master.public_key)
    assert re.fullmatch(r"\d{5}( \d{5}){11}", fp)
    assert fingerprint(master.public_key) == fp
    assert fingerprint(SigningKey.from_seed(master.seed()).public_key) == fp


def test_fingerprint_known_answer() -> None:
    """Fingerprints are compared between people and between versions: the recipe must never drift."""
    key = SigningKey.from_seed(bytes(range(32))).public_key
    assert key == "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
    assert fingerprint(key) == "93924 89393 34095 31168 44425 38299 88329 97799 97441 43766 11569 66722"


def test_fingerprints_differ_between_keys() -> None:
    prints = {fingerprint(SigningKey.generate().public_key) for _ in range(20)}
    assert len(prints) == 20


def test_fingerprint_of_junk_raises() -> None:
    with pytest.raises(ValueError):
        fingerprint("not base64!")


# --- clock --------------------------------------------------------------------------------------


def test_fake_clock_starts_where_told_and_stands_still() -> None:
    assert FakeClock().now_ms() == 1_800_000_000_000
    clock = FakeClock(start_ms=1000)
    assert clock.now_ms() == 1000
    assert clock.now_ms() == 1000


def test_fake_clock_advances_by_each_unit() -> None:
    clock = FakeClock(start_ms=0)
    clock.advance(ms=250)
    assert clock.now_ms() == 250
    clock.advance(seconds=1.5)
    assert clock.now_ms() == 1750
    clock.advance(days=1)
    assert clock.now_ms() == 1750 + 86_400_000
    clock.advance(ms=1, seconds=2, days=0.5)
    assert clock.now_ms() == 1750 + 86_400_000 + 1 + 2000 + 43_200_000
    clock.advance()
    assert clock.now_ms() == 1750 + 86_400_000 + 1 + 2000 + 43_200_000
    assert isinstance(clock.now_ms(), int)


def test_clocks_satisfy_the_protocol() -> None:
    def read(clock: Clock) -> int:
        return clock.now_ms()

    assert read(FakeClock(start_ms=7)) == 7
    before = time.time_ns() // 1_000_000
    now = read(SystemClock())
    after = time.time_ns() // 1_000_000
    assert before <= now <= after
