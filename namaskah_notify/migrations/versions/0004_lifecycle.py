"""lifecycle: expiry, priority, collapse; known users; idempotency keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as table:
        table.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("priority", sa.String(8), nullable=False, server_default="normal"))
        table.add_column(sa.Column("collapse_key", sa.String(64), nullable=True))
        table.add_column(sa.Column("replaced", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("ix_notifications_created_at", "notifications", ["created_at"])
    op.create_index("ix_notifications_expires_at", "notifications", ["expires_at"])
    op.create_index("ix_notifications_user_collapse", "notifications", ["user_id", "collapse_key"])
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    # Everyone notified so far is known.
    op.execute("INSERT INTO users (user_id, first_seen, last_seen) "
               "SELECT user_id, MIN(created_at), MAX(created_at) FROM notifications GROUP BY user_id")
    op.create_table(
        "idempotency_keys",
        sa.Column("publisher", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("users")
    op.drop_index("ix_notifications_user_collapse", table_name="notifications")
    op.drop_index("ix_notifications_expires_at", table_name="notifications")
    op.drop_index("ix_notifications_created_at", table_name="notifications")
    with op.batch_alter_table("notifications") as table:
        table.drop_column("replaced")
        table.drop_column("collapse_key")
        table.drop_column("priority")
        table.drop_column("expires_at")
