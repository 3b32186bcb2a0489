"""notifications and per-user sequence counters

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("link", sa.String(2048), nullable=True),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_read", sa.Boolean, nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dedupe_key", sa.String(300), nullable=True, unique=True),
        sa.UniqueConstraint("user_id", "seq", name="uq_notifications_user_seq"),
    )
    op.create_index("ix_notifications_user_unread", "notifications", ["user_id", "is_read", "seq"])
    op.create_table(
        "user_seqs",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("user_seqs")
    op.drop_index("ix_notifications_user_unread", table_name="notifications")
    op.drop_table("notifications")
