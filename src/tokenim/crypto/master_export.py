"""The user's master key as an encrypted PKCS#8 PEM file that standard tools open (`openssl pkey`).

pyca's `BestAvailableEncryption` writes PKCS#8 as PBES2 with PBKDF2-HMAC-SHA256 at only 2,048 iterations
(cryptography 50.0.2; checked with `openssl asn1parse`), and `encryption_builder()` is offered for
PKCS#12 and OpenSSH only. So the `EncryptedPrivateKeyInfo` (RFC 5958) with PBES2 (RFC 8018) is laid
out here around pyca's primitives: PBKDF2-HMAC-SHA256 at 600,000 iterations (OWASP's figure for it)
and AES-256-CBC. PBKDF2 rather than scrypt because every PKCS#8 reader (OpenSSL, pyca, Java, Go) takes
it, and OpenSSL refuses scrypt parameters above 32 MiB. Reading uses pyca's own PKCS#8 loader, so
what is written is checked by a second implementation. No clock, no file: bytes in, bytes out.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.signing import SigningKey

PBKDF2_ITERATIONS = 600_000
SALT_BYTES = 16
PEM_LABEL = "ENCRYPTED PRIVATE KEY"
MAX_FILE_BYTES = 64 * 1024  # an Ed25519 key file is ~300 bytes: anything far larger is not one

# Object identifiers, DER-encoded (tag, length, value).
_OID_PBES2 = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13
_OID_PBKDF2 = bytes.fromhex("06092a864886f70d01050c")  # 1.2.840.113549.1.5.12
_OID_HMAC_SHA256 = bytes.fromhex("06082a864886f70d0209")  # 1.2.840.113549.2.9
_OID_AES256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42
_NULL = b"\x05\x00"


def _der(tag: int, body: bytes) -> bytes:
    """One DER element: tag, definite length (short or long form), contents."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _seq(*parts: bytes) -> bytes:
    return _der(0x30, b"".join(parts))


def _octets(data: bytes) -> bytes:
    return _der(0x04, data)


def _integer(n: int) -> bytes:
    return _der(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))  # one spare bit keeps it positive


def _derive(passphrase: bytes, salt: bytes, iterations: int) -> bytes:
    return PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations).derive(passphrase)


def export_master_pem(
    master: SigningKey,
    passphrase: str,
    *,
    iterations: int = PBKDF2_ITERATIONS,
    salt: bytes | None = None,
    iv: bytes | None = None,
) -> bytes:
    """The master private key as PEM `ENCRYPTED PRIVATE KEY` (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC).

    `salt` and `iv` are random unless a test gives them."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    iv = os.urandom(16) if iv is None else iv
    plain = Ed25519PrivateKey.from_private_bytes(master.seed()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(_derive(passphrase.encode("utf-8"), salt, iterations)), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    kdf = _seq(_OID_PBKDF2, _seq(_octets(salt), _integer(iterations), _seq(_OID_HMAC_SHA256, _NULL)))
    scheme = _seq(_OID_AES256_CBC, _octets(iv))
    der = _seq(_seq(_OID_PBES2, _seq(kdf, scheme)), _octets(ciphertext))
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {PEM_LABEL}-----", *lines, f"-----END {PEM_LABEL}-----"]) + "\n").encode("ascii")


def load_master_pem(data: bytes, passphrase: str) -> SigningKey:
    """The Ed25519 key in an encrypted PKCS#8 PEM file; `bad_key_file` (one sentence) for anything else:
    a wrong passphrase, a truncated or altered file, a file that is not PEM, an unencrypted or other key."""
    if len(data) > MAX_FILE_BYTES or f"-----BEGIN {PEM_LABEL}-----".encode() not in data:
        if b"-----BEGIN" in data[:MAX_FILE_BYTES] and b"PRIVATE KEY-----" in data[:MAX_FILE_BYTES]:
            raise _bad("it holds a private key that is not encrypted: export it again with `tokenim keys export`")
        raise _bad("it is not an encrypted PEM key file (made by `tokenim keys export`)")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode("utf-8"))
    except (ValueError, TypeError):
        # OpenSSL-style PKCS#8 cannot tell a wrong passphrase from an altered file: both fail the same way.
        raise _bad("the passphrase is wrong, or the file is damaged or truncated") from None
    except Exception:  # pyca's loader raises other types for some malformed DER (e.g. UnsupportedAlgorithm)
        raise _bad("the file is damaged or uses an unsupported encryption") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _bad("it holds a key that is not Ed25519, so it is not a TokenIM master key")
    return SigningKey(key)


def _bad(reason: str) -> TokenIMError:
    return TokenIMError(ErrorCode.BAD_KEY_FILE, f"The key file can't be used: {reason}. Nothing was changed.")


__all__ = ["PBKDF2_ITERATIONS", "export_master_pem", "load_master_pem"]
