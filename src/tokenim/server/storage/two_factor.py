"""Two-factor rows: a user's sealed TOTP secret and its state, and the hashed recovery codes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update

from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import two_factor, two_factor_recovery_codes


@dataclass(frozen=True, slots=True)
class TwoFactorRow:
    user_id: str
    secret_sealed: bytes
    enabled: bool
    created_at: int
    enabled_at: int | None
    last_step: int
    failures: int
    locked_until: int


class TwoFactorStore:
    """Every method runs inside the caller's transaction."""

    async def get(self, tx: Tx, user_id: str) -> TwoFactorRow | None:
        r = (await tx.execute(select(two_factor).where(two_factor.c.user_id == user_id))).first()
        if r is None:
            return None
        return TwoFactorRow(
            r.user_id,
            bytes(r.secret_sealed),
            bool(r.enabled),
            int(r.created_at),
            None if r.enabled_at is None else int(r.enabled_at),
            int(r.last_step),
            int(r.failures),
            int(r.locked_until),
        )

    async def start(self, tx: Tx, user_id: str, secret_sealed: bytes, now: int) -> None:
        """A new setup, not yet on: replaces an earlier unconfirmed one (and its codes)."""
        await tx.execute(delete(two_factor).where(two_factor.c.user_id == user_id, two_factor.c.enabled.is_(False)))
        await tx.execute(insert(two_factor).values(user_id=user_id, secret_sealed=secret_sealed, enabled=False, created_at=now))

    async def turn_on(self, tx: Tx, user_id: str, step: int, now: int, code_hashes: list[str]) -> bool:
        """Turn a waiting setup on, with `step` spent and these recovery codes; False if none was waiting."""
        c = two_factor.c
        result = await tx.execute(
            update(two_factor)
            .where(c.user_id == user_id, c.enabled.is_(False))
            .values(enabled=True, enabled_at=now, last_step=step, failures=0, locked_until=0)
        )
        if result.rowcount != 1:
            return False
        await tx.execute(delete(two_factor_recovery_codes).where(two_factor_recovery_codes.c.user_id == user_id))
        await tx.execute(insert(two_factor_recovery_codes), [{"user_id": user_id, "code_hash": h} for h in code_hashes])
        return True

    async def remove(self, tx: Tx, user_id: str) -> None:
        """2FA off: the secret and the recovery codes are deleted."""
        await tx.execute(delete(two_factor).where(two_factor.c.user_id == user_id))

    async def spend_step(self, tx: Tx, user_id: str, step: int) -> bool:
        """Record `step` as used, only if it is later than the last one used (False: a replay, or a race lost)."""
        c = two_factor.c
        result = await tx.execute(update(two_factor).where(c.user_id == user_id, c.last_step < step).values(last_step=step))
        return result.rowcount == 1

    async def reset_failures(self, tx: Tx, user_id: str) -> None:
        await tx.execute(update(two_factor).where(two_factor.c.user_id == user_id).values(failures=0))

    async def count_failure(self, tx: Tx, user_id: str, now: int, max_failures: int, lock_ms: int) -> int | None:
        """One more wrong code; at `max_failures` the account's 2FA locks until now + `lock_ms` and the count
        starts again. Returns when the lock ends, or None if not locked."""
        c = two_factor.c
        await tx.execute(update(two_factor).where(c.user_id == user_id).values(failures=c.failures + 1))
        failures = (await tx.execute(select(c.failures).where(c.user_id == user_id))).scalar()
        if failures is None or int(failures) < max_failures:
            return None
        await tx.execute(update(two_factor).where(c.user_id == user_id).values(failures=0, locked_until=now + lock_ms))
        return now + lock_ms

    async def use_recovery_code(self, tx: Tx, user_id: str, code_hash: str, now: int) -> bool:
        """Mark an unused recovery code used; False if it is unknown or was used before."""
        c = two_factor_recovery_codes.c
        result = await tx.execute(
            update(two_factor_recovery_codes)
            .where(c.user_id == user_id, c.code_hash == code_hash, c.used_at.is_(None))
            .values(used_at=now)
        )
        return result.rowcount == 1

    async def recovery_codes_left(self, tx: Tx, user_id: str) -> int:
        c = two_factor_recovery_codes.c
        q = select(func.count()).select_from(two_factor_recovery_codes).where(c.user_id == user_id, c.used_at.is_(None))
        return int((await tx.execute(q)).scalar() or 0)
