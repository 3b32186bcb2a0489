"""Every SQL statement of the service. In: plain values; out: :class:`Notification` records.

Database failures become :class:`Unavailable` here, at one border. SQLite allows one writer at a time,
so writes from this process queue on an asyncio lock instead of on SQLite's busy timeout.
Imports ``errors``, ``models`` and ``schemas``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .db import translate, translated, writing
from .errors import Unavailable
from .models import notifications, user_revocations, user_seqs
from .schemas import Notification, utcnow

log = logging.getLogger("namaskah_notify.store")


def new_id() -> str:
    """``notif_`` + milliseconds + randomness: unique, and sorts roughly by creation time."""
    return f"notif_{int(time.time() * 1000):011x}{secrets.token_hex(6)}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment  # SQLite keeps no zone


def _record(row: Any) -> Notification:
    created = row.created_at
    if created.tzinfo is None:  # SQLite keeps no zone; we only ever store UTC
        created = created.replace(tzinfo=UTC)
    return Notification(
        id=row.id,
        user_id=row.user_id,
        seq=row.seq,
        title=row.title,
        message=row.message,
        type=row.type,
        link=row.link,
        created_at=created,
        is_read=row.is_read,
        meta=row.meta or {},
    )


AfterCommit = Callable[[list[Notification]], Awaitable[None]]
MAX_BATCH_ROWS = 5000  # recipients in one group commit; bounds one transaction's size and time


@dataclass(slots=True)
class _Write:
    user_ids: list[str]
    title: str
    message: str
    type: str
    link: str | None
    meta: dict[str, Any]
    dedupe_key: str | None
    after_commit: AfterCommit | None
    done: asyncio.Future[tuple[list[Notification], bool]]


# Built once: every handshake runs them, and building a statement costs more than running it.
_UNREAD = select(func.count()).select_from(notifications).where(
    notifications.c.user_id == bindparam("user_id"), notifications.c.is_read.is_(False)
)
_STATE = select(
    _UNREAD.scalar_subquery(),
    select(user_seqs.c.last_seq).where(user_seqs.c.user_id == bindparam("user_id")).scalar_subquery(),
)
_AFTER = (
    select(notifications)
    .where(notifications.c.user_id == bindparam("user_id"), notifications.c.seq > bindparam("after"))
    .order_by(notifications.c.seq.asc())
    .limit(bindparam("limit"))
)
_BETWEEN = _AFTER.where(notifications.c.seq <= bindparam("upto"))


class Store:
    """The notifications of every user, with per-user gap-free ``seq``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._pending: deque[_Write] = deque()
        self._writer: asyncio.Task[None] | None = None
        # Bump each user's counter by how many notifications this batch brings them; one statement,
        # compiled once, executed for all users of a batch (SQLAlchemy's insertmanyvalues).
        upsert = (sqlite.insert if self._sqlite else postgresql.insert)(user_seqs).values(
            user_id=bindparam("user_id"), last_seq=bindparam("n"))
        self._bump = upsert.on_conflict_do_update(
            index_elements=[user_seqs.c.user_id], set_={"last_seq": user_seqs.c.last_seq + upsert.excluded.last_seq}
        ).returning(user_seqs.c.user_id, user_seqs.c.last_seq)

    @translate
    async def ping(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(select(1))

    async def add(
        self,
        user_ids: Sequence[str],
        *,
        title: str,
        message: str,
        type: str,
        link: str | None,
        meta: dict[str, Any] | None = None,
        dedupe_key: str | None = None,
        after_commit: AfterCommit | None = None,
    ) -> tuple[list[Notification], bool]:
        """Store one notification per user; ``(records, created)``.

        Concurrent calls are committed together (group commit): one transaction, one seq bump per user,
        one insert and one sync to disk for all of them, and each call's ``after_commit`` runs right after
        that commit, in call order, before the next batch starts — so publishes leave this process in
        ``seq`` order and never before their rows are durable. With ``dedupe_key`` already stored,
        returns the first record and ``created=False``.
        """
        if not user_ids:
            return [], True
        if dedupe_key is not None:
            existing = await self.by_dedupe_key(dedupe_key)
            if existing is not None:
                return [existing], False
        write = _Write(sorted(set(user_ids)), title, message, type, link, meta or {}, dedupe_key, after_commit,
                       asyncio.get_running_loop().create_future())
        self._pending.append(write)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending(), name="store-writer")
        return await write.done

    async def _write_pending(self) -> None:
        """The writer: takes everything queued (up to a size), commits it, answers, repeats."""
        try:
            while self._pending:
                batch, size = [], 0
                while self._pending and size < MAX_BATCH_ROWS:
                    write = self._pending.popleft()
                    batch.append(write)
                    size += len(write.user_ids)
                try:
                    results = await self._commit(batch)
                except IntegrityError:
                    # A dedupe key that another process stored meanwhile spoiled the batch: one by one.
                    results = [await self._commit_alone(write) for write in batch]
                except Exception as exc:
                    error = translated(exc)
                    results = [error] * len(batch)
                for write, result in zip(batch, results, strict=True):
                    if write.done.done():
                        continue
                    if isinstance(result, BaseException):
                        write.done.set_exception(result)
                    else:
                        write.done.set_result(result)
        finally:
            self._writer = None
            if self._pending:  # cancelled with work queued: fail it rather than leave callers waiting
                for write in self._pending:
                    if not write.done.done():
                        write.done.set_exception(Unavailable("store writer stopped"))
                self._pending.clear()

    async def _commit_alone(self, write: _Write) -> tuple[list[Notification], bool] | BaseException:
        try:
            return (await self._commit([write]))[0]
        except IntegrityError as exc:
            existing = await self.by_dedupe_key(write.dedupe_key) if write.dedupe_key else None
            return ([existing], False) if existing is not None else translated(exc)
        except Exception as exc:
            return translated(exc)

    async def _commit(self, batch: list[_Write]) -> list[tuple[list[Notification], bool]]:
        now = utcnow()
        counts = Counter(user for write in batch for user in write.user_ids)
        async with writing(self._engine) as connection:
            bumped = await connection.execute(self._bump, [{"user_id": u, "n": n} for u, n in counts.items()])
            next_seq = {user: last - counts[user] + 1 for user, last in bumped.all()}
            per_write: list[list[Notification]] = []
            rows: list[dict[str, Any]] = []
            for write in batch:
                records = []
                for user in write.user_ids:
                    seq = next_seq[user]
                    next_seq[user] = seq + 1
                    records.append(Notification(id=new_id(), user_id=user, seq=seq, title=write.title,
                                                message=write.message, type=write.type, link=write.link,
                                                created_at=now, meta=write.meta))
                per_write.append(records)
                dedupe = write.dedupe_key if len(records) == 1 else None
                rows += [{"id": r.id, "user_id": r.user_id, "seq": r.seq, "title": r.title, "message": r.message,
                          "type": r.type, "link": r.link, "meta": r.meta, "created_at": now, "is_read": False,
                          "dedupe_key": dedupe} for r in records]
            await connection.execute(notifications.insert(), rows)
            await connection.commit()
            for write, records in zip(batch, per_write, strict=True):
                if write.after_commit is not None:
                    try:
                        await write.after_commit(records)
                    except Exception:  # stored already; the caller must still hear so
                        log.exception("after-commit hook failed for %d records", len(records))
        return [(records, True) for records in per_write]

    @translate
    async def by_dedupe_key(self, key: str) -> Notification | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                select(notifications).where(notifications.c.dedupe_key == key)
            )).first()
        return _record(row) if row else None

    @translate
    async def page(
        self, user_id: str, *, limit: int, before_seq: int | None = None, since_seq: int | None = None
    ) -> list[Notification]:
        """Newest first (optionally below ``before_seq``), or oldest first above ``since_seq``."""
        query = select(notifications).where(notifications.c.user_id == user_id)
        if since_seq is not None:
            query = query.where(notifications.c.seq > since_seq).order_by(notifications.c.seq.asc())
        else:
            if before_seq is not None:
                query = query.where(notifications.c.seq < before_seq)
            query = query.order_by(notifications.c.seq.desc())
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query.limit(limit))).all()
        return [_record(row) for row in rows]

    @translate
    async def between(self, user_id: str, after_seq: int, upto_seq: int | None, limit: int) -> list[Notification]:
        """``after_seq < seq <= upto_seq`` in order: replay on resume, and filling a gap."""
        query = _AFTER if upto_seq is None else _BETWEEN
        params = {"user_id": user_id, "after": after_seq, "upto": upto_seq, "limit": limit}
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query, params)).all()
        return [_record(row) for row in rows]

    @translate
    async def state(self, user_id: str) -> tuple[int, int]:
        """``(unread_count, last_seq)`` for a user, read together in one statement (every handshake asks)."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(_STATE, {"user_id": user_id})).one()
        return int(row[0] or 0), int(row[1] or 0)

    @translate
    async def last_seqs(self, user_ids: Sequence[str]) -> dict[str, int]:
        """Each user's last assigned seq (users with none are left out)."""
        query = select(user_seqs.c.user_id, user_seqs.c.last_seq).where(user_seqs.c.user_id.in_(list(user_ids)))
        async with self._engine.connect() as connection:
            return {user: int(seq) for user, seq in (await connection.execute(query)).all()}

    @translate
    async def unread_count(self, user_id: str) -> int:
        async with self._engine.connect() as connection:
            return await self._unread(connection, user_id)

    @staticmethod
    async def _unread(connection: AsyncConnection, user_id: str) -> int:
        return int((await connection.execute(_UNREAD, {"user_id": user_id})).scalar() or 0)

    @translate
    async def mark_read(self, user_id: str, notification_id: str) -> tuple[Notification | None, bool, int]:
        """``(record or None when not the user's, changed, unread_count)``."""
        where = and_(notifications.c.id == notification_id, notifications.c.user_id == user_id)
        async with writing(self._engine) as connection:
            changed = (await connection.execute(
                update(notifications).where(where, notifications.c.is_read.is_(False))
                .values(is_read=True, read_at=utcnow())
            )).rowcount > 0
            row = (await connection.execute(select(notifications).where(where))).first()
            unread = await self._unread(connection, user_id)
        return (_record(row) if row else None), changed, unread

    @translate
    async def mark_all_read(self, user_id: str) -> int:
        """Marks every unread one read; returns how many changed."""
        async with writing(self._engine) as connection:
            result = await connection.execute(
                update(notifications)
                .where(notifications.c.user_id == user_id, notifications.c.is_read.is_(False))
                .values(is_read=True, read_at=utcnow())
            )
        return int(result.rowcount or 0)

    # -- revocations ---------------------------------------------------------------------------------
    @translate
    async def revoke(self, user_id: str, before: datetime) -> None:
        """Refuse the user's tokens issued before ``before`` from now on (never moves it back)."""
        insert = (sqlite.insert if self._sqlite else postgresql.insert)(user_revocations)
        statement = insert.values(user_id=user_id, revoked_before=before, updated_at=utcnow())
        statement = statement.on_conflict_do_update(
            index_elements=[user_revocations.c.user_id],
            set_={"revoked_before": func.max(user_revocations.c.revoked_before, statement.excluded.revoked_before)
                  if self._sqlite else func.greatest(user_revocations.c.revoked_before,
                                                     statement.excluded.revoked_before),
                  "updated_at": statement.excluded.updated_at},
        )
        async with writing(self._engine) as connection:
            await connection.execute(statement)

    @translate
    async def revocations_since(self, since: datetime | None) -> list[tuple[str, datetime, datetime]]:
        """``(user_id, revoked_before, updated_at)`` changed after ``since`` (all when None)."""
        query = select(user_revocations.c.user_id, user_revocations.c.revoked_before, user_revocations.c.updated_at)
        if since is not None:
            query = query.where(user_revocations.c.updated_at > since)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [(user, _utc(before), _utc(updated)) for user, before, updated in rows]
