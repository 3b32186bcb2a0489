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
from datetime import UTC, datetime, timedelta

import orjson

from ..errors import Unavailable, Unstorable
from ..schemas import Content, Notification, utcnow
from . import MAX_BATCH_ROWS, Batch, Job, OnCommit, Row, Stored, Write, Writer, hand_over, idempotency_keys

log = logging.getLogger("namaskah_notify.writer")

_COLUMNS = ("id, user_id, seq, title, message, type, link, meta, created_at, is_read, dedupe_key, priority, "
            "expires_at, collapse_key")
_BUMP = ("INSERT INTO user_seqs (user_id, last_seq) SELECT key, value FROM json_each(?) WHERE true "
         "ON CONFLICT (user_id) DO UPDATE SET last_seq = last_seq + excluded.last_seq RETURNING user_id, last_seq")
# Every row of a batch in one statement, from one JSON array: a user's rows take the seqs up to the bumped
# last_seq, in array order (the same order ``Batch.assign`` gives them afterwards).
_INSERT = f"""
INSERT INTO notifications ({_COLUMNS})
SELECT r.id, r.user_id,
       (SELECT last_seq FROM user_seqs WHERE user_seqs.user_id = r.user_id)
         - row_number() OVER (PARTITION BY r.user_id ORDER BY r.ord DESC) + 1,
       r.title, r.message, r.type, r.link, r.meta, ?2, 0, r.dedupe_key, r.priority, r.expires_at, r.collapse_key
FROM (SELECT key AS ord, value ->> 0 AS id, value ->> 1 AS user_id, value ->> 2 AS title, value ->> 3 AS message,
             value ->> 4 AS type, value ->> 5 AS link, value ->> 6 AS meta, value ->> 7 AS dedupe_key,
             value ->> 8 AS priority, value ->> 9 AS expires_at, value ->> 10 AS collapse_key
      FROM json_each(?1)) AS r
"""
_BY_KEYS = f"SELECT {_COLUMNS}, read_at FROM notifications WHERE dedupe_key IN (SELECT value FROM json_each(?))"
# Everyone notified becomes known (a broadcast reaches them).
_USERS = ("INSERT INTO users (user_id, first_seen, last_seen) SELECT value, ?2, ?2 FROM json_each(?1) WHERE true "
          "ON CONFLICT (user_id) DO NOTHING")
# A newer notification with the same collapse key replaces the older ones: hidden, and no longer unread.
_COLLAPSE = ("UPDATE notifications SET replaced = 1, is_read = 1 WHERE user_id = ?1 AND collapse_key = ?2 "
             "AND replaced = 0 AND seq < (SELECT MAX(seq) FROM notifications WHERE user_id = ?1 AND collapse_key = ?2)")
_KEYS_BEFORE = ("SELECT publisher, key, request_hash, status, response FROM idempotency_keys WHERE created_at > ?2 "
                "AND (publisher, key) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))")
_KEYS_INSERT = ("INSERT INTO idempotency_keys (publisher, key, request_hash, status, response, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (publisher, key) DO UPDATE SET request_hash = "
                "excluded.request_hash, status = excluded.status, response = excluded.response, "
                "created_at = excluded.created_at")
LINGER_S = 0.001  # how long a commit waits for company while publishes keep coming
_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)


@dataclass(slots=True)
class _Committed:
    """One transaction's writes, answered on the event loop (``Batch.assign``) after the commit."""

    batch: Batch
    last_seqs: dict[str, int]
    now: datetime
    assigned: tuple[list[Stored | BaseException], list[Row]] | None = None  # when already done in the thread


Outcome = tuple[int, _Committed | BaseException]  # how many writes, in order, and what became of them


def _stamp(moment: datetime) -> str:
    """The text SQLAlchemy's SQLite ``DateTime`` stores and reads back (UTC, no zone)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None


def _record(row: tuple) -> Notification:
    content = Content(row[3], row[4], row[5], row[6], orjson.loads(row[7]) if row[7] else {}, row[11],
                      _moment(row[12]), row[13])
    return Notification(row[0], row[1], row[2], content, _moment(row[8]), bool(row[9]),  # type: ignore[arg-type]
                        _moment(row[14]))


class SqliteWriter(Writer):
    def __init__(self, path: str, on_commit: OnCommit, *, synchronous: str = "FULL",
                 idempotency_ttl: timedelta = timedelta(days=1)) -> None:
        super().__init__()
        self._path = path
        self._idempotency_ttl = idempotency_ttl
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
                results += (outcome.assigned or outcome.batch.assign(outcome.last_seqs, outcome.now))[0]
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
            scoped = idempotency_keys(writes)
            keys_before = {}
            if scoped:
                since = _stamp(utcnow() - self._idempotency_ttl)
                found = connection.execute(_KEYS_BEFORE, (orjson.dumps(scoped).decode(), since)).fetchall()
                keys_before = {(p, k): (h, status, text) for p, k, h, status, text in found}
            batch = Batch(writes, before, keys_before)
            last = {}
            now = utcnow()
            if batch.users:
                counts = orjson.dumps({user: batch.counts[user] for user in batch.users}).decode()
                last = dict(connection.execute(_BUMP, (counts,)).fetchall())
                rows = []
                collapsing = set()
                for write in batch.new_writes():
                    c = write.content
                    meta = orjson.dumps(c.meta).decode()
                    key = write.dedupe_key if len(write.user_ids) == 1 else None
                    expires = _stamp(c.expires_at) if c.expires_at else None
                    rows += [(i, u, c.title, c.message, c.type, c.link, meta, key, c.priority, expires, c.collapse_key)
                             for i, u in zip(write.ids, write.user_ids, strict=True)]
                    if c.collapse_key is not None:
                        collapsing.update((u, c.collapse_key) for u in write.user_ids)
                now = utcnow()
                connection.execute(_INSERT, (orjson.dumps(rows).decode(), _stamp(now)))
                fresh = self.unknown(batch.users)
                if fresh:
                    connection.execute(_USERS, (orjson.dumps(fresh).decode(), _stamp(now)))
                if collapsing:
                    connection.executemany(_COLLAPSE, sorted(collapsing))
            assigned = None
            if batch.idempotent:  # the answer is stored with the key, in this transaction
                assigned = batch.assign(last, now)
                connection.executemany(_KEYS_INSERT, [(*row, _stamp(now)) for row in batch.key_rows(assigned[0])])
            connection.execute("COMMIT")
            if batch.users and fresh:
                self.recorded(fresh)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        return _Committed(batch, last, now, assigned)
