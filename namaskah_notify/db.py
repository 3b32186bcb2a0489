"""Opening the database: the async engine, SQLite's pragmas, and Alembic migrations of the schema.

Imports ``config`` (and ``models`` through the migrations).
"""

from __future__ import annotations

from pathlib import Path

import orjson
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .config import Settings


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def create_engine(settings: Settings) -> AsyncEngine:
    """An engine for ``settings``; SQLite gets WAL, a busy timeout and the configured durability."""
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                                   json_serializer=_dumps, json_deserializer=orjson.loads)

    if url.database and url.database != ":memory:":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30}, json_serializer=_dumps,
                                 json_deserializer=orjson.loads)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={settings.sqlite_synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration for our migrations, optionally bound to an open connection."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Several workers start at once: one migrates, the others wait and then find nothing to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(7412093385)"))
    command.upgrade(alembic_config(connection), revision)


async def upgrade_schema(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe on every start and from several processes at once."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)
