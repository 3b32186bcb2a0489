"""Every SQL statement of the service. In: plain values; out: :class:`Notification` records.

Database failures become :class:`Unavailable` here, at one border. SQLite allows one writer at a time,
so writes from this process queue on an asyncio lock instead of on SQLite's busy timeout.
Imports ``errors``, ``models`` and ``schemas``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .errors import Unavailable
from .models import notifications, user_seqs
from .schemas import Notification, utcnow

P = ParamSpec("P")
T = TypeVar("T")


def new_id() -> str:
    """``notif_`` + milliseconds + randomness: unique, and sorts roughly by creation time."""
    return f"notif_{int(time.time() * 1000):011x}{secrets.token_hex(6)}"


def _translate(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (DBAPIError, SQLAlchemyError, OSError) as exc:
            if isinstance(exc, IntegrityError):
                raise
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc

    return wrapper


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


class Store:
    """The notifications of every user, with per-user gap-free ``seq``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._insert = sqlite.insert if self._sqlite else postgresql.insert
        self._write_lock = asyncio.Lock() if self._sqlite else None

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self._engine.begin() as connection:
                yield connection
            return
        async with self._write_lock, self._engine.begin() as connection:
            yield connection

    @_translate
    async def ping(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(select(1))

    @_translate
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
        after_commit: Callable[[list[Notification]], Awaitable[None]] | None = None,
    ) -> tuple[list[Notification], bool]:
        """Store one notification per user in one transaction; ``(records, created)``.

        With ``dedupe_key`` already stored, returns the first record and ``created=False``.
        ``after_commit`` runs right after the commit and before the write lock is released, so
        publishes leave this process in ``seq`` order.
        """
        if not user_ids:
            return [], True
        if dedupe_key is not None:
            existing = await self.by_dedupe_key(dedupe_key)
            if existing is not None:
                return [existing], False
        now = utcnow()
        try:
            async with self._writing() as connection:
                records = await self._insert_rows(connection, sorted(set(user_ids)), now, title, message,
                                                  type, link, meta or {}, dedupe_key)
                await connection.commit()
                if after_commit is not None:
                    await after_commit(records)
        except IntegrityError:
            if dedupe_key is None:
                raise
            existing = await self.by_dedupe_key(dedupe_key)  # lost a race with a concurrent retry
            if existing is None:
                raise
            return [existing], False
        return records, True

    async def _insert_rows(
        self,
        connection: AsyncConnection,
        user_ids: list[str],
        now: datetime,
        title: str,
        message: str,
        type: str,
        link: str | None,
        meta: dict[str, Any],
        dedupe_key: str | None,
    ) -> list[Notification]:
        bump = self._insert(user_seqs).values([{"user_id": u, "last_seq": 1} for u in user_ids])
        bump = bump.on_conflict_do_update(
            index_elements=[user_seqs.c.user_id], set_={"last_seq": user_seqs.c.last_seq + 1}
        ).returning(user_seqs.c.user_id, user_seqs.c.last_seq)
        seqs = dict((await connection.execute(bump)).all())
        records = [
            Notification(
                id=new_id(), user_id=u, seq=seqs[u], title=title, message=message, type=type,
                link=link, created_at=now, meta=meta,
            )
            for u in user_ids
        ]
        await connection.execute(
            notifications.insert(),
            [
                {
                    "id": r.id, "user_id": r.user_id, "seq": r.seq, "title": r.title,
                    "message": r.message, "type": r.type, "link": r.link, "meta": r.meta,
                    "created_at": now, "is_read": False,
                    "dedupe_key": dedupe_key if len(records) == 1 else None,
                }
                for r in records
            ],
        )
        return records

    @_translate
    async def by_dedupe_key(self, key: str) -> Notification | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                select(notifications).where(notifications.c.dedupe_key == key)
            )).first()
        return _record(row) if row else None

    @_translate
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

    @_translate
    async def between(self, user_id: str, after_seq: int, upto_seq: int | None, limit: int) -> list[Notification]:
        """``after_seq < seq <= upto_seq`` in order: replay on resume, and filling a gap."""
        query = select(notifications).where(
            notifications.c.user_id == user_id, notifications.c.seq > after_seq
        )
        if upto_seq is not None:
            query = query.where(notifications.c.seq <= upto_seq)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query.order_by(notifications.c.seq.asc()).limit(limit))).all()
        return [_record(row) for row in rows]

    @_translate
    async def state(self, user_id: str) -> tuple[int, int]:
        """``(unread_count, last_seq)`` for a user, read together."""
        async with self._engine.connect() as connection:
            unread = await self._unread(connection, user_id)
            last = (await connection.execute(
                select(user_seqs.c.last_seq).where(user_seqs.c.user_id == user_id)
            )).scalar()
        return unread, int(last or 0)

    @_translate
    async def last_seqs(self, user_ids: Sequence[str]) -> dict[str, int]:
        """Each user's last assigned seq (users with none are left out)."""
        query = select(user_seqs.c.user_id, user_seqs.c.last_seq).where(user_seqs.c.user_id.in_(list(user_ids)))
        async with self._engine.connect() as connection:
            return {user: int(seq) for user, seq in (await connection.execute(query)).all()}

    @_translate
    async def unread_count(self, user_id: str) -> int:
        async with self._engine.connect() as connection:
            return await self._unread(connection, user_id)

    @staticmethod
    async def _unread(connection: AsyncConnection, user_id: str) -> int:
        query = select(func.count()).select_from(notifications).where(
            notifications.c.user_id == user_id, notifications.c.is_read.is_(False)
        )
        return int((await connection.execute(query)).scalar() or 0)

    @_translate
    async def mark_read(self, user_id: str, notification_id: str) -> tuple[Notification | None, bool, int]:
        """``(record or None when not the user's, changed, unread_count)``."""
        where = and_(notifications.c.id == notification_id, notifications.c.user_id == user_id)
        async with self._writing() as connection:
            changed = (await connection.execute(
                update(notifications).where(where, notifications.c.is_read.is_(False))
                .values(is_read=True, read_at=utcnow())
            )).rowcount > 0
            row = (await connection.execute(select(notifications).where(where))).first()
            unread = await self._unread(connection, user_id)
        return (_record(row) if row else None), changed, unread

    @_translate
    async def mark_all_read(self, user_id: str) -> int:
        """Marks every unread one read; returns how many changed."""
        async with self._writing() as connection:
            result = await connection.execute(
                update(notifications)
                .where(notifications.c.user_id == user_id, notifications.c.is_read.is_(False))
                .values(is_read=True, read_at=utcnow())
            )
        return int(result.rowcount or 0)
