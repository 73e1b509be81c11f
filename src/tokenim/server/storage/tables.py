"""The schema as SQLAlchemy Core tables. Alembic migrations create it; a test keeps the two in step."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
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
    # The highest send number this device has used, and which of the 62 below it were used too (bit i:
    # send_seq - 1 - i), so sends may arrive a little out of order (docs/protocol.md, "Forked profiles").
    Column("send_seq", BigInteger, nullable=False, server_default="0"),
    Column("send_seen", BigInteger, nullable=False, server_default="0"),
    ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
)

# Every device identity key (Curve25519 and Ed25519) ever published, with the device that published it.
# Rows outlive their device (no foreign key): a key once used by one device is never accepted for another,
# so nobody can publish someone else's identity key as their own (docs/protocol.md, "Device keys").
device_identity_keys = Table(
    "device_identity_keys",
    metadata,
    Column("public_key", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("user_id", String(320), nullable=False),
    Column("device_id", String(32), nullable=False),
)
# The login challenge asks whether a user ever had a device id (docs/threat-model.md, "Accounts stay private").
Index("ix_device_identity_keys_device", device_identity_keys.c.user_id, device_identity_keys.c.device_id)

# Each rotation of a user's master key, as signed (`rotation_json` is the truth; the other columns are
# read from it). The primary key allows one rotation out of each version: a chain cannot fork here.
master_key_rotations = Table(
    "master_key_rotations",
    metadata,
    Column("user_id", String(320), primary_key=True),
    Column("old_version", Integer, primary_key=True),
    Column("new_version", Integer, nullable=False),
    Column("old_key", String(64), nullable=False),
    Column("new_key", String(64), nullable=False),
    Column("rotation_json", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
)

# Revoked devices, as signed by the master key (`revocation_json` is the truth). Kept forever: the device
# id and its keys are refused from then on. No foreign key to `devices`: the device row is deleted.
device_revocations = Table(
    "device_revocations",
    metadata,
    Column("user_id", String(320), primary_key=True),
    Column("device_id", String(32), primary_key=True),
    Column("ed25519", String(64), nullable=False),
    Column("curve25519", String(64), nullable=False),
    Column("master_key_version", Integer, nullable=False),
    Column("revocation_json", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
)
Index("ix_device_revocations_ed25519", device_revocations.c.ed25519)
Index("ix_device_revocations_curve25519", device_revocations.c.curve25519)

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
    Column("ip", String(64), nullable=True),  # where the request came from, when a request caused the entry
    Column("user_agent", String(256), nullable=True),
    # The hash chain (services/audit.py, protocol/audit.py). Null only inside the transaction that wrote the
    # row: the chain is extended just before it commits.
    Column("seq", BigInteger, nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
)
Index("ix_audit_log_user", audit_log.c.user_id, audit_log.c.ts)
Index("ix_audit_log_user_id", audit_log.c.user_id, audit_log.c.id)
Index("ix_audit_log_seq", audit_log.c.seq, unique=True)

# The chain's head: the last entry written. One row (id 1); appenders lock it (FOR UPDATE on PostgreSQL),
# so concurrent transactions extend the chain one after the other and it never forks. A log shortened at
# its end shows against it.
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Add-device-by-master-key challenges (nonce kept only as a hash). A used challenge stays until it expires,
# so the caps on challenges issued per user and per address also bound the refusals they can cause.
master_challenges = Table(
    "master_challenges",
    metadata,
    Column("nonce_hash", String(64), primary_key=True),
    Column("user_id", String(320), nullable=False),
    Column("device_id", String(32), nullable=False),
    Column("address_hash", String(64), nullable=False),
    Column("used", Boolean, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)
Index("ix_master_challenges_user", master_challenges.c.user_id)
Index("ix_master_challenges_address", master_challenges.c.address_hash)

# Rate-limit counters (src/tokenim/server/services/limits.py): per kind of attempt and subject (a user id, or
# `addr:` and a SHA-256 of the client's address or IPv6 /64). Expired rows are purged as the limiter runs.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("subject", String(340), primary_key=True),
    Column("attempts", BigInteger, nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("blocked_until", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)
Index("ix_rate_limits_expires", rate_limits.c.expires_at)
# ---- the outbox: mail and text messages waiting to go out (server/outbox.py) ------------------

# Enqueued inside the transaction of the change that causes it, delivered by the scheduler after commit.
# The recipient, subject and text are sealed under the server key (server/secret_box.py): a message may
# carry a one-time code. A row is deleted once sent, or given up after a day.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("channel", String(8), nullable=False),  # "email" or "sms"
    Column("kind", String(64), nullable=False),  # what it is, for the logs: "security.new_device", …
    Column("user_id", String(320), nullable=True),
    Column("sealed", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(120), nullable=True),  # the failure's kind (class, status), never its text
)
Index("ix_outbox_next_attempt_at", outbox.c.next_attempt_at)

# ---- linking a new device (rendezvous slots; the server only relays) ----------------------------

# The slot's id (the code's first part), the new device's mailbox token and the client's address are kept
# only as SHA-256 hashes; the code's secret half never reaches the server.
link_slots = Table(
    "link_slots",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(320), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("address_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("approver_device", String(32), nullable=True),
    Column("fail_reason", String(16), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
)
Index("ix_link_slots_user", link_slots.c.user_id)
Index("ix_link_slots_address", link_slots.c.address_hash)

link_messages = Table(
    "link_messages",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("side", String(16), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("body", Text, nullable=False),
    ForeignKeyConstraint(["id_hash"], ["link_slots.id_hash"], ondelete="CASCADE"),
)

# ---- messaging -------------------------------------------------------------------------------

rooms = Table(
    "rooms",
    metadata,
    Column("room_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # "direct" or "group"
    Column("name", String(255), nullable=False),
    Column("created_by", String(320), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False, default=0),
)

# One row per (room, user): current membership and role. Periods of membership live in `membership_periods`.
room_members = Table(
    "room_members",
    metadata,
    Column("room_id", String(64), primary_key=True),
    Column("user_id", String(320), primary_key=True),
    Column("membership", String(16), nullable=False),  # invite | join | leave
    Column("role", String(16), nullable=False),  # admin | member
    Column("updated_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["room_id"], ["rooms.room_id"], ondelete="CASCADE"),
)
Index("ix_room_members_user", room_members.c.user_id, room_members.c.membership)

# Which stream positions of a room a user may see: from their join to their leave (inclusive).
membership_periods = Table(
    "membership_periods",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("room_id", String(64), nullable=False),
    Column("user_id", String(320), nullable=False),
    Column("from_pos", BigInteger, nullable=False),
    Column("to_pos", BigInteger, nullable=True),
)
Index("ix_membership_periods_user", membership_periods.c.user_id, membership_periods.c.room_id)

direct_rooms = Table(
    "direct_rooms",
    metadata,
    Column("user_a", String(320), primary_key=True),
    Column("user_b", String(320), primary_key=True),
    Column("room_id", String(64), nullable=False),
)

# The single stream counter: taking it with a row lock makes commit order equal position order.
stream_positions = Table(
    "stream_positions",
    metadata,
    Column("stream", String(32), primary_key=True),
    Column("pos", BigInteger, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("room_id", String(64), nullable=False),
    Column("room_seq", BigInteger, nullable=False),
    Column("type", String(64), nullable=False),
    Column("sender", String(320), nullable=False),
    Column("sender_device", String(32), nullable=True),
    Column("txn_id", String(64), nullable=True),
    Column("content_json", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    UniqueConstraint("room_id", "room_seq", name="uq_events_room_seq"),
    UniqueConstraint("sender", "sender_device", "txn_id", name="uq_events_txn"),
)
Index("ix_events_room_pos", events.c.room_id, events.c.pos)

to_device = Table(
    "to_device",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("user_id", String(320), nullable=False),
    Column("device_id", String(32), nullable=False),
    Column("sender", String(320), nullable=False),
    Column("sender_device", String(32), nullable=False),
    Column("type", String(64), nullable=False),
    Column("content_json", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["user_id", "device_id"], ["devices.user_id", "devices.device_id"], ondelete="CASCADE"),
    # Ids must never be reused after acknowledged rows are deleted: clients track "after id N".
    sqlite_autoincrement=True,
)
Index("ix_to_device_recipient", to_device.c.user_id, to_device.c.device_id, to_device.c.id)

blobs = Table(
    "blobs",
    metadata,
    Column("blob_id", String(64), primary_key=True),
    Column("uploader", String(320), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
Index("ix_blobs_uploader", blobs.c.uploader)  # a user's storage quota sums their blobs

# Key backup (docs/protocol.md, "Key backup"): one row per version a user created; only the newest is current,
# older ones keep their number (versions only grow) but lose their entries. Everything stored is opaque
# ciphertext and the client's MACed manifest; `counter` is read from the manifest when it is stored.
backup_versions = Table(
    "backup_versions",
    metadata,
    Column("user_id", String(320), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("metadata_json", Text, nullable=False),
    Column("manifest_json", Text, nullable=True),
    Column("counter", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("deleted_at", BigInteger, nullable=True),
    ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
)

backup_entries = Table(
    "backup_entries",
    metadata,
    Column("user_id", String(320), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("entry_id", String(64), primary_key=True),
    Column("ciphertext", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["user_id", "version"], ["backup_versions.user_id", "backup_versions.version"], ondelete="CASCADE"),
)

# Which devices may read a backup version's entries without a second factor: the one that created it and
# those that downloaded it (docs/protocol.md, "Two-factor authentication"). Rows go with their device.
backup_readers = Table(
    "backup_readers",
    metadata,
    Column("user_id", String(320), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("device_id", String(32), primary_key=True),
    ForeignKeyConstraint(["user_id", "version"], ["backup_versions.user_id", "backup_versions.version"], ondelete="CASCADE"),
    ForeignKeyConstraint(["user_id", "device_id"], ["devices.user_id", "devices.device_id"], ondelete="CASCADE"),
)

# ---- two-factor authentication (TOTP, RFC 6238) ------------------------------------------------------

# One row per user who started or finished setting up 2FA. The TOTP secret is sealed by the server key
# (server/secret_box.py), never stored in clear. `last_step` is the last time step whose code was accepted
# (a code is good once); `failures` counts wrong codes since the last good one, and `locked_until` ends a lock.
two_factor = Table(
    "two_factor",
    metadata,
    Column("user_id", String(320), primary_key=True),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("enabled_at", BigInteger, nullable=True),
    Column("last_step", BigInteger, nullable=False, server_default="0"),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("locked_until", BigInteger, nullable=False, server_default="0"),
    ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
)

# The ten one-time recovery codes of a user's 2FA, as SHA-256 hashes only; a used one keeps its row.
two_factor_recovery_codes = Table(
    "two_factor_recovery_codes",
    metadata,
    Column("user_id", String(320), primary_key=True),
    Column("code_hash", String(64), primary_key=True),
    Column("used_at", BigInteger, nullable=True),
    ForeignKeyConstraint(["user_id"], ["two_factor.user_id"], ondelete="CASCADE"),
)
