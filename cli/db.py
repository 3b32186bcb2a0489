"""``notify db``: the database schema, by Alembic migration (``upgrade``, ``current``).

Every server also upgrades on start (``NOTIFY_AUTO_MIGRATE``, under a PostgreSQL advisory lock when
several start at once); this command is for deployments that migrate as a separate step.
Imports ``common`` and ``namaskah_notify.db``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from namaskah_notify.config import Settings
from namaskah_notify.db import create_engine, current_revision, upgrade_schema

from .common import DataDir, fail, out, settings_from

db_app = typer.Typer(help="Database schema: apply and inspect migrations.", no_args_is_help=True)

DatabaseUrl = Annotated[str | None, typer.Option("--database-url", envvar="NOTIFY_DATABASE_URL",
                                                 help="SQLAlchemy async URL [default: SQLite in the data folder]")]


async def _run(settings: Settings, revision: str | None) -> str | None:
    engine = create_engine(settings)
    try:
        if revision is not None:
            await upgrade_schema(engine, revision)
        return await current_revision(engine)
    finally:
        await engine.dispose()


@db_app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    settings = settings_from(database_url=database_url, data_dir=data_dir)
    try:
        now = asyncio.run(_run(settings, revision))
    except Exception as exc:
        raise fail(f"migration failed: {type(exc).__name__}: {exc}") from None
    out.print(f"database at revision [bold]{now}[/]")


@db_app.command()
def current(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Print the database's current revision (none before the first upgrade)."""
    settings = settings_from(database_url=database_url, data_dir=data_dir)
    try:
        now = asyncio.run(_run(settings, None))
    except Exception as exc:
        raise fail(f"cannot read the revision: {type(exc).__name__}: {exc}") from None
    out.print(now or "none")
