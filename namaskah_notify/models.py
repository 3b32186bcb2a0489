"""The database tables (SQLAlchemy Core), shared by SQLite and PostgreSQL. Imports nothing of ours.

``user_seqs`` holds each user's last assigned ``seq``. Bumping it with an upsert in the same transaction
as the insert makes ``seq`` gap-free (a rolled-back insert rolls the bump back too) and, because the
bump locks the user's row until commit, strictly increasing in commit order across processes.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

notifications = Table(
    "notifications",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("title", String(200), nullable=False),
    Column("message", Text, nullable=False),
    Column("type", String(64), nullable=False),
    Column("link", String(2048), nullable=True),
    Column("meta", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("is_read", Boolean, nullable=False, default=False),
    Column("read_at", DateTime(timezone=True), nullable=True),
    # Providers retry webhooks; a repeated message id must not make a second notification.
    Column("dedupe_key", String(300), nullable=True, unique=True),
    UniqueConstraint("user_id", "seq", name="uq_notifications_user_seq"),
)

# The unread badge is read on every connect and every read event: count it from an index alone.
Index("ix_notifications_user_unread", notifications.c.user_id, notifications.c.is_read, notifications.c.seq)

user_seqs = Table(
    "user_seqs",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)
