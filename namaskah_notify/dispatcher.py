"""Store, then publish: the one way a notification or a read event enters the system.

A publish goes straight down one line: the route's :class:`Content` becomes a ``Write`` for the writer;
the writer commits it (grouped with whatever else is queued) and hands it to :meth:`Dispatcher._push`
right after the commit, which turns each stored notification into a ``Push`` for the broker; the broker
delivers to this node's hub at once and forwards, in order, to the other nodes.
Imports ``brokers``, ``errors``, ``protocol``, ``schemas``, ``stats``, ``store`` and ``writer``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from . import protocol
from .brokers import Broker, Frame, Message, Push
from .errors import NotFound
from .schemas import Content, Notification
from .stats import Stats
from .store import Store
from .writer import Stored, Write, Writer, create_writer, sms_dedupe_key

log = logging.getLogger("namaskah_notify.dispatcher")

SMS_TITLE = "📱 SMS Code Received"
SMS_TYPE = "sms_received"


class Dispatcher:
    def __init__(self, database_url: str, store: Store, broker: Broker, stats: Stats,
                 presence: Callable[[], Awaitable[list[str]]], *, sqlite_synchronous: str = "FULL") -> None:
        self._store = store
        self._broker = broker
        self._stats = stats
        self._presence = presence
        self._writer: Writer = create_writer(database_url, self._push, sqlite_synchronous=sqlite_synchronous)

    async def start(self) -> None:
        await self._writer.start()

    async def close(self) -> None:
        await self._writer.close()

    async def notify(self, user_ids: Sequence[str], content: Content) -> Stored:
        """Store one notification per user (one transaction), then push each to its user's tabs."""
        if not user_ids:
            return Stored([], [])
        return await self._writer.add(Write(list(user_ids), content))

    async def broadcast(self, content: Content) -> Stored:
        """The origin document's broadcast: every user connected right now, each with its own seq."""
        return await self.notify(await self._presence(), content)

    async def on_sms_received(
        self, user_id: str, verification_id: str, service: str, code: str, message_id: str | None = None
    ) -> Stored:
        """The origin document's SMS notification. A repeated ``message_id`` answers the first notification
        (``created`` False) and pushes nothing. The code itself is neither stored nor logged."""
        del code  # the notification says a code arrived; the code is shown by the app behind the link
        content = Content(SMS_TITLE, f"Verification code received for {service}", SMS_TYPE,
                          f"/verify?id={verification_id}", {"verification_id": verification_id, "service": service})
        key = sms_dedupe_key(user_id, message_id) if message_id else None
        stored = await self._writer.add(Write([user_id], content, key))
        if not stored.created:
            log.info("sms repeated: user=%s verification=%s pushed nothing", user_id, verification_id)
        return stored

    async def mark_read(self, user_id: str, notification_id: str) -> Notification:
        record, changed, unread = await self._store.mark_read(user_id, notification_id)
        if record is None:
            raise NotFound("no such notification for this user")
        if changed:
            self._publish([Frame(user_id, protocol.read_frame([notification_id], False, unread))])
        return record

    async def mark_all_read(self, user_id: str) -> int:
        changed = await self._store.mark_all_read(user_id)
        if changed:  # nothing was unread: nothing to tell the tabs
            self._publish([Frame(user_id, protocol.read_frame([], True, 0))])
        return changed

    def _push(self, batch: list[Stored]) -> None:
        """The writer's ``on_commit``: every notification it just committed, in ``seq`` order."""
        messages: list[Message] = []
        for stored in batch:
            created = stored.records[0].created_at.timestamp()  # one moment per write
            for record, data in zip(stored.records, stored.data, strict=True):
                messages.append(Push(record.user_id, record.seq, created, protocol.wrap_notification(data)))
        if not messages:
            return
        self._stats.published(len(messages))
        self._publish(messages)
        if log.isEnabledFor(logging.INFO):
            for stored in batch:
                first = stored.records[0]
                if len(stored.records) == 1:
                    log.info("published: user=%s seq=%d type=%s title=%r", first.user_id, first.seq,
                             first.content.type, first.content.title)
                else:
                    log.info("published: users=%d type=%s title=%r", len(stored.records), first.content.type,
                             first.content.title)

    def _publish(self, messages: list[Message]) -> None:
        try:
            self._broker.publish(messages)
        except Exception:
            # Stored already: clients that miss the push get it by resuming or polling.
            log.exception("broker publish failed for %d messages; they stay stored", len(messages))
