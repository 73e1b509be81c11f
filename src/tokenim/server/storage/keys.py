"""Published one-time and fallback keys, and their atomic claim."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update

from tokenim.server.storage.client_json import dump_client_json, load_client_json
from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import one_time_keys


@dataclass(frozen=True, slots=True)
class ClaimedKeyRow:
    key_id: str
    key: dict[str, Any]


class OneTimeKeyStore:
    """One-time keys are handed out once: the claim deletes the row it returns in the same statement."""

    async def existing_key_ids(self, tx: Tx, user_id: str, device_id: str, key_ids: list[str]) -> dict[tuple[bool, str], str]:
        """(fallback, key id) of keys already stored for the device, with their stored JSON."""
        q = select(one_time_keys.c.fallback, one_time_keys.c.key_id, one_time_keys.c.key_json).where(
            one_time_keys.c.user_id == user_id,
            one_time_keys.c.device_id == device_id,
            one_time_keys.c.key_id.in_(key_ids),
        )
        return {(bool(r.fallback), r.key_id): r.key_json for r in await tx.execute(q)}

    async def insert_keys(
        self, tx: Tx, user_id: str, device_id: str, keys: list[tuple[str, dict[str, Any], bool]], now: int
    ) -> None:
        if not keys:
            return
        await tx.execute(
            insert(one_time_keys),
            [
                {
                    "user_id": user_id,
                    "device_id": device_id,
                    "key_id": key_id,
                    "key_json": dump_client_json(key),
                    "fallback": fallback,
                    "used": False,
                    "created_at": now,
                }
                for key_id, key, fallback in keys
            ],
        )

    async def replace_fallback(self, tx: Tx, user_id: str, device_id: str) -> None:
        """A new fallback key retires the old one."""
        await tx.execute(
            delete(one_time_keys).where(
                one_time_keys.c.user_id == user_id, one_time_keys.c.device_id == device_id, one_time_keys.c.fallback.is_(True)
            )
        )

    async def count_unclaimed(self, tx: Tx, user_id: str, device_id: str) -> tuple[int, bool]:
        """(number of one-time keys left, whether an unused fallback key is published)."""
        q = (
            select(one_time_keys.c.fallback, func.count().label("n"))
            .where(one_time_keys.c.user_id == user_id, one_time_keys.c.device_id == device_id, one_time_keys.c.used.is_(False))
            .group_by(one_time_keys.c.fallback)
        )
        counts = {bool(r.fallback): int(r.n) for r in await tx.execute(q)}
        return counts.get(False, 0), counts.get(True, 0) > 0

    async def claim(self, tx: Tx, user_id: str, device_id: str) -> ClaimedKeyRow | None:
        """Take one one-time key (oldest first), or fall back to the fallback key, which is not consumed."""
        pick = (
            select(one_time_keys.c.id)
            .where(
                one_time_keys.c.user_id == user_id,
                one_time_keys.c.device_id == device_id,
                one_time_keys.c.fallback.is_(False),
            )
            .order_by(one_time_keys.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        q = delete(one_time_keys).where(one_time_keys.c.id == pick).returning(one_time_keys.c.key_id, one_time_keys.c.key_json)
        row = (await tx.execute(q)).first()
        if row is not None:
            return ClaimedKeyRow(
                row.key_id, load_client_json(row.key_json, f"one-time key {row.key_id} of {user_id} {device_id}")
            )
        fb = and_(
            one_time_keys.c.user_id == user_id,
            one_time_keys.c.device_id == device_id,
            one_time_keys.c.fallback.is_(True),
        )
        row = (
            await tx.execute(
                select(one_time_keys.c.key_id, one_time_keys.c.key_json).where(fb).order_by(one_time_keys.c.id.desc()).limit(1)
            )
        ).first()
        if row is None:
            return None
        await tx.execute(update(one_time_keys).where(fb, one_time_keys.c.key_id == row.key_id).values(used=True))
        return ClaimedKeyRow(row.key_id, load_client_json(row.key_json, f"one-time key {row.key_id} of {user_id} {device_id}"))
