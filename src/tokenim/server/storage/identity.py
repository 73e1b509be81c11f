"""Master key rotations and device revocations, stored as signed.

The raw signed JSON is the one truth: every other column is read from the parsed object at insert time,
never written on its own, and what is served is the JSON.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, or_, select, update

from tokenim.protocol.identity import Revocation, Rotation
from tokenim.server.storage.client_json import dump_client_json, load_client_json
from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import (
    device_identity_keys,
    device_revocations,
    devices,
    master_key_rotations,
    master_keys,
)


class IdentityStore:
    """Reads and writes the chain and the revocations; every method runs inside the caller's transaction."""

    async def insert_rotation(self, tx: Tx, rot: Rotation, now: int) -> None:
        await tx.execute(
            insert(master_key_rotations).values(
                user_id=rot.user_id,
                old_version=rot.old_version,
                new_version=rot.new_version,
                old_key=rot.old_key,
                new_key=rot.new_key,
                rotation_json=dump_client_json(rot.raw),
                ts=rot.ts,
                created_at=now,
            )
        )

    async def rotations(self, tx: Tx, user_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Each user's rotations as signed, oldest first (users with none are absent)."""
        q = (
            select(master_key_rotations.c.user_id, master_key_rotations.c.rotation_json)
            .where(master_key_rotations.c.user_id.in_(user_ids))
            .order_by(master_key_rotations.c.user_id, master_key_rotations.c.old_version)
        )
        out: dict[str, list[dict[str, Any]]] = {}
        for r in await tx.execute(q):
            out.setdefault(r.user_id, []).append(load_client_json(r.rotation_json, f"rotation of {r.user_id}"))
        return out

    async def master_key_used(self, tx: Tx, user_id: str, public_key: str) -> bool:
        """True when this public key is, or once was, one of the user's master keys."""
        q = select(master_keys.c.version).where(master_keys.c.user_id == user_id, master_keys.c.public_key == public_key)
        return (await tx.execute(q)).first() is not None

    async def insert_revocation(self, tx: Tx, rev: Revocation, now: int) -> None:
        await tx.execute(
            insert(device_revocations).values(
                user_id=rev.user_id,
                device_id=rev.device_id,
                ed25519=rev.ed25519,
                curve25519=rev.curve25519,
                master_key_version=rev.master_key_version,
                revocation_json=dump_client_json(rev.raw),
                ts=rev.ts,
                created_at=now,
            )
        )

    async def revocations(self, tx: Tx, user_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Each user's revocations as signed, in the order they were made (users with none are absent)."""
        q = (
            select(device_revocations.c.user_id, device_revocations.c.revocation_json)
            .where(device_revocations.c.user_id.in_(user_ids))
            .order_by(device_revocations.c.user_id, device_revocations.c.created_at, device_revocations.c.device_id)
        )
        out: dict[str, list[dict[str, Any]]] = {}
        for r in await tx.execute(q):
            out.setdefault(r.user_id, []).append(load_client_json(r.revocation_json, f"revocation of {r.user_id}"))
        return out

    async def count_revocations(self, tx: Tx, user_id: str) -> int:
        q = select(func.count()).select_from(device_revocations).where(device_revocations.c.user_id == user_id)
        return int((await tx.execute(q)).scalar_one())

    async def is_revoked(self, tx: Tx, user_id: str, device_id: str) -> bool:
        """True when the user revoked this device id: it can never log in or be added again."""
        q = select(device_revocations.c.device_id).where(
            device_revocations.c.user_id == user_id, device_revocations.c.device_id == device_id
        )
        return (await tx.execute(q)).first() is not None

    async def keys_device_had(self, tx: Tx, user_id: str, device_id: str) -> set[tuple[str, str]]:
        """Every (algorithm, public key) this user's device id ever published: the current device's and a
        removed one's (`device_identity_keys` outlives devices), empty for an id the user never had."""
        t = device_identity_keys
        q = select(t.c.algorithm, t.c.public_key).where(t.c.user_id == user_id, t.c.device_id == device_id)
        had = {(r.algorithm, r.public_key) for r in await tx.execute(q)}
        # A device older than that table whose key an earlier device had claimed has no rows there.
        row = (
            await tx.execute(
                select(devices.c.ed25519, devices.c.curve25519).where(
                    devices.c.user_id == user_id, devices.c.device_id == device_id
                )
            )
        ).first()
        if row is not None:
            had |= {("ed25519", row.ed25519), ("curve25519", row.curve25519)}
        return had

    async def revoked_key_in(self, tx: Tx, keys: list[str]) -> bool:
        """True when any of these public keys belonged to a revoked device (of any user)."""
        q = select(device_revocations.c.device_id).where(
            or_(device_revocations.c.ed25519.in_(keys), device_revocations.c.curve25519.in_(keys))
        )
        return (await tx.execute(q.limit(1))).first() is not None

    async def replace_device_json(self, tx: Tx, user_id: str, device_id: str, keys: dict[str, Any]) -> None:
        """Store a re-signed device object; its key columns are unchanged (the signed payload is the same)."""
        await tx.execute(
            update(devices)
            .where(devices.c.user_id == user_id, devices.c.device_id == device_id)
            .values(keys_json=dump_client_json(keys))
        )
