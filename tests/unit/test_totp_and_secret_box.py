"""The TOTP the server computes is RFC 6238's (checked against an implementation written from the RFC, itself
checked against the RFC's test vectors), and the server's secret box: sealed values open only with the same key
and purpose, the key file is private, and the key is never shown."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest

from tests.two_factor_kit import hotp, totp_at
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.server.secret_box import KEY_ENV, SecretBox, load_server_key
from tokenim.server.services.two_factor import matching_steps, totp_code

RFC_SEED = b"12345678901234567890"
# RFC 6238, Appendix B (SHA-1 rows; 8 digits).
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("unix_seconds", "expected"), RFC_VECTORS)
def test_the_reference_totp_gives_the_rfc_6238_vectors(unix_seconds: int, expected: str) -> None:
    assert totp_at(RFC_SEED, unix_seconds, digits=8) == expected


def test_the_reference_gives_the_rfc_6238_sha256_and_sha512_vectors_too() -> None:
    assert totp_at(b"12345678901234567890123456789012", 59, 8, hashlib.sha256) == "46119246"
    assert totp_at(RFC_SEED * 3 + b"1234", 59, 8, hashlib.sha512) == "90693936"
    assert hotp(RFC_SEED, 0) == "755224" and hotp(RFC_SEED, 9) == "520489"  # RFC 4226, Appendix D


@pytest.mark.parametrize(("unix_seconds", "expected"), RFC_VECTORS)
def test_the_server_computes_the_same_codes(unix_seconds: int, expected: str) -> None:
    secret = base64.b32encode(RFC_SEED).decode()
    assert totp_code(secret, unix_seconds // 30) == expected[-6:]
    assert matching_steps(secret, expected[-6:], unix_seconds * 1000) == [unix_seconds // 30]


def test_the_server_accepts_one_step_of_skew_and_no_more() -> None:
    secret = base64.b32encode(os.urandom(20)).decode()
    now_ms = 1_800_000_000_000
    step = now_ms // 1000 // 30
    key = base64.b32decode(secret)
    for offset in (-1, 0, 1):
        assert step + offset in matching_steps(secret, hotp(key, step + offset), now_ms)
    for offset in (-2, 2):
        assert step + offset not in matching_steps(secret, hotp(key, step + offset), now_ms)


def test_a_sealed_value_opens_only_with_its_key_and_purpose() -> None:
    box = SecretBox.from_key(os.urandom(32))
    sealed = box.encrypt(b"JBSWY3DPEHPK3PXP", "totp:@alice:tokenim.test")
    assert b"JBSWY3DPEHPK3PXP" not in sealed
    assert box.decrypt(sealed, "totp:@alice:tokenim.test") == b"JBSWY3DPEHPK3PXP"
    assert box.encrypt(b"x", "p") != box.encrypt(b"x", "p")  # a fresh nonce every time
    for wrong in (
        lambda: box.decrypt(sealed, "totp:@mallory:tokenim.test"),  # copied into another user's row
        lambda: box.decrypt(sealed[:-1] + bytes([sealed[-1] ^ 1]), "totp:@alice:tokenim.test"),
        lambda: SecretBox.from_key(os.urandom(32)).decrypt(sealed, "totp:@alice:tokenim.test"),
        lambda: box.decrypt(b"\x01short", "totp:@alice:tokenim.test"),
    ):
        with pytest.raises(TokenIMError) as exc:
            wrong()
        assert exc.value.code is ErrorCode.INTERNAL
    with pytest.raises(TokenIMError, match="another server key"):
        SecretBox.from_key(os.urandom(32)).decrypt(sealed, "totp:@alice:tokenim.test")


def test_the_key_file_is_made_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    key = load_server_key(path, {})
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key.hex()
    assert load_server_key(path, {}) == key  # never replaced
    sealed = SecretBox.from_settings(path, {}).encrypt(b"s", "p")
    assert SecretBox.from_key(key).decrypt(sealed, "p") == b"s"


def test_a_key_file_others_can_read_or_a_bad_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text(os.urandom(32).hex())
    path.chmod(0o644)
    with pytest.raises(TokenIMError, match="chmod 600") as exc:
        load_server_key(path, {})
    assert exc.value.code is ErrorCode.BAD_CONFIG
    path.chmod(0o600)
    path.write_text("not hex")
    with pytest.raises(TokenIMError, match="64 hexadecimal digits"):
        load_server_key(path, {})
    (tmp_path / "a-file").write_text("")
    with pytest.raises(TokenIMError, match="Cannot create"):
        load_server_key(tmp_path / "a-file" / "secret.key", {})
    assert len(load_server_key(tmp_path / "new-folder" / "secret.key", {})) == 32  # its folder is made


def test_the_environment_gives_the_key_and_wins(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert load_server_key(tmp_path / "secret.key", {KEY_ENV: key.hex().upper()}) == key
    assert not (tmp_path / "secret.key").exists()
    with pytest.raises(TokenIMError, match=KEY_ENV):
        load_server_key(tmp_path / "secret.key", {KEY_ENV: "abcd"})


def test_the_key_is_never_shown() -> None:
    key = os.urandom(32)
    box = SecretBox.from_key(key)
    box.ready()
    assert key.hex() not in repr(box) and "hidden" in repr(box)
