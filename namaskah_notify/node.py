"""What this process does as one node of a cluster: what it tells the others, and catching its connections up.

Catching up covers what the broker cannot promise: a node that died between commit and publish, a
message lost while Redis was down, a subscription that dropped for a moment. Every few seconds the node
compares each connected user's last stored ``seq`` with what each connection was sent; a connection
still behind a seq that was already stored at the previous check is told to fill the gap from the
store. When the broker reports a gap, the check runs at once and fills without waiting.
Imports ``brokers``, ``hub``, ``revocations``, ``stats`` and ``store``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from .brokers import Broker, CatchUp
from .hub import Connection, Hub
from .preferences import PreferenceBook
from .revocations import Revocations
from .stats import Stats
from .store import Store

log = logging.getLogger("namaskah_notify.node")

CHUNK = 500


class Node:
    def __init__(self, node_id: str, hub: Hub, store: Store, broker: Broker, stats: Stats,
                 revocations: Revocations, *, reconcile_interval_s: float,
                 preferences: PreferenceBook | None = None) -> None:
        self.node_id = node_id
        self._hub = hub
        self._store = store
        self._broker = broker
        self._stats = stats
        self._revocations = revocations
        self._preferences = preferences
        self._reconcile_interval = reconcile_interval_s
        self._wake = asyncio.Event()
        self._force = False
        self._tasks: list[asyncio.Task[None]] = []
        self.filled_total = 0

    def info(self) -> dict:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "connections": self._hub.connection_count,
            "users": self._hub.user_count,
            "published": self._stats.published_total,
            "pushed": self._stats.pushed_total,
            "started_at": self._stats.started_at,
        }

    def describe(self) -> tuple[dict, dict[str, int]]:
        """What the broker publishes about this node: its figures, and each user's connections here."""
        return self.info(), self._hub.held()

    def start(self) -> None:
        if not self._broker.shared:
            return  # alone, in-process publishing cannot lose a message between nodes
        self._tasks = [asyncio.create_task(self._reconcile_loop(), name="reconcile")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def gap(self) -> None:
        """The broker may have dropped traffic: check every connection now."""
        self._force = True
        self._wake.set()

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._reconcile_interval)
            try:
                await self._reconcile_once()
                self._close_revoked(await self._revocations.refresh(self._store))
                if self._preferences is not None:
                    await self._preferences.refresh(self._store)
            except Exception as exc:  # the database is down: next round
                log.debug("reconcile failed: %s", exc)

    def _close_revoked(self, users: list[str]) -> None:
        """Revocations this node learnt from the table rather than the broker: close what they cover."""
        for user_id in users:
            for connection in self._hub.connections_for(user_id):
                if self._revocations.refuses_issued(user_id, connection.issued_at):
                    connection.close(4401, "token revoked")

    async def _reconcile_once(self) -> None:
        force, self._force = self._force, False
        self._wake.clear()
        users = self._hub.user_ids()
        for start in range(0, len(users), CHUNK):
            stored = await self._store.last_seqs(users[start:start + CHUNK])
            for user_id, last in stored.items():
                for connection in self._hub.connections_for(user_id):
                    self._check(connection, last, force)

    def _check(self, connection: Connection, stored_last: int, force: bool) -> None:
        if connection.last_seq >= stored_last:
            connection.behind_at = 0
            return
        target = stored_last if force else connection.behind_at
        if target and connection.last_seq < target:
            self.filled_total += 1
            log.info("catching up: user=%s connection=%s from seq %d to %d",
                     connection.user_id, connection.id, connection.last_seq, target)
            connection.enqueue(CatchUp(connection.user_id, target))
        connection.behind_at = stored_last
