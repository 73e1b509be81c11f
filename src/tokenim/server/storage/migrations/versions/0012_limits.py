"""limits: rate-limit counters shared by every node; indexes for "did this user ever have this device" and a user's blobs

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("subject", sa.String(340), primary_key=True),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("blocked_until", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_rate_limits_expires", "rate_limits", ["expires_at"])
    op.create_index("ix_device_identity_keys_device", "device_identity_keys", ["user_id", "device_id"])
    op.create_index("ix_blobs_uploader", "blobs", ["uploader"])


def downgrade() -> None:
    op.drop_index("ix_blobs_uploader", table_name="blobs")
    op.drop_index("ix_device_identity_keys_device", table_name="device_identity_keys")
    op.drop_table("rate_limits")
