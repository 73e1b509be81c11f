"""device send counter: each device's last send sequence number, to refuse a forked profile's sends

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("send_seq", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("send_seen", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("send_seen")
        batch.drop_column("send_seq")
