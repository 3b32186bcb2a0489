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
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.sql import expression

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
    # After ``expires_at`` a notification is neither pushed, replayed nor listed, and the pruner removes it.
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("priority", String(8), nullable=False, server_default="normal"),
    # A newer notification with the same collapse key for the same user replaces this one: ``replaced``
    # hides it from lists, and it no longer counts as unread.
    Column("collapse_key", String(64), nullable=True),
    Column("replaced", Boolean, nullable=False, server_default=expression.false()),
    UniqueConstraint("user_id", "seq", name="uq_notifications_user_seq"),
)

# The unread badge is read on every connect and every read event: count it from an index alone.
Index("ix_notifications_user_unread", notifications.c.user_id, notifications.c.is_read, notifications.c.seq)
# The pruner's two ways in: by age, and by expiry.
Index("ix_notifications_created_at", notifications.c.created_at)
Index("ix_notifications_expires_at", notifications.c.expires_at)
# Replacing the older notification with the same collapse key.
Index("ix_notifications_user_collapse", notifications.c.user_id, notifications.c.collapse_key)

# Every user the service knows: anyone who ever connected or was notified. A broadcast reaches them all.
users = Table(
    "users",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
)

# A user's notification preferences (``preferences.py``), as the API shows them; only users who changed the
# defaults have a row. ``updated_at`` is the database's clock, which orders every node's changes.
preferences = Table(
    "preferences",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("body", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, index=True),
)

# A publisher's ``Idempotency-Key`` (scoped to its token's ``sub``) and the first answer it got: a repeat
# with the same body within the TTL is answered the same; the pruner removes expired keys.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("publisher", String(128), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)

user_seqs = Table(
    "user_seqs",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

# An administrator's revocation: every token of the user issued before ``revoked_before`` is refused.
user_revocations = Table(
    "user_revocations",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("revoked_before", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, index=True),
)

# -- SMS verifications (``sms/``) -------------------------------------------------------------------
# A verification is polled at its provider while pending. ``lease_owner``/``lease_until`` say which node
# polls it: a node renews its leases every round, and a lease that lapses (the node died) is free to claim.
# ``status`` moves pending → received | expired | cancelled; a received row with no ``notification_id``
# yet is still leased and dispatched again until the notification is stored (the dispatcher de-duplicates).
verifications = Table(
    "verifications",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("service", String(64), nullable=False),
    Column("phone_number", String(32), nullable=True),
    Column("provider", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=True),
    Column("message_id", String(256), nullable=True),
    Column("code", String(32), nullable=True),
    Column("notification_id", String(40), nullable=True),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
)

# Claiming and renewing look for pending rows by lease; expiring looks for pending rows by expiry.
Index("ix_verifications_status_lease", verifications.c.status, verifications.c.lease_until)
Index("ix_verifications_status_expires", verifications.c.status, verifications.c.expires_at)

# The fake provider's inbox: what ``POST /api/fake-provider/messages`` put there, shared by every node.
# Message ids are the provider's, unique within one verification (the key's prefix serves the reads).
sms_fake_inbox = Table(
    "sms_fake_inbox",
    metadata,
    Column("verification_id", String(40), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("text", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

# -- Web Push (``push/``) ---------------------------------------------------------------------------
# A browser's push subscription: where to send (``endpoint``, a push service's URL, one user's at a time) and
# the keys to encrypt for it. ``updated_at`` (the database's clock) tells other nodes who subscribed lately;
# ``failures`` counts the pushes that failed for good since the last one that went through.
push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("endpoint", String(2048), primary_key=True),
    Column("user_id", String(128), nullable=False, index=True),
    Column("p256dh", String(100), nullable=False),
    Column("auth", String(40), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, index=True),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("last_error", String(64), nullable=True),
)
