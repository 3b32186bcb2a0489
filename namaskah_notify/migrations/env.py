"""Alembic environment: runs on the connection handed over in ``config.attributes['connection']``
(the app and ``notify db upgrade`` both open it with the service's own engine)."""

from __future__ import annotations

from alembic import context

from namaskah_notify.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through namaskah_notify.db.upgrade_schema or `notify db upgrade`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
