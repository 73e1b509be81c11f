"""two-factor authentication: TOTP secrets (sealed), recovery codes (hashed), backup readers

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_readers",
        sa.Column("user_id", sa.String(320), primary_key=True),
        sa.Column("version", sa.BigInteger(), primary_key=True),
        sa.Column("device_id", sa.String(32), primary_key=True),
        sa.ForeignKeyConstraint(
            ["user_id", "version"], ["backup_versions.user_id", "backup_versions.version"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id", "device_id"], ["devices.user_id", "devices.device_id"], ondelete="CASCADE"),
    )
    # Before this revision any device could read its user's backup: every device of a user with a current
    # backup keeps that (no one has 2FA on yet), so their uploads can still catch up once 2FA is turned on.
    op.execute(
        "INSERT INTO backup_readers (user_id, version, device_id) "
        "SELECT b.user_id, b.version, d.device_id FROM backup_versions b JOIN devices d ON d.user_id = b.user_id "
        "WHERE b.deleted_at IS NULL"
    )
    op.create_table(
        "two_factor",
        sa.Column("user_id", sa.String(320), primary_key=True),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("enabled_at", sa.BigInteger(), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_until", sa.BigInteger(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
    )
    op.create_table(
        "two_factor_recovery_codes",
        sa.Column("user_id", sa.String(320), primary_key=True),
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["two_factor.user_id"], ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("two_factor_recovery_codes")
    op.drop_table("two_factor")
    op.drop_table("backup_readers")
