"""Login challenges, token hashes and invite hashes. Nothing here ever holds a secret in clear."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from tokenim.server.storage.database import Tx
from tokenim.server.storage.tables import invites, login_challenges, tokens


@dataclass(frozen=True, slots=True)
class ChallengeRow:
    user_id: str
    device_id: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class TokenRow:
    kind: str
    session_id: str
    user_id: str
    device_id: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class InviteRow:
    created_by: str | None
    expires_at: int
    grants_admin: bool
    used_by: str | None
    revoked: bool


class AuthStore:
    """Challenges are consumed by deletion, so each one can answer exactly one login."""

    async def insert_challenge(self, tx: Tx, nonce_hash: str, row: ChallengeRow) -> None:
        await tx.execute(
            insert(login_challenges).values(
                nonce_hash=nonce_hash, user_id=row.user_id, device_id=row.device_id, expires_at=row.expires_at
            )
        )

    async def take_challenge(self, tx: Tx, nonce_hash: str) -> ChallengeRow | None:
        q = (
            delete(login_challenges)
            .where(login_challenges.c.nonce_hash == nonce_hash)
            .returning(login_challenges.c.user_id, login_challenges.c.device_id, login_challenges.c.expires_at)
        )
        row = (await tx.execute(q)).first()
        return None if row is None else ChallengeRow(row.user_id, row.device_id, row.expires_at)

    async def purge_challenges(self, tx: Tx, now: int) -> None:
        await tx.execute(delete(login_challenges).where(login_challenges.c.expires_at < now))

    async def insert_token(self, tx: Tx, token_hash: str, row: TokenRow, now: int) -> None:
        await tx.execute(
            insert(tokens).values(
                token_hash=token_hash,
                kind=row.kind,
                session_id=row.session_id,
                user_id=row.user_id,
                device_id=row.device_id,
                created_at=now,
                expires_at=row.expires_at,
            )
        )

    async def get_token(self, tx: Tx, token_hash: str) -> TokenRow | None:
        row = (await tx.execute(select(tokens).where(tokens.c.token_hash == token_hash))).first()
        return None if row is None else TokenRow(row.kind, row.session_id, row.user_id, row.device_id, row.expires_at)

    async def take_token(self, tx: Tx, token_hash: str, kind: str) -> TokenRow | None:
        """Delete and return a token of this kind in one statement: of two concurrent takers, one gets it."""
        q = (
            delete(tokens)
            .where(tokens.c.token_hash == token_hash, tokens.c.kind == kind)
            .returning(tokens.c.kind, tokens.c.session_id, tokens.c.user_id, tokens.c.device_id, tokens.c.expires_at)
        )
        row = (await tx.execute(q)).first()
        return None if row is None else TokenRow(row.kind, row.session_id, row.user_id, row.device_id, row.expires_at)

    async def delete_session(self, tx: Tx, session_id: str) -> None:
        await tx.execute(delete(tokens).where(tokens.c.session_id == session_id))

    async def delete_user_sessions(self, tx: Tx, user_id: str) -> list[str]:
        """End every session of a user, on every device; returns the sessions ended."""
        q = delete(tokens).where(tokens.c.user_id == user_id).returning(tokens.c.session_id)
        return sorted({row.session_id for row in await tx.execute(q)})

    async def delete_device_tokens(self, tx: Tx, user_id: str, device_id: str) -> None:
        await tx.execute(delete(tokens).where(tokens.c.user_id == user_id, tokens.c.device_id == device_id))

    async def insert_invite(
        self, tx: Tx, code_hash: str, created_by: str | None, now: int, expires_at: int, grants_admin: bool
    ) -> None:
        await tx.execute(
            insert(invites).values(
                code_hash=code_hash,
                created_by=created_by,
                created_at=now,
                expires_at=expires_at,
                grants_admin=grants_admin,
                revoked=False,
            )
        )

    async def get_invite(self, tx: Tx, code_hash: str) -> InviteRow | None:
        row = (await tx.execute(select(invites).where(invites.c.code_hash == code_hash))).first()
        if row is None:
            return None
        return InviteRow(row.created_by, row.expires_at, bool(row.grants_admin), row.used_by, bool(row.revoked))

    async def use_invite(self, tx: Tx, code_hash: str, user_id: str, now: int) -> bool:
        """Mark an invite used; false if someone else used it first."""
        q = (
            update(invites)
            .where(invites.c.code_hash == code_hash, invites.c.used_by.is_(None), invites.c.revoked.is_(False))
            .values(used_by=user_id, used_at=now)
        )
        return (await tx.execute(q)).rowcount == 1

    async def revoke_bootstrap_invites(self, tx: Tx) -> None:
        await tx.execute(update(invites).where(invites.c.created_by.is_(None), invites.c.used_by.is_(None)).values(revoked=True))
