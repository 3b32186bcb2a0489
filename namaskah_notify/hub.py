"""The connections of this node, by user, and the sender each connection runs while it has frames to send.

Delivering (``Hub.deliver``, called by the broker) only appends frames to bounded per-connection queues;
it never awaits a client. Each connection's sender task writes its queue to the socket in ``seq`` order,
skipping what it already sent and filling a gap from the store (through the ``Fetch`` function it is
given), so one slow client holds up nobody and a client that lets its queue fill is closed (1008) and
recovers by resuming. Imports ``brokers.messages``, ``errors``, ``protocol``, ``schemas`` and ``stats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable

from . import protocol
from .brokers.messages import CatchUp, CloseUser, Frame, Message, Preferred, Push, Revoked
from .errors import NotifyError, TooManyConnections
from .schemas import Notification
from .stats import Stats

log = logging.getLogger("namaskah_notify.hub")

SendText = Callable[[str], Awaitable[None]]
SendNow = Callable[[str], bool]  # write a frame at once if the socket takes it without waiting; False if not
CloseSocket = Callable[[int, str], Awaitable[None]]
# (user_id, after_seq, upto_seq or None, limit) -> the stored notifications after_seq < seq <= upto_seq
Fetch = Callable[[str, int, int | None, int], Awaitable[list[Notification]]]
FirstSeq = Callable[[str], Awaitable[int | None]]  # user_id -> the oldest seq still stored (None: none)


class Connection:
    """One open WebSocket of one user. Slotted: thousands of idle ones should cost little."""

    __slots__ = ("_close_socket", "_closer", "_created", "_fetch", "_first_seq", "_queue", "_queue_size",
                 "_replay_limit", "_send_now", "_send_text", "_sender", "_sending", "_stats", "_timer", "behind_at",
                 "close_code", "closed", "id", "issued_at", "last_seq", "user_id")

    def __init__(
        self,
        user_id: str,
        send_text: SendText,
        close_socket: CloseSocket,
        *,
        fetch: Fetch,
        stats: Stats,
        queue_size: int,
        replay_limit: int,
        send_now: SendNow | None = None,
        first_seq: FirstSeq | None = None,
    ) -> None:
        self.id = secrets.token_hex(8)
        self.user_id = user_id
        self.last_seq = 0  # highest seq written to this socket
        self.issued_at: float | None = None  # the current token's iat, for revocation
        self.closed = False
        self.close_code: int | None = None
        self._send_text = send_text
        self._close_socket = close_socket
        self._fetch = fetch
        self._first_seq = first_seq
        self._send_now = send_now
        self._stats = stats
        self._replay_limit = replay_limit
        # A deque and a sender task that exists only while there is something to send: an idle
        # connection then costs no task, no coroutine and no queue machinery.
        self._queue: deque[Push | Frame | CatchUp] | None = None
        self._queue_size = queue_size
        self._sending = False  # set once the connection is set up; before that, frames only queue
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # token expiry: the warning, then the close
        self._created: dict[int, float] | None = None  # seq -> created_at of recent live pushes, for acks
        self.behind_at = 0  # a stored seq this connection had not been sent at the last reconciliation

    # -- writing -------------------------------------------------------------------------------------
    async def send(self, frame: str) -> None:
        """Write one frame now; only before the sender starts, or from the sender itself."""
        await self._send_text(frame)

    def enqueue(self, message: Push | Frame | CatchUp) -> bool:
        """Send or queue a frame without waiting; a full queue closes this connection. False when dropped.

        With nothing queued and the socket taking writes (not paused by the kernel's full buffer), the
        next frame in order is written at once, without a sender task: the common case costs no task."""
        if self.closed:
            return False
        queue = self._queue
        if queue is None:
            if self._sender is None and self._send_now is not None and self._sending and self._sent_now(message):
                return True
            queue = self._queue = deque()
        elif len(queue) >= self._queue_size:
            self._stats.overflowed()
            log.warning("send queue full: user=%s connection=%s closing 1008", self.user_id, self.id)
            self.close(1008, "send queue full; reconnect with since_seq")
            return False
        queue.append(message)
        if self._sending and self._sender is None:
            self._sender = asyncio.create_task(self._drain())
        return True

    def _sent_now(self, message: Push | Frame | CatchUp) -> bool:
        kind = type(message)
        if kind is Frame:
            return self._send_now(message.frame)  # type: ignore[misc]
        if message.seq <= self.last_seq:
            return True  # already sent
        if kind is Push and message.seq == self.last_seq + 1 and self._send_now(message.frame):  # type: ignore[misc]
            self._pushed(message.seq, message.created)
            return True
        return False  # a gap to fill from the store first, or the socket is busy: the sender does it

    def start_sender(self) -> None:
        """From now on, queued frames are written by a sender task (started whenever there are some)."""
        self._sending = True
        if self._queue and self._sender is None and not self.closed:
            self._sender = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        queue = self._queue
        assert queue is not None
        try:
            while queue:
                message = queue.popleft()
                if type(message) is Frame:
                    await self._send_text(message.frame)
                elif message.seq <= self.last_seq:
                    continue  # already sent, by the replay or before we connected
                elif type(message) is CatchUp:  # everything up to seq is stored
                    await self._fill_gap(message.seq)
                else:
                    if message.seq > self.last_seq + 1:
                        await self._fill_gap(message.seq - 1)
                    await self._push(message.frame, message.seq, message.created)
        except asyncio.CancelledError:
            raise
        except NotifyError as exc:
            log.warning("sender stopped: user=%s connection=%s: %s", self.user_id, self.id, exc.message)
            self.close(exc.close_code, exc.message[:120])
        except Exception:  # the socket went away mid-send; the receive loop sees the disconnect
            log.debug("sender ended: user=%s connection=%s", self.user_id, self.id, exc_info=True)
        finally:
            if self._sender is asyncio.current_task():
                self._sender = None
                if not queue:
                    self._queue = None  # an idle connection holds no queue

    async def _push(self, frame: str, seq: int, created: float | None) -> None:
        await self._send_text(frame)
        self._pushed(seq, created)

    def _pushed(self, seq: int, created: float | None) -> None:
        self.last_seq = seq
        if created is not None:
            self._stats.pushed(created, time.time())
            recent = self._created
            if recent is None:
                recent = self._created = {}
            recent[seq] = created
            if len(recent) > 256:
                del recent[next(iter(recent))]

    def pushed_at(self, seq: int) -> float | None:
        """``created_at`` of a recently pushed ``seq`` (once), to turn its ack into a latency."""
        return self._created.pop(seq, None) if self._created else None

    async def _fill_gap(self, upto_seq: int) -> None:
        """Frames can arrive out of order across publishers; what is missing is stored, so read it: all of
        it, in pages of the replay limit, however far behind the tab is (a live tab never gets a gap).

        Every seq up to ``upto_seq`` is committed (a frame or the store said so), so a short page means the
        rest of the range is not stored any more (deleted, expired or pruned): there is nothing to wait for."""
        while self.last_seq < upto_seq:
            missing = await self._fetch(self.user_id, self.last_seq, upto_seq, self._replay_limit)
            for record in missing:
                await self._push(protocol.notification_frame(record), record.seq, record.created_at.timestamp())
            if len(missing) < self._replay_limit:
                self.last_seq = upto_seq
                return

    async def replay(self, since_seq: int, last_seq: int) -> None:
        """Resume: send every stored ``seq > since_seq`` then ``resumed``, or ``resync_required`` when too
        much was missed, or when what was missed is no longer all stored: the oldest seq still stored is past
        ``since_seq + 1`` (the oldest were pruned, or deleted). Deleted or expired ones in between are simply
        not sent."""
        too_far = since_seq > last_seq or last_seq - since_seq > self._replay_limit
        if too_far or not await self._kept(since_seq, last_seq):
            self.last_seq = last_seq
            await self.send(protocol.resync_required_frame(last_seq))
            return
        self.last_seq = since_seq
        records = await self._fetch(self.user_id, since_seq, None, self._replay_limit)
        for record in records:
            await self._push(protocol.notification_frame(record), record.seq, None)
        if len(records) < self._replay_limit:
            self.last_seq = max(self.last_seq, last_seq)  # all that is stored: the rest was deleted or expired
        self._stats.replayed_total += len(records)
        await self.send(protocol.resumed_frame(len(records), self.last_seq))

    async def _kept(self, since_seq: int, last_seq: int) -> bool:
        if since_seq == last_seq or self._first_seq is None:
            return True
        first = await self._first_seq(self.user_id)
        return first is not None and first <= since_seq + 1

    # -- timers and closing --------------------------------------------------------------------------
    def arm_expiry(self, expires_at: float, warning_s: float, grace_s: float) -> None:
        """Warn with ``token_expiring`` before ``exp``; close 4401 once it has passed (plus leeway)."""
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, expires_at - time.time() - warning_s)
        self._timer = asyncio.get_running_loop().call_later(delay, self._warn_expiry, expires_at, grace_s)

    def _warn_expiry(self, expires_at: float, grace_s: float) -> None:
        left = expires_at - time.time()
        self.enqueue(Frame(self.user_id, protocol.token_expiring_frame(left)))
        self._timer = asyncio.get_running_loop().call_later(max(0.0, left + grace_s), self.close, 4401,
                                                            "token expired")

    def close(self, code: int, reason: str) -> None:
        """Close once: stop the sender, then send the close frame in the background."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        if self._timer is not None:
            self._timer.cancel()
        if self._sender is not None and self._sender is not asyncio.current_task():
            self._sender.cancel()
        if self._queue:
            self._queue.clear()  # never sent now (the client resumes): let them go before the closing handshake
        self._closer = asyncio.create_task(self._close_quietly(code, reason))

    async def _close_quietly(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._close_socket(code, reason)

    async def finish(self) -> None:
        """Called when the socket is gone: stop everything this connection started."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._closer is not None and not self._closer.done():
            # Give our close frame a moment to go out; a peer that does not read cannot hold us.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._closer), 1.0)
        for task in (self._sender, self._closer):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


class Hub:
    """Connections by user on this node."""

    def __init__(self, stats: Stats, max_per_user: int,
                 on_revoked: Callable[[str, float], None] | None = None,
                 on_preferences: Callable[[str, dict], None] | None = None) -> None:
        self._stats = stats
        self._on_revoked = on_revoked
        self._on_preferences = on_preferences
        self._max_per_user = max_per_user
        self._users: dict[str, dict[str, Connection]] = {}
        self.connection_count = 0
        stats.bind_gauges(lambda: self.connection_count, lambda: len(self._users))

    @property
    def user_count(self) -> int:
        return len(self._users)

    def user_ids(self) -> list[str]:
        return list(self._users)

    def held(self) -> dict[str, int]:
        """Each user's number of connections on this node."""
        return {user: len(mine) for user, mine in self._users.items()}

    def connections_of(self, user_id: str) -> int:
        return len(self._users.get(user_id, ()))

    def connections_for(self, user_id: str) -> list[Connection]:
        return list(self._users.get(user_id, {}).values())

    def register(self, connection: Connection) -> None:
        """Add a connection; over the per-user limit raises ``TooManyConnections`` (4429)."""
        mine = self._users.setdefault(connection.user_id, {})
        if len(mine) >= self._max_per_user:
            if not mine:
                del self._users[connection.user_id]
            raise TooManyConnections(f"at most {self._max_per_user} connections per user")
        mine[connection.id] = connection
        self.connection_count += 1
        self._stats.opened()

    def unregister(self, connection: Connection) -> None:
        mine = self._users.get(connection.user_id)
        if mine is None or mine.pop(connection.id, None) is None:
            return
        self.connection_count -= 1
        if not mine:
            del self._users[connection.user_id]

    def deliver(self, messages: list[Message]) -> None:
        """The broker's callback: queue each message on every connection of its user. Never awaits."""
        users = self._users
        for message in messages:
            mine = users.get(message.user_id)
            kind = type(message)
            if kind is Revoked:
                if self._on_revoked is not None:
                    self._on_revoked(message.user_id, message.before)
                self._close(mine, 4401, "token revoked")
            elif kind is CloseUser:
                self._close(mine, message.code, message.reason[:120])
            elif kind is Preferred:
                if self._on_preferences is not None:
                    self._on_preferences(message.user_id, message.preferences)
                if mine:
                    frame = Frame(message.user_id, protocol.preferences_frame(message.preferences))
                    for connection in mine.values():
                        connection.enqueue(frame)
            elif mine:
                for connection in mine.values():  # enqueue never adds or removes connections
                    connection.enqueue(message)

    @staticmethod
    def _close(mine: dict[str, Connection] | None, code: int, reason: str) -> None:
        for connection in list((mine or {}).values()):
            connection.close(code, reason)

    def close_all(self, code: int, reason: str) -> None:
        for mine in list(self._users.values()):
            for connection in list(mine.values()):
                connection.close(code, reason)
