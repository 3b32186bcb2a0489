"""Every SQL statement of the SMS side: verifications, their polling leases, the fake provider's inbox.

In: plain values; out: :class:`Verification` and :class:`ProviderMessage` records. Database failures
become :class:`Unavailable` here, at one border, as in the notifications' store.

Leases: each node renews the leases it holds every round and claims free ones (never held, or lapsed
because their node died) up to its limit. PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so two nodes
never wait on each other, and the ``WHERE`` on the lease is checked again under the row lock, so one
row goes to one node. SQLite has one writer at a time, which gives the same answer.
Clocks: lease times come from each node's clock; keep the nodes' clocks in sync well within a lease.
Imports ``errors``, ``models``, ``schemas`` and ``sms.schemas``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import translate, writing
from ..models import sms_fake_inbox, verifications
from ..schemas import utcnow
from .schemas import ProviderMessage, Verification

v = verifications


def new_verification_id() -> str:
    return f"ver_{secrets.token_hex(8)}"


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    # SQLite keeps no zone; only UTC is ever stored.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _record(row: Any) -> Verification:
    return Verification(
        id=row.id, user_id=row.user_id, service=row.service, phone_number=row.phone_number,
        provider=row.provider, status=row.status, created_at=_utc(row.created_at),
        expires_at=_utc(row.expires_at), received_at=_utc(row.received_at), message_id=row.message_id,
        code=row.code, notification_id=row.notification_id,
    )


def _pollable(now: datetime) -> Any:
    """Rows a node must work on: pending and not expired, or received and not yet notified."""
    return or_(
        and_(v.c.status == "pending", v.c.expires_at > now),
        and_(v.c.status == "received", v.c.notification_id.is_(None)),
    )


class VerificationStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        sqlite_engine = engine.dialect.name == "sqlite"
        self._insert = sqlite.insert if sqlite_engine else postgresql.insert

    # -- verifications --------------------------------------------------------------------------------
    @translate
    async def create(self, user_id: str, service: str, phone_number: str | None, provider: str,
                     ttl_s: float) -> Verification:
        now = utcnow()
        row = {
            "id": new_verification_id(), "user_id": user_id, "service": service, "phone_number": phone_number,
            "provider": provider, "status": "pending", "created_at": now,
            "expires_at": now + timedelta(seconds=ttl_s),
        }
        async with writing(self._engine) as connection:
            await connection.execute(v.insert(), row)
        return Verification(**{k: row[k] for k in ("id", "user_id", "service", "phone_number", "provider",
                                                    "status", "created_at", "expires_at")})

    @translate
    async def get(self, verification_id: str) -> Verification | None:
        """The verification; a pending one past its expiry is marked expired first."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(v).where(v.c.id == verification_id))).first()
        if row is None:
            return None
        record = _record(row)
        if record.status == "pending" and record.expires_at <= utcnow():
            await self.expire_due(only=verification_id)
            async with self._engine.connect() as connection:
                record = _record((await connection.execute(select(v).where(v.c.id == verification_id))).one())
        return record

    @translate
    async def cancel(self, verification_id: str) -> bool:
        """Pending → cancelled; False when it was not pending (or not there)."""
        async with writing(self._engine) as connection:
            result = await connection.execute(
                update(v).where(v.c.id == verification_id, v.c.status == "pending", v.c.expires_at > utcnow())
                .values(status="cancelled", lease_owner=None, lease_until=None)
            )
        return result.rowcount > 0

    @translate
    async def expire_due(self, only: str | None = None) -> int:
        """Pending verifications past their expiry become expired (and stop being polled)."""
        query = update(v).where(v.c.status == "pending", v.c.expires_at <= utcnow())
        if only is not None:
            query = query.where(v.c.id == only)
        async with writing(self._engine) as connection:
            result = await connection.execute(query.values(status="expired", lease_owner=None, lease_until=None))
        return int(result.rowcount or 0)

    @translate
    async def pending_count(self) -> int:
        query = select(func.count()).select_from(v).where(v.c.status == "pending", v.c.expires_at > utcnow())
        async with self._engine.connect() as connection:
            return int((await connection.execute(query)).scalar() or 0)

    # -- leases ---------------------------------------------------------------------------------------
    @translate
    async def lease(self, owner: str, lease_s: float, limit: int, providers: list[str]) -> list[Verification]:
        """Renew this node's leases, claim free ones up to ``limit`` in all; the rows this node now polls.
        Only verifications of ``providers`` (those this node has configured) are claimed."""
        now = utcnow()
        until = now + timedelta(seconds=lease_s)
        async with writing(self._engine) as connection:
            renewed = (await connection.execute(
                update(v).where(v.c.lease_owner == owner, _pollable(now)).values(lease_until=until).returning(v)
            )).all()
        room = limit - len(renewed)
        if room <= 0:
            return [_record(row) for row in renewed]
        free = and_(_pollable(now), v.c.provider.in_(providers),
                    or_(v.c.lease_until.is_(None), v.c.lease_until < now))
        # A materialized CTE picks and locks the rows once; as a plain ``IN (subquery)`` PostgreSQL may
        # evaluate the subquery again while re-checking a row another node changed, and claim past ``room``.
        picked = (
            select(v.c.id).where(free).order_by(v.c.created_at).limit(room).with_for_update(skip_locked=True)
            .cte("picked").prefix_with("MATERIALIZED")
        )
        async with writing(self._engine) as connection:
            claimed = (await connection.execute(
                update(v).where(v.c.id.in_(select(picked.c.id))).values(lease_owner=owner, lease_until=until)
                .returning(v)
            )).all()
        return [_record(row) for row in (*renewed, *claimed)]

    @translate
    async def release(self, owner: str) -> int:
        """Give up every lease of this node (on shutdown), so another node takes over at once."""
        async with writing(self._engine) as connection:
            result = await connection.execute(
                update(v).where(v.c.lease_owner == owner).values(lease_owner=None, lease_until=None)
            )
        return int(result.rowcount or 0)

    @translate
    async def mark_received(self, verification_id: str, owner: str, message_id: str, code: str,
                            received_at: datetime) -> bool:
        """Pending → received, only while this node holds the lease; False when another node or a cancel
        or the expiry got there first."""
        async with writing(self._engine) as connection:
            result = await connection.execute(
                update(v).where(v.c.id == verification_id, v.c.status == "pending", v.c.lease_owner == owner)
                .values(status="received", message_id=message_id, code=code, received_at=received_at)
            )
        return result.rowcount > 0

    @translate
    async def mark_notified(self, verification_id: str, notification_id: str) -> None:
        """The notification is stored: nothing more to do for this verification; its lease ends."""
        async with writing(self._engine) as connection:
            await connection.execute(
                update(v).where(v.c.id == verification_id)
                .values(notification_id=notification_id, lease_owner=None, lease_until=None)
            )

    # -- the fake provider's inbox --------------------------------------------------------------------
    @translate
    async def add_fake_message(self, verification_id: str, message_id: str, text: str,
                               received_at: datetime) -> tuple[ProviderMessage, bool]:
        """Put an SMS in the fake inbox; ``(message, created)``, the first one for a repeated id."""
        insert = self._insert(sms_fake_inbox).values(
            verification_id=verification_id, id=message_id, text=text, received_at=received_at
        ).on_conflict_do_nothing()
        async with writing(self._engine) as connection:
            created = (await connection.execute(insert)).rowcount > 0
            row = (await connection.execute(
                select(sms_fake_inbox).where(sms_fake_inbox.c.verification_id == verification_id,
                                             sms_fake_inbox.c.id == message_id)
            )).one()
        return ProviderMessage(row.id, row.text, _utc(row.received_at)), created

    @translate
    async def fake_messages(self, verification_id: str) -> list[ProviderMessage]:
        query = (select(sms_fake_inbox).where(sms_fake_inbox.c.verification_id == verification_id)
                 .order_by(sms_fake_inbox.c.received_at))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [ProviderMessage(row.id, row.text, _utc(row.received_at)) for row in rows]
