"""Server secrets at rest: AES-256-GCM (pyca `cryptography`) under one 32-byte server key.

What the server must read back later but must not keep in clear (a mail body holding a one-time code,
later a TOTP secret or a CA key) is sealed here. Every sealed value names what it is (associated
data, e.g. `b"tokenim.outbox:email:security.new_device:@alice:example.com"`), so a value copied into
another row or used for another purpose does not open.

The key lives in `DATA/secret.key` (32 random bytes, created with mode 600 on the first start; a file of
another size, or one others may read, stops the server). Back it up with the database: what it sealed
cannot be read without it. Tests use `SecretBox.generate()`, a key in memory.

Note for reconciling with branch `twofa`, which adds the same facility: this is the smallest version
the outbox needs (`encrypt(data, purpose)` / `decrypt(sealed, purpose)`); keep whichever API lands and
adapt `server/outbox.py`, its only caller here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tokenim.core.errors import ErrorCode, TokenIMError

KEY_FILE = "secret.key"
KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = b"\x01"  # the first byte of every sealed value: room for another key or cipher later


class SecretBoxError(ValueError):
    """A sealed value that does not open: another key, another purpose, or changed bytes."""


class SecretBox:
    """Seal and open small secrets under the server key; the key is never logged or shown."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the server key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def generate(cls) -> SecretBox:
        """A box under a fresh key held only in memory (tests; nothing sealed survives the process)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SecretBox:
        """The box under `DATA/secret.key`, creating the key (mode 600) on the first start."""
        path = data_dir / KEY_FILE
        if not path.exists():
            # Written whole under a temporary name, then linked into place: a crash never leaves a short key,
            # and of two servers starting at once (the data-dir lock aside) one key wins.
            tmp = data_dir / f"{KEY_FILE}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, secrets.token_bytes(KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                os.unlink(tmp)
        return cls._read(path)

    @classmethod
    def _read(cls, path: Path) -> SecretBox:
        try:
            info = path.stat()
            key = path.read_bytes()
        except OSError as exc:
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"Cannot read the server key {path}: {exc.strerror}.") from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"The server key {path} may be read by others: chmod 600 it.")
        if len(key) != KEY_BYTES:
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"The server key {path} is not {KEY_BYTES} bytes long.")
        return cls(key)

    def encrypt(self, data: bytes, purpose: bytes) -> bytes:
        """`data` sealed for `purpose` (authenticated, not secret): version, nonce, ciphertext and tag."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, data, purpose)

    def decrypt(self, sealed: bytes, purpose: bytes) -> bytes:
        """What `encrypt(data, purpose)` sealed; `SecretBoxError` for anything else."""
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise SecretBoxError("not a sealed value")
        try:
            return self._aead.decrypt(sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :], purpose)
        except InvalidTag:
            raise SecretBoxError("the sealed value does not open under this key and purpose") from None
