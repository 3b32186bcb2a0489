"""Store, then publish: the one way a notification, or a read, unread or deleted event, enters the system.

A publish goes straight down one line: the route's :class:`Content` becomes a ``Write`` for the writer;
the writer commits it (grouped with whatever else is queued) and hands it to :meth:`Dispatcher._push`
right after the commit, which turns each stored notification into a ``Push`` for the broker; the broker
delivers to this node's hub at once and forwards, in order, to the other nodes.
Imports ``brokers``, ``errors``, ``protocol``, ``schemas``, ``stats``, ``store`` and ``writer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from . import protocol
from .brokers import Broker, Frame, Message, Push
from .errors import NotFound
from .preferences import PreferenceBook
from .schemas import Content, Notification, utcnow
from .stats import Stats
from .store import Store
from .writer import Idempotency, Stored, Write, Writer, create_writer, sms_dedupe_key

log = logging.getLogger("namaskah_notify.dispatcher")
ERASED_FOR_S = 60.0  # an erased user's closing connections are not recorded as seen for this long


class OfflineChannel(Protocol):
    """A way to reach users beyond their open tabs (Web Push)."""

    subscribers: set[str]  # the users it can reach: only their notifications are offered

    def offer(self, offers: list[Offer]) -> None: ...


@dataclass(frozen=True, slots=True)
class Offer:
    """A pushed notification, for a channel beyond the open tabs: whose, its JSON ``data`` as the tabs got
    it, its priority, and whether the user's preferences silence it (then it must make no sound)."""

    user_id: str
    data: str
    priority: str
    silent: bool


DELETED_IDS_PER_FRAME = 1000

SMS_TITLE = "📱 SMS Code Received"
SMS_TYPE = "sms_received"


class Dispatcher:
    def __init__(self, database_url: str, store: Store, broker: Broker, stats: Stats,
                 presence: Callable[[], Awaitable[list[str]]], *, sqlite_synchronous: str = "FULL",
                 idempotency_ttl_s: float = 86400.0, preferences: PreferenceBook | None = None) -> None:
        self._store = store
        self._broker = broker
        self._stats = stats
        self._presence = presence
        self._writer: Writer = create_writer(database_url, self._push, sqlite_synchronous=sqlite_synchronous,
                                             idempotency_ttl_s=idempotency_ttl_s)
        self._seen: set[str] = set()
        self._erased: dict[str, float] = {}  # user -> when erased (monotonic)
        self._seen_task: asyncio.Task[None] | None = None
        self.preferences = preferences or PreferenceBook()
        # Channels that reach users beyond their open tabs (Web Push): each is handed the pushed
        # notifications of its subscribers, after the broker, and must only queue (it decides who is offline).
        self.offline: list[OfflineChannel] = []

    async def start(self) -> None:
        await self._writer.start()
        self._seen_task = asyncio.create_task(self._record_seen(), name="users-seen")

    async def close(self) -> None:
        if self._seen_task is not None:
            self._seen_task.cancel()
            with contextlib.suppress(BaseException):
                await self._seen_task
        with contextlib.suppress(Exception):
            await self._flush_seen()
        await self._writer.close()

    async def notify(self, user_ids: Sequence[str], content: Content,
                     idempotency: Idempotency | None = None) -> Stored:
        """Store one notification per user (one transaction), then push each to its user's tabs."""
        if not user_ids:
            return Stored([], [])
        return await self._writer.add(Write(list(user_ids), content, idempotency=idempotency))

    async def audience(self, audience: str = "all") -> list[str]:
        """A broadcast's users: every user the service knows (``all``: anyone who ever connected or was
        notified; the ones offline find it when they come back), or only those connected anywhere right
        now (``connected``)."""
        connected = await self._presence()
        if audience == "connected":
            return connected
        # The connected first: their chunk is committed and pushed first, while the rest is stored.
        return list(dict.fromkeys([*connected, *await self._store.known_users()]))

    async def broadcast(self, content: Content, audience: str = "all",
                        idempotency: Idempotency | None = None) -> Stored:
        """Store for each of the audience's users, with their own seq; the rows are committed in chunks."""
        return await self.notify(await self.audience(audience), content, idempotency)

    def seen(self, user_id: str) -> None:
        """A user connected or left: known from now on, last seen now (recorded within a second, many at a
        time). Not a user just erased, whose connections are still closing."""
        if user_id in self._erased and time.monotonic() - self._erased[user_id] < ERASED_FOR_S:
            return
        if len(self._seen) < 100_000:
            self._seen.add(user_id)

    def forget(self, user_id: str) -> None:
        """The user is being erased: do not record their earlier connection as known after it, and let their
        preferences go (other nodes hear of it through the broker)."""
        self._seen.discard(user_id)
        self.preferences.forget(user_id)
        self._writer.forget(user_id)
        now = time.monotonic()
        self._erased = {u: t for u, t in self._erased.items() if now - t < ERASED_FOR_S}
        self._erased[user_id] = now

    async def _record_seen(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._flush_seen()
            except Exception as exc:  # the database is down: try again with the next ones
                log.debug("recording users seen failed: %s", exc)

    async def _flush_seen(self) -> None:
        if not self._seen:
            return
        batch, self._seen = sorted(self._seen), set()
        try:
            await self._store.seen(batch, utcnow())
        except Exception:
            self._seen.update(batch[: 100_000 - len(self._seen)])
            raise

    async def on_sms_received(
        self, user_id: str, verification_id: str, service: str, code: str, message_id: str | None = None,
        idempotency: Idempotency | None = None,
    ) -> Stored:
        """The origin document's SMS notification. A repeated ``message_id`` answers the first notification
        (``created`` False) and pushes nothing. The code itself is neither stored nor logged."""
        del code  # the notification says a code arrived; the code is shown by the app behind the link
        content = Content(SMS_TITLE, f"Verification code received for {service}", SMS_TYPE,
                          f"/verify?id={verification_id}", {"verification_id": verification_id, "service": service})
        key = sms_dedupe_key(user_id, message_id) if message_id else None
        stored = await self._writer.add(Write([user_id], content, key, idempotency))
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

    async def mark_read_many(self, user_id: str, notification_ids: Sequence[str]) -> tuple[list[str], int]:
        """Marks those of the ids that are the user's and unread; ``(their ids, unread_count)``."""
        changed, unread = await self._store.mark_read_many(user_id, notification_ids)
        if changed:
            self._publish([Frame(user_id, protocol.read_frame(changed, False, unread))])
        return changed, unread

    async def mark_unread(self, user_id: str, notification_id: str) -> Notification:
        record, changed, unread = await self._store.mark_unread(user_id, notification_id)
        if record is None:
            raise NotFound("no such notification for this user")
        if changed:
            self._publish([Frame(user_id, protocol.unread_frame([notification_id], unread))])
        return record

    async def delete(self, user_id: str, notification_id: str) -> int:
        """Deletes one of the user's notifications; the unread count after it."""
        deleted, unread = await self._store.delete(user_id, notification_id)
        if not deleted:
            raise NotFound("no such notification for this user")
        self._publish([Frame(user_id, protocol.deleted_frame([notification_id], False, unread))])
        return unread

    async def delete_all(self, user_id: str, *, only_read: bool) -> tuple[int, int]:
        """Deletes all of the user's notifications, or the read ones; ``(how many, unread_count)``."""
        ids, unread = await self._store.delete_all(user_id, only_read=only_read)
        if ids and only_read:  # the ids, a bounded number per frame
            self._publish([Frame(user_id, protocol.deleted_frame(ids[i:i + DELETED_IDS_PER_FRAME], False, unread))
                           for i in range(0, len(ids), DELETED_IDS_PER_FRAME)])
        elif ids:
            self._publish([Frame(user_id, protocol.deleted_frame([], True, unread))])
        return len(ids), unread

    def _push(self, batch: list[Stored]) -> None:
        """The writer's ``on_commit``: every notification it just committed, in ``seq`` order."""
        messages: list[Message] = []
        offers: list[Offer] = []
        now = utcnow()
        # Per notification only dictionary and set look-ups: most users changed no preference and have no
        # push subscription, and then cost nothing more.
        changed = self.preferences.changed
        reachable = [channel.subscribers for channel in self.offline if channel.subscribers]
        for stored in batch:
            first = stored.records[0]
            content = first.content
            if content.expires_at is not None and content.expires_at <= now:
                continue  # stored, and already past: never pushed
            created = first.created_at.timestamp()  # one moment per write
            for record, data in zip(stored.records, stored.data, strict=True):
                user_id = record.user_id
                preferences = changed.get(user_id) if changed else None
                silent = preferences is not None and preferences.silences(content.type, content.priority, now)
                if silent:  # muted, or quiet hours: delivered without a sound
                    data = data[:-1] + ',"silent":true}'
                messages.append(Push(user_id, record.seq, created, protocol.wrap_notification(data)))
                if reachable and any(user_id in subscribers for subscribers in reachable):
                    offers.append(Offer(user_id, data, content.priority, silent))
        if not messages:
            return
        self._stats.published(len(messages))
        self._publish(messages)
        for channel in self.offline if offers else ():
            try:
                channel.offer(offers)
            except Exception:  # a push channel's trouble never reaches publishing
                log.exception("handing %d notifications to a push channel failed", len(offers))
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
