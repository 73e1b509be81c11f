"""The schema as SQLAlchemy Core tables. Alembic migrations create it; a test keeps the two in step."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("user_id", String(320), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("email", String(254), nullable=True),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
)

# A user's chain of master keys; the highest version is current.
master_keys = Table(
    "master_keys",
    metadata,
    Column("user_id", String(320), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("public_key", String(64), nullable=False),
    Column("key_json", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
)

devices = Table(
    "devices",
    metadata,
    Column("user_id", String(320), primary_key=True),
    Column("device_id", String(32), primary_key=True),
    Column("ed25519", String(64), nullable=False),
    Column("curve25519", String(64), nullable=False),
    Column("master_key_version", Integer, nullable=False),
    Column("keys_json", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=True),
    ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
)

one_time_keys = Table(
    "one_time_keys",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("user_id", String(320), nullable=False),
    Column("device_id", String(32), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("key_json", Text, nullable=False),
    Column("fallback", Boolean, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("user_id", "device_id", "fallback", "key_id", name="uq_one_time_keys_device_key"),
    ForeignKeyConstraint(["user_id", "device_id"], ["devices.user_id", "devices.device_id"], ondelete="CASCADE"),
)
Index("ix_one_time_keys_device", one_time_keys.c.user_id, one_time_keys.c.device_id, one_time_keys.c.fallback)

login_challenges = Table(
    "login_challenges",
    metadata,
    Column("nonce_hash", String(64), primary_key=True),
    Column("user_id", String(320), nullable=False),
    Column("device_id", String(32), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

# Access and refresh tokens, stored only as SHA-256 hashes; a login session groups one pair.
tokens = Table(
    "tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("session_id", String(64), nullable=False),
    Column("user_id", String(320), nullable=False),
    Column("device_id", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["user_id", "device_id"], ["devices.user_id", "devices.device_id"], ondelete="CASCADE"),
)
Index("ix_tokens_session", tokens.c.session_id)
Index("ix_tokens_device", tokens.c.user_id, tokens.c.device_id)

invites = Table(
    "invites",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("created_by", String(320), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("grants_admin", Boolean, nullable=False),
    Column("used_by", String(320), nullable=True),
    Column("used_at", BigInteger, nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False),
    Column("event", String(64), nullable=False),
    Column("user_id", String(320), nullable=True),
    Column("device_id", String(32), nullable=True),
    Column("details_json", Text, nullable=False),
)
Index("ix_audit_log_user", audit_log.c.user_id, audit_log.c.ts)
