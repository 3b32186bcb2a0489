"""Opening the database: the async engine, SQLite's pragmas, and the schema for the embedded default.

Imports ``config`` and ``models``.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .config import Settings
from .models import metadata


def create_engine(settings: Settings) -> AsyncEngine:
    """An engine for ``settings``; SQLite gets WAL, a busy timeout and the configured durability."""
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)

    if url.database and url.database != ":memory:":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={settings.sqlite_synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


async def create_schema(engine: AsyncEngine) -> None:
    """Create missing tables; safe on every start."""
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
