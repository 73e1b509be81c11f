"""Key backup: the server keeps each user's encrypted room keys and the client's MACed manifest.

It never sees a key and cannot check the manifest's MAC; it checks shapes and limits, that an upload
follows on from the stored manifest (compare-and-swap on its counter, so two devices never overwrite each
other's uploads), and records creation, deletion and each full download in the audit log.
"""

from __future__ import annotations

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.backup import (
    MAX_BACKUP_ENTRIES,
    BackupCreateRequest,
    BackupCreateResponse,
    BackupEntryJson,
    BackupInfoResponse,
    BackupKeysResponse,
    BackupManifest,
    BackupMetadata,
    BackupUploadRequest,
    BackupUploadResponse,
)
from tokenim.server.services.common import Context, Requester, SecondFactor
from tokenim.server.storage.backup import BackupStore, BackupVersionRow
from tokenim.server.storage.database import Tx

NO_BACKUP = "You have no key backup on this server: create one with `tokenim backup create`."


class BackupService:
    """One current backup version per user, with its entries."""

    def __init__(self, ctx: Context, store: BackupStore, second_factor: SecondFactor) -> None:
        self._ctx = ctx
        self._store = store
        self._second_factor = second_factor

    async def _current(self, tx: Tx, user_id: str, version: int | None = None) -> BackupVersionRow:
        row = await self._store.current(tx, user_id)
        if row is None:
            raise TokenIMError(ErrorCode.NO_BACKUP, NO_BACKUP)
        if version is not None and version != row.version:
            raise TokenIMError(
                ErrorCode.BACKUP_OUTDATED,
                f"Backup version {version} is not the current one (the current one is version {row.version}).",
                details={"current_version": row.version},
            )
        return row

    async def do_create(self, requester: Requester, req: BackupCreateRequest, otp: str | None = None) -> BackupCreateResponse:
        """A new version with the next number; older versions and their entries are retired. With 2FA on, `otp`
        must be a current code. The creating device may read the version from then on."""
        async with self._ctx.db.write() as tx:
            now = self._ctx.clock.now_ms()
            await self._second_factor(tx, requester, otp, now)
            version = await self._store.highest_version(tx, requester.user_id) + 1
            await self._store.create(tx, requester.user_id, version, req.metadata.model_dump(mode="json"), now)
            await self._store.add_reader(tx, requester.user_id, version, requester.device_id)
            await self._ctx.auditor.record(tx, "backup.created", requester.user_id, requester.device_id, version=version)
        return BackupCreateResponse(version=version)

    async def access_current(self, requester: Requester) -> BackupInfoResponse:
        async with self._ctx.db.read() as tx:
            row = await self._current(tx, requester.user_id)
            count = await self._store.count(tx, requester.user_id, row.version)
        return BackupInfoResponse(
            version=row.version,
            metadata=BackupMetadata.model_validate(row.metadata, strict=False),
            manifest=BackupManifest.model_validate(row.manifest, strict=False) if row.manifest else None,
            count=count,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def check_upload(self, version: int, req: BackupUploadRequest) -> dict[str, str]:
        """The shape of an upload: the manifest is for this version and follows `expected_counter`; ids unique."""
        if req.manifest.version != version:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, f"The manifest is for version {req.manifest.version}, not {version}.")
        if req.manifest.count > MAX_BACKUP_ENTRIES:
            raise TokenIMError(ErrorCode.TOO_MANY_KEYS, f"A backup holds at most {MAX_BACKUP_ENTRIES} room keys.")
        if req.manifest.counter != req.expected_counter + 1:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "The manifest's counter must be expected_counter + 1.")
        entries = {e.entry_id: e.ciphertext for e in req.entries}
        if len(entries) != len(req.entries):
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "An entry id appears twice in this upload.")
        return entries

    async def do_upload(
        self, requester: Requester, version: int, req: BackupUploadRequest, entries: dict[str, str]
    ) -> BackupUploadResponse:
        """Add the entries and store the new manifest, only if no other upload came first; one transaction."""
        uid = requester.user_id
        async with self._ctx.db.write() as tx:
            row = await self._current(tx, uid, version)
            now = self._ctx.clock.now_ms()
            if not await self._store.advance(tx, uid, version, req.expected_counter, req.manifest.model_dump(mode="json"), now):
                raise TokenIMError(
                    ErrorCode.BACKUP_CONFLICT,
                    f"The backup changed since this device last read it (upload {row.counter}, not "
                    f"{req.expected_counter}): read it again and retry.",
                    details={"current_counter": row.counter},
                )
            await self._store.put_entries(tx, uid, version, entries, now)
            count = await self._store.count(tx, uid, version)
            if count > MAX_BACKUP_ENTRIES:
                raise TokenIMError(
                    ErrorCode.TOO_MANY_KEYS,
                    f"A key backup holds at most {MAX_BACKUP_ENTRIES} room keys; nothing from this upload was stored.",
                    details={"max": MAX_BACKUP_ENTRIES},
                )
            if count != req.manifest.count:
                raise TokenIMError(
                    ErrorCode.INVALID_REQUEST,
                    f"The manifest counts {req.manifest.count} entries but the backup would hold {count}; nothing was stored.",
                )
        return BackupUploadResponse(counter=req.manifest.counter, count=count)

    async def access_keys(self, requester: Requester, version: int, otp: str | None = None) -> BackupKeysResponse:
        """Every entry and the manifest they belong to; the download is recorded in the audit log. A device that
        neither created this version nor read it before is restoring it: with 2FA on, `otp` must be a current
        code (a device catching up with another's uploads needs none); it may read the version from then on."""
        async with self._ctx.db.write() as tx:
            row = await self._current(tx, requester.user_id, version)
            if not await self._store.is_reader(tx, requester.user_id, version, requester.device_id):
                await self._second_factor(tx, requester, otp, self._ctx.clock.now_ms())
                await self._store.add_reader(tx, requester.user_id, version, requester.device_id)
            entries = await self._store.entries(tx, requester.user_id, version)
            await self._ctx.auditor.record(
                tx, "backup.downloaded", requester.user_id, requester.device_id, version=version, count=len(entries)
            )
        return BackupKeysResponse(
            version=version,
            manifest=BackupManifest.model_validate(row.manifest, strict=False) if row.manifest else None,
            entries=[BackupEntryJson(entry_id=k, ciphertext=v) for k, v in entries.items()],
        )

    async def do_delete(self, requester: Requester, version: int, otp: str | None = None) -> None:
        """Delete the current version and its entries (its number is never used again). With 2FA on, `otp` must
        be a current code: deleting loses what replacing it with `do_create` would."""
        async with self._ctx.db.write() as tx:
            await self._current(tx, requester.user_id, version)
            await self._second_factor(tx, requester, otp, self._ctx.clock.now_ms())
            await self._store.retire_all(tx, requester.user_id, self._ctx.clock.now_ms())
            await self._ctx.auditor.record(tx, "backup.deleted", requester.user_id, requester.device_id, version=version)
