"""`client.key_files`: the master key and room keys written to, and read from, passphrase-encrypted files.

Files are created whole or not at all (a private temporary file beside the destination, then a hard link
that fails if the name exists), mode 600, and an existing file is never replaced. Each export is filed
in the user's audit records on the server before the file is written: an export the server has not
recorded does not happen.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from tokenim.client.audit import Audit
from tokenim.client.keys import Keys
from tokenim.client.state import DeviceState
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.master_export import MAX_FILE_BYTES, export_master_pem
from tokenim.crypto.room_key_export import (
    ImportCounts,
    decrypt_export,
    encrypt_export,
    export_sessions,
    import_sessions,
    parse_entry,
)

MAX_KEY_FILE_BYTES = 256 * 1024 * 1024  # a room-key export of many sessions; anything larger is refused unread


def check_new_file(out: Path) -> None:
    """Refuse, before any work, a destination that exists (file, link, folder) or whose folder does not."""
    if out.is_dir():
        raise TokenIMError(
            ErrorCode.FILE_EXISTS, f"{out} is a folder: give the name of a new file in it, such as {out / 'tokenim-keys.txt'}."
        )
    if out.exists() or out.is_symlink():
        raise TokenIMError(ErrorCode.FILE_EXISTS, f"{out} already exists: choose another name (key files are never replaced).")
    if not out.parent.is_dir():
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"The folder {out.parent} does not exist: nothing was written.")


def write_secret_file(out: Path, data: bytes) -> None:
    """Write `data` to a new file `out`, mode 600, whole or not at all; never replaces an existing file."""
    check_new_file(out)
    try:
        fd, name = tempfile.mkstemp(prefix=".tokenim-", suffix=".part", dir=out.parent)  # mkstemp: mode 600
    except OSError as exc:  # name the file asked for, never the temporary one
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, f"Cannot write {out}: {(exc.strerror or 'the write failed').lower()}."
        ) from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, out)  # fails if `out` appeared meanwhile
        except FileExistsError:
            raise TokenIMError(ErrorCode.FILE_EXISTS, f"{out} already exists: nothing was written.") from None
    except OSError as exc:
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, f"Cannot write {out}: {(exc.strerror or 'the write failed').lower()}."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # make the new name durable too
        dir_fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_key_file(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """A key file's bytes; one sentence if it can't be read or is far too large to be one."""
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Cannot read {path}: {(exc.strerror or 'it failed').lower()}.") from None
    if len(data) > limit:
        raise TokenIMError(ErrorCode.BAD_KEY_FILE, f"{path} is far too large to be a key file: nothing was read.")
    return data


class KeyFiles:
    """`client.key_files`: the master key (PKCS#8) and room keys (Matrix key export format) to and from files."""

    def __init__(self, state: DeviceState, audit: Audit, keys: Keys) -> None:
        self._state = state
        self._audit = audit
        self._keys = keys

    async def export_master_key(self, out: Path, passphrase: str) -> Path:
        """Write the master private key to `out` as encrypted PKCS#8 PEM (see crypto/master_export.py),
        after the server has recorded the export. `openssl pkey -in FILE` opens it with the passphrase."""
        _need_passphrase(passphrase)
        check_new_file(out)
        await self._keys.require_current_master("export it (the file would hold the old, rotated key)")
        pem = export_master_pem(self._state.identity.master, passphrase)
        await self._audit.record("master_key.exported")
        write_secret_file(out, pem)
        return out

    async def export_room_keys(self, out: Path, passphrase: str) -> int:
        """Write every Megolm session this device holds to `out` in the Matrix key export format, after the
        server has recorded the export; returns how many."""
        _need_passphrase(passphrase)
        check_new_file(out)
        sessions = export_sessions(self._state.machine.rooms)
        data = encrypt_export(sessions, passphrase)
        await self._audit.record("room_keys.exported", sessions=len(sessions))
        write_secret_file(out, data)
        return len(sessions)

    async def import_room_keys(self, path: Path, passphrase: str) -> ImportCounts:
        """Add the sessions of an export file to this device (saved in one transaction), so history sent
        before this device existed can be read. The whole file is checked (passphrase, MAC, JSON) before
        anything is added; a session held already from an earlier or equal index is kept."""
        _need_passphrase(passphrase)
        entries = decrypt_export(read_key_file(path, MAX_KEY_FILE_BYTES), passphrase)
        sessions = [parse_entry(e) for e in entries]
        await self._audit.record("room_keys.imported", sessions=len(sessions))
        counts = import_sessions(self._state.machine.rooms, sessions)
        self._state.persist()
        return counts


def _need_passphrase(passphrase: str) -> None:
    if not passphrase:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "A key file needs a passphrase: none was given.")


__all__ = ["MAX_KEY_FILE_BYTES", "KeyFiles", "check_new_file", "read_key_file", "write_secret_file"]
