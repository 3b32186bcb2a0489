"""``/ws/notifications``: authenticate, register, resume, then serve client frames until the socket closes.

This module only moves frames between the socket, ``protocol``, the hub and the dispatcher, and maps
errors to ``error`` frames or close codes. After the connection is registered, every write goes through
the connection's queue and sender task, so frames leave in one order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from .. import protocol
from ..auth import Identity
from ..brokers import Envelope
from ..deps import Services
from ..errors import AuthError, Forbidden, NotifyError, ProtocolError, TooLarge, TooManyConnections
from ..hub import Connection, TokenBucket

log = logging.getLogger("namaskah_notify.ws")
router = APIRouter()


class _Closed(Exception):
    """The peer went away while we were still setting up."""


def _origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    # Browsers always send Origin; a client without one is not a browser, so cross-site hijacking
    # does not apply and the token alone decides.
    if not allowed or origin is None or "*" in allowed:
        return True
    normal = origin.strip().rstrip("/").lower()
    return any(normal == entry.strip().rstrip("/").lower() for entry in allowed)


def _since_seq(websocket: WebSocket) -> int | None:
    raw = websocket.query_params.get("since_seq")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ProtocolError("since_seq must be a non-negative integer", code="bad_request")
    return int(raw)


async def _receive_text(websocket: WebSocket, limit: int) -> str | None:
    """The next text frame; None for a binary one. Raises ``_Closed`` on disconnect."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise _Closed(message.get("code", 1005))
    text = message.get("text")
    if text is None:
        return None
    if len(text) > limit:  # uvicorn enforces this on the wire too (ws_max_size); this is the backstop
        raise TooLarge(f"frame larger than {limit} bytes")
    return text


async def _authenticate(websocket: WebSocket, services: Services) -> Identity:
    token = websocket.query_params.get("token")
    if not token:
        scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    if not token:
        settings = services.settings
        try:
            text = await asyncio.wait_for(_receive_text(websocket, settings.max_message_bytes),
                                          settings.auth_timeout_s)
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
    return services.verifier.verify(token)


@router.websocket("/ws/notifications")
async def notifications_socket(websocket: WebSocket) -> None:
    """One browser tab, CLI listener or load-test user."""
    services: Services = websocket.app.state.services
    settings = services.settings
    await websocket.accept()
    try:
        if not _origin_allowed(websocket.headers.get("origin"), settings.allowed_origins):
            raise Forbidden("origin not allowed")
        since_seq = _since_seq(websocket)
        identity = await _authenticate(websocket, services)
    except _Closed:
        return
    except NotifyError as exc:
        log.warning("websocket refused: %s (%d)", exc.message, exc.close_code)
        code = 1008 if isinstance(exc, ProtocolError) else exc.close_code
        services.stats.closed(code)
        with contextlib.suppress(Exception):
            await websocket.close(code, exc.message[:120])
        return

    connection = Connection(
        identity.user_id,
        websocket.send_text,
        websocket.close,
        store=services.store,
        stats=services.stats,
        queue_size=settings.send_queue_size,
        replay_limit=settings.replay_limit,
    )
    limit = settings.max_connections_per_user
    try:
        services.hub.register(connection)  # from here, live frames queue up while we catch up
        if not await services.broker.claim_connection(identity.user_id, connection.id, limit):
            services.hub.unregister(connection)
            raise TooManyConnections(f"at most {limit} connections per user across the cluster")
    except NotifyError as exc:
        log.warning("websocket refused: user=%s %s", identity.user_id, exc.message)
        services.stats.closed(exc.close_code)
        with contextlib.suppress(Exception):
            await websocket.close(exc.close_code, exc.message)
        return

    code = 1005
    try:
        unread, last_seq = await services.store.state(identity.user_id)
        await connection.send(
            protocol.connected_frame(identity.user_id, connection.id, unread, last_seq)
        )
        if since_seq is None:
            connection.last_seq = last_seq
        else:
            await connection.replay(since_seq, last_seq)
        connection.arm_expiry(identity.expires_at, settings.token_expiry_warning_s, settings.jwt_leeway_s)
        connection.start_sender()
        log.info("WebSocket connected: user=%s connection=%s total_connections=%d",
                 identity.user_id, connection.id, services.hub.connection_count)
        code = await _serve(websocket, services, connection, identity)
    except (_Closed, WebSocketDisconnect) as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else getattr(exc, "code", 1005)
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
        last_here = services.hub.connections_of(identity.user_id) == 0
        await services.broker.release_connection(identity.user_id, connection.id, last_here)
        code = connection.close_code or code
        services.stats.closed(code)
        log.info("WebSocket disconnected: user=%s connection=%s code=%s total_connections=%d",
                 identity.user_id, connection.id, code, services.hub.connection_count)


async def _serve(websocket: WebSocket, services: Services, connection: Connection, identity: Identity) -> int:
    """Answer client frames until the peer disconnects; returns the close code seen."""
    settings = services.settings
    bucket = TokenBucket(settings.client_rate_per_s, settings.client_rate_burst)
    user_id = identity.user_id

    def reply(frame: str) -> None:
        connection.enqueue(Envelope(user_id, frame))

    def fail(code: str, message: str) -> None:
        services.stats.client_error(code)
        reply(protocol.error_frame(code, message))

    while True:
        try:
            text = await _receive_text(websocket, settings.max_message_bytes)
        except _Closed as closed:
            return closed.args[0]
        if connection.closed:
            continue  # closing: drain until the peer answers our close frame
        allowed = bucket.take()
        if allowed < 0:
            connection.close(1008, "too many frames; slow down")
            continue
        if allowed == 0:
            fail("rate_limited", f"at most {settings.client_rate_per_s:g} frames per second")
            continue
        if text is None:
            fail("unsupported_data", "binary frames are not supported; send JSON text")
            continue
        try:
            frame = protocol.parse_client_frame(text)
            await _handle(frame, services, connection, identity, reply)
        except AuthError as exc:
            fail("invalid_token", exc.message)
        except NotifyError as exc:
            fail(exc.code, exc.message)
        except Exception:
            log.exception("frame failed: user=%s", user_id)
            fail("internal", "the server could not serve this frame")


async def _handle(frame, services: Services, connection: Connection, identity: Identity, reply) -> None:  # type: ignore[no-untyped-def]
    user_id = identity.user_id
    match frame:
        case protocol.Ping(text=True):
            reply("pong")
        case protocol.Ping():
            reply(protocol.pong_frame())
        case protocol.MarkRead(notification_id=nid):
            await services.dispatcher.mark_read(user_id, nid)
        case protocol.MarkAllRead():
            await services.dispatcher.mark_all_read(user_id)
        case protocol.Ack(seq=seq):
            created = connection.pushed_at(seq)
            if created is not None:
                services.stats.acked(created, time.time())
        case protocol.RefreshToken(token=token):
            fresh = services.verifier.verify(token)
            if fresh.user_id != user_id:
                raise AuthError("refresh token is for another user")
            settings = services.settings
            connection.arm_expiry(fresh.expires_at, settings.token_expiry_warning_s, settings.jwt_leeway_s)
            reply(protocol.token_refreshed_frame(fresh.expires_at))
        case protocol.Auth():
            raise ProtocolError("already authenticated; use refresh_token to extend", code="bad_frame")
