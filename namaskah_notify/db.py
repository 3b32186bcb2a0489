"""The database border: the async engine and SQLite's pragmas, write transactions (one writer at a time
on SQLite, taking the write lock at BEGIN), driver errors turned into ``Unavailable``, and Alembic
migrations of the schema.

Imports ``config`` and ``errors`` (and ``models`` through the migrations).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import orjson
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .config import Settings
from .errors import Unavailable

_FAILURES = (DBAPIError, SQLAlchemyError, OSError, sqlite3.Error)  # sqlite3: the store's point reads
P = ParamSpec("P")
T = TypeVar("T")
_write_locks: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def create_engine(settings: Settings) -> AsyncEngine:
    """An engine for ``settings``; SQLite gets WAL, a busy timeout and the configured durability."""
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True,
                                   json_serializer=_dumps, json_deserializer=orjson.loads)

    if url.database and url.database != ":memory:":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    # hide_parameters: a failed statement's error (and so a log line) never shows the values it carried.
    engine = create_async_engine(url, connect_args={"timeout": 30}, json_serializer=_dumps,
                                 json_deserializer=orjson.loads, hide_parameters=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={settings.sqlite_synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        dbapi_connection.isolation_level = None  # transactions begin where we say, as below

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        # A write transaction takes the write lock at BEGIN: begun deferred, it could read first and then
        # find that the notification writer (another connection) wrote meanwhile, which SQLite refuses at
        # once instead of waiting its busy timeout.
        write = connection.get_execution_options().get("sqlite_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@contextlib.asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction. SQLite allows one writer at a time, so every writer of this process (the
    notifications' and the verifications') queues on one lock per engine instead of on the busy timeout."""
    if engine.dialect.name != "sqlite":
        async with engine.begin() as connection:
            yield connection
        return
    lock = _write_locks.setdefault(engine, asyncio.Lock())
    async with lock, engine.connect() as connection:
        await connection.execution_options(sqlite_write=True)
        async with connection.begin():
            yield connection


def translated(exc: BaseException) -> BaseException:
    """A database failure as the service's ``Unavailable``; an integrity error or anything else unchanged."""
    if isinstance(exc, _FAILURES) and not isinstance(exc, IntegrityError | sqlite3.IntegrityError):
        error = Unavailable(f"database unavailable: {type(exc).__name__}")
        error.__cause__ = exc
        return error
    return exc


def translate(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorate a store method so that a database failure reaches callers as ``Unavailable``."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except _FAILURES as exc:
            raise translated(exc) from exc

    return wrapper


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
