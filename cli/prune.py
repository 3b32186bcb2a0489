"""``notify prune``: run the retention pruner once against the configured database, or with ``--dry-run``
count what it would remove, and print it as a table (``prune_table``, a pure function).

The server prunes by itself every ``NOTIFY_PRUNE_INTERVAL_S``; this command is for a one-off clean-up, a
look before lowering ``NOTIFY_RETENTION_DAYS``, or deployments that prune from a scheduled job. Imports
``common``, ``namaskah_notify.db`` and ``namaskah_notify.retention``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.engine import make_url

from namaskah_notify.config import Settings
from namaskah_notify.retention import Pruned, Pruner

from .common import DataDir, fail, out, settings_from
from .db import DatabaseUrl


def prune_table(pruned: Pruned) -> Table:
    """Rows per table and reason, with the total; the caption says how the run went."""
    verb = "would remove" if pruned.dry_run else "removed"
    table = Table(title=f"notify prune{' --dry-run' if pruned.dry_run else ''}", title_justify="left")
    table.add_column("table")
    table.add_column("reason")
    table.add_column(f"rows {verb}", justify="right")
    for (name, reason), rows in pruned.rows.items():
        table.add_row(name, reason, f"{rows:,}", style=None if rows else "dim")
    table.add_section()
    table.add_row("total", "", f"{pruned.total:,}", style="bold")
    return table


def prune_summary(pruned: Pruned) -> str:
    """How long it took, and the longest write transaction (how long a publish could have waited)."""
    return (f"{pruned.batches} transactions of {pruned.median_batch_s * 1000:.1f} ms (median), the longest "
            f"{pruned.longest_batch_s * 1000:.1f} ms; "
            f"{pruned.elapsed_s:.2f} s in all")


async def _run(settings: Settings, dry_run: bool) -> Pruned:
    pruner = Pruner(settings)
    try:
        return await pruner.run(dry_run=dry_run)
    finally:
        await pruner.close()


def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be removed")] = False,
    retention_days: Annotated[float | None, typer.Option(envvar="NOTIFY_RETENTION_DAYS", min=0,
                                                         help="Keep this many days (0: no age limit) [default: 90]")]
    = None,
    max_per_user: Annotated[int | None, typer.Option(envvar="NOTIFY_MAX_PER_USER", min=0,
                                                     help="Keep each user's newest N (0: no limit) [default: 1000]")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Run the retention pruner once against the configured database (or only count, with --dry-run).

    Removes what the retention rules no longer keep: expired notifications, older than the retention,
    beyond each user's newest N; old idempotency keys; finished verifications and the fake inbox.

    Deletes in small transactions, so a running server keeps publishing meanwhile; waits for no one: when
    another process is pruning the same database, exits 1 without doing anything.

    Exit codes:
      0  done (or counted, with --dry-run)
      1  another process is pruning, or the database cannot be used

    Examples:

      notify prune --dry-run

      NOTIFY_DATABASE_URL=postgresql+asyncpg://notify@db/notify notify prune
    """
    settings = settings_from(database_url=database_url, data_dir=data_dir, retention_days=retention_days,
                             max_per_user=max_per_user)
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise fail(f"no database at {url.database}: pass the server's --data-dir or --database-url")
    try:
        pruned = asyncio.run(_run(settings, dry_run))
    except Exception as exc:
        raise fail(f"cannot prune: {type(exc).__name__}: {exc} (is the schema current? `notify db upgrade`)") from None
    if not pruned.ran:
        raise fail("another process is pruning this database now; nothing was done")
    if as_json:
        print(json.dumps({"dry_run": pruned.dry_run, "removed": pruned.by_table(), "total": pruned.total,
                          "rows": [{"table": t, "reason": r, "rows": n} for (t, r), n in pruned.rows.items()],
                          "transactions": pruned.batches,
                          "median_transaction_ms": round(pruned.median_batch_s * 1000, 2),
                          "longest_transaction_ms": round(pruned.longest_batch_s * 1000, 2),
                          "elapsed_s": round(pruned.elapsed_s, 3)}))
        return
    out.print(prune_table(pruned))
    if not pruned.dry_run:
        out.print(prune_summary(pruned), style="dim")
