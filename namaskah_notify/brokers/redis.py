"""The Redis broker (redis-py asyncio): fan-out between nodes, and the cluster's shared view.

Fan-out: one channel, ``notify:events``, that every node subscribes to. A publish is delivered to this
node's hub at once and put on an outbox; one sender task publishes the outbox in order, at most
``MAX_MESSAGES`` and ``MAX_BYTES`` per Redis message (a subscriber past Redis's client output limit,
32 MB by default, is disconnected), so a burst costs few round trips and a big broadcast is sent in
chunks. Every other node delivers what concerns the connections it holds and drops the rest.

Shared view: every key belongs to one node and expires with it, so a SIGKILLed node leaves nothing
behind once its TTL (two heartbeats) has passed:
- ``notify:nodes``: sorted set of node ids, scored by when each one's heartbeat expires (Redis's own
  clock, so node clocks never matter);
- ``notify:node:<id>``: the node's last heartbeat (hash);
- ``notify:node:<id>:users``: user → that user's connections on the node (hash), which both the
  cluster-wide per-user limit and a broadcast's audience read.
Each node writes its own figures as absolute numbers it knows locally, and writes its whole user map
back whenever Redis's copy may be wrong: after every reconnect (a Redis restarted empty) and whenever a
heartbeat finds the count differs.

Faults: any command that fails or outlasts the socket timeout (a Redis that hangs rather than refuses)
marks the broker down. While down nothing waits on Redis: publishing is local only (other nodes catch up
from the store), claims count on this node's own limit, and the listener keeps trying to subscribe; once
it succeeds the node writes its view back, then reports up and has its connections caught up. Each
change of state is logged once, with a reminder at most once a minute while it lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .base import Broker, Deliver, Describe, OnGap
from .messages import Message, decode, encode

log = logging.getLogger("namaskah_notify.brokers.redis")

CHANNEL = "notify:events"
MAX_MESSAGES = 1000  # in one Redis message
MAX_BYTES = 1 << 20  # of frames in one Redis message, far below Redis's pub/sub output limits
MAX_OUTBOX = 100_000  # messages waiting for Redis; past this the oldest are dropped (nodes catch up)
NODES = "notify:nodes"
NODE = "notify:node:"
TIMEOUT_S = 2.0  # any Redis command; longer counts as a hanging Redis
REWRITE_CHUNK = 1000  # users per HSET when writing the user map back
REMINDER_S = 60.0

T = TypeVar("T")

# Live node ids (heartbeat not expired by Redis's clock), after the current time in milliseconds.
_LIVE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
table.insert(live, 1, tostring(now))
return live
"""

# A heartbeat: renew the node's entry and keys, drop expired nodes, store its figures; returns how many
# users Redis holds for the node, so the node can tell whether its map must be written back.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], 'figures', ARGV[3], 'at', now)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return redis.call('HLEN', KEYS[3])
"""

# Claim a connection slot: the user's connections on every other live node plus this node's count
# (the new one included) must stay within the limit; then this node's count is stored.
_CLAIM = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local total = tonumber(ARGV[3])
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if node ~= ARGV[1] then
    local n = redis.call('HGET', ARGV[5] .. node .. ':users', ARGV[2])
    if n then total = total + tonumber(n) end
  end
end
if total > tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
"""


class BrokerDown(RedisError):
    """Redis is known to be unreachable; nothing was asked of it."""


class RedisBroker(Broker):
    shared = True

    def __init__(self, url: str, node_id: str, *, node_ttl_s: float = 3.0) -> None:
        self._node_id = node_id
        self._ttl_ms = int(node_ttl_s * 1000)
        self.heartbeat_interval_s = node_ttl_s / 2  # a node that missed two heartbeats is gone
        self._redis = aioredis.from_url(url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S)
        self._live = self._redis.register_script(_LIVE)
        self._beat = self._redis.register_script(_HEARTBEAT)
        self._claim = self._redis.register_script(_CLAIM)
        self._key = f"{NODE}{node_id}"
        self._users_key = f"{NODE}{node_id}:users"
        self._deliver: Deliver | None = None
        self._on_gap: OnGap | None = None
        self._describe: Describe | None = None
        self._listener: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._outbox: list[Message] = []
        self._sender: asyncio.Task[None] | None = None
        self._reminded = 0.0
        self.up = False
        self.down_since: float | None = None  # set while Redis is unreachable
        self.state_changes = 0

    async def start(self, deliver: Deliver, on_gap: OnGap | None = None, describe: Describe | None = None) -> None:
        self._deliver = deliver
        self._on_gap = on_gap
        self._describe = describe
        self._listener = asyncio.create_task(self._listen(), name="redis-listener")
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="redis-heartbeat")
        # Serve even if Redis is down at start: local delivery works and the listener keeps trying.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5)

    # -- state ------------------------------------------------------------------------------------------
    def _restored(self) -> None:
        if self.up:
            return
        if self.down_since is None:
            log.info("broker up: subscribed to redis")
        else:
            log.warning("broker up: redis reachable again after %.1f s; connections catch up from the store",
                        time.time() - self.down_since)
        self.up, self.down_since = True, None
        self.state_changes += 1

    def _lost(self, exc: BaseException) -> None:
        """A command failed or hung: stop asking Redis anything until the listener resubscribes."""
        if not self.up:
            return
        self.up, self.down_since = False, time.time()
        self.state_changes += 1
        self._reminded = time.monotonic()
        log.warning("broker down: redis unreachable (%s); publishing on this node only, other nodes catch "
                    "up from the store once it is back", _describe_error(exc))
        # A hanging Redis leaves the subscription looking alive: start it again, to find out when it answers.
        if self._listener is not None and self._listener is not asyncio.current_task():
            self._listener.cancel()
            self._listener = asyncio.create_task(self._listen(), name="redis-listener")

    def _remind(self) -> None:
        if self.down_since is not None and time.monotonic() - self._reminded >= REMINDER_S:
            self._reminded = time.monotonic()
            log.warning("broker still down: redis unreachable for %.0f s", time.time() - self.down_since)

    async def _ask(self, call: Awaitable[T]) -> T:
        """One command while up; a failure marks the broker down and raises ``BrokerDown``."""
        if not self.up:
            if asyncio.iscoroutine(call):
                call.close()
            raise BrokerDown("redis is down")
        try:
            return await call
        except (RedisError, OSError, TimeoutError) as exc:
            self._lost(exc)
            raise BrokerDown(f"redis unreachable: {_describe_error(exc)}") from None

    # -- the subscription -------------------------------------------------------------------------------
    async def _listen(self) -> None:
        delay = 0.1
        first = self.state_changes == 0
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                await self._write_back()  # a Redis restarted empty knows nobody: tell it who is here first
                self._restored()
                self._subscribed.set()
                if not first and self._on_gap is not None:
                    self._on_gap()  # traffic sent while we were away reaches our connections from the store
                first, delay = False, 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._receive(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                if self.up:
                    self._lost(exc)
                elif self.down_since is None:
                    log.warning("broker down: redis unreachable at start (%s); retrying", _describe_error(exc))
                    self.down_since = time.time()
                    self._reminded = time.monotonic()
                self._remind()
            except Exception:
                log.exception("redis listener failed; restarting it")
                self._lost(RuntimeError("listener failed"))
            finally:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(pubsub.aclose(), TIMEOUT_S)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _receive(self, data: bytes) -> None:
        try:
            node, messages = decode(data)
        except ValueError:
            log.error("dropped a malformed broker message (%d bytes)", len(data))
            return
        if node != self._node_id and self._deliver is not None:  # our own were delivered locally already
            self._deliver(messages)

    # -- publishing -------------------------------------------------------------------------------------
    def publish(self, messages: list[Message]) -> None:
        if self._deliver is not None:
            self._deliver(messages)
        if not self.up:
            return  # the others catch up from the store once Redis is back
        self._outbox.extend(messages)
        if len(self._outbox) > MAX_OUTBOX:
            del self._outbox[:-MAX_OUTBOX]
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="redis-sender")

    async def _send(self) -> None:
        """Publish the outbox, in order, in chunks, one Redis message per round trip, until it is empty."""
        try:
            while self._outbox and self.up:
                count = _chunk(self._outbox)
                messages, self._outbox = self._outbox[:count], self._outbox[count:]
                try:
                    await self._ask(self._redis.publish(CHANNEL, encode(self._node_id, messages)))
                except BrokerDown:
                    self._outbox.clear()  # other nodes find these in the store when they catch up
        finally:
            self._sender = None

    # -- the cluster's shared view ----------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            if not self.up:
                self._remind()
                continue  # the listener is the probe while Redis is down
            with contextlib.suppress(BrokerDown):
                await self.heartbeat()

    async def heartbeat(self) -> None:
        """Renew this node's entry; write its user map back when Redis's copy has the wrong size."""
        figures, held = self._describe() if self._describe else ({}, {})
        count = await self._ask(self._beat(keys=[NODES, self._key, self._users_key],
                                           args=[self._node_id, self._ttl_ms, orjson.dumps(figures)]))
        if int(count) != len(held):
            await self._ask(self._write_back())

    async def _write_back(self) -> None:
        """Replace Redis's copy of who is connected here (after a restart it has none), then heartbeat."""
        figures, held = self._describe() if self._describe else ({}, {})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._users_key)
            items = list(held.items())
            for start in range(0, len(items), REWRITE_CHUNK):
                pipe.hset(self._users_key, mapping=dict(items[start:start + REWRITE_CHUNK]))
            pipe.pexpire(self._users_key, self._ttl_ms)
            await pipe.execute()
        await self._beat(keys=[NODES, self._key, self._users_key],
                         args=[self._node_id, self._ttl_ms, orjson.dumps(figures)])

    async def claim_connection(self, user_id: str, count: int, limit: int) -> bool:
        try:
            keys = [NODES, self._users_key]
            args = [self._node_id, user_id, count, limit, NODE, self._ttl_ms]
            return bool(await self._ask(self._claim(keys=keys, args=args)))
        except BrokerDown:
            return True  # availability over the limit: the node's own limit still holds

    async def release_connection(self, user_id: str, count: int) -> None:
        with contextlib.suppress(BrokerDown):
            if count:
                await self._ask(self._redis.hset(self._users_key, user_id, count))
            else:
                await self._ask(self._redis.hdel(self._users_key, user_id))

    async def _live_nodes(self) -> tuple[int, list[str]]:
        now, *ids = await self._ask(self._live(keys=[NODES]))
        return int(now), sorted(i.decode() for i in ids)

    async def nodes(self) -> list[dict[str, Any]]:
        now, ids = await self._live_nodes()
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hgetall(f"{NODE}{node_id}")
            beats = await self._ask(pipe.execute())
        result = []
        for node_id, beat in zip(ids, beats, strict=True):
            if not beat or b"figures" not in beat:
                continue
            fields = orjson.loads(beat[b"figures"])
            fields["id"] = node_id
            fields["heartbeat_age_s"] = round((now - int(beat.get(b"at", now))) / 1000, 2)
            result.append(fields)
        return result

    async def connection_counts(self, user_ids: list[str]) -> dict[str, int]:
        _, ids = await self._live_nodes()
        counts = dict.fromkeys(user_ids, 0)
        if not ids or not user_ids:
            return counts
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hmget(f"{NODE}{node_id}:users", user_ids)
            held = await self._ask(pipe.execute())
        for values in held:
            for user_id, value in zip(user_ids, values, strict=True):
                if value is not None:
                    counts[user_id] += int(value)
        return counts

    async def connected_users(self) -> list[str]:
        _, ids = await self._live_nodes()
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hkeys(f"{NODE}{node_id}:users")
            held = await self._ask(pipe.execute())
        users: set[bytes] = set()
        for members in held:
            users.update(members)
        return sorted(m.decode() for m in users)

    async def ping(self) -> None:
        await self._ask(self._redis.ping())

    async def close(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sender), 2)
        for task in (self._heartbeat, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.up:
            with contextlib.suppress(Exception):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.zrem(NODES, self._node_id)
                    pipe.delete(self._key, self._users_key)
                    await asyncio.wait_for(pipe.execute(), TIMEOUT_S)
        with contextlib.suppress(Exception):
            await self._redis.aclose()


def _chunk(messages: list[Message]) -> int:
    """How many of the first messages fit one Redis message (at least one)."""
    size = 0
    for count, message in enumerate(messages[:MAX_MESSAGES]):
        size += len(getattr(message, "frame", "")) + 64
        if size > MAX_BYTES and count:
            return count
    return min(len(messages), MAX_MESSAGES)


def _describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
