"""identity: master key rotations and device revocations, each stored as signed

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "master_key_rotations",
        sa.Column("user_id", sa.String(320), primary_key=True),
        sa.Column("old_version", sa.Integer(), primary_key=True),
        sa.Column("new_version", sa.Integer(), nullable=False),
        sa.Column("old_key", sa.String(64), nullable=False),
        sa.Column("new_key", sa.String(64), nullable=False),
        sa.Column("rotation_json", sa.Text(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
    )
    op.create_table(
        "device_revocations",
        sa.Column("user_id", sa.String(320), primary_key=True),
        sa.Column("device_id", sa.String(32), primary_key=True),
        sa.Column("ed25519", sa.String(64), nullable=False),
        sa.Column("curve25519", sa.String(64), nullable=False),
        sa.Column("master_key_version", sa.Integer(), nullable=False),
        sa.Column("revocation_json", sa.Text(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
    )
    op.create_index("ix_device_revocations_ed25519", "device_revocations", ["ed25519"])
    op.create_index("ix_device_revocations_curve25519", "device_revocations", ["curve25519"])


def downgrade() -> None:
    op.drop_table("device_revocations")
    op.drop_table("master_key_rotations")
