"""Secrets the server must use again, not only compare (a TOTP secret, later the CA's key), sealed at rest.

Each is encrypted with AES-256-GCM (pyca `cryptography`) under one 32-byte server key, with associated data
naming what it is and whose (`what`, e.g. `totp:@alice:example.com`): a sealed value copied into another
row, or opened for another purpose, fails instead of being used. A sealed value starts with a format byte
and a 4-byte key id, so a value sealed under another key is told apart from a damaged one.

The key comes from `TOKENIM_SECRET_KEY` (64 hex digits) or from a key file (`secret_key_file`, by default
`DATA/secret.key`), made on first use with mode 600 and refused if anyone else may read it. It is never
logged, printed or stored in the database: a copy of the database alone opens nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tokenim.core.errors import ErrorCode, TokenIMError

KEY_ENV = "TOKENIM_SECRET_KEY"
KEY_FILE_NAME = "secret.key"
KEY_BYTES = 32
_FORMAT = b"\x01"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_AD_PREFIX = b"tokenim.secret_box.v1\x00"
_HEADER = len(_FORMAT) + _KEY_ID_BYTES

log = logging.getLogger("tokenim.server")


def _key_id(key: bytes) -> bytes:
    return hmac.new(key, b"tokenim.secret_box.key_id", hashlib.sha256).digest()[:_KEY_ID_BYTES]


def _parse_hex_key(text: str, where: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES or len(text) != 2 * KEY_BYTES:
        raise TokenIMError(
            ErrorCode.BAD_CONFIG,
            f"{where} must hold the server key as 64 hexadecimal digits (32 bytes), e.g. from `openssl rand -hex 32`.",
        )
    return key


def _read_key_file(path: Path) -> bytes:
    """The key in `path`, refused if the file is not a private regular file."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"The server key file {path} is not a regular file.")
        if info.st_mode & 0o077:
            raise TokenIMError(
                ErrorCode.BAD_CONFIG,
                f"The server key file {path} can be read by other users (mode {stat.S_IMODE(info.st_mode):o}): "
                f"make it private with `chmod 600 {path}`.",
            )
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        text = ""
    except OSError as exc:
        raise TokenIMError(ErrorCode.BAD_CONFIG, f"Cannot read the server key file {path}: {exc.strerror}.") from None
    return _parse_hex_key(text, f"The server key file {path}")


def _create_key_file(path: Path) -> bytes:
    """A new random key in a new file, mode 600 from its first byte (O_EXCL: never replaces one)."""
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    except OSError as exc:
        raise TokenIMError(ErrorCode.BAD_CONFIG, f"Cannot create the server key file {path}: {exc.strerror}.") from None
    try:
        os.write(fd, key.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("made a new server key file %s (back it up with the database: sealed secrets need it)", path)
    return key


def load_server_key(key_file: Path, env: Mapping[str, str]) -> bytes:
    """`TOKENIM_SECRET_KEY` if set, else the key file, made now if it does not exist yet."""
    if env.get(KEY_ENV):
        return _parse_hex_key(env[KEY_ENV], KEY_ENV)
    if key_file.exists() or key_file.is_symlink():
        return _read_key_file(key_file)
    return _create_key_file(key_file)


class SecretBox:
    """Seal and open bytes under the server key. The key is loaded on first use (or by `ready()` at start)."""

    __slots__ = ("_aead", "_key_id", "_load")

    def __init__(self, load: Callable[[], bytes]) -> None:
        self._load = load
        self._aead: AESGCM | None = None
        self._key_id = b""

    @classmethod
    def from_key(cls, key: bytes) -> SecretBox:
        """A box on a key already in hand (32 bytes)."""
        if len(key) != KEY_BYTES:
            raise ValueError("the server key is 32 bytes")
        return cls(lambda: key)

    @classmethod
    def from_settings(cls, key_file: Path, env: Mapping[str, str]) -> SecretBox:
        """The server's box: `TOKENIM_SECRET_KEY`, else `key_file` (made with mode 600 if missing)."""
        return cls(lambda: load_server_key(key_file, env))

    def ready(self) -> None:
        """Load the key now, so a missing or unreadable key stops the server at start, not at first use."""
        if self._aead is None:
            key = self._load()
            self._aead, self._key_id = AESGCM(key), _key_id(key)

    def __repr__(self) -> str:
        return "SecretBox(key hidden)"

    def _cipher(self) -> AESGCM:
        self.ready()
        assert self._aead is not None
        return self._aead

    @staticmethod
    def _associated(header: bytes, what: str) -> bytes:
        return _AD_PREFIX + header + what.encode("utf-8")

    def encrypt(self, plaintext: bytes, what: str) -> bytes:
        """`plaintext` sealed for the purpose `what` (format byte, key id, nonce, ciphertext and tag)."""
        aead = self._cipher()
        header = _FORMAT + self._key_id
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return header + nonce + aead.encrypt(nonce, plaintext, self._associated(header, what))

    def decrypt(self, sealed: bytes, what: str) -> bytes:
        """The plaintext sealed for `what`; a value sealed under another key, for another purpose or changed is
        refused as an internal error (the server's key or its database is not what it was)."""
        aead = self._cipher()
        header = sealed[:_HEADER]
        if len(sealed) < _HEADER + _NONCE_BYTES + 16 or header[:1] != _FORMAT:
            raise self._unreadable(what, "it is not a sealed value")
        if not hmac.compare_digest(header[1:], self._key_id):
            raise self._unreadable(what, "it was sealed under another server key")
        nonce = sealed[_HEADER : _HEADER + _NONCE_BYTES]
        try:
            return aead.decrypt(nonce, sealed[_HEADER + _NONCE_BYTES :], self._associated(header, what))
        except InvalidTag:
            raise self._unreadable(what, "it was changed, or sealed for something else") from None

    @staticmethod
    def _unreadable(what: str, why: str) -> TokenIMError:
        kind = what.split(":", 1)[0]
        log.error("cannot open a sealed %s secret: %s", kind, why)
        return TokenIMError(
            ErrorCode.INTERNAL,
            f'The server cannot read a secret it stored ({kind}): {why}. Tell the server\'s admin (README, "The server key").',
        )


__all__ = ["KEY_ENV", "KEY_FILE_NAME", "SecretBox", "load_server_key"]
