"""The Redis broker (redis-py asyncio): fan-out between nodes, and the cluster's shared view.

Fan-out: one channel, ``notify:events``, that every node subscribes to. A publish is delivered to this
node's hub at once and put on an outbox; one sender task publishes everything on the outbox as one Redis
message (``messages.encode``), so messages leave in publishing order and a burst costs one round trip.
Every other node delivers what concerns the connections it holds and drops the rest (see
docs/scaling.md for what this costs at 100k users × 10 nodes). While the subscription is down, the node
says so (``on_gap``) so its connections catch up from the store.

Shared view, all with TTLs so a dead node drops out by itself:
- ``notify:node:<id>``: the node's last heartbeat (hash, expires after ``node_ttl_s``);
- ``notify:node:<id>:users``: users with a connection on that node (set), for broadcasts;
- ``notify:uconn:<user>``: connection id → node id, for the cluster-wide per-user limit; entries of
  nodes whose heartbeat expired are pruned when counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .base import Broker, Deliver, OnGap
from .messages import Message, decode, encode

log = logging.getLogger("namaskah_notify.brokers.redis")

CHANNEL = "notify:events"
MAX_MESSAGES = 1000  # in one Redis message
MAX_OUTBOX = 100_000  # messages waiting for Redis; past this the oldest are dropped (nodes catch up)
NODE = "notify:node:"
USER_CONNECTIONS = "notify:uconn:"

# Count the user's live connections (pruning those of dead nodes); add this one unless over the limit.
_CLAIM = """
local entries = redis.call('HGETALL', KEYS[1])
local live = 0
for i = 1, #entries, 2 do
  local node = entries[i + 1]
  if node == ARGV[2] or redis.call('EXISTS', ARGV[4] .. node) == 1 then
    live = live + 1
  else
    redis.call('HDEL', KEYS[1], entries[i])
  end
end
if live >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[5])
return 1
"""


class BrokerDown(RedisError):
    """Redis is known to be unreachable; publishing to other nodes was skipped."""


class RedisBroker(Broker):
    shared = True

    def __init__(self, url: str, node_id: str, *, node_ttl_s: float = 10.0) -> None:
        self._url = url
        self._node_id = node_id
        self._node_ttl_ms = int(node_ttl_s * 1000)
        self._redis = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10)
        self._claim = self._redis.register_script(_CLAIM)
        self._deliver: Deliver | None = None
        self._on_gap: OnGap | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._outbox: list[Message] = []
        self._sender: asyncio.Task[None] | None = None
        self.up = False

    async def start(self, deliver: Deliver, on_gap: OnGap | None = None) -> None:
        self._deliver = deliver
        self._on_gap = on_gap
        self._listener = asyncio.create_task(self._listen(), name="redis-listener")
        # Serve even if Redis is down at start: local delivery works and the listener keeps trying.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5)

    async def _listen(self) -> None:
        delay = 0.1
        first = True
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                self.up = True
                self._subscribed.set()
                if not first:
                    log.warning("redis subscription restored; catching connections up from the store")
                    if self._on_gap is not None:
                        self._on_gap()
                first, delay = False, 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._receive(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.up or first:
                    log.warning("redis unreachable (%s); retrying", type(exc).__name__)
                self.up = False
                first = False
            except Exception:
                log.exception("redis listener failed; restarting it")
                self.up = False
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
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
        """Publish the outbox, in order, one Redis message per round trip, until it is empty."""
        try:
            while self._outbox:
                # At most MAX_MESSAGES a message: a subscriber past Redis's output buffer limit is dropped.
                messages, self._outbox = self._outbox[:MAX_MESSAGES], self._outbox[MAX_MESSAGES:]
                try:
                    await self._redis.publish(CHANNEL, encode(self._node_id, messages))
                except (RedisError, OSError) as exc:
                    log.warning("redis publish failed (%s): %d messages reach other nodes by catching up",
                                type(exc).__name__, len(messages))
        finally:
            self._sender = None

    async def ping(self) -> None:
        if not self.up:
            raise BrokerDown("redis subscription is down")
        await self._redis.ping()

    async def close(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sender), 2)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
        with contextlib.suppress(Exception):
            await self._redis.delete(f"{NODE}{self._node_id}", f"{NODE}{self._node_id}:users")
        await self._redis.aclose()

    # -- the cluster's shared view ------------------------------------------------------------------
    async def claim_connection(self, user_id: str, connection_id: str, limit: int) -> bool:
        try:
            keys = [f"{USER_CONNECTIONS}{user_id}", f"{NODE}{self._node_id}:users"]
            args = [connection_id, self._node_id, limit, NODE, user_id]
            return bool(await self._claim(keys=keys, args=args))
        except (RedisError, OSError):
            return True  # availability over the limit: the node's own limit still holds

    async def release_connection(self, user_id: str, connection_id: str, last_here: bool = False) -> None:
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hdel(f"{USER_CONNECTIONS}{user_id}", connection_id)
                if last_here:
                    pipe.srem(f"{NODE}{self._node_id}:users", user_id)
                await pipe.execute()

    async def heartbeat(self, node: dict[str, Any]) -> None:
        key = f"{NODE}{self._node_id}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={k: orjson.dumps(v) for k, v in {**node, "at": time.time()}.items()})
            pipe.pexpire(key, self._node_ttl_ms)
            pipe.pexpire(f"{key}:users", self._node_ttl_ms)
            await pipe.execute()

    async def _node_ids(self) -> list[str]:
        ids = []
        async for key in self._redis.scan_iter(match=f"{NODE}*", count=500):
            name = key.decode()[len(NODE):]
            if not name.endswith(":users"):
                ids.append(name)
        return sorted(ids)

    async def nodes(self) -> list[dict[str, Any]]:
        ids = await self._node_ids()
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hgetall(f"{NODE}{node_id}")
            beats = await pipe.execute()
        now = time.time()
        result = []
        for node_id, beat in zip(ids, beats, strict=True):
            if not beat:
                continue
            fields = {k.decode(): orjson.loads(v) for k, v in beat.items()}
            fields["id"] = node_id
            fields["heartbeat_age_s"] = round(now - fields.pop("at", now), 2)
            result.append(fields)
        return result

    async def connected_users(self) -> list[str]:
        ids = await self._node_ids()
        if not ids:
            return []
        members = await self._redis.sunion([f"{NODE}{node_id}:users" for node_id in ids])
        return sorted(m.decode() for m in members)
