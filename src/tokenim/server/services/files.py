"""Encrypted file blobs: streamed to disk in the data directory, never held whole in memory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import insert, select

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.api import BlobResponse
from tokenim.server.services.common import Context, Requester
from tokenim.server.storage.tables import blobs

_BLOB_ID = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


class FileService:
    """The server stores ciphertext blobs; the key, hash and name travel inside the encrypted message."""

    def __init__(self, ctx: Context, blob_dir: Path, max_bytes: int) -> None:
        self._ctx = ctx
        self._dir = blob_dir
        self.max_bytes = max_bytes

    def _path(self, blob_id: str) -> Path:
        if not _BLOB_ID.fullmatch(blob_id):
            raise TokenIMError(ErrorCode.NOT_FOUND, "There is no such file.")
        return self._dir / blob_id

    async def do_upload(self, requester: Requester, chunks: AsyncIterator[bytes]) -> BlobResponse:
        """Stream the body to a temporary file, hashing as it goes; refuse past the size limit."""
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        blob_id = secrets.token_urlsafe(24)
        tmp = self._dir / f".upload-{blob_id}"
        digest, size = hashlib.sha256(), 0
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TokenIMError(
                            ErrorCode.BODY_TOO_LARGE, f"Files may be at most {self.max_bytes} bytes on this server."
                        )
                    digest.update(chunk)
                    fh.write(chunk)
            if size == 0:
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "The file is empty.")
            tmp.rename(self._path(blob_id))
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        async with self._ctx.db.write() as tx:
            await tx.execute(
                insert(blobs).values(
                    blob_id=blob_id,
                    uploader=requester.user_id,
                    size=size,
                    sha256=digest.hexdigest(),
                    created_at=self._ctx.clock.now_ms(),
                )
            )
        return BlobResponse(blob_id=blob_id, size=size, sha256=digest.hexdigest())

    async def access_blob(self, blob_id: str) -> tuple[Path, int]:
        path = self._path(blob_id)
        async with self._ctx.db.read() as tx:
            row = (await tx.execute(select(blobs.c.size).where(blobs.c.blob_id == blob_id))).first()
        if row is None or not path.exists():
            raise TokenIMError(ErrorCode.NOT_FOUND, "There is no such file.")
        return path, int(row.size)
