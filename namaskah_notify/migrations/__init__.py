"""Alembic migrations of the notification tables; run by ``notify db upgrade`` or on start."""
