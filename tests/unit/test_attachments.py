"""File encryption: chunked AES-256-GCM (STREAM) round trips, and every way of cutting, reordering,
extending or altering the ciphertext is detected."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenim.crypto.attachments import CHUNK, TAG, FileKey, decrypt_chunks, encrypt_chunks, sha256_file
from tokenim.crypto.olm import CryptoError

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7]


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    """Feed data in arbitrary piece sizes: chunking must not depend on how the input is split."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def encrypt(key: FileKey, data: bytes, feed: int = 10_000) -> list[bytes]:
    return list(encrypt_chunks(key, pieces(data, feed)))


def decrypt(key: FileKey, chunks: list[bytes]) -> bytes:
    return b"".join(decrypt_chunks(key, chunks))


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(size: int) -> None:
    key = FileKey.generate()
    data = os.urandom(size)
    chunks = encrypt(key, data)
    expected_chunks = max(1, -(-size // CHUNK))
    assert len(chunks) == expected_chunks
    assert all(len(c) == CHUNK + TAG for c in chunks[:-1])
    assert len(chunks[-1]) == (size - (expected_chunks - 1) * CHUNK) + TAG
    assert sum(len(c) for c in chunks) == size + TAG * expected_chunks
    assert decrypt(key, chunks) == data
    # The ciphertext may be re-split any way on the way back (as a download stream would).
    joined = b"".join(chunks)
    assert b"".join(decrypt_chunks(key, pieces(joined, 7_777))) == data
    if size >= 16:  # a shorter random string can turn up in random ciphertext by chance
        assert data not in joined


@pytest.mark.parametrize("feed", [1, 1000, CHUNK, CHUNK * 3])
def test_input_split_does_not_matter(feed: int) -> None:
    key = FileKey.generate()
    data = os.urandom(3 * CHUNK + 5)
    if feed == 1:
        data = data[: CHUNK + 5]  # byte-by-byte is slow: keep it to two chunks
    assert decrypt(key, encrypt(key, data, feed)) == data


def test_same_plaintext_different_keys() -> None:
    data = b"x" * 100
    assert encrypt(FileKey.generate(), data) != encrypt(FileKey.generate(), data)


def _sample() -> tuple[FileKey, list[bytes]]:
    key = FileKey.generate()
    return key, encrypt(key, os.urandom(4 * CHUNK + 123))


def test_truncation_is_detected() -> None:
    key, chunks = _sample()
    with pytest.raises(CryptoError) as err:
        decrypt(key, chunks[:-1])
    assert err.value.code == "tampered"
    with pytest.raises(CryptoError):
        decrypt(key, chunks[:1])
    with pytest.raises(CryptoError):
        decrypt(key, [])
    # Cut in the middle of the last chunk.
    with pytest.raises(CryptoError):
        decrypt(key, [*chunks[:-1], chunks[-1][:-5]])


def test_truncation_at_full_chunk_boundary_is_detected() -> None:
    key = FileKey.generate()
    chunks = encrypt(key, os.urandom(3 * CHUNK))
    assert len(chunks) == 3
    with pytest.raises(CryptoError):
        decrypt(key, chunks[:2])


def test_reordering_is_detected() -> None:
    key, chunks = _sample()
    swapped = [chunks[1], chunks[0], *chunks[2:]]
    with pytest.raises(CryptoError):
        decrypt(key, swapped)
    swapped = [*chunks[:2], chunks[3], chunks[2], chunks[4]]
    with pytest.raises(CryptoError):
        decrypt(key, swapped)


@pytest.mark.parametrize("where", [0, CHUNK + TAG + 10, -1])
def test_flipped_byte_is_detected(where: int) -> None:
    key, chunks = _sample()
    data = bytearray(b"".join(chunks))
    data[where] ^= 0x01
    with pytest.raises(CryptoError):
        decrypt(key, [bytes(data)])


def test_appended_chunk_is_detected() -> None:
    key, chunks = _sample()
    with pytest.raises(CryptoError):
        decrypt(key, [*chunks, chunks[-1]])
    with pytest.raises(CryptoError):
        decrypt(key, [*chunks, chunks[0]])
    # A final chunk from another file encrypted under the same key does not fit either.
    other = encrypt(key, b"other")
    with pytest.raises(CryptoError):
        decrypt(key, [*chunks, other[-1]])
    with pytest.raises(CryptoError):
        decrypt(key, [*chunks[:-1], other[-1]])
    with pytest.raises(CryptoError):
        decrypt(key, [*chunks, b"trailing garbage"])


def test_wrong_key() -> None:
    key, chunks = _sample()
    with pytest.raises(CryptoError) as err:
        decrypt(FileKey.generate(), chunks)
    assert err.value.code == "tampered"
    empty = encrypt(key, b"")
    with pytest.raises(CryptoError):
        decrypt(FileKey.generate(), empty)


def test_file_key_encoding() -> None:
    key = FileKey.generate()
    assert len(key.key) == 32
    assert FileKey.from_b64(key.to_b64()) == key
    with pytest.raises(CryptoError) as err:
        FileKey.from_b64(FileKey.generate().to_b64()[:20])
    assert err.value.code == "malformed"


def test_twenty_mebibytes_are_streamed_chunk_by_chunk() -> None:
    key = FileKey.generate()
    total = 20 * 1024 * 1024
    block = 1024 * 1024
    produced = 0
    plain_digest = hashlib.sha256()

    def source() -> Iterator[bytes]:
        nonlocal produced
        for i in range(total // block):
            piece = (i.to_bytes(4, "big") * (block // 4))[:block]
            plain_digest.update(piece)
            produced += len(piece)
            yield piece

    cipher_digest = hashlib.sha256()
    out_chunks = 0
    cipher_blocks: list[bytes] = []
    for chunk in encrypt_chunks(key, source()):
        assert len(chunk) <= CHUNK + TAG
        # Lazy: never more than one input block read ahead of what was encrypted.
        assert produced <= (out_chunks + 1) * CHUNK + 2 * block
        out_chunks += 1
        cipher_digest.update(chunk)
        cipher_blocks.append(chunk)
    assert produced == total
    assert out_chunks == total // CHUNK

    # Decrypting streams as well: plaintext comes out chunk by chunk, each at most CHUNK bytes.
    back = hashlib.sha256()
    out_plain = 0
    for plain in decrypt_chunks(key, iter(cipher_blocks)):
        assert len(plain) <= CHUNK
        back.update(plain)
        out_plain += len(plain)
    assert out_plain == total
    assert back.digest() == plain_digest.digest()


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom(3 * 1024 * 1024 + 11)
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
