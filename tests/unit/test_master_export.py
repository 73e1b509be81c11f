"""The master key's PKCS#8 export: what standard tools read, the KDF it uses, and every way a file is refused."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tokenim.core.encoding import b64encode
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.signing import SigningKey
from tokenim.crypto.master_export import PBKDF2_ITERATIONS, export_master_pem, load_master_pem

PASS = "correct horse battery staple"
FAST = 1000  # iterations for tests that are not about the KDF


def _der(pem: bytes) -> bytes:
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    return base64.b64decode(body)


def test_round_trip_and_the_public_key_survive() -> None:
    key = SigningKey.generate()
    pem = export_master_pem(key, PASS, iterations=FAST)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert load_master_pem(pem, PASS).public_key == key.public_key


def test_the_layout_is_pbes2_pbkdf2_sha256_600000_aes256cbc() -> None:
    salt, iv = bytes(range(16)), bytes(range(16, 32))
    der = _der(export_master_pem(SigningKey.generate(), PASS, salt=salt, iv=iv))
    assert PBKDF2_ITERATIONS == 600_000
    assert bytes.fromhex("06092a864886f70d01050d") in der  # PBES2
    assert bytes.fromhex("06092a864886f70d01050c") in der  # PBKDF2
    assert b"\x04\x10" + salt + b"\x02\x03" + (600_000).to_bytes(3, "big") in der  # salt, then the iteration count
    assert bytes.fromhex("06082a864886f70d0209") in der  # hmacWithSHA256 (not the SHA-1 default)
    assert bytes.fromhex("060960864801650304012a") + b"\x04\x10" + iv in der  # aes-256-cbc with its IV


def test_pycas_default_pkcs8_encryption_is_weak_which_is_why_we_do_not_use_it() -> None:
    """If this fails, pyca now writes a stronger KDF: reconsider using BestAvailableEncryption."""
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    assert b"\x02\x02\x08\x00" in _der(pem)  # INTEGER 2048: the iteration count


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
def test_openssl_opens_it_and_prints_the_same_public_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = SigningKey.generate()
    path = tmp_path / "master.pem"
    path.write_bytes(export_master_pem(key, PASS))
    out = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-passin", f"pass:{PASS}", "-pubout", "-outform", "DER"],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    assert b64encode(out[-32:]) == key.public_key
    wrong = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-passin", "pass:wrong", "-noout"], capture_output=True, timeout=30
    )
    assert wrong.returncode != 0


def _refused(data: bytes, passphrase: str = PASS) -> str:
    with pytest.raises(TokenIMError) as exc:
        load_master_pem(data, passphrase)
    assert exc.value.code is ErrorCode.BAD_KEY_FILE
    return exc.value.message


def test_wrong_passphrase_truncated_altered_and_garbage_are_refused() -> None:
    pem = export_master_pem(SigningKey.generate(), PASS, iterations=FAST)
    assert "passphrase is wrong" in _refused(pem, "not the passphrase")
    lines = pem.splitlines(keepends=True)
    _refused(b"".join(lines[:2] + lines[-1:]))  # truncated body
    _refused(pem[: len(pem) // 2])  # cut in the middle, no END line
    body = bytearray(pem)
    i = len(lines[0]) + 60  # a character of the ciphertext, inside the base64
    body[i] = ord("A") if body[i] != ord("A") else ord("B")
    _refused(bytes(body))
    assert "not an encrypted PEM" in _refused(b"hello world")
    _refused(b"")
    _refused(b"\xff" * 100_000)


def test_an_unencrypted_key_and_a_key_of_another_kind_are_refused() -> None:
    plain = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert "not encrypted" in _refused(plain)
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(PASS.encode())
    )
    assert "not Ed25519" in _refused(other)
