"""Running the app under uvicorn with the service's WebSocket limits and a clean 1001 on shutdown.

Imports ``app``, ``config``, ``limits``, ``logs`` and ``routes.websocket``.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn._types import ASGISendEvent
from uvicorn.middleware.proxy_headers import _TrustedHosts
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from .app import create_app
from .config import Settings
from .limits import handshake_limiter
from .logs import logging_config
from .routes.edge import Edge

LINGER_S = 2.0
_TOO_MANY_BODY = b'{"detail":"too many connections from this address; retry later","code":"rate_limited"}'
TOO_MANY = (b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOO_MANY_BODY), _TOO_MANY_BODY))


class ConnectionGate(asyncio.Protocol):
    """What uvicorn gets per accepted connection when ``NOTIFY_HANDSHAKE_RATE_PER_IP`` is set: an address
    past its rate of new connections is answered 429 and cut at once, before uvicorn builds its HTTP
    protocol or parses a byte, so a client opening connections flat out costs the event loop a few
    microseconds each, not a handshake, a task and a token check; any other connection is handed to
    uvicorn's protocol. Addresses uvicorn trusts as proxies (``--forwarded-allow-ips``) pass; the endpoint
    counts their forwarded addresses instead."""

    __slots__ = ("_options", "_transport")

    def __init__(self, **options: Any) -> None:
        self._options = options  # uvicorn's arguments for its protocol, and our rate and burst
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        options = self._options
        limiter = handshake_limiter(options["rate"], options["burst"])
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else None
        if address is None or address in _trusted(options["config"]) or limiter.allow(address):
            del options["rate"], options["burst"]
            protocol = HttpToolsProtocol(**options)
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            return
        self._transport = transport
        transport.write(TOO_MANY)
        asyncio.get_running_loop().call_later(1.0, transport.close)  # for a peer that sends nothing

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.close()  # the request has arrived and is read: close without a reset


@functools.cache
def _trusted_hosts(allowed: str) -> _TrustedHosts:
    return _TrustedHosts(allowed)


def _trusted(config: uvicorn.Config) -> _TrustedHosts | tuple[()]:
    if not config.proxy_headers:
        return ()
    allowed = config.forwarded_allow_ips
    return _trusted_hosts(allowed if isinstance(allowed, str) else ",".join(allowed))


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, but the 414/431 answer that websockets prepares for an
    oversized handshake (a huge token in the URL or a header) is sent, instead of leaving the client
    waiting on a silent socket; the handshake's request and response are let go once used; and a text
    frame that is not UTF-8 closes 1007 without a traceback in the log; and the kernel's send buffer is
    capped (``NOTIFY_WS_SEND_BUFFER_BYTES``), so a client that stops reading fills its bounded send queue,
    and is closed, after a few hundred KiB instead of the several MiB the kernel would hold for it."""

    def __init__(self, *args: Any, send_buffer: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_buffer = send_buffer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if self.send_buffer and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The scope has its own copy of the headers now, and websockets' parser keeps this request object
        # alive for the connection's lifetime: empty it rather than hold every handshake header twice.
        event.headers.clear()

    def send_receive_event_to_app(self) -> None:
        # uvicorn's own, except that a text frame that is not UTF-8 is the client's error, closed with 1007
        # and one INFO line: uvicorn logs a traceback at ERROR, which lets any client flood the log.
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                self.queue.put_nowait({"type": "websocket.receive", "text": data.decode()})
            except UnicodeDecodeError:
                self.logger.info("closing 1007: a text frame that is not UTF-8")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_parser_exception(self) -> None:
        # websockets has queued the close frame (1009 too large, 1007 bad UTF-8, 1002 protocol error). If we
        # closed the socket now while the client is still sending the rest of its frame, the kernel would
        # answer with a reset and the client would never read the close code: half-close, keep reading
        # (websockets discards what comes), and close after a short linger.
        if self.close_sent:
            return  # called again for every later read: what arrives now is being discarded
        assert self.conn.close_sent is not None
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": self.conn.close_sent.code, "reason": self.conn.close_sent.reason}
        )
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        # As uvicorn's close timer, so that uvicorn does not close the socket itself (with a reset, the
        # client still sending) as soon as the app returns on the disconnect queued above.
        self.close_timer = self.loop.call_later(LINGER_S, self.transport.close)

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            self.response = None  # the handshake response is sent: an idle connection need not keep it

    def send_text_now(self, text: str) -> bool:
        """Write a text frame at once if ``send`` would not wait: the connection is open and the transport
        is not paused by a full kernel buffer. The hub's common case then needs no sender task; False means
        "queue it", and the sender task writes it through ``send`` when the socket drains."""
        if (not self.writable.is_set() or self.disconnected or self.close_sent or not self.handshake_complete
                or self.initial_response is not None or self.transport.is_closing()):
            return False
        try:
            self.conn.send_text(text.encode())
        except Exception:  # websockets says the connection is closing
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings the contract depends on: the frame size limit (1009), no compression (so a
    small frame cannot inflate past the limit, and idle connections stay small), protocol pings, the
    send buffer, the per-address connection rate, and logging that redacts tokens."""
    options: dict[str, Any] = {}
    if settings.handshake_rate_per_ip:
        options["http"] = functools.partial(
            ConnectionGate, rate=settings.handshake_rate_per_ip, burst=settings.handshake_burst_per_ip
        )
    return {
        **options,
        "ws": functools.partial(WebSocketProtocol, send_buffer=settings.ws_send_buffer_bytes),
        "ws_max_size": settings.max_message_bytes,
        "ws_per_message_deflate": False,
        "ws_ping_interval": settings.ws_ping_interval_s,
        "ws_ping_timeout": settings.ws_ping_timeout_s,
        "log_config": logging_config(settings.log_level),
        "log_level": settings.log_level.lower(),
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }


def uvicorn_config(app: FastAPI, settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(Edge(app), host=host, port=port, **uvicorn_options(settings))


def create_asgi() -> Edge:
    """The factory for ``uvicorn --factory`` and ``notify serve --workers``: the app from ``NOTIFY_*``
    variables, with WebSockets served ahead of the framework's middleware (fewer frames kept per
    connection)."""
    return Edge(create_app())


class NotifyServer(uvicorn.Server):
    """uvicorn's server, but WebSockets are closed with 1001 ("going away", resume elsewhere) and given
    a moment to finish their closing handshake before uvicorn's own shutdown."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.notify_app = app

    async def shutdown(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        # Stop listening first (uvicorn would only do it after our wait), so the clients closed below
        # reconnect to the next server and not to this one again.
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        services = getattr(self.notify_app.state, "services", None)
        if services is not None:
            services.hub.close_all(1001, "server shutting down")
            deadline = time.monotonic() + 3
            while services.hub.connection_count and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        await super().shutdown(sockets=sockets)


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """One process: the embedded default, or one node of a cluster."""
    app = create_app(settings)
    NotifyServer(uvicorn_config(app, settings, host=host, port=port), app).run()
