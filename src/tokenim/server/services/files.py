"""Encrypted file blobs: streamed to disk in the data directory, never held whole in memory.

Each user's blobs together may take at most `blob_quota_bytes` (0: no quota): checked before the body is
read, while it streams, and again when the blob is recorded (so two uploads at once cannot both squeeze in).
Blobs are never deleted today, so every upload counts toward the quota for good (docs/admin.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import func, insert, select

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.api import BlobResponse
from tokenim.server.services.common import Context, Requester
from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import blobs, users

_BLOB_ID = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


class FileService:
    """The server stores ciphertext blobs; the key, hash and name travel inside the encrypted message."""

    def __init__(self, ctx: Context, blob_dir: Path, max_bytes: int, quota_bytes: int = 0) -> None:
        self._ctx = ctx
        self._dir = blob_dir
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes

    async def _used(self, tx: Tx, user_id: str) -> int:
        q = select(func.coalesce(func.sum(blobs.c.size), 0)).where(blobs.c.uploader == user_id)
        return int((await tx.execute(q)).scalar_one())

    def _check_quota(self, used: int, size: int) -> None:
        """Refuse a blob of `size` bytes (so far) that would take the user past the quota."""
        if self.quota_bytes and used + size > self.quota_bytes:
            raise TokenIMError(
                ErrorCode.QUOTA_EXCEEDED,
                f"Your files on this server may take at most {describe_bytes(self.quota_bytes)} in all, and "
                f"{describe_bytes(used)} are taken: this file does not fit. Ask an admin for more room.",
                details={"quota_bytes": self.quota_bytes, "used_bytes": used},
            )

    def _path(self, blob_id: str) -> Path:
        if not _BLOB_ID.fullmatch(blob_id):
            raise TokenIMError(ErrorCode.NOT_FOUND, "There is no such file.")
        return self._dir / blob_id

    async def do_upload(self, requester: Requester, chunks: AsyncIterator[bytes]) -> BlobResponse:
        """Stream the body to a temporary file, hashing as it goes; refuse past the size limit."""
        used = 0
        if self.quota_bytes:
            async with self._ctx.db.read() as tx:
                used = await self._used(tx, requester.user_id)
            self._check_quota(used, 1)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        blob_id = secrets.token_urlsafe(24)
        tmp = self._dir / f".upload-{blob_id}"
        final: Path | None = None
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
                    self._check_quota(used, size)
                    digest.update(chunk)
                    fh.write(chunk)
            if size == 0:
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "The file is empty.")
            async with self._ctx.db.write() as tx:
                if self.quota_bytes:
                    # The user's row, locked, serialises their uploads' last check (PostgreSQL; SQLite's writers
                    # are serial anyway), so two uploads at once cannot both fit in the same room.
                    await tx.execute(select(users.c.user_id).where(users.c.user_id == requester.user_id).with_for_update())
                    self._check_quota(await self._used(tx, requester.user_id), size)
                await tx.execute(
                    insert(blobs).values(
                        blob_id=blob_id,
                        uploader=requester.user_id,
                        size=size,
                        sha256=digest.hexdigest(),
                        created_at=self._ctx.clock.now_ms(),
                    )
                )
                final = self._path(blob_id)
                tmp.rename(final)  # inside the transaction: a blob that is not recorded leaves no file
        except BaseException:
            for path in (tmp, final):
                with contextlib.suppress(OSError):
                    if path is not None:
                        path.unlink()
            raise
        return BlobResponse(blob_id=blob_id, size=size, sha256=digest.hexdigest())

    async def access_blob(self, blob_id: str) -> tuple[Path, int]:
        path = self._path(blob_id)
        async with self._ctx.db.read() as tx:
            row = (await tx.execute(select(blobs.c.size).where(blobs.c.blob_id == blob_id))).first()
        if row is None or not path.exists():
            raise TokenIMError(ErrorCode.NOT_FOUND, "There is no such file.")
        return path, int(row.size)


def describe_bytes(n: int) -> str:
    """`10 GiB`, `1.5 MiB`, `512 bytes`: a size in words."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} byte{'s' * (n != 1)}"
