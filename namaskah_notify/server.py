"""Running the app under uvicorn with the service's WebSocket limits and a clean 1001 on shutdown.

Imports ``app``, ``config`` and ``logs``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from .app import create_app
from .config import Settings
from .logs import logging_config
from .routes.websocket import NotificationSocket


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, but the 414/431 answer that websockets prepares for an
    oversized handshake (a huge token in the URL or a header) is sent, instead of leaving the client
    waiting on a silent socket; and the handshake's request and response are let go once used."""

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

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            self.response = None  # the handshake response is sent: an idle connection need not keep it


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings the contract depends on: the frame size limit (1009), no compression (so a
    small frame cannot inflate past the limit, and idle connections stay small), protocol pings, and
    logging that redacts tokens."""
    return {
        "ws": WebSocketProtocol,
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
    return uvicorn.Config(NotificationSocket(app), host=host, port=port, **uvicorn_options(settings))


def create_asgi() -> NotificationSocket:
    """The factory for ``uvicorn --factory`` and ``notify serve --workers``: the app from ``NOTIFY_*``
    variables, with WebSockets served ahead of the framework's middleware (fewer frames kept per
    connection)."""
    return NotificationSocket(create_app())


class NotifyServer(uvicorn.Server):
    """uvicorn's server, but WebSockets are closed with 1001 ("going away", resume elsewhere) and given
    a moment to finish their closing handshake before uvicorn's own shutdown."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.notify_app = app

    async def shutdown(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
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
