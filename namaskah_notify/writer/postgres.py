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
from datetime import UTC

import asyncpg
import orjson

from ..errors import Unavailable, Unstorable
from ..schemas import Content, Notification, utcnow
from . import MAX_BATCH_ROWS, Batch, Job, OnCommit, Stored, Write, Writer, hand_over

log = logging.getLogger("namaskah_notify.writer")

_COLUMNS = "id, user_id, seq, title, message, type, link, meta, created_at, is_read, dedupe_key"
_BUMP = """
INSERT INTO user_seqs (user_id, last_seq)
SELECT * FROM unnest($1::varchar[], $2::bigint[])
ON CONFLICT (user_id) DO UPDATE SET last_seq = user_seqs.last_seq + excluded.last_seq
RETURNING user_id, last_seq
"""
_INSERT = f"""
INSERT INTO notifications ({_COLUMNS})
SELECT r.id, r.user_id, r.seq, r.title, r.message, r.type, r.link, r.meta::json, $9, false, r.dedupe_key
FROM unnest($1::varchar[], $2::varchar[], $3::bigint[], $4::varchar[], $5::text[], $6::varchar[], $7::varchar[],
            $8::text[], $10::varchar[]) AS r(id, user_id, seq, title, message, type, link, meta, dedupe_key)
"""
_BY_KEYS = f"SELECT {_COLUMNS} FROM notifications WHERE dedupe_key = ANY($1::varchar[])"
# Refused rows (data exceptions, integrity violations, a trigger's RAISE); anything else is the database.
_ROW_CLASSES = ("22", "23", "P0")


def _record(row: asyncpg.Record) -> Notification:
    meta = row["meta"]
    content = Content(row["title"], row["message"], row["type"], row["link"],
                      orjson.loads(meta) if isinstance(meta, str) else meta or {})
    return Notification(row["id"], row["user_id"], row["seq"], content, row["created_at"].astimezone(UTC),
                        row["is_read"])


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] in _ROW_CLASSES


class PostgresWriter(Writer):
    def __init__(self, dsn: str, on_commit: OnCommit) -> None:
        self._dsn = dsn
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
            batch = Batch(writes, before)
            last = {}
            if batch.users:
                counts = [batch.counts[user] for user in batch.users]
                last = {user: seq for user, seq in await connection.fetch(_BUMP, batch.users, counts)}
            now = utcnow()
            answers, rows = batch.assign(last, now)
            if rows:
                metas = {id(w.content): orjson.dumps(w.content.meta).decode() for w in writes}
                records = [record for record, _ in rows]
                await connection.execute(
                    _INSERT, [r.id for r in records], [r.user_id for r in records], [r.seq for r in records],
                    [r.content.title for r in records], [r.content.message for r in records],
                    [r.content.type for r in records], [r.content.link for r in records],
                    [metas[id(r.content)] for r in records], now, [key for _, key in rows])
        return answers
