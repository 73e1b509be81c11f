"""File encryption: a fresh random key per file, AES-256-GCM over fixed-size chunks (the STREAM construction).

Each chunk's nonce is its index, and its associated data says whether it is the last one, so chunks
cannot be reordered, dropped or truncated without detection. Works on iterables of bytes: a 1 GB file
never sits in memory. The SHA-256 of the ciphertext is checked before anything is decrypted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tokenim.core.encoding import b64decode, b64encode
from tokenim.crypto.olm import CryptoError

CHUNK = 64 * 1024
TAG = 16
ALGORITHM = "tokenim.file.v1.aes256gcm-stream"


@dataclass(frozen=True, slots=True)
class FileKey:
    """What travels inside the encrypted message: enough to fetch, check and decrypt the file."""

    key: bytes

    @classmethod
    def generate(cls) -> FileKey:
        return cls(AESGCM.generate_key(bit_length=256))

    def to_b64(self) -> str:
        return b64encode(self.key)

    @classmethod
    def from_b64(cls, text: str) -> FileKey:
        key = b64decode(text)
        if len(key) != 32:
            raise CryptoError("malformed", "The file key is not 32 bytes.")
        return cls(key)


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _aad(index: int, final: bool) -> bytes:
    return ALGORITHM.encode() + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    buf = bytearray()
    for piece in chunks:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    yield bytes(buf)


def encrypt_chunks(key: FileKey, plaintext: Iterable[bytes]) -> Iterator[bytes]:
    """Yield ciphertext chunks for a stream of plaintext."""
    aead = AESGCM(key.key)
    pieces = _rechunk(plaintext, CHUNK)
    index, current = 0, next(pieces)
    for following in pieces:
        if not following and len(current) == CHUNK:
            # `current` is the last full chunk and nothing follows: it is final.
            break
        yield aead.encrypt(_nonce(index), current, _aad(index, False))
        index, current = index + 1, following
    yield aead.encrypt(_nonce(index), current, _aad(index, True))


def decrypt_chunks(key: FileKey, ciphertext: Iterable[bytes]) -> Iterator[bytes]:
    """Yield plaintext chunks; raises CryptoError on any tampering, reordering or truncation."""
    aead = AESGCM(key.key)
    pieces = _rechunk(ciphertext, CHUNK + TAG)
    index, current = 0, next(pieces)
    try:
        for following in pieces:
            if not following:
                break
            yield aead.decrypt(_nonce(index), current, _aad(index, False))
            index, current = index + 1, following
        yield aead.decrypt(_nonce(index), current, _aad(index, True))
    except InvalidTag:
        raise CryptoError("tampered", "The file failed its integrity check: it was changed or cut short.") from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
