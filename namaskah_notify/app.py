"""``create_app(settings)``: the FastAPI application, its lifespan and its error mapping.

Everything the app is made of is built here, once, from one :class:`Settings`, and torn down in
reverse order. Imports every module of the package; nothing imports it but ``server`` and the CLI.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .auth import TokenVerifier
from .brokers import create_broker
from .config import Settings
from .db import create_engine, create_schema
from .deps import Services
from .dispatcher import Dispatcher
from .errors import NotFound, NotifyError
from .hub import Hub
from .limits import BodySizeLimit
from .routes import notifications, ops, websocket
from .stats import Stats
from .store import Store

log = logging.getLogger("namaskah_notify.app")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; a bad configuration (short secret, unknown broker) fails here, before serving."""
    settings = settings or Settings()
    verifier = TokenVerifier(settings)
    broker = create_broker(settings.broker_url)
    node_id = settings.node_id or f"{socket.gethostname()}-{secrets.token_hex(3)}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        try:
            await create_schema(engine)
        except Exception:
            await engine.dispose()
            raise
        stats = Stats()
        hub = Hub(stats, settings.max_connections_per_user)
        store = Store(engine)
        dispatcher = Dispatcher(store, broker, stats, presence=hub.user_ids)
        await broker.start(hub.deliver)
        app.state.services = Services(settings, verifier, store, broker, hub, dispatcher, stats, node_id)
        log.info("ready: node=%s database=%s broker=%s", node_id, engine.url.get_backend_name(),
                 settings.broker_url.split("://", 1)[0])
        try:
            yield
        finally:
            hub.close_all(1001, "server shutting down")
            await broker.close()
            await engine.dispose()

    app = FastAPI(title="namaskah-notify", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(websocket.router)
    app.include_router(notifications.router)
    app.include_router(ops.router)
    _mount_static(app, settings)

    @app.exception_handler(NotifyError)
    async def _notify_error(_request: Request, exc: NotifyError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.status, headers=headers)

    return app


def _mount_static(app: FastAPI, settings: Settings) -> None:
    """``/static`` (the browser client) and ``/`` (the demo dashboard), when the folder is there."""
    folder = settings.resolved_static_dir
    if not folder.is_dir():
        return
    app.mount("/static", StaticFiles(directory=folder), name="static")
    index = folder / "index.html"

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        if not index.is_file():
            raise NotFound("no dashboard in the static folder")
        return FileResponse(index)
