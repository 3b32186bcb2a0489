"""The SQLite writer: stdlib ``sqlite3`` on one connection, in one thread of its own.

Publishes reach the thread through a queue; it takes everything queued (up to a size), commits it in one
``BEGIN IMMEDIATE`` transaction of two prepared statements over JSON arrays (``json_each``) — the seq bump
for all users, and the insert of all rows — so the thread takes the interpreter lock a handful of times
per batch, not per row; syncs once; and hands the batch back to the event loop with one
``call_soon_threadsafe``, where the stored notifications are built. While it syncs, the next batch
queues up. ``synchronous=FULL`` by default: an answered publish survives a power cut.
Imports ``errors``, ``schemas`` and ``writer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from ..errors import Unavailable, Unstorable
from ..schemas import Content, Notification, utcnow
from . import MAX_BATCH_ROWS, Batch, Job, OnCommit, Stored, Write, Writer, hand_over

log = logging.getLogger("namaskah_notify.writer")

_COLUMNS = "id, user_id, seq, title, message, type, link, meta, created_at, is_read, dedupe_key"
_BUMP = ("INSERT INTO user_seqs (user_id, last_seq) SELECT key, value FROM json_each(?) WHERE true "
         "ON CONFLICT (user_id) DO UPDATE SET last_seq = last_seq + excluded.last_seq RETURNING user_id, last_seq")
# Every row of a batch in one statement, from one JSON array: a user's rows take the seqs up to the bumped
# last_seq, in array order (the same order ``Batch.assign`` gives them afterwards).
_INSERT = f"""
INSERT INTO notifications ({_COLUMNS})
SELECT r.id, r.user_id,
       (SELECT last_seq FROM user_seqs WHERE user_seqs.user_id = r.user_id)
         - row_number() OVER (PARTITION BY r.user_id ORDER BY r.ord DESC) + 1,
       r.title, r.message, r.type, r.link, r.meta, ?2, 0, r.dedupe_key
FROM (SELECT key AS ord, value ->> 0 AS id, value ->> 1 AS user_id, value ->> 2 AS title, value ->> 3 AS message,
             value ->> 4 AS type, value ->> 5 AS link, value ->> 6 AS meta, value ->> 7 AS dedupe_key
      FROM json_each(?1)) AS r
"""
_BY_KEYS = f"SELECT {_COLUMNS} FROM notifications WHERE dedupe_key IN (SELECT value FROM json_each(?))"
LINGER_S = 0.001  # how long a commit waits for company while publishes keep coming
_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)


@dataclass(slots=True)
class _Committed:
    """One transaction's writes, answered on the event loop (``Batch.assign``) after the commit."""

    batch: Batch
    last_seqs: dict[str, int]
    now: datetime


Outcome = tuple[int, _Committed | BaseException]  # how many writes, in order, and what became of them


def _stamp(moment: datetime) -> str:
    """The text SQLAlchemy's SQLite ``DateTime`` stores and reads back (UTC, no zone)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _record(row: tuple) -> Notification:
    content = Content(row[3], row[4], row[5], row[6], orjson.loads(row[7]) if row[7] else {})
    created = datetime.fromisoformat(row[8]).replace(tzinfo=UTC)
    return Notification(row[0], row[1], row[2], content, created, bool(row[9]))


class SqliteWriter(Writer):
    def __init__(self, path: str, on_commit: OnCommit, *, synchronous: str = "FULL") -> None:
        self._path = path
        self._synchronous = synchronous
        self._on_commit = on_commit
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="notify-writer", daemon=True)
        self._thread.start()

    def _submit(self, write: Write) -> asyncio.Future[Stored]:
        if self._loop is None or self._thread is None:
            raise Unavailable("the notification writer is not running")
        future = self._loop.create_future()
        self._jobs.put(Job(write, future))
        return future

    async def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None

    # -- the writer thread -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        stopping = False
        busy = False
        while not stopping:
            job = self._jobs.get()
            if job is None:
                break
            if busy:
                # Publishes are arriving faster than one per commit: let a few more join this one. A commit
                # (its sync above all) costs far more than a row, so this cuts the cost per publish; a
                # lone publish never waits.
                time.sleep(LINGER_S)
            jobs, size = [job], len(job.write.user_ids)
            while size < MAX_BATCH_ROWS:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
                size += len(job.write.user_ids)
            writes = [job.write for job in jobs]
            busy = len(jobs) > 1
            try:
                if connection is None:
                    connection = self._connect()
                outcomes = self._commit_isolating(connection, writes)
            except Exception as exc:  # the database, or a bug: either way the callers hear, and the thread lives
                if isinstance(exc, sqlite3.Error):
                    log.error("sqlite write failed for %d publishes: %s", len(writes), exc)
                else:
                    log.exception("sqlite write failed for %d publishes", len(writes))
                outcomes = [(len(writes), Unavailable(f"database unavailable: {type(exc).__name__}"))]
                with contextlib.suppress(sqlite3.Error):
                    connection.close()  # type: ignore[union-attr]
                connection = None
            try:
                self._loop.call_soon_threadsafe(self._finish, jobs, outcomes)  # type: ignore[union-attr]
            except RuntimeError:  # the event loop is gone (shutdown): nobody is waiting any more
                break
        if connection is not None:
            connection.close()

    def _finish(self, jobs: list[Job], outcomes: list[Outcome]) -> None:
        """On the event loop, in commit order: push what was stored, then answer every caller."""
        results: list[Stored | BaseException] = []
        for count, outcome in outcomes:
            if isinstance(outcome, BaseException):
                results += [outcome] * count
            else:
                results += outcome.batch.assign(outcome.last_seqs, outcome.now)[0]
        hand_over(jobs, results, self._on_commit)

    def _commit_isolating(self, connection: sqlite3.Connection, writes: list[Write]) -> list[Outcome]:
        try:
            return [(len(writes), self._commit(connection, writes))]
        except _REFUSED as exc:
            if len(writes) == 1:
                log.warning("the database refused a notification: %s", exc)
                return [(1, Unstorable(f"the database refused this notification: {exc}"[:200]))]
        # One row spoiled the batch: every write on its own, so only that one fails.
        outcomes: list[Outcome] = []
        for write in writes:
            try:
                outcomes += self._commit_isolating(connection, [write])
            except sqlite3.Error as exc:
                outcomes.append((1, Unavailable(f"database unavailable: {type(exc).__name__}")))
        return outcomes

    def _commit(self, connection: sqlite3.Connection, writes: list[Write]) -> _Committed:
        """One transaction of four statements, whatever the batch's size; the rows are built afterwards,
        on the event loop, so this thread holds the interpreter lock as little as it can."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            keys = [w.dedupe_key for w in writes if w.dedupe_key is not None]
            before = {}
            if keys:
                rows = connection.execute(_BY_KEYS, (orjson.dumps(keys).decode(),)).fetchall()
                before = {row[10]: _record(row) for row in rows}
            batch = Batch(writes, before)
            last = {}
            if batch.users:
                counts = orjson.dumps({user: batch.counts[user] for user in batch.users}).decode()
                last = dict(connection.execute(_BUMP, (counts,)).fetchall())
                rows = []
                for write in batch.new_writes():
                    c = write.content
                    meta = orjson.dumps(c.meta).decode()
                    key = write.dedupe_key if len(write.user_ids) == 1 else None
                    rows += [(i, u, c.title, c.message, c.type, c.link, meta, key)
                             for i, u in zip(write.ids, write.user_ids, strict=True)]
                now = utcnow()
                connection.execute(_INSERT, (orjson.dumps(rows).decode(), _stamp(now)))
            else:
                now = utcnow()
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        return _Committed(batch, last, now)
