"""Key backup rows: versions (metadata, the client's manifest) and their opaque entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from tokenim.server.storage.client_json import dump_client_json, load_client_json
from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import backup_entries, backup_readers, backup_versions


@dataclass(frozen=True, slots=True)
class BackupVersionRow:
    version: int
    metadata: dict[str, Any]
    manifest: dict[str, Any] | None
    counter: int
    created_at: int
    updated_at: int


class BackupStore:
    """Every method runs inside the caller's transaction."""

    async def current(self, tx: Tx, user_id: str) -> BackupVersionRow | None:
        """The newest version that was not deleted, or None."""
        q = (
            select(backup_versions)
            .where(backup_versions.c.user_id == user_id, backup_versions.c.deleted_at.is_(None))
            .order_by(backup_versions.c.version.desc())
            .limit(1)
        )
        r = (await tx.execute(q)).first()
        if r is None:
            return None
        manifest = load_client_json(r.manifest_json, f"backup manifest of {user_id}") if r.manifest_json else None
        return BackupVersionRow(
            int(r.version),
            load_client_json(r.metadata_json, f"backup metadata of {user_id}"),
            manifest,
            int(r.counter),
            int(r.created_at),
            int(r.updated_at),
        )

    async def highest_version(self, tx: Tx, user_id: str) -> int:
        """The highest version ever created (deleted ones too): numbers are never reused."""
        q = select(func.max(backup_versions.c.version)).where(backup_versions.c.user_id == user_id)
        return int((await tx.execute(q)).scalar() or 0)

    async def create(self, tx: Tx, user_id: str, version: int, metadata: dict[str, Any], now: int) -> None:
        """A new current version; every older one is marked deleted and loses its entries."""
        await self.retire_all(tx, user_id, now)
        await tx.execute(
            insert(backup_versions).values(
                user_id=user_id, version=version, metadata_json=dump_client_json(metadata), created_at=now, updated_at=now
            )
        )

    async def retire_all(self, tx: Tx, user_id: str, now: int) -> None:
        await tx.execute(delete(backup_entries).where(backup_entries.c.user_id == user_id))
        await tx.execute(
            update(backup_versions)
            .where(backup_versions.c.user_id == user_id, backup_versions.c.deleted_at.is_(None))
            .values(deleted_at=now, manifest_json=None)
        )

    async def advance(self, tx: Tx, user_id: str, version: int, expected: int, manifest: dict[str, Any], now: int) -> bool:
        """Store `manifest` only if the stored counter is still `expected` (compare-and-swap)."""
        result = await tx.execute(
            update(backup_versions)
            .where(
                backup_versions.c.user_id == user_id,
                backup_versions.c.version == version,
                backup_versions.c.counter == expected,
                backup_versions.c.deleted_at.is_(None),
            )
            .values(manifest_json=dump_client_json(manifest), counter=manifest["counter"], updated_at=now)
        )
        return result.rowcount == 1

    async def put_entries(self, tx: Tx, user_id: str, version: int, entries: dict[str, str], now: int) -> None:
        """Add or replace entries by id."""
        if not entries:
            return
        await tx.execute(
            delete(backup_entries).where(
                backup_entries.c.user_id == user_id,
                backup_entries.c.version == version,
                backup_entries.c.entry_id.in_(list(entries)),
            )
        )
        await tx.execute(
            insert(backup_entries),
            [
                {"user_id": user_id, "version": version, "entry_id": eid, "ciphertext": ct, "updated_at": now}
                for eid, ct in entries.items()
            ],
        )

    async def count(self, tx: Tx, user_id: str, version: int) -> int:
        q = select(func.count()).where(backup_entries.c.user_id == user_id, backup_entries.c.version == version)
        return int((await tx.execute(q)).scalar() or 0)

    async def entries(self, tx: Tx, user_id: str, version: int) -> dict[str, str]:
        q = (
            select(backup_entries.c.entry_id, backup_entries.c.ciphertext)
            .where(backup_entries.c.user_id == user_id, backup_entries.c.version == version)
            .order_by(backup_entries.c.entry_id)
        )
        return {r.entry_id: r.ciphertext for r in await tx.execute(q)}

    async def add_reader(self, tx: Tx, user_id: str, version: int, device_id: str) -> None:
        """`device_id` may read backup `version` without a second factor from now on (harmless if it already may)."""
        if not await self.is_reader(tx, user_id, version, device_id):
            await tx.execute(insert(backup_readers).values(user_id=user_id, version=version, device_id=device_id))

    async def is_reader(self, tx: Tx, user_id: str, version: int, device_id: str) -> bool:
        """Whether `device_id` created or already read backup `version` (its rows go when the device goes)."""
        c = backup_readers.c
        q = select(c.device_id).where(c.user_id == user_id, c.version == version, c.device_id == device_id)
        return (await tx.execute(q)).first() is not None
