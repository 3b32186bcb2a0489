"""token revocations per user

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_revocations",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("revoked_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_user_revocations_updated_at", "user_revocations", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_user_revocations_updated_at", table_name="user_revocations")
    op.drop_table("user_revocations")
