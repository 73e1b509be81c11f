"""Room keys in the Matrix key export format: a file made by matrix-rust-sdk opens here, what is written
here has the specified byte layout, and every damaged file is refused whole."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
import vodozemac

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.megolm import RoomSessions
from tokenim.crypto.room_key_export import (
    FOOTER,
    HEADER,
    ROUNDS,
    ExportedSession,
    decrypt_export,
    encrypt_export,
    export_sessions,
    import_sessions,
    parse_entry,
)

# The test export of matrix-rust-sdk (crates/matrix-sdk-crypto/src/file_encryption/key_export.rs, Apache-2.0),
# passphrase "1234", one round: a file made by another implementation.
RUST_SDK_EXPORT = """-----BEGIN MEGOLM SESSION DATA-----
Af7mGhlzQ+eGvHu93u0YXd3D/+vYMs3E7gQqOhuCtkvGAAAAASH7pEdWvFyAP1JUisAcpEo
Xke2Q7Kr9hVl/SCc6jXBNeJCZcrUbUV4D/tRQIl3E9L4fOk928YI1J+3z96qiH0uE7hpsCI
CkHKwjPU+0XTzFdIk1X8H7sZ+MD/2Sg/q3y8rtUjz7uEj4GUTnb+9SCOTVmJsRfqgUpM1CU
bDLytHf1JkohY4tWEgpsCc67xdzgodjr12qYrfg/zNm3LGpxlrffJknw4rk5QFTj4kMbqbD
ZZgDTni+HxRTDGge2J620lMOiznvXX+H09Rwruqx5aJvvaaKd86jWRpiO2oSFqHn4u5ONl9
41uzm62Sj0eIm6ZbA9NQs87jQw4LxsejhZVL+NdjIg80zVSBTWhTdo0DTnbFSNP4ReOiz0U
XosOF8A5T8Vdx2nvA0GXltfcHKVKQYh/LJAkNQ7P9UYL4ae/5TtQZkhB1KxCLTRWqADCl53
uBMGpG53EMgY6G6K2DEIOkcv7sdXQF5WpemiSWZqJRWj+cjfs9BpCTbkp/rszWFl2TniWpR
RqIbT2jORlN4rTvdtF0F4z1pqP4qWyR3sLNTkXm9CFRzWADNG0RDZKxbCoo6RPvtaCTfaHo
SwfvzBS6CjfAG+FOugpV48o7+XetaUUPZ6/tZSPhCdeV8eP9q5r0QwWeXFogzoNzWt4HYx9
MdXxzD+f0mtg5gzehrrEEARwI2bCvPpHxlt/Na9oW/GBpkjwR1LSKgg4CtpRyWngPjdEKpZ
GYW19pdjg0qdXNk/eqZsQTsNWVo6A
-----END MEGOLM SESSION DATA-----
"""
PASS = "correct horse battery staple"


def _session(room: str = "!room:test") -> tuple[vodozemac.GroupSession, ExportedSession]:
    group = vodozemac.GroupSession()
    inbound = vodozemac.InboundGroupSession(group.session_key)
    key = inbound.export_at(0)
    assert key is not None
    return group, ExportedSession(room, "curvekey", group.session_id, key.to_base64(), "edkey", "@bob:test", "BOBDEVICE")


def test_a_file_made_by_matrix_rust_sdk_opens() -> None:
    [entry] = decrypt_export(RUST_SDK_EXPORT.encode(), "1234")
    parsed = parse_entry(entry)
    assert parsed is not None
    assert (parsed.room_id, parsed.session_id) == ("!test:localhost", "8sdNGgmLft8osylLK9ij3IotBLyQQufe/KngiW4Dpq0")
    assert parsed.sender is None  # another client's file names no TokenIM sender
    session = vodozemac.InboundGroupSession.import_session(vodozemac.ExportedSessionKey(parsed.session_key))
    assert session.session_id == parsed.session_id
    with pytest.raises(TokenIMError):
        decrypt_export(RUST_SDK_EXPORT.encode(), "4321")


def test_the_byte_layout_is_the_specifications() -> None:
    salt, iv = bytes(range(16)), bytes([0xFF] * 16)
    _, exported = _session()
    data = encrypt_export([exported], PASS, rounds=1000, salt=salt, iv=iv)
    lines = data.decode().splitlines()
    assert lines[0] == HEADER and lines[-1] == FOOTER and all(len(line) <= 96 for line in lines)
    raw = base64.b64decode("".join(lines[1:-1]))
    assert raw[0] == 1 and raw[1:17] == salt
    assert raw[17:33] == bytes([0xFF] * 8 + [0x7F] + [0xFF] * 7)  # bit 63 of the IV cleared
    assert int.from_bytes(raw[33:37], "big") == 1000
    derived = hashlib.pbkdf2_hmac("sha512", PASS.encode(), salt, 1000, 64)
    assert raw[-32:] == hmac.new(derived[32:], raw[:-32], hashlib.sha256).digest()
    payload = decrypt_export(data, PASS)
    assert payload[0] == {
        "algorithm": "m.megolm.v1.aes-sha2",
        "room_id": "!room:test",
        "sender_key": "curvekey",
        "session_id": exported.session_id,
        "session_key": exported.session_key,
        "sender_claimed_keys": {"ed25519": "edkey"},
        "forwarding_curve25519_key_chain": [],
        "org.tokenim.sender": "@bob:test",
        "org.tokenim.sender_device": "BOBDEVICE",
    }
    assert ROUNDS == 500_000


def _refused(data: bytes, passphrase: str = PASS) -> str:
    with pytest.raises(TokenIMError) as exc:
        decrypt_export(data, passphrase)
    assert exc.value.code is ErrorCode.BAD_KEY_FILE
    return exc.value.message


def test_damaged_files_are_refused_whole() -> None:
    _, exported = _session()
    good = encrypt_export([exported], PASS, rounds=10)
    assert "passphrase is wrong" in _refused(good, "wrong")
    lines = good.decode().splitlines()
    body = bytearray(base64.b64decode("".join(lines[1:-1])))
    for where in (40, len(body) - 1, 33):  # ciphertext, MAC, rounds
        altered = bytearray(body)
        altered[where] ^= 1
        _refused("\n".join([HEADER, base64.b64encode(bytes(altered)).decode(), FOOTER]).encode())
    version = bytearray(body)
    version[0] = 2
    assert "version 2" in _refused("\n".join([HEADER, base64.b64encode(bytes(version)).decode(), FOOTER]).encode())
    huge = bytearray(body)
    huge[33:37] = (2**32 - 1).to_bytes(4, "big")
    assert "rounds" in _refused("\n".join([HEADER, base64.b64encode(bytes(huge)).decode(), FOOTER]).encode())
    _refused("\n".join(lines[:-1]).encode())  # no footer
    _refused("\n".join([HEADER, lines[1][:20], FOOTER]).encode())  # cut short
    _refused("\n".join([HEADER, "not base64 !!", FOOTER]).encode())
    _refused(b"\xff\xfe")
    _refused(b"")


def _spec_file(plaintext: bytes, passphrase: str = PASS, rounds: int = 10) -> bytes:
    """A file built straight from the specification's steps (stdlib PBKDF2 and HMAC, pyca AES-CTR)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    salt, iv = bytes(16), bytes(16)
    derived = hashlib.pbkdf2_hmac("sha512", passphrase.encode(), salt, rounds, 64)
    enc = Cipher(algorithms.AES(derived[:32]), modes.CTR(iv)).encryptor()
    body = b"\x01" + salt + iv + rounds.to_bytes(4, "big") + enc.update(plaintext) + enc.finalize()
    body += hmac.new(derived[32:], body, hashlib.sha256).digest()
    return "\n".join([HEADER, base64.b64encode(body).decode(), FOOTER]).encode()


def test_a_file_built_from_the_spec_opens_and_one_that_is_not_a_list_is_refused() -> None:
    _, exported = _session()
    assert decrypt_export(_spec_file(json.dumps([exported.to_json()]).encode()), PASS) == [exported.to_json()]
    assert decrypt_export(_spec_file(b'[1, "x", {"a": 1}]'), PASS) == [{"a": 1}]  # only objects are entries
    assert "not a list" in _refused(_spec_file(b'{"a": 1}'))
    assert "not JSON" in _refused(_spec_file(b"\xff not json"))


def test_import_keeps_the_earlier_index_and_marks_sessions_imported() -> None:
    group, exported = _session()
    first = group.session_key.to_base64()  # index 0, signed: as a room key arrives over Olm
    group.encrypt(b"one")
    later = vodozemac.InboundGroupSession(group.session_key)  # from index 1
    later_key = later.export_at(1)
    assert later_key is not None
    late = ExportedSession(exported.room_id, "curvekey", group.session_id, later_key.to_base64(), "edkey", "@bob:test", "D")
    rooms = RoomSessions("@me:test", "ME", "mycurve", "myed")
    assert import_sessions(rooms, [late]).imported == 1
    counts = import_sessions(
        rooms, [exported, late, None, ExportedSession("!r", "k", "wrong id", exported.session_key, "e", "@b:test", "D")]
    )
    assert (counts.imported, counts.already_held, counts.unusable) == (1, 1, 2)
    ref = (exported.room_id, group.session_id, "curvekey")
    assert rooms.inbound[ref].session.first_known_index == 0 and rooms.inbound[ref].imported
    assert import_sessions(rooms, [late]).already_held == 1  # never downgraded to index 1
    unattributed = ExportedSession(exported.room_id, "c2", group.session_id, exported.session_key, "e")
    assert import_sessions(rooms, [unattributed]).unusable == 1
    # The sender's delivery over Olm, even from a later index, vouches for the session: it keeps reaching back
    # to index 0 and is no longer marked imported.
    room_key = {"algorithm": "tokenim.megolm.v1.aes-sha2", "room_id": exported.room_id, "session_id": group.session_id}
    group.encrypt(b"two")
    assert rooms.add_inbound(room_key | {"session_key": group.session_key.to_base64()}, "@bob:test", "D2", "curvekey", "ed")
    assert (rooms.inbound[ref].session.first_known_index, rooms.inbound[ref].imported) == (0, False)
    assert (rooms.inbound[ref].sender_device, rooms.inbound[ref].sender_ed25519) == ("D2", "ed")  # as Olm says
    assert not rooms.add_inbound(room_key | {"session_key": first}, "@bob:test", "D2", "curvekey", "ed")
    assert [s.session_id for s in export_sessions(rooms)] == [group.session_id]
