"""Encrypted files: upload while encrypting in chunks, download to a temporary file, check, decrypt, place.

A download never overwrites an existing file unless asked, and never leaves a partial file behind.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import re
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tokenim.client.contacts import SendResult
from tokenim.client.messages import FILE, NOT_FILE, Messages
from tokenim.client.state import DeviceState
from tokenim.client.transport import Transport, transport_problem
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.attachments import ALGORITHM as FILE_ALGORITHM
from tokenim.crypto.attachments import FileKey, decrypt_chunks, encrypt_chunks
from tokenim.crypto.olm import CryptoError
from tokenim.protocol.api import BlobResponse
from tokenim.protocol.wire import BLOB_ID_PATTERN

CHUNK = 1 << 20
# Told (bytes read so far, the file's size) as a file is read for upload: an app draws its progress bar with it.
Progress = Callable[[int, int], None]


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from iter(lambda: fh.read(CHUNK), b"")


def _counted(chunks: Iterator[bytes], total: int, on_progress: Progress) -> Iterator[bytes]:
    done = 0
    for chunk in chunks:
        done += len(chunk)
        on_progress(done, total)
        yield chunk


async def upload_file(transport: Transport, path: Path, *, on_progress: Progress | None = None) -> dict[str, Any]:
    """Encrypt and upload a file; returns the `m.file` message content that carries its key. `on_progress`
    is told how much of the file was read, chunk by chunk."""
    if not path.exists():
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{path} does not exist.")
    if not path.is_file():
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{path} is not a file.")
    key = FileKey.generate()
    total = path.stat().st_size

    async def body() -> AsyncIterator[bytes]:
        plain = _chunks(path) if on_progress is None else _counted(_chunks(path), total, on_progress)
        for chunk in encrypt_chunks(key, plain):
            yield chunk

    headers = {"Authorization": f"Bearer {transport.access_token()}", "Content-Type": "application/octet-stream"}
    try:
        resp = await transport.http.post("/v1/blobs", content=body(), headers=headers, timeout=None)
    except httpx.TransportError as exc:
        raise TokenIMError(ErrorCode.SERVER_UNREACHABLE, f"The upload failed: {transport_problem(exc)}.") from None
    except OSError as exc:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Cannot read {path}: {exc.strerror}.") from None
    if resp.status_code >= 400:
        raise TokenIMError.from_json(resp.json() if resp.content else None, http_status=resp.status_code)
    blob = BlobResponse.model_validate(resp.json())
    info = {
        "algorithm": FILE_ALGORITHM,
        "blob_id": blob.blob_id,
        "key": key.to_b64(),
        "sha256": blob.sha256,
        "name": path.name,
        "size": path.stat().st_size,
        "mimetype": mimetypes.guess_type(path.name)[0] or "application/octet-stream",
    }
    return {"type": "m.file", "body": path.name, "file": info}


def check_destination(out: Path, *, overwrite: bool) -> None:
    """Refuse, in one sentence, a place a download can't or shouldn't go, before anything is fetched."""
    parent = out.parent
    if not parent.is_dir():
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"The folder {parent} does not exist.")
    if out.is_dir():
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{out} is a folder.")
    try:
        mode = out.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Cannot use {out}: {exc.strerror or 'it cannot be checked'}.") from None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        # --force replaces a file (or a link, not its target), never a device, pipe, socket or folder.
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, f"{out} is not a regular file (a device, pipe or socket): nothing was written there."
        )
    if not overwrite:
        raise TokenIMError(ErrorCode.FILE_EXISTS, f"{out} already exists: choose another name, or add --force to replace it.")


_BLOB_ID = re.compile(BLOB_ID_PATTERN)


async def download_file(transport: Transport, info: dict[str, Any], out: Path, *, overwrite: bool) -> None:
    """Fetch the blob to a temporary file beside `out`, check its hash, decrypt, then put it in place.

    The blob id comes from another member's message: it must be a blob id, never a path (`../../v1/…`)
    that would send this device's token to another route."""
    check_destination(out, overwrite=overwrite)
    blob_id = info.get("blob_id")
    if not isinstance(blob_id, str) or not _BLOB_ID.fullmatch(blob_id):
        raise TokenIMError(ErrorCode.BAD_RESPONSE, "This file message names no valid file: nothing was downloaded.")
    tmp_cipher = tmp_plain = None
    try:
        tmp_cipher = _temp_beside(out)
        tmp_plain = _temp_beside(out)
        digest = hashlib.sha256()
        headers = {"Authorization": f"Bearer {transport.access_token()}"}
        async with transport.http.stream("GET", f"/v1/blobs/{blob_id}", headers=headers, timeout=None) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise TokenIMError.from_json(resp.json() if resp.content else None, http_status=resp.status_code)
            with tmp_cipher.open("wb") as fh:
                async for chunk in resp.aiter_bytes(CHUNK):
                    digest.update(chunk)
                    fh.write(chunk)
        if digest.hexdigest() != info["sha256"]:
            raise TokenIMError(
                ErrorCode.BAD_RESPONSE, "The downloaded file does not match its hash: it was changed. Nothing was written."
            )
        with tmp_plain.open("wb") as fh:
            for chunk in decrypt_chunks(FileKey.from_b64(info["key"]), _chunks(tmp_cipher)):
                fh.write(chunk)
        _place(tmp_plain, out, overwrite=overwrite)
    except CryptoError as err:
        raise TokenIMError(ErrorCode.BAD_RESPONSE, err.message) from None
    except httpx.TransportError as exc:
        raise TokenIMError(ErrorCode.SERVER_UNREACHABLE, f"The download failed: {transport_problem(exc)}.") from None
    except OSError as exc:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Cannot write {out}: {exc.strerror or 'the write failed'}.") from None
    finally:
        for tmp in (tmp_cipher, tmp_plain):
            if tmp is not None:
                tmp.unlink(missing_ok=True)


def _temp_beside(out: Path) -> Path:
    """A new private file in the destination folder (so the final move is a rename, never a copy)."""
    fd, name = tempfile.mkstemp(prefix=".tokenim-", suffix=".part", dir=out.parent)
    os.close(fd)
    return Path(name)


def _place(tmp: Path, out: Path, *, overwrite: bool) -> None:
    if overwrite:
        tmp.replace(out)
        return
    try:
        os.link(tmp, out)  # fails if `out` appeared meanwhile: an existing file is never replaced
    except FileExistsError:
        raise TokenIMError(ErrorCode.FILE_EXISTS, f"{out} already exists: choose another name, or add --force.") from None


def safe_file_name(name: str, fallback: str = "download") -> str:
    """A sender's file name made safe to create in a folder: no path separators, no `..`, no leading dot,
    no control, separator or bidi characters, at most 200 bytes; `fallback` when nothing is left."""
    kept = "".join(
        "_" if c in "/\\" or not (c.isprintable() or c == " ") or 0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 else c
        for c in name
    )
    kept = kept.strip().lstrip(".").strip()
    stem, dot, ext = kept.rpartition(".")
    if not dot or not stem or len(ext.encode("utf-8", "surrogatepass")) > 20:
        stem, ext = kept, ""
    suffix = f".{ext}" if ext else ""
    while len((stem + suffix).encode("utf-8", "surrogatepass")) > 200:  # shortened, the extension is kept
        stem = stem[:-1]
    return (stem + suffix) or fallback


class Files:
    """`client.files`: send files end-to-end encrypted, and download and check the files of messages."""

    def __init__(self, state: DeviceState, transport: Transport, messages: Messages) -> None:
        self._state = state
        self._transport = transport
        self._messages = messages

    async def send(self, room_id: str, path: Path, *, on_progress: Progress | None = None) -> SendResult:
        """Encrypt the file in chunks while uploading it; the key travels in the encrypted message.
        `on_progress(done, total)` is told the bytes read so far (the terminal app's progress bar)."""
        self._state.next_send_seq()  # a stale copy of the profile uploads nothing
        return await self._messages.send_content(room_id, await upload_file(self._transport, path, on_progress=on_progress))

    async def download(self, event_id: str, out: Path, *, overwrite: bool = False) -> dict[str, Any]:
        """Fetch a file sent in a message, check its hash and decrypt it to `out`, which must not exist
        unless `overwrite`; returns the file's description (name, size, sha256…)."""
        info = await self.describe(event_id)
        await download_file(self._transport, info, out, overwrite=overwrite)
        return info

    async def describe(self, event_id: str) -> dict[str, Any]:
        """The description of the file a message carries (syncing first if it is not known yet)."""
        info = self._known(event_id)
        if info is None:
            await self._messages.sync()
            info = self._known(event_id)
        if info is None:
            if self._state.store.get_record(NOT_FILE, event_id) is not None:
                raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Message {event_id} is a text message, not a file.")
            raise TokenIMError(
                ErrorCode.NOT_FOUND, f"No file message {event_id} is known here: check the id with `tokenim read`."
            )
        return info

    def _known(self, event_id: str) -> dict[str, Any] | None:
        raw = self._state.store.get_record(FILE, event_id)
        return None if raw is None else dict(json.loads(raw))


__all__ = ["Files", "Progress", "check_destination", "download_file", "safe_file_name", "upload_file"]
