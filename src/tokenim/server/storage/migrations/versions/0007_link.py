"""link: rendezvous slots and mailboxes for linking a new device (the server only relays)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "link_slots",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(320), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("address_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("approver_device", sa.String(32), nullable=True),
        sa.Column("fail_reason", sa.String(16), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
    )
    op.create_index("ix_link_slots_user", "link_slots", ["user_id"])
    op.create_index("ix_link_slots_address", "link_slots", ["address_hash"])
    op.create_table(
        "link_messages",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("side", sa.String(16), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["id_hash"], ["link_slots.id_hash"], ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("link_messages")
    op.drop_table("link_slots")
