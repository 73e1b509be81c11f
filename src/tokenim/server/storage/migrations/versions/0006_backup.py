"""backup: server-side encrypted backup of room keys (versions with their manifest, opaque entries)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_versions",
        sa.Column("user_id", sa.String(320), primary_key=True),
        sa.Column("version", sa.BigInteger(), primary_key=True),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=True),
        sa.Column("counter", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
    )
    op.create_table(
        "backup_entries",
        sa.Column("user_id", sa.String(320), primary_key=True),
        sa.Column("version", sa.BigInteger(), primary_key=True),
        sa.Column("entry_id", sa.String(64), primary_key=True),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id", "version"], ["backup_versions.user_id", "backup_versions.version"], ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("backup_entries")
    op.drop_table("backup_versions")
