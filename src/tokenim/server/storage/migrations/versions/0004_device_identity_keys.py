"""device identity keys: every device key ever published, unique, kept after the device is removed

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "device_identity_keys",
        sa.Column("public_key", sa.String(64), primary_key=True),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(320), nullable=False),
        sa.Column("device_id", sa.String(32), nullable=False),
    )
    # Existing devices claim their keys, oldest first; a key some earlier device already holds stays with it.
    rows = op.get_bind().execute(
        sa.text("SELECT user_id, device_id, curve25519, ed25519 FROM devices ORDER BY created_at, user_id, device_id")
    )
    taken: dict[str, dict[str, str]] = {}
    for row in rows:
        for algorithm, key in (("curve25519", row.curve25519), ("ed25519", row.ed25519)):
            taken.setdefault(key, {"public_key": key, "algorithm": algorithm, "user_id": row.user_id, "device_id": row.device_id})
    if taken:
        op.bulk_insert(table, list(taken.values()))


def downgrade() -> None:
    op.drop_table("device_identity_keys")
