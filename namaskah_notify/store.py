"""The notifications' reads and their other writes (mark read, revocations), through SQLAlchemy. In: plain
values; out: :class:`Notification` records. Publishing writes go through ``writer/``.

Database failures become :class:`Unavailable` here, at one border. Imports ``db``, ``errors``, ``models``
and ``schemas``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .db import translate, writing
from .models import notifications, preferences, user_revocations, user_seqs, users
from .schemas import Content, Notification, utcnow


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment  # SQLite keeps no zone


def _record(row: Any) -> Notification:
    content = Content(row.title, row.message, row.type, row.link, row.meta or {}, row.priority,
                      _utc(row.expires_at) if row.expires_at else None, row.collapse_key)
    return Notification(row.id, row.user_id, row.seq, content, _utc(row.created_at), row.is_read,
                        _utc(row.read_at) if row.read_at else None)


# Built once: every handshake runs them, and building a statement costs more than running it.
# What a user can see: not expired, not replaced by a newer one with the same collapse key.
_LIVE = (or_(notifications.c.expires_at.is_(None), notifications.c.expires_at > bindparam("now")),
         notifications.c.replaced.is_(False))
_UNREAD = select(func.count()).select_from(notifications).where(
    notifications.c.user_id == bindparam("user_id"), notifications.c.is_read.is_(False), *_LIVE
)
_STATE = select(
    _UNREAD.scalar_subquery(),
    select(user_seqs.c.last_seq).where(user_seqs.c.user_id == bindparam("user_id")).scalar_subquery(),
)
_AFTER = (
    select(notifications)
    .where(notifications.c.user_id == bindparam("user_id"), notifications.c.seq > bindparam("after"), *_LIVE)
    .order_by(notifications.c.seq.asc())
    .limit(bindparam("limit"))
)
_BETWEEN = _AFTER.where(notifications.c.seq <= bindparam("upto"))


# The same statement as SQLite's own text, for the in-place read (see ``Store.state``).
_STATE_SQLITE = str(_STATE.compile(dialect=sqlite.dialect(paramstyle="named")))


class Store:
    """The notifications of every user, with per-user gap-free ``seq``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._point_reader: sqlite3.Connection | None = None
        if self._sqlite and engine.url.database not in (None, "", ":memory:"):
            self._point_reader = sqlite3.connect(engine.url.database, isolation_level=None, check_same_thread=False)

    def close(self) -> None:
        if self._point_reader is not None:
            self._point_reader.close()

    @translate
    async def ping(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(select(1))

    @translate
    async def page(
        self, user_id: str, *, limit: int, before_seq: int | None = None, since_seq: int | None = None
    ) -> list[Notification]:
        """Newest first (optionally below ``before_seq``), or oldest first above ``since_seq``."""
        query = select(notifications).where(notifications.c.user_id == user_id, *_LIVE)
        if since_seq is not None:
            query = query.where(notifications.c.seq > since_seq).order_by(notifications.c.seq.asc())
        else:
            if before_seq is not None:
                query = query.where(notifications.c.seq < before_seq)
            query = query.order_by(notifications.c.seq.desc())
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query.limit(limit), {"now": utcnow()})).all()
        return [_record(row) for row in rows]

    @translate
    async def between(self, user_id: str, after_seq: int, upto_seq: int | None, limit: int) -> list[Notification]:
        """``after_seq < seq <= upto_seq`` in order: replay on resume, and filling a gap."""
        query = _AFTER if upto_seq is None else _BETWEEN
        params = {"user_id": user_id, "after": after_seq, "upto": upto_seq, "limit": limit, "now": utcnow()}
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query, params)).all()
        return [_record(row) for row in rows]

    @translate
    async def state(self, user_id: str) -> tuple[int, int]:
        """``(unread_count, last_seq)`` for a user, read together in one statement (every handshake asks).

        On SQLite it is read in place, on the event loop: a key look-up and a count over an index, from
        pages in memory, in WAL mode where a reader never waits for the writer. That costs a few
        microseconds, where the pooled async connection costs two thread hand-offs and the pool's reset."""
        if self._point_reader is not None:
            now = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy stores times in SQLite
            row = self._point_reader.execute(_STATE_SQLITE, {"user_id": user_id, "now": now}).fetchone()
        else:
            async with self._engine.connect() as connection:
                row = (await connection.execute(_STATE, {"user_id": user_id, "now": utcnow()})).one()
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
        return int((await connection.execute(_UNREAD, {"user_id": user_id, "now": utcnow()})).scalar() or 0)

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

    # -- known users ---------------------------------------------------------------------------------
    @translate
    async def seen(self, user_ids: Sequence[str], now: datetime) -> None:
        """Record that these users connected: known from now on (a broadcast reaches them), last seen now."""
        insert = (sqlite.insert if self._sqlite else postgresql.insert)(users)
        async with writing(self._engine) as connection:
            for start in range(0, len(user_ids), 500):
                rows = [{"user_id": u, "first_seen": now, "last_seen": now} for u in user_ids[start:start + 500]]
                statement = insert.values(rows)
                await connection.execute(statement.on_conflict_do_update(
                    index_elements=[users.c.user_id], set_={"last_seen": statement.excluded.last_seen}))

    @translate
    async def known_users(self) -> list[str]:
        """Every user who ever connected or was notified."""
        async with self._engine.connect() as connection:
            return list((await connection.execute(select(users.c.user_id))).scalars())

    # -- preferences and presence -------------------------------------------------------------------
    @translate
    async def preferences_of(self, user_id: str) -> dict[str, Any] | None:
        async with self._engine.connect() as connection:
            return (await connection.execute(
                select(preferences.c.body).where(preferences.c.user_id == user_id))).scalar_one_or_none()

    @translate
    async def put_preferences(self, user_id: str, body: dict[str, Any]) -> None:
        """Replace the user's preferences, stamped with the database's clock (see ``revoke``)."""
        insert = (sqlite.insert if self._sqlite else postgresql.insert)(preferences)
        statement = insert.values(user_id=user_id, body=body, updated_at=func.now())
        statement = statement.on_conflict_do_update(
            index_elements=[preferences.c.user_id],
            set_={"body": statement.excluded.body, "updated_at": statement.excluded.updated_at})
        async with writing(self._engine) as connection:
            await connection.execute(statement)

    @translate
    async def preferences_since(self, since: datetime | None) -> tuple[list[tuple[str, dict[str, Any]]], datetime]:
        """``(user_id, body)`` stamped after ``since`` (all when None), and the database's clock read first."""
        query = select(preferences.c.user_id, preferences.c.body)
        if since is not None:
            query = query.where(preferences.c.updated_at > since)
        async with self._engine.connect() as connection:
            now = (await connection.execute(select(func.now()))).scalar_one()
            rows = (await connection.execute(query)).all()
        return [(user, body) for user, body in rows], _utc(_moment(now))

    @translate
    async def last_seen(self, user_ids: Sequence[str]) -> dict[str, datetime]:
        """When each user was last seen connecting or leaving (users never seen are left out)."""
        query = select(users.c.user_id, users.c.last_seen).where(users.c.user_id.in_(list(user_ids)))
        async with self._engine.connect() as connection:
            return {user: _utc(seen) for user, seen in (await connection.execute(query)).all()}

    # -- revocations ---------------------------------------------------------------------------------
    @translate
    async def revoke(self, user_id: str, before: datetime) -> None:
        """Refuse the user's tokens issued before ``before`` from now on (never moves it back). Stamped with
        the database's clock, which orders every node's revocations whatever their own clocks say."""
        insert = (sqlite.insert if self._sqlite else postgresql.insert)(user_revocations)
        statement = insert.values(user_id=user_id, revoked_before=before, updated_at=func.now())
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
    async def revocations_since(
        self, since: datetime | None
    ) -> tuple[list[tuple[str, datetime]], datetime]:
        """``(user_id, revoked_before)`` stamped after ``since`` (all when None), and the database's clock
        read just before them: the next call's ``since``, less a margin for commits still in flight."""
        query = select(user_revocations.c.user_id, user_revocations.c.revoked_before)
        if since is not None:
            query = query.where(user_revocations.c.updated_at > since)
        async with self._engine.connect() as connection:
            now = (await connection.execute(select(func.now()))).scalar_one()
            rows = (await connection.execute(query)).all()
        return [(user, _utc(before)) for user, before in rows], _utc(_moment(now))

    @property
    def engine(self) -> AsyncEngine:
        """For the other stores of the same database (``retention``)."""
        return self._engine

    # -- marking several, unread, deleting -------------------------------------------------------------
    @translate
    async def mark_read_many(self, user_id: str, notification_ids: Sequence[str]) -> tuple[list[str], int]:
        """Marks those of ``notification_ids`` that are the user's and unread; ``(their ids, unread_count)``."""
        async with writing(self._engine) as connection:
            changed = (await connection.execute(
                update(notifications)
                .where(notifications.c.user_id == user_id, notifications.c.id.in_(list(notification_ids)),
                       notifications.c.is_read.is_(False))
                .values(is_read=True, read_at=utcnow()).returning(notifications.c.id)
            )).scalars().all()
            unread = await self._unread(connection, user_id)
        return list(changed), unread

    @translate
    async def mark_unread(self, user_id: str, notification_id: str) -> tuple[Notification | None, bool, int]:
        """``(record or None when not the user's, changed, unread_count)``, as ``mark_read``."""
        where = and_(notifications.c.id == notification_id, notifications.c.user_id == user_id)
        async with writing(self._engine) as connection:
            changed = (await connection.execute(
                update(notifications).where(where, notifications.c.is_read.is_(True))
                .values(is_read=False, read_at=None)
            )).rowcount > 0
            row = (await connection.execute(select(notifications).where(where))).first()
            unread = await self._unread(connection, user_id)
        return (_record(row) if row else None), changed, unread

    @translate
    async def delete(self, user_id: str, notification_id: str) -> tuple[bool, int]:
        """Deletes one of the user's notifications; ``(deleted, unread_count)``. Its ``seq`` is never reused."""
        async with writing(self._engine) as connection:
            deleted = (await connection.execute(
                notifications.delete()
                .where(notifications.c.id == notification_id, notifications.c.user_id == user_id)
            )).rowcount > 0
            unread = await self._unread(connection, user_id)
        return deleted, unread

    @translate
    async def delete_all(self, user_id: str, *, only_read: bool, batch: int = 1000) -> tuple[list[str], int]:
        """Deletes every notification of the user (or only the read ones), ``batch`` rows per transaction so
        that a long history never holds the write lock for long; ``(their ids, unread_count)``."""
        chosen = select(notifications.c.id).where(notifications.c.user_id == user_id)
        if only_read:
            chosen = chosen.where(notifications.c.is_read.is_(True))
        statement = notifications.delete().where(notifications.c.id.in_(chosen.limit(batch)))
        statement = statement.returning(notifications.c.id)
        ids: list[str] = []
        while True:
            async with writing(self._engine) as connection:
                gone = (await connection.execute(statement)).scalars().all()
            ids += gone
            if len(gone) < batch:
                break
        async with self._engine.connect() as connection:
            return ids, await self._unread(connection, user_id)

    @translate
    async def first_seq(self, user_id: str) -> int | None:
        """The oldest ``seq`` still stored for the user (None: none is): a resume from before it cannot be
        replayed whole. One look-up in the ``(user_id, seq)`` index, made on resume only."""
        query = select(func.min(notifications.c.seq)).where(notifications.c.user_id == user_id)
        async with self._engine.connect() as connection:
            first = (await connection.execute(query)).scalar()
        return None if first is None else int(first)


def _moment(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value
