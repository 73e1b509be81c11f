"""audit chain: each audit entry carries the hash of the one before it; where a request came from

Adds `seq`, `prev_hash`, `hash`, `ip` and `user_agent` to `audit_log`, the one-row `audit_chain` head, and
chains the rows already stored, oldest first (by id), from the genesis hash (64 zeros).

Revision ID: 0010
Revises: 0008
"""

import json

import sqlalchemy as sa
from alembic import op

from tokenim.protocol.audit import GENESIS_HASH, audit_entry_hash

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None

PAGE = 1000


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ip", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("user_agent", sa.String(256), nullable=True))
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(64), nullable=True))
    op.create_index("ix_audit_log_seq", "audit_log", ["seq"], unique=True)
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    _chain_existing_rows()


def _chain_existing_rows() -> None:
    """Number and hash every stored row in id order, a page at a time, then record the head."""
    bind = op.get_bind()
    log = sa.table(
        "audit_log",
        sa.column("id", sa.BigInteger()),
        sa.column("ts", sa.BigInteger()),
        sa.column("event", sa.String()),
        sa.column("user_id", sa.String()),
        sa.column("device_id", sa.String()),
        sa.column("details_json", sa.Text()),
        sa.column("seq", sa.BigInteger()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
    )
    seq, prev, last_id = 0, GENESIS_HASH, 0
    while True:
        rows = bind.execute(
            sa.select(log.c.id, log.c.ts, log.c.event, log.c.user_id, log.c.device_id, log.c.details_json)
            .where(log.c.id > last_id)
            .order_by(log.c.id)
            .limit(PAGE)
        ).all()
        if not rows:
            break
        for r in rows:
            seq += 1
            digest = audit_entry_hash(
                seq=seq,
                ts=r.ts,
                event=r.event,
                user_id=r.user_id,
                device_id=r.device_id,
                ip=None,
                user_agent=None,
                details=json.loads(r.details_json),
                prev_hash=prev,
            )
            bind.execute(sa.update(log).where(log.c.id == r.id).values(seq=seq, prev_hash=prev, hash=digest))
            prev, last_id = digest, r.id
    # The head row exists from the start (seq 0: an empty log), so appenders always have a row to lock.
    head = sa.table(
        "audit_chain", sa.column("id", sa.Integer()), sa.column("seq", sa.BigInteger()), sa.column("hash", sa.String())
    )
    bind.execute(head.insert().values(id=1, seq=seq, hash=prev))


def downgrade() -> None:
    op.drop_table("audit_chain")
    op.drop_index("ix_audit_log_seq", table_name="audit_log")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
        batch_op.drop_column("user_agent")
        batch_op.drop_column("ip")
