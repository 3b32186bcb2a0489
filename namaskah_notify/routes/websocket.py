"""``/ws/notifications``: authenticate, register, resume, then serve client frames until the socket closes.

This module only moves frames between the socket, ``protocol``, the hub and the dispatcher, and maps
errors to ``error`` frames or close codes. After the connection is registered, every write goes through
the connection's queue and sender, so frames leave in one order.

It is plain ASGI, served by the outermost layer (``edge.py``) ahead of the framework: every open
connection keeps its whole call chain suspended in memory for as long as it lives, and the framework's
routing and dependency layers would add several frames to each of thousands of idle connections, and a
dictionary lookup or two to every frame sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import orjson
from starlette.types import Receive, Scope, Send

from .. import protocol
from ..auth import Identity, bearer_token
from ..brokers import Frame
from ..deps import Services
from ..errors import AuthError, Forbidden, NotifyError, ProtocolError, TooLarge, TooManyConnections
from ..hub import Connection
from ..limits import TokenBucket

log = logging.getLogger("namaskah_notify.ws")

PATH = "/ws/notifications"


class _Closed(Exception):
    """The peer went away; ``args[0]`` is the close code it sent (or 1005/1006)."""


class Socket:
    """The few ASGI WebSocket messages this service uses, without a framework in between. It keeps
    nothing of its own per connection: headers and query are read from the scope when needed."""

    __slots__ = ("_receive", "_send", "scope")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send

    def header(self, name: str) -> str | None:
        wanted = name.encode("latin-1")
        for key, value in self.scope["headers"]:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def forget_handshake(self) -> None:
        """Headers and query (with any token in it) are read: drop them, and everything else, from the scope
        that lives as long as the connection (the dict itself shrinks with ``clear``). Only uvicorn's log
        lines read the scope after this, for client and path."""
        scope = self.scope
        kept = {"type": scope["type"], "client": scope.get("client"), "path": scope.get("path", PATH),
                "root_path": scope.get("root_path", ""), "query_string": b"", "headers": []}
        scope.clear()
        scope.update(kept)

    def query(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[0] if values else None

    async def deny(self, status: int, reason: str, code: str) -> None:
        """Answer the handshake with an HTTP error (the API's JSON error body) instead of accepting it."""
        message = await self._receive()
        if message["type"] != "websocket.connect":
            return
        body = orjson.dumps({"detail": reason, "code": code})
        await self._send({"type": "websocket.http.response.start", "status": status,
                          "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                      (b"content-length", str(len(body)).encode())]})
        await self._send({"type": "websocket.http.response.body", "body": body})

    async def accept(self) -> None:
        message = await self._receive()
        if message["type"] != "websocket.connect":
            raise _Closed(1006)
        await self._send({"type": "websocket.accept"})

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    def send_now(self) -> Callable[[str], bool] | None:
        """The server protocol's non-waiting write (``server.WebSocketProtocol.send_text_now``), when the
        ASGI ``send`` is that protocol's own method; under another server, None: every frame is queued."""
        return getattr(getattr(self._send, "__self__", None), "send_text_now", None)

    async def close(self, code: int, reason: str = "") -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def receive_text(self, limit: int) -> str | None:
        """The next text frame; None for a binary one. Raises ``_Closed`` on disconnect."""
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            raise _Closed(message.get("code", 1005))
        text = message.get("text")
        if text is None:
            return None
        if len(text) > limit:  # uvicorn enforces this on the wire too (ws_max_size); this is the backstop
            raise TooLarge(f"frame larger than {limit} bytes")
        return text


def _origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    # Browsers always send Origin; a client without one is not a browser, so cross-site hijacking
    # does not apply and the token alone decides.
    if not allowed or origin is None or "*" in allowed:
        return True
    normal = origin.strip().rstrip("/").lower()
    return any(normal == entry.strip().rstrip("/").lower() for entry in allowed)


def _since_seq(socket: Socket) -> int | None:
    raw = socket.query("since_seq")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²" and "３" are digits to str.isdigit
        raise ProtocolError("since_seq must be a non-negative integer", code="bad_request")
    return int(raw)


async def _authenticate(socket: Socket, services: Services) -> Identity:
    token = socket.query("token")
    if not token:
        token = bearer_token(socket.header("authorization"))
    if not token:
        settings = services.settings
        try:
            text = await asyncio.wait_for(socket.receive_text(settings.max_message_bytes), settings.auth_timeout_s)
        except TimeoutError:
            raise AuthError("auth timeout: send {\"type\":\"auth\",\"token\":...} first") from None
        try:
            frame = protocol.parse_client_frame(text) if text is not None else None
        except ProtocolError as exc:
            if '"auth"' in (text or ""):
                raise AuthError(f"auth frame refused: {exc.message}") from None
            frame = None
        if not isinstance(frame, protocol.Auth):
            raise AuthError("authenticate first: ?token=, Authorization: Bearer, or an auth frame")
        token = frame.token
    return services.identify(token)


async def _refuse(socket: Socket, services: Services, exc: NotifyError, who: str = "") -> None:
    code = 1008 if isinstance(exc, ProtocolError) else exc.close_code
    log.warning("websocket refused: %s%s (%d)", who, exc.message, code)
    services.stats.closed(code)
    with contextlib.suppress(Exception):
        await socket.close(code, exc.message[:120])


async def serve_socket(services: Services, socket: Socket) -> None:
    """One browser tab, CLI listener or load-test user, from handshake to close."""
    settings = services.settings
    limiter = services.handshakes
    # server.ConnectionGate has already counted the peer's address; through a trusted proxy that address is
    # the proxy's, so the forwarded one (now the scope's client) is counted here.
    if (limiter is not None and socket.header("x-forwarded-for") is not None
            and not limiter.allow((socket.scope.get("client") or ("?",))[0])):
        with contextlib.suppress(Exception):
            await socket.deny(429, "too many connections from this address; retry later", "rate_limited")
        return
    try:
        await socket.accept()
        if not _origin_allowed(socket.header("origin"), settings.allowed_origins):
            raise Forbidden("origin not allowed")
        since_seq = _since_seq(socket)
        identity = await _authenticate(socket, services)
        socket.forget_handshake()
    except (_Closed, OSError):
        return
    except NotifyError as exc:
        await _refuse(socket, services, exc)
        return

    connection = Connection(
        identity.user_id,
        socket.send_text,
        socket.close,
        fetch=services.store.between,
        first_seq=services.store.first_seq,
        stats=services.stats,
        queue_size=settings.send_queue_size,
        replay_limit=settings.replay_limit,
        send_now=socket.send_now(),
    )
    connection.issued_at = identity.issued_at
    limit = settings.max_connections_per_user
    try:
        services.hub.register(connection)  # from here, live frames queue up while we catch up
        here = services.hub.connections_of(identity.user_id)
        if not await services.broker.claim_connection(identity.user_id, here, limit):
            services.hub.unregister(connection)
            raise TooManyConnections(f"at most {limit} connections per user across the cluster")
    except NotifyError as exc:
        await _refuse(socket, services, exc, f"user={identity.user_id} ")
        return

    code = 1005
    try:
        services.dispatcher.seen(identity.user_id)  # known from now on: a broadcast reaches them
        unread, last_seq = await services.store.state(identity.user_id)
        await connection.send(protocol.connected_frame(identity.user_id, connection.id, unread, last_seq))
        if since_seq is None:
            connection.last_seq = last_seq
        else:
            await connection.replay(since_seq, last_seq)
        connection.arm_expiry(identity.expires_at, settings.token_expiry_warning_s, settings.jwt_leeway_s)
        connection.start_sender()
        log.info("WebSocket connected: user=%s connection=%s total_connections=%d",
                 identity.user_id, connection.id, services.hub.connection_count)
        code = await _serve(socket, services, connection, identity)
    except _Closed as exc:
        code = exc.args[0]
    except OSError:
        code = 1006  # the peer vanished while we were writing
    except NotifyError as exc:
        code = exc.close_code
        connection.close(exc.close_code, exc.message[:120])
    except Exception:
        log.exception("websocket failed: user=%s connection=%s", identity.user_id, connection.id)
        code = 1011
        connection.close(1011, "server error")
    finally:
        services.hub.unregister(connection)
        await connection.finish()
        left = services.hub.connections_of(identity.user_id)
        if not left:
            services.dispatcher.seen(identity.user_id)  # last seen: when their last connection here closed
        await services.broker.release_connection(identity.user_id, left)
        code = connection.close_code or code
        services.stats.closed(code)
        log.info("WebSocket disconnected: user=%s connection=%s code=%s total_connections=%d",
                 identity.user_id, connection.id, code, services.hub.connection_count)


def _reply(connection: Connection, frame: str) -> None:
    connection.enqueue(Frame(connection.user_id, frame))


def _fail(services: Services, connection: Connection, code: str, message: str) -> None:
    services.stats.client_error(code)
    _reply(connection, protocol.error_frame(code, message))


async def _serve(socket: Socket, services: Services, connection: Connection, identity: Identity) -> int:
    """Answer client frames until the peer disconnects; returns the close code seen."""
    settings = services.settings
    bucket = TokenBucket(settings.client_rate_per_s, settings.client_rate_burst)
    while True:
        try:
            text = await socket.receive_text(settings.max_message_bytes)
        except _Closed as closed:
            return closed.args[0]
        if connection.closed:
            continue  # closing: drain until the peer answers our close frame
        allowed = bucket.take()
        if allowed < 0:
            connection.close(1008, "too many frames; slow down")
            continue
        if allowed == 0:
            _fail(services, connection, "rate_limited", f"at most {settings.client_rate_per_s:g} frames per second")
            continue
        if text is None:
            _fail(services, connection, "unsupported_data", "binary frames are not supported; send JSON text")
            continue
        try:
            await _handle(protocol.parse_client_frame(text), services, connection, identity)
        except AuthError as exc:
            _fail(services, connection, "invalid_token", exc.message)
        except NotifyError as exc:
            _fail(services, connection, exc.code, exc.message)
        except Exception:
            log.exception("frame failed: user=%s", identity.user_id)
            _fail(services, connection, "internal", "the server could not serve this frame")


async def _handle(frame: protocol.ClientFrame, services: Services, connection: Connection, identity: Identity) -> None:
    user_id = identity.user_id
    match frame:
        case protocol.Ping(text=True):
            _reply(connection, "pong")
        case protocol.Ping():
            _reply(connection, protocol.pong_frame())
        case protocol.MarkRead(notification_id=nid):
            await services.dispatcher.mark_read(user_id, nid)
        case protocol.MarkAllRead():
            await services.dispatcher.mark_all_read(user_id)
        case protocol.Ack(seq=seq):
            created = connection.pushed_at(seq)
            if created is not None:
                services.stats.acked(created, time.time())
        case protocol.RefreshToken(token=token):
            fresh = services.identify(token)
            if fresh.user_id != user_id:
                raise AuthError("refresh token is for another user")
            settings = services.settings
            connection.arm_expiry(fresh.expires_at, settings.token_expiry_warning_s, settings.jwt_leeway_s)
            connection.issued_at = fresh.issued_at
            _reply(connection, protocol.token_refreshed_frame(fresh.expires_at))
        case protocol.Auth():
            raise ProtocolError("already authenticated; use refresh_token to extend", code="bad_frame")
