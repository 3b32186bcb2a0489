"""The PostgreSQL writer: one ``asyncpg`` connection of its own, prepared statements, one task.

Publishes queue on a deque; the writer task takes everything queued (up to a size) and commits it in one
transaction of three statements — the dedupe look-up (only when a write has a key), the seq bump for all
users and the insert of all rows, each over arrays (``unnest``) — then hands the batch on and takes the
next. A lost connection fails the batch in flight with ``Unavailable`` and is opened again for the next.
Imports ``errors``, ``schemas`` and ``writer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from datetime import UTC, timedelta

import asyncpg
import orjson

from ..errors import Unavailable, Unstorable
from ..schemas import Content, Notification, utcnow
from . import MAX_BATCH_ROWS, Batch, Job, OnCommit, Stored, Write, Writer, hand_over, idempotency_keys

log = logging.getLogger("namaskah_notify.writer")

_COLUMNS = ("id, user_id, seq, title, message, type, link, meta, created_at, is_read, dedupe_key, priority, "
            "expires_at, collapse_key")
_BUMP = """
INSERT INTO user_seqs (user_id, last_seq)
SELECT * FROM unnest($1::varchar[], $2::bigint[])
ON CONFLICT (user_id) DO UPDATE SET last_seq = user_seqs.last_seq + excluded.last_seq
RETURNING user_id, last_seq
"""
_INSERT = f"""
INSERT INTO notifications ({_COLUMNS})
SELECT r.id, r.user_id, r.seq, r.title, r.message, r.type, r.link, r.meta::json, $9, false, r.dedupe_key,
       r.priority, r.expires_at, r.collapse_key
FROM unnest($1::varchar[], $2::varchar[], $3::bigint[], $4::varchar[], $5::text[], $6::varchar[], $7::varchar[],
            $8::text[], $10::varchar[], $11::varchar[], $12::timestamptz[], $13::varchar[])
     AS r(id, user_id, seq, title, message, type, link, meta, dedupe_key, priority, expires_at, collapse_key)
"""
_BY_KEYS = f"SELECT {_COLUMNS}, read_at FROM notifications WHERE dedupe_key = ANY($1::varchar[])"
# Everyone notified becomes known (a broadcast reaches them).
_USERS = ("INSERT INTO users (user_id, first_seen, last_seen) SELECT u, $2, $2 FROM unnest($1::varchar[]) AS u "
          "ON CONFLICT (user_id) DO NOTHING")
# A newer notification with the same collapse key replaces the older ones: hidden, and no longer unread.
_COLLAPSE = """
UPDATE notifications AS n SET replaced = true, is_read = true
FROM unnest($1::varchar[], $2::varchar[]) AS c(user_id, collapse_key)
WHERE n.user_id = c.user_id AND n.collapse_key = c.collapse_key AND NOT n.replaced
  AND n.seq < (SELECT max(m.seq) FROM notifications AS m
               WHERE m.user_id = c.user_id AND m.collapse_key = c.collapse_key)
"""
# Two nodes given the same Idempotency-Key at once: the second waits here until the first commits, then
# finds its key.
_KEY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7001))"
_KEYS_BEFORE = """
SELECT publisher, key, request_hash, status, response FROM idempotency_keys
WHERE created_at > $3 AND (publisher, key) IN (SELECT * FROM unnest($1::varchar[], $2::varchar[]))
"""
_KEYS_INSERT = """
INSERT INTO idempotency_keys (publisher, key, request_hash, status, response, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (publisher, key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status,
    response = excluded.response, created_at = excluded.created_at
"""
# Refused rows (data exceptions, integrity violations, a trigger's RAISE); anything else is the database.
_ROW_CLASSES = ("22", "23", "P0")


def _record(row: asyncpg.Record) -> Notification:
    meta = row["meta"]
    expires, read = row["expires_at"], row["read_at"]
    content = Content(row["title"], row["message"], row["type"], row["link"],
                      orjson.loads(meta) if isinstance(meta, str) else meta or {}, row["priority"],
                      expires.astimezone(UTC) if expires else None, row["collapse_key"])
    return Notification(row["id"], row["user_id"], row["seq"], content, row["created_at"].astimezone(UTC),
                        row["is_read"], read.astimezone(UTC) if read else None)


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] in _ROW_CLASSES


class PostgresWriter(Writer):
    def __init__(self, dsn: str, on_commit: OnCommit, *, idempotency_ttl: timedelta = timedelta(days=1)) -> None:
        super().__init__()
        self._dsn = dsn
        self._idempotency_ttl = idempotency_ttl
        self._on_commit = on_commit
        self._pending: deque[Job] = deque()
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection | None = None

    async def start(self) -> None:
        return None  # connected on the first write, and again after a failure

    def _submit(self, write: Write) -> asyncio.Future[Stored]:
        future = asyncio.get_running_loop().create_future()
        self._pending.append(Job(write, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="notify-writer")
        return future

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 10)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=2)
            self._connection = None

    async def _run(self) -> None:
        try:
            while self._pending:
                jobs, size = [], 0
                while self._pending and size < MAX_BATCH_ROWS:
                    job = self._pending.popleft()
                    jobs.append(job)
                    size += len(job.write.user_ids)
                try:
                    results = await self._commit_isolating([job.write for job in jobs])
                except BaseException:  # cancelled mid-commit (shutdown): its callers hear so
                    self._pending.extendleft(reversed(jobs))
                    raise
                hand_over(jobs, results, self._on_commit)
        finally:
            self._task = None
            for job in self._pending:  # cancelled with work queued: fail it rather than leave callers waiting
                if not job.future.done():
                    job.future.set_exception(Unavailable("store writer stopped"))
            self._pending.clear()

    async def _commit_isolating(self, writes: list[Write]) -> list[Stored | BaseException]:
        try:
            return await self._commit(writes)
        except Exception as exc:
            if not _refused(exc):
                await self._drop_connection()
                log.error("postgresql write failed for %d publishes: %s", len(writes), type(exc).__name__)
                return [Unavailable(f"database unavailable: {type(exc).__name__}")] * len(writes)
            if len(writes) == 1:
                log.warning("the database refused a notification: %s", exc)
                return [Unstorable(f"the database refused this notification: {exc}"[:200])]
        # One row spoiled the batch: every write on its own, so only that one fails.
        results: list[Stored | BaseException] = []
        for write in writes:
            results += await self._commit_isolating([write])
        return results

    async def _drop_connection(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.terminate()

    async def _commit(self, writes: list[Write]) -> list[Stored]:
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(self._dsn, timeout=5)
        connection = self._connection
        async with connection.transaction():
            keys = [w.dedupe_key for w in writes if w.dedupe_key is not None]
            before = {}
            if keys:
                before = {row["dedupe_key"]: _record(row) for row in await connection.fetch(_BY_KEYS, keys)}
            scoped = idempotency_keys(writes)
            keys_before = {}
            if scoped:
                for publisher, key in scoped:  # in one order on every node: no deadlock
                    await connection.execute(_KEY_LOCK, publisher, key)
                found = await connection.fetch(_KEYS_BEFORE, [p for p, _ in scoped], [k for _, k in scoped],
                                               utcnow() - self._idempotency_ttl)
                keys_before = {(r["publisher"], r["key"]): (r["request_hash"], r["status"], r["response"])
                               for r in found}
            batch = Batch(writes, before, keys_before)
            last = {}
            if batch.users:
                counts = [batch.counts[user] for user in batch.users]
                last = {user: seq for user, seq in await connection.fetch(_BUMP, batch.users, counts)}
            now = utcnow()
            answers, rows = batch.assign(last, now)
            if rows:
                metas = {id(w.content): orjson.dumps(w.content.meta).decode() for w in writes}
                records = [record for record, _ in rows]
                contents = [r.content for r in records]
                await connection.execute(
                    _INSERT, [r.id for r in records], [r.user_id for r in records], [r.seq for r in records],
                    [c.title for c in contents], [c.message for c in contents], [c.type for c in contents],
                    [c.link for c in contents], [metas[id(c)] for c in contents], now, [key for _, key in rows],
                    [c.priority for c in contents], [c.expires_at for c in contents],
                    [c.collapse_key for c in contents])
                fresh = self.unknown(batch.users)
                if fresh:
                    await connection.execute(_USERS, fresh, now)
                collapsing = sorted({(r.user_id, r.content.collapse_key) for r in records if r.content.collapse_key})
                if collapsing:
                    await connection.execute(_COLLAPSE, [u for u, _ in collapsing], [k for _, k in collapsing])
            if batch.idempotent:  # the answer is stored with the key, in this transaction
                await connection.executemany(_KEYS_INSERT, [(*row, now) for row in batch.key_rows(answers)])
        if rows and fresh:
            self.recorded(fresh)  # committed
        return answers
