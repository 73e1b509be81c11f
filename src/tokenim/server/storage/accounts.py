"""Users, their chain of master keys, and their devices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update

from tokenim.server.storage.client_json import dump_client_json, load_client_json
from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import devices, master_keys, users

FIRST_USER_LOCK = 0x546F6B656E494D01  # an arbitrary 64-bit advisory lock key ("TokenIM" + 1)


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: str
    username: str
    email: str | None
    is_admin: bool
    created_at: int


@dataclass(frozen=True, slots=True)
class DeviceRow:
    user_id: str
    device_id: str
    ed25519: str
    curve25519: str
    master_key_version: int
    keys: dict[str, Any]
    created_at: int
    last_seen_at: int | None


SEND_WINDOW = 62  # how far below its highest number a device's send may still arrive (a BIGINT bitmap)
_WINDOW_MASK = (1 << SEND_WINDOW) - 1


class AccountStore:
    """Reads and writes accounts; every method runs inside the caller's transaction."""

    async def count_users(self, tx: Tx) -> int:
        return int((await tx.execute(select(func.count()).select_from(users))).scalar_one())

    async def lock_first_user(self, tx: Tx) -> None:
        """Hold the "first account" lock until this transaction ends, across every server on the database.

        PostgreSQL: a transaction-level advisory lock; a second registration waits here, and its next
        statement (READ COMMITTED) sees the user the first one committed. SQLite needs nothing: one
        write transaction at a time holds the database.
        """
        if await tx.run_sync(lambda conn: conn.dialect.name) == "postgresql":
            await tx.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_USER_LOCK})

    async def insert_user(self, tx: Tx, user: UserRow) -> None:
        await tx.execute(
            insert(users).values(
                user_id=user.user_id,
                username=user.username,
                email=user.email,
                is_admin=user.is_admin,
                created_at=user.created_at,
            )
        )

    async def get_user(self, tx: Tx, user_id: str) -> UserRow | None:
        row = (await tx.execute(select(users).where(users.c.user_id == user_id))).first()
        if row is None:
            return None
        return UserRow(row.user_id, row.username, row.email, bool(row.is_admin), row.created_at)

    async def username_exists(self, tx: Tx, username: str) -> bool:
        return (await tx.execute(select(users.c.user_id).where(users.c.username == username))).first() is not None

    async def insert_master_key(self, tx: Tx, user_id: str, version: int, public_key: str, key: dict[str, Any], now: int) -> None:
        await tx.execute(
            insert(master_keys).values(
                user_id=user_id, version=version, public_key=public_key, key_json=dump_client_json(key), created_at=now
            )
        )

    async def current_master_keys(self, tx: Tx, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The newest master key object of each user that has one."""
        newest = (
            select(master_keys.c.user_id, func.max(master_keys.c.version).label("v"))
            .where(master_keys.c.user_id.in_(user_ids))
            .group_by(master_keys.c.user_id)
            .subquery()
        )
        q = select(master_keys.c.user_id, master_keys.c.key_json).join(
            newest, (master_keys.c.user_id == newest.c.user_id) & (master_keys.c.version == newest.c.v)
        )
        return {r.user_id: load_client_json(r.key_json, f"master key of {r.user_id}") for r in await tx.execute(q)}

    async def insert_device(self, tx: Tx, d: DeviceRow) -> None:
        await tx.execute(
            insert(devices).values(
                user_id=d.user_id,
                device_id=d.device_id,
                ed25519=d.ed25519,
                curve25519=d.curve25519,
                master_key_version=d.master_key_version,
                keys_json=dump_client_json(d.keys),
                created_at=d.created_at,
                last_seen_at=d.last_seen_at,
            )
        )

    async def get_device(self, tx: Tx, user_id: str, device_id: str) -> DeviceRow | None:
        q = select(devices).where(devices.c.user_id == user_id, devices.c.device_id == device_id)
        row = (await tx.execute(q)).first()
        return None if row is None else _device(row)

    async def list_devices(self, tx: Tx, user_ids: list[str]) -> list[DeviceRow]:
        q = select(devices).where(devices.c.user_id.in_(user_ids)).order_by(devices.c.user_id, devices.c.created_at)
        return [_device(r) for r in await tx.execute(q)]

    async def count_devices(self, tx: Tx, user_id: str) -> int:
        q = select(func.count()).select_from(devices).where(devices.c.user_id == user_id)
        return int((await tx.execute(q)).scalar_one())

    async def touch_device(self, tx: Tx, user_id: str, device_id: str, now: int) -> None:
        await tx.execute(
            update(devices).where(devices.c.user_id == user_id, devices.c.device_id == device_id).values(last_seen_at=now)
        )

    async def take_send_seq(self, tx: Tx, user_id: str, device_id: str, seq: int) -> int | None:
        """Record `seq` as used by the device if it never was: higher than its highest number, or one of the
        SEND_WINDOW numbers below that not yet used. Returns None when recorded, else the highest number used
        (-1 if the device does not exist); a refusal writes nothing."""
        where = (devices.c.user_id == user_id, devices.c.device_id == device_id)
        row = (await tx.execute(select(devices.c.send_seq, devices.c.send_seen).where(*where).with_for_update())).first()
        if row is None:
            return -1
        last, seen = int(row.send_seq), int(row.send_seen)
        if seq > last:  # bit i stands for number last - 1 - i: shift, and mark the old highest one
            shift = seq - last
            # A jump past the window forgets every older number: constant work however far a device jumps.
            seen = ((seen << shift) | (1 << (shift - 1))) & _WINDOW_MASK if shift <= SEND_WINDOW else 0
            last = seq
        elif last - SEND_WINDOW <= seq < last and not seen >> (last - 1 - seq) & 1:
            seen |= 1 << (last - 1 - seq)
        else:
            return last
        await tx.execute(update(devices).where(*where).values(send_seq=last, send_seen=seen))
        return None

    async def delete_device(self, tx: Tx, user_id: str, device_id: str) -> bool:
        q = delete(devices).where(devices.c.user_id == user_id, devices.c.device_id == device_id)
        return (await tx.execute(q)).rowcount > 0


def _device(row: Any) -> DeviceRow:
    return DeviceRow(
        user_id=row.user_id,
        device_id=row.device_id,
        ed25519=row.ed25519,
        curve25519=row.curve25519,
        master_key_version=row.master_key_version,
        keys=load_client_json(row.keys_json, f"keys of device {row.user_id} {row.device_id}"),
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
    )
