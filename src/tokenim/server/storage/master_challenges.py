"""Add-device-by-master-key challenges. Nonces and addresses are stored only as hashes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, select, update

from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import master_challenges


@dataclass(frozen=True, slots=True)
class MasterChallenge:
    user_id: str
    device_id: str
    expires_at: int


class MasterChallengeStore:
    """Every method runs inside the caller's transaction."""

    async def insert(self, tx: Tx, nonce_hash: str, challenge: MasterChallenge, address_hash: str) -> None:
        await tx.execute(
            insert(master_challenges).values(
                nonce_hash=nonce_hash,
                user_id=challenge.user_id,
                device_id=challenge.device_id,
                address_hash=address_hash,
                used=False,
                expires_at=challenge.expires_at,
            )
        )

    async def take(self, tx: Tx, nonce_hash: str) -> MasterChallenge | None:
        """Mark the challenge used and return it; None if unknown or already used. The row stays until it
        expires, so it still counts against the caps."""
        c = master_challenges.c
        row = (
            await tx.execute(
                update(master_challenges)
                .where(and_(c.nonce_hash == nonce_hash, c.used.is_(False)))
                .values(used=True)
                .returning(c.user_id, c.device_id, c.expires_at)
            )
        ).first()
        return None if row is None else MasterChallenge(row.user_id, row.device_id, row.expires_at)

    async def purge(self, tx: Tx, now: int) -> None:
        await tx.execute(delete(master_challenges).where(master_challenges.c.expires_at <= now))

    async def count_live(
        self, tx: Tx, now: int, *, user_id: str | None = None, address_hash: str | None = None
    ) -> tuple[int, int]:
        """Challenges issued and not yet expired (used or not), for one user or one address, with the earliest
        of their `expires_at` (when a place frees up; 0 when there are none)."""
        c = master_challenges.c
        who = c.user_id == user_id if user_id is not None else c.address_hash == address_hash
        q = (
            select(func.count().label("n"), func.coalesce(func.min(c.expires_at), 0).label("earliest"))
            .select_from(master_challenges)
            .where(and_(who, c.expires_at > now))
        )
        row = (await tx.execute(q)).one()
        return int(row.n), int(row.earliest)
