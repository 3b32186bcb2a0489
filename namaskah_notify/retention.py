"""Removing what is stored: the retention pruner, and erasing everything of one user.

The pruner removes, in this order: notifications past their ``expires_at``; notifications older than
``NOTIFY_RETENTION_DAYS``; each user's notifications beyond the newest ``NOTIFY_MAX_PER_USER``;
idempotency keys older than ``NOTIFY_IDEMPOTENCY_TTL_S``; finished verifications (received and notified,
expired or cancelled) whose expiry is older than the retention, with their fake-provider inbox rows; and
inbox rows older than the retention. An SMS dedupe key lives on its notification and goes with it.

Every deletion is a transaction of at most ``NOTIFY_PRUNE_BATCH`` rows, ``NOTIFY_PRUNE_PAUSE_S`` apart, so
it holds SQLite's one write lock (or PostgreSQL's row locks) for milliseconds and publishes keep flowing
between batches. One process prunes at a time: a PostgreSQL advisory lock, or on SQLite an exclusive lock
on a file next to the database; a node that finds it taken skips its turn. Deleting leaves every user's
``seq`` where it is: a resume from before the oldest kept gets ``resync_required`` (see ``hub``).

Logged: INFO one line per run that removed something (rows per table, batches, the median and longest);
WARNING a run that failed (the next one tries again). Imports ``config``, ``db``, ``models`` and ``schemas``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Delete, Select, and_, func, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from .config import Settings
from .db import create_engine, translate, writing
from .models import (
    idempotency_keys,
    notifications,
    preferences,
    push_subscriptions,
    sms_fake_inbox,
    user_revocations,
    user_seqs,
    users,
    verifications,
)
from .schemas import utcnow

log = logging.getLogger("namaskah_notify.retention")

ADVISORY_KEY = 7412093386  # the schema migration holds 7412093385
n = notifications
v = verifications
OnRemoved = Callable[[str, int], None]  # (table, rows): a run's removals, for the metrics


@dataclass
class Pruned:
    """What one run removed, or would remove (``dry_run``): rows by ``(table, reason)``, in order."""

    dry_run: bool
    ran: bool = True  # False: another process was pruning, this one skipped its turn
    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    batch_s: list[float] = field(default_factory=list)  # each write transaction, commit included
    elapsed_s: float = 0.0

    @property
    def batches(self) -> int:
        return len(self.batch_s)

    @property
    def longest_batch_s(self) -> float:
        """The longest write transaction: the longest a publish could have waited for the write lock."""
        return max(self.batch_s, default=0.0)

    @property
    def median_batch_s(self) -> float:
        return sorted(self.batch_s)[len(self.batch_s) // 2] if self.batch_s else 0.0

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def by_table(self) -> dict[str, int]:
        tables: dict[str, int] = {}
        for (table, _reason), count in self.rows.items():
            tables[table] = tables.get(table, 0) + count
        return tables


class Pruner:
    """Runs the retention rules once (``run``), or every ``NOTIFY_PRUNE_INTERVAL_S`` in the background;
    ``close()`` when done. ``engine``: the database to prune (default: its own connections to the
    configured one)."""

    def __init__(self, settings: Settings, on_removed: OnRemoved | None = None, *,
                 engine: AsyncEngine | None = None) -> None:
        # Its own connections by default, which on SQLite do not sync to disk at each commit: that halves
        # how long a batch holds the write lock, and loses nothing that matters (the next publish's commit
        # syncs the log, and a batch lost to a power cut is deleted again on the next run).
        self._own = engine is None
        self._engine = engine or create_engine(settings.model_copy(update={"sqlite_synchronous": "NORMAL"}))
        self._retention = timedelta(days=settings.retention_days) if settings.retention_days else None
        self._max_per_user = settings.max_per_user
        self._key_ttl = timedelta(seconds=settings.idempotency_ttl_s)
        self._interval = settings.prune_interval_s
        self._batch = settings.prune_batch
        self._pause = settings.prune_pause_s
        self._on_removed = on_removed
        self._task: asyncio.Task[None] | None = None

    # -- in the background ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._loop(), name="pruner")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self._own:
            await self._engine.dispose()

    async def _loop(self) -> None:
        # Nodes started together spread their first turn (the lock makes them take turns anyway).
        await asyncio.sleep(random.uniform(0.1, min(self._interval, 30.0)))
        while True:
            try:
                pruned = await self.run()
            except Exception as exc:  # the database is down, or busy past its timeout: next turn
                log.warning("pruning failed: %s: %s", type(exc).__name__, exc)
            else:
                if pruned.total:
                    counts = " ".join(f"{table}={rows}" for table, rows in pruned.by_table().items())
                    log.info("pruned: %s batches=%d median_batch_ms=%.1f longest_batch_ms=%.1f elapsed_s=%.1f",
                             counts, pruned.batches, pruned.median_batch_s * 1000, pruned.longest_batch_s * 1000,
                             pruned.elapsed_s)
                elif not pruned.ran:
                    log.debug("pruning skipped: another process is pruning")
            await asyncio.sleep(self._interval)

    # -- one run -------------------------------------------------------------------------------------
    @translate
    async def run(self, *, dry_run: bool = False) -> Pruned:
        """Apply every rule once; with ``dry_run`` only count. Skipped (``ran`` False) while another
        process prunes, except a dry run, which only reads."""
        pruned = Pruned(dry_run)
        started = time.perf_counter()
        async with self._turn(dry_run) as mine:
            if not mine:
                pruned.ran = False
                return pruned
            for reason in self._reasons():
                pruned.rows[reason] = 0  # every rule in the report, in the order applied
            now = utcnow()
            live = or_(n.c.expires_at.is_(None), n.c.expires_at >= now)
            kept = [live]
            await self._notifications(pruned, "expired", [n.c.expires_at < now])
            if self._retention is not None:
                old = n.c.created_at < now - self._retention
                await self._notifications(pruned, "retention", [old, live])
                kept.append(n.c.created_at >= now - self._retention)
            if self._max_per_user:
                await self._over_the_cap(pruned, kept)
            key_is_old = idempotency_keys.c.created_at < now - self._key_ttl
            await self._rows(pruned, ("idempotency_keys", "ttl"), idempotency_keys,
                             (idempotency_keys.c.publisher, idempotency_keys.c.key), [key_is_old])
            if self._retention is not None:
                finished = self._finished(v.c.expires_at < now - self._retention)
                await self._verifications(pruned, finished)
                # Rows of a finished verification went with it (a dry run counts them there, not again).
                await self._rows(pruned, ("sms_fake_inbox", "retention"), sms_fake_inbox,
                                 (sms_fake_inbox.c.verification_id, sms_fake_inbox.c.id),
                                 [sms_fake_inbox.c.received_at < now - self._retention,
                                  sms_fake_inbox.c.verification_id.not_in(select(v.c.id).where(finished))])
        pruned.elapsed_s = time.perf_counter() - started
        if self._on_removed is not None and not dry_run:
            for table, rows in pruned.by_table().items():
                if rows:
                    self._on_removed(table, rows)
        return pruned

    def _reasons(self) -> list[tuple[str, str]]:
        reasons = [("notifications", "expired")]
        if self._retention is not None:
            reasons.append(("notifications", "retention"))
        if self._max_per_user:
            reasons.append(("notifications", "max_per_user"))
        reasons.append(("idempotency_keys", "ttl"))
        if self._retention is not None:
            reasons += [("verifications", "finished"), ("sms_fake_inbox", "finished"), ("sms_fake_inbox", "retention")]
        return reasons

    async def _notifications(self, pruned: Pruned, reason: str, where: list[Any]) -> None:
        await self._rows(pruned, ("notifications", reason), n, (n.c.id,), where)

    async def _over_the_cap(self, pruned: Pruned, kept: list[Any]) -> None:
        """Each user's rows below their newest ``max_per_user`` of those the rules above keep."""
        cap = self._max_per_user
        over = select(n.c.user_id, func.count()).where(*kept).group_by(n.c.user_id).having(func.count() > cap)
        async with self._engine.connect() as connection:
            users_over = (await connection.execute(over)).all()
        for user_id, count in users_over:
            if pruned.dry_run:
                self._add(pruned, ("notifications", "max_per_user"), count - cap)
                continue
            newest = (select(n.c.seq).where(n.c.user_id == user_id, *kept)
                      .order_by(n.c.seq.desc()).offset(cap - 1).limit(1))
            async with self._engine.connect() as connection:
                cutoff = (await connection.execute(newest)).scalar()
            if cutoff is not None:
                await self._notifications(pruned, "max_per_user", [n.c.user_id == user_id, n.c.seq < cutoff])

    async def _rows(self, pruned: Pruned, reason: tuple[str, str], table: Any, key: tuple[Any, ...],
                    where: list[Any]) -> None:
        """Delete ``table``'s rows matching ``where``, ``batch`` per transaction (or count them)."""
        if pruned.dry_run:
            query = select(func.count()).select_from(table).where(*where)
            async with self._engine.connect() as connection:
                self._add(pruned, reason, int((await connection.execute(query)).scalar() or 0))
            return
        chosen = select(*key).where(*where).limit(self._batch)
        match: ColumnElement[bool] = key[0].in_(chosen) if len(key) == 1 else tuple_(*key).in_(chosen)
        await self._batches(pruned, reason, table.delete().where(match))

    @staticmethod
    def _finished(old: ColumnElement[bool]) -> ColumnElement[bool]:
        """Verifications that are over (received and notified, expired or cancelled) and ``old``."""
        return and_(old, or_(v.c.status.in_(("expired", "cancelled")),
                             and_(v.c.status == "received", v.c.notification_id.is_not(None))))

    async def _verifications(self, pruned: Pruned, finished: ColumnElement[bool]) -> None:
        """Finished verifications, with their fake-provider inbox rows in the same transaction."""
        if pruned.dry_run:
            ids = select(v.c.id).where(finished)
            for table, query in (("verifications", select(func.count()).where(finished)),
                                 ("sms_fake_inbox", select(func.count()).where(
                                     sms_fake_inbox.c.verification_id.in_(ids)))):
                async with self._engine.connect() as connection:
                    self._add(pruned, (table, "finished"), int((await connection.execute(query)).scalar() or 0))
            return
        chosen: Select[Any] = select(v.c.id).where(finished).limit(self._batch)
        while True:
            async with writing(self._engine) as connection:
                began = time.perf_counter()  # from here until the commit, other writers wait
                ids = list((await connection.execute(chosen)).scalars())
                if ids:
                    inbox = await connection.execute(
                        sms_fake_inbox.delete().where(sms_fake_inbox.c.verification_id.in_(ids)))
                    await connection.execute(v.delete().where(v.c.id.in_(ids)))
            self._timed(pruned, began)
            self._add(pruned, ("verifications", "finished"), len(ids))
            self._add(pruned, ("sms_fake_inbox", "finished"), int(inbox.rowcount or 0) if ids else 0)
            if len(ids) < self._batch:
                return
            await asyncio.sleep(self._pause)

    async def _batches(self, pruned: Pruned, reason: tuple[str, str], statement: Delete) -> None:
        while True:
            async with writing(self._engine) as connection:
                began = time.perf_counter()  # from here until the commit, other writers wait
                removed = int((await connection.execute(statement)).rowcount or 0)
            self._timed(pruned, began)
            self._add(pruned, reason, removed)
            if removed < self._batch:
                return
            await asyncio.sleep(self._pause)

    @staticmethod
    def _timed(pruned: Pruned, began: float) -> None:
        pruned.batch_s.append(time.perf_counter() - began)

    @staticmethod
    def _add(pruned: Pruned, reason: tuple[str, str], rows: int) -> None:
        pruned.rows[reason] = pruned.rows.get(reason, 0) + rows

    @contextlib.asynccontextmanager
    async def _turn(self, dry_run: bool) -> AsyncIterator[bool]:
        """True while this process may prune: the cluster's one pruner."""
        if dry_run:
            yield True
        elif self._engine.dialect.name == "postgresql":
            async with self._engine.connect() as connection:
                mine = bool((await connection.execute(text(f"SELECT pg_try_advisory_lock({ADVISORY_KEY})"))).scalar())
                await connection.commit()
                try:
                    yield mine
                finally:
                    if mine:
                        await connection.execute(text(f"SELECT pg_advisory_unlock({ADVISORY_KEY})"))
                        await connection.commit()
        else:
            path = self._engine.url.database
            if not path or path == ":memory:":
                yield True
                return
            descriptor = os.open(f"{path}.prune-lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    mine = True
                except BlockingIOError:
                    mine = False
                yield mine
            finally:
                os.close(descriptor)  # releases the lock


# -- erasure -----------------------------------------------------------------------------------------
ERASED = ("notifications", "user_seqs", "verifications", "sms_fake_inbox", "user_revocations",
          "idempotency_keys", "preferences", "push_subscriptions", "users")


@translate
async def erase_user(engine: AsyncEngine, user_id: str, batch: int = 500) -> dict[str, int]:
    """Delete everything stored for ``user_id``: rows per table (``ERASED``). A long history goes first, in
    batches; then, in one transaction, the sequence and whatever was published meanwhile, so the user's
    next notification is ``seq`` 1, and the rest (verifications with their inbox, the revocation, the
    idempotency keys the user published with, their preferences and push subscriptions, and the known-user
    row)."""
    counts = dict.fromkeys(ERASED, 0)
    chosen = select(n.c.id).where(n.c.user_id == user_id).limit(batch)
    while True:
        async with writing(engine) as connection:
            removed = int((await connection.execute(n.delete().where(n.c.id.in_(chosen)))).rowcount or 0)
        counts["notifications"] += removed
        if removed < batch:
            break
    mine = select(v.c.id).where(v.c.user_id == user_id)
    # The sequence first: on PostgreSQL this waits for a publish holding the user's row, whose notification
    # the next statement then sees and deletes.
    statements = [
        ("user_seqs", user_seqs.delete().where(user_seqs.c.user_id == user_id)),
        ("notifications", n.delete().where(n.c.user_id == user_id)),
        ("sms_fake_inbox", sms_fake_inbox.delete().where(sms_fake_inbox.c.verification_id.in_(mine))),
        ("verifications", v.delete().where(v.c.user_id == user_id)),
        ("user_revocations", user_revocations.delete().where(user_revocations.c.user_id == user_id)),
        ("idempotency_keys", idempotency_keys.delete().where(idempotency_keys.c.publisher == user_id)),
        ("preferences", preferences.delete().where(preferences.c.user_id == user_id)),
        ("push_subscriptions", push_subscriptions.delete().where(push_subscriptions.c.user_id == user_id)),
        ("users", users.delete().where(users.c.user_id == user_id)),
    ]
    async with writing(engine) as connection:
        for table, statement in statements:
            counts[table] += int((await connection.execute(statement)).rowcount or 0)
    return counts
