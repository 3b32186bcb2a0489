"""SMS verifications with polling leases, and the fake provider's inbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verifications",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("phone_number", sa.String(32), nullable=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.String(256), nullable=True),
        sa.Column("code", sa.String(32), nullable=True),
        sa.Column("notification_id", sa.String(40), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_verifications_status_lease", "verifications", ["status", "lease_until"])
    op.create_index("ix_verifications_status_expires", "verifications", ["status", "expires_at"])
    op.create_table(
        "sms_fake_inbox",
        sa.Column("verification_id", sa.String(40), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sms_fake_inbox")
    op.drop_index("ix_verifications_status_expires", table_name="verifications")
    op.drop_index("ix_verifications_status_lease", table_name="verifications")
    op.drop_table("verifications")
