"""Web Push as a channel beyond the open tabs: the dispatcher hands :meth:`WebPush.offer` every pushed
notification; those of users who have subscriptions and are not silenced wait in one bounded queue; a
delivery loop takes them in batches, keeps those whose user has no live connection anywhere in the cluster,
and sends one encrypted push per subscription, at most ``NOTIFY_PUSH_CONCURRENCY`` at once.

Publishing never waits on any of this: ``offer`` only queues, and a full queue drops (counted in
``notify_webpush_dropped_total``). A push service that answers 404 or 410 no longer knows the subscription,
which is deleted; 429, 5xx and network failures are tried again after a backoff with full jitter, never
sooner than its ``Retry-After``, up to ``NOTIFY_PUSH_MAX_ATTEMPTS``; anything else fails for good. Logs name
an endpoint by its origin only (its path is the subscription's secret), never a payload or a header.
Imports ``brokers``, ``dispatcher``, ``hub``, ``schemas`` and the rest of ``push``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from datetime import datetime, timedelta

import httpcore
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..brokers import Broker
from ..client._retry import parse_retry_after as retry_after  # one parser of Retry-After for both
from ..config import Settings
from ..dispatcher import Offer
from ..errors import BadEndpoint
from ..hub import Hub
from ..schemas import utcnow
from .endpoints import EndpointPolicy
from .message import Subscription, VapidKey, encrypt, headers, payload
from .sender import RefusedAddress, Sender
from .store import Subscriptions

log = logging.getLogger("namaskah_notify.push")
BATCH = 100  # offers read from the queue at once: one presence check and one read of subscriptions
RETRY_BASE_S = 1.0
LOOKBACK = timedelta(seconds=60)  # commits still in flight when another node's subscriptions were read


@dataclasses.dataclass(frozen=True, slots=True)
class Push:
    """One encrypted push to send (again): the subscription, the payload and its headers, which attempt."""

    subscription: Subscription
    body: bytes
    headers: dict[str, str]
    attempt: int = 1
    since: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def user_id(self) -> str:
        return self.subscription.user_id


class WebPush:
    def __init__(self, settings: Settings, key: VapidKey, store: Subscriptions, hub: Hub, broker: Broker,
                 registry: CollectorRegistry) -> None:
        self.key = key
        self.policy = EndpointPolicy(settings.push_insecure_hosts)
        self.store = store
        self._settings = settings
        self._hub = hub
        self._broker = broker
        self._queue: asyncio.Queue[Offer | Push] = asyncio.Queue(settings.push_queue_size)
        self._slots = asyncio.Semaphore(settings.push_concurrency)
        self._sender = Sender(self.policy, timeout_s=settings.push_timeout_s,
                              max_connections=settings.push_concurrency)
        self.subscribers: set[str] = set()  # users with a subscription: the dispatcher offers only theirs
        self._read_until: datetime | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._dropped_since_warning = 0
        self._warned_at = 0.0
        self._m_sent = Counter("notify_webpush_sent", "Pushes a push service accepted", registry=registry)
        self._m_failed = Counter("notify_webpush_failed", "Pushes that failed for good, by reason", ["reason"],
                                 registry=registry)
        self._m_dropped = Counter("notify_webpush_dropped", "Pushes dropped because the push queue was full",
                                  registry=registry)
        self._m_retries = Counter("notify_webpush_retries", "Pushes tried again after 429, 5xx or a network error",
                                  registry=registry)
        self._m_gone = Counter("notify_webpush_gone", "Subscriptions deleted: the push service answered 404 or 410",
                               registry=registry)
        Gauge("notify_webpush_queued", "Notifications waiting to be pushed", registry=registry).set_function(
            self._queue.qsize)

    # -- the dispatcher's side: never waits, never raises ---------------------------------------------
    def offer(self, offers: list[Offer]) -> None:
        for offer in offers:
            if not offer.silent and offer.user_id in self.subscribers:
                self._enqueue(offer)

    def subscribed(self, user_id: str) -> None:
        """A subscription of the user's was stored on this node: offer their notifications from now on."""
        self.subscribers.add(user_id)

    def _enqueue(self, item: Offer | Push) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._m_dropped.inc()
            self._dropped_since_warning += 1
            now = time.monotonic()
            if now - self._warned_at >= 10:
                log.warning("push queue full (NOTIFY_PUSH_QUEUE_SIZE=%d): %d pushes dropped",
                            self._queue.maxsize, self._dropped_since_warning)
                self._warned_at, self._dropped_since_warning = now, 0

    # -- lifetime -------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._refresh()
        self._tasks.append(asyncio.create_task(self._deliver_forever(), name="webpush"))
        if self._broker.shared:  # other nodes store subscriptions too
            self._tasks.append(asyncio.create_task(self._refresh_forever(), name="webpush-subscribers"))

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in [*self._tasks, *self._sending]:
            task.cancel()
        for task in [*self._tasks, *self._sending]:
            with contextlib.suppress(BaseException):
                await task
        await self._sender.close()

    async def _refresh(self) -> None:
        users, now = await self.store.users_since(self._read_until)
        self.subscribers |= users
        self._read_until = now - LOOKBACK

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reconcile_interval_s)
            try:
                await self._refresh()
            except Exception as exc:  # the database is down: the next round reads what this one missed
                log.debug("reading push subscribers failed: %s", exc)

    # -- delivery ---------------------------------------------------------------------------------------
    async def _deliver_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._deliver(batch)
            except Exception:  # the database is down, or a bug: these are lost, the next batch is tried
                self._m_failed.labels("internal").inc(len(batch))
                log.exception("pushing %d notifications failed", len(batch))

    async def _deliver(self, batch: list[Offer | Push]) -> None:
        offline = await self._offline(list(dict.fromkeys(item.user_id for item in batch)))
        batch = [item for item in batch if item.user_id in offline]
        wanted = {item.user_id for item in batch if isinstance(item, Offer)}
        subscriptions = await self.store.of_users(sorted(wanted)) if wanted else {}
        now = utcnow()
        for item in batch:
            if isinstance(item, Push):
                await self._launch(item)
                continue
            mine = subscriptions.get(item.user_id)
            if not mine:
                continue
            body, notification = payload(item.data)
            extra = headers(notification, self._settings.push_ttl_s, now)
            for subscription in mine if extra is not None else ():
                await self._launch(Push(subscription, body, extra))

    async def _offline(self, users: list[str]) -> set[str]:
        """Those of ``users`` with no live connection anywhere in the cluster (on this node alone while the
        broker is down or absent)."""
        alone = [user for user in users if self._hub.connections_of(user) == 0]
        counts = None
        if alone and self._broker.shared and self._broker.up:
            try:
                counts = await self._broker.connection_counts(alone)
            except Exception:  # the broker marks itself down; this node's view serves
                counts = None
        return {user for user in alone if not (counts or {}).get(user)}

    async def _launch(self, push: Push) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._send(push))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            self._m_failed.labels("internal").inc()
            log.error("a push failed", exc_info=task.exception())

    async def _send(self, push: Push) -> None:
        subscription = push.subscription
        try:
            origin = self.policy.check(subscription.endpoint)  # NOTIFY_PUSH_INSECURE_HOSTS may have changed
        except BadEndpoint:
            await self._failed(push, "refused_endpoint", "endpoint no longer allowed")
            return
        try:
            body = await asyncio.to_thread(encrypt, push.body, subscription)
            request = {**push.headers, "Authorization": self.key.authorization(origin),
                       "Content-Encoding": "aes128gcm", "Content-Type": "application/octet-stream"}
            answer = await self._sender.post(subscription.endpoint, request, body)
        except ValueError:
            await self._failed(push, "bad_key", "subscription keys unusable")
            return
        except RefusedAddress:
            await self._failed(push, "refused_address", "resolves to an address not allowed")
            return
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            await self._retry(push, None, type(exc).__name__)
            return
        status = answer.status
        if 200 <= status < 300:
            self._m_sent.inc()
            log.debug("push sent: user=%s origin=%s status=%d", push.user_id, origin, status)
            if subscription.failures:
                await self.store.outcome(subscription.endpoint, None)
        elif status in (404, 410):
            self._m_gone.inc()
            log.info("push subscription gone: user=%s origin=%s status=%d", push.user_id, origin, status)
            await self.store.gone(subscription.endpoint)
        elif status == 429 or status >= 500:
            await self._retry(push, answer.retry_after, f"HTTP {status}")
        else:
            await self._failed(push, "rejected", f"HTTP {status}")

    async def _retry(self, push: Push, header: str | None, error: str) -> None:
        """Send again after a backoff with full jitter, but not before ``Retry-After``; give up after the last
        attempt, when ``Retry-After`` asks for longer than ``NOTIFY_PUSH_RETRY_MAX_S``, or past the TTL."""
        settings = self._settings
        wait = random.uniform(0, min(settings.push_retry_max_s, RETRY_BASE_S * 2 ** (push.attempt - 1)))
        asked = retry_after(header)
        if asked is not None:
            wait = max(wait, asked)
        ttl = float(push.headers.get("TTL", settings.push_ttl_s))
        if (push.attempt >= settings.push_max_attempts or wait > settings.push_retry_max_s
                or time.monotonic() - push.since + wait > ttl or len(self._timers) >= self._queue.maxsize):
            await self._failed(push, "retries_exhausted", error)
            return
        self._m_retries.inc()
        again = dataclasses.replace(push, attempt=push.attempt + 1)
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            self._enqueue(again)

        timer = asyncio.get_running_loop().call_later(wait, fire)
        self._timers.add(timer)

    async def _failed(self, push: Push, reason: str, error: str) -> None:
        self._m_failed.labels(reason).inc()
        origin = _origin(push.subscription.endpoint)
        log.warning("push failed: user=%s origin=%s reason=%s error=%s attempts=%d", push.user_id, origin, reason,
                    error, push.attempt)
        with contextlib.suppress(Exception):  # a note for operators; the database may be down
            await self.store.outcome(push.subscription.endpoint, f"{reason}: {error}")


def _origin(endpoint: str) -> str:
    scheme, _, rest = endpoint.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
