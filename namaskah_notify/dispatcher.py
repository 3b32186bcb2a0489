"""Store, then publish: the one way a notification or a read event enters the system.

A record is pushed only after its transaction committed, and publishing happens inside the store's
after-commit hook so that this process publishes each user's notifications in ``seq`` order.
Imports ``brokers``, ``errors``, ``protocol``, ``schemas``, ``stats`` and ``store``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import protocol
from .brokers import Broker, Envelope
from .errors import NotFound
from .schemas import Notification
from .stats import Stats
from .store import Store

log = logging.getLogger("namaskah_notify.dispatcher")

SMS_TITLE = "📱 SMS Code Received"
SMS_TYPE = "sms_received"


class Dispatcher:
    def __init__(
        self, store: Store, broker: Broker, stats: Stats, presence: Callable[[], Awaitable[list[str]]]
    ) -> None:
        self._store = store
        self._broker = broker
        self._stats = stats
        self._presence = presence

    async def notify(
        self,
        user_ids: Sequence[str],
        *,
        title: str,
        message: str,
        type: str = "info",
        link: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> list[Notification]:
        """Store one notification per user (one transaction), then push each to its user's tabs."""
        records, _ = await self._store.add(
            user_ids, title=title, message=message, type=type, link=link, meta=meta,
            after_commit=self._publish_notifications,
        )
        return records

    async def broadcast(self, **fields: Any) -> list[Notification]:
        """The origin document's broadcast: every user connected right now, each with its own seq."""
        return await self.notify(await self._presence(), **fields)

    async def on_sms_received(
        self, user_id: str, verification_id: str, service: str, code: str, message_id: str | None = None
    ) -> tuple[Notification, bool]:
        """The origin document's SMS notification; ``(record, created)``. A repeated ``message_id``
        returns the first record and pushes nothing. The code itself is neither stored nor logged."""
        del code  # the notification says a code arrived; the code is shown by the app behind the link
        records, created = await self._store.add(
            [user_id],
            title=SMS_TITLE,
            message=f"Verification code received for {service}",
            type=SMS_TYPE,
            link=f"/verify?id={verification_id}",
            meta={"verification_id": verification_id, "service": service},
            # Scoped to the user: a message id seen for someone else never answers with their notification.
            dedupe_key=f"sms:{user_id}:{message_id}" if message_id else None,
            after_commit=self._publish_notifications,
        )
        if not created:
            log.info("sms repeated: user=%s verification=%s pushed nothing", user_id, verification_id)
        return records[0], created

    async def mark_read(self, user_id: str, notification_id: str) -> Notification:
        record, changed, unread = await self._store.mark_read(user_id, notification_id)
        if record is None:
            raise NotFound("no such notification for this user")
        if changed:
            await self._publish_read(user_id, [notification_id], False, unread)
        return record

    async def mark_all_read(self, user_id: str) -> int:
        changed = await self._store.mark_all_read(user_id)
        await self._publish_read(user_id, [], True, 0)
        return changed

    async def _publish_notifications(self, records: list[Notification]) -> None:
        envelopes = [
            Envelope(r.user_id, protocol.notification_frame(r), r.seq, r.created_at.timestamp())
            for r in records
        ]
        self._stats.published(len(records))
        await self._publish(envelopes)
        if len(records) == 1:
            r = records[0]
            log.info("published: user=%s seq=%d type=%s title=%r", r.user_id, r.seq, r.type, r.title)
        elif records:
            log.info("published: users=%d type=%s title=%r", len(records), records[0].type, records[0].title)

    async def _publish_read(self, user_id: str, ids: list[str], all_read: bool, unread: int) -> None:
        await self._publish([Envelope(user_id, protocol.read_frame(ids, all_read, unread))])

    async def _publish(self, envelopes: list[Envelope]) -> None:
        try:
            await self._broker.publish(envelopes)
        except Exception:
            # Stored already: clients that miss the push get it by resuming or polling.
            log.exception("broker publish failed for %d frames; they stay stored", len(envelopes))
