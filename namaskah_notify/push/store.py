"""The push subscriptions' SQL. Database failures become ``Unavailable`` (``db.translate``). Imports ``db``,
``models`` and ``push.message``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import translate, writing
from ..models import push_subscriptions as subs
from .message import Subscription

MAX_PER_USER = 10
_USER_LOCK = text("SELECT pg_advisory_xact_lock(8291, hashtext(:user_id))")


def _utc(moment: datetime | str) -> datetime:
    if isinstance(moment, str):  # SQLite's func.now() is text
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class Subscriptions:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    @translate
    async def put(self, user_id: str, endpoint: str, p256dh: str, auth: str) -> int | None:
        """Add the subscription, or renew it when the endpoint is known (a browser shared by two people: it
        becomes the caller's). The user's number of subscriptions after it, or None when they already
        have :data:`MAX_PER_USER` others."""
        insert = (sqlite.insert if self._sqlite else postgresql.insert)(subs)
        statement = insert.values(endpoint=endpoint, user_id=user_id, p256dh=p256dh, auth=auth,
                                  created_at=func.now(), updated_at=func.now(), failures=0)
        statement = statement.on_conflict_do_update(
            index_elements=[subs.c.endpoint],
            set_={"user_id": user_id, "p256dh": p256dh, "auth": auth, "updated_at": func.now(), "failures": 0,
                  "last_error": None})
        others = select(func.count()).select_from(subs).where(subs.c.user_id == user_id, subs.c.endpoint != endpoint)
        async with writing(self._engine) as connection:
            if not self._sqlite:  # SQLite's writers are one at a time already
                await connection.execute(_USER_LOCK, {"user_id": user_id})
            count = int((await connection.execute(others)).scalar_one())
            if count >= MAX_PER_USER:
                return None
            await connection.execute(statement)
        return count + 1

    @translate
    async def remove(self, user_id: str, endpoint: str) -> bool:
        """The user's subscription at ``endpoint`` is deleted; False when they had none there."""
        async with writing(self._engine) as connection:
            result = await connection.execute(subs.delete().where(subs.c.endpoint == endpoint,
                                                                  subs.c.user_id == user_id))
        return bool(result.rowcount)

    @translate
    async def gone(self, endpoint: str) -> None:
        """The push service no longer knows the endpoint (404 or 410): whoever holds it, it is deleted."""
        async with writing(self._engine) as connection:
            await connection.execute(subs.delete().where(subs.c.endpoint == endpoint))

    @translate
    async def outcome(self, endpoint: str, error: str | None) -> None:
        """A push failed for good (``error``, counted) or went through after failures (None: reset)."""
        values = ({"failures": subs.c.failures + 1, "last_error": error[:64]} if error
                  else {"failures": 0, "last_error": None})
        async with writing(self._engine) as connection:
            await connection.execute(subs.update().where(subs.c.endpoint == endpoint).values(**values))

    @translate
    async def of_users(self, user_ids: Sequence[str]) -> dict[str, list[Subscription]]:
        query = (select(subs.c.endpoint, subs.c.user_id, subs.c.p256dh, subs.c.auth, subs.c.failures)
                 .where(subs.c.user_id.in_(list(user_ids))).order_by(subs.c.created_at))
        found: dict[str, list[Subscription]] = {}
        async with self._engine.connect() as connection:
            for row in await connection.execute(query):
                found.setdefault(row.user_id, []).append(Subscription(*row))
        return found

    @translate
    async def users_since(self, since: datetime | None) -> tuple[set[str], datetime]:
        """Users whose subscriptions changed after ``since`` (every subscriber when None), and the database's
        clock read first."""
        query = select(subs.c.user_id).distinct()
        if since is not None:
            query = query.where(subs.c.updated_at > since)
        async with self._engine.connect() as connection:
            now = (await connection.execute(select(func.now()))).scalar_one()
            users = set((await connection.execute(query)).scalars())
        return users, _utc(now)
