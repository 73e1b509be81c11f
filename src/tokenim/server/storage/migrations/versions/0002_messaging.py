"""messaging: rooms, events, to-device, blobs

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("blob_id", sa.String(length=64), nullable=False),
        sa.Column("uploader", sa.String(length=320), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("blob_id"),
    )
    op.create_table(
        "direct_rooms",
        sa.Column("user_a", sa.String(length=320), nullable=False),
        sa.Column("user_b", sa.String(length=320), nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("user_a", "user_b"),
    )
    op.create_table(
        "events",
        sa.Column("pos", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.Column("room_seq", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("sender_device", sa.String(length=32), nullable=True),
        sa.Column("txn_id", sa.String(length=64), nullable=True),
        sa.Column("content_json", sa.Text(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pos"),
        sa.UniqueConstraint("event_id"),
        sa.UniqueConstraint("room_id", "room_seq", name="uq_events_room_seq"),
        sa.UniqueConstraint("sender", "sender_device", "txn_id", name="uq_events_txn"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_room_pos", ["room_id", "pos"], unique=False)

    op.create_table(
        "membership_periods",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=320), nullable=False),
        sa.Column("from_pos", sa.BigInteger(), nullable=False),
        sa.Column("to_pos", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("membership_periods", schema=None) as batch_op:
        batch_op.create_index("ix_membership_periods_user", ["user_id", "room_id"], unique=False)

    op.create_table(
        "rooms",
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("room_id"),
    )
    op.create_table(
        "stream_positions",
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("pos", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stream"),
    )
    op.bulk_insert(
        sa.table("stream_positions", sa.column("stream", sa.String), sa.column("pos", sa.BigInteger)),
        [{"stream": "events", "pos": 0}],
    )
    op.create_table(
        "room_members",
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=320), nullable=False),
        sa.Column("membership", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.room_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("room_id", "user_id"),
    )
    with op.batch_alter_table("room_members", schema=None) as batch_op:
        batch_op.create_index("ix_room_members_user", ["user_id", "membership"], unique=False)

    op.create_table(
        "to_device",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=320), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("sender_device", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("content_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id", "device_id"], ["devices.user_id", "devices.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("to_device", schema=None) as batch_op:
        batch_op.create_index("ix_to_device_recipient", ["user_id", "device_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("to_device", schema=None) as batch_op:
        batch_op.drop_index("ix_to_device_recipient")

    op.drop_table("to_device")
    with op.batch_alter_table("room_members", schema=None) as batch_op:
        batch_op.drop_index("ix_room_members_user")

    op.drop_table("room_members")
    op.drop_table("stream_positions")
    op.drop_table("rooms")
    with op.batch_alter_table("membership_periods", schema=None) as batch_op:
        batch_op.drop_index("ix_membership_periods_user")

    op.drop_table("membership_periods")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_room_pos")

    op.drop_table("events")
    op.drop_table("direct_rooms")
    op.drop_table("blobs")
