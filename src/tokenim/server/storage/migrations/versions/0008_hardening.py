"""hardening: add-device challenges in their own table (capped per user and address), audit paging index

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "master_challenges",
        sa.Column("nonce_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(320), nullable=False),
        sa.Column("device_id", sa.String(32), nullable=False),
        sa.Column("address_hash", sa.String(64), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_master_challenges_user", "master_challenges", ["user_id"])
    op.create_index("ix_master_challenges_address", "master_challenges", ["address_hash"])
    op.create_index("ix_audit_log_user_id", "audit_log", ["user_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_user_id", table_name="audit_log")
    op.drop_table("master_challenges")
