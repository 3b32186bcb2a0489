"""``create_app(settings)``: the FastAPI application, its lifespan and its error mapping.

Everything the app is made of is built here, once, from one :class:`Settings`, and torn down in
reverse order. Imports every module of the package; nothing imports it but ``server`` and the CLI.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .auth import TokenVerifier, require_audience
from .brokers import create_broker
from .config import Settings
from .db import create_engine, upgrade_schema
from .deps import Services
from .dispatcher import Dispatcher
from .errors import NotFound, NotifyError
from .hub import Hub
from .limits import BodySizeLimit, handshake_limiter
from .node import Node
from .openapi import install as describe_api
from .openapi import operation_id
from .pageheaders import PageHeaders
from .preferences import PreferenceBook, Preferences
from .push import Subscriptions, VapidKey, WebPush
from .retention import Pruner
from .revocations import Revocations
from .routes import admin, notifications, ops, people, push, verifications
from .routes.edge import Edge
from .routes.publish import error_body
from .sms import SmsService, check_settings
from .stats import Stats
from .store import Store

log = logging.getLogger("namaskah_notify.app")
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; a bad configuration (short secret, unknown broker) fails here, before serving."""
    settings = settings or Settings()
    verifier = TokenVerifier(settings)
    vapid = VapidKey.from_settings(settings)  # generated into the data folder on first start
    require_audience(settings)
    node_id = settings.node_id or f"{socket.gethostname()}-{secrets.token_hex(3)}"
    broker = create_broker(settings.broker_url, node_id, settings.node_ttl_s)
    check_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        try:
            if settings.auto_migrate:
                await upgrade_schema(engine)
        except Exception:
            await engine.dispose()
            raise
        stats = Stats()
        stats.bind_broker(lambda: 1.0 if broker.up else 0.0, lambda: broker.state_changes)
        revocations = Revocations()
        preferences = PreferenceBook()
        hub = Hub(stats, settings.max_connections_per_user, on_revoked=revocations.note,
                  on_preferences=lambda user, body: preferences.note(user, Preferences.from_wire(body)))
        store = Store(engine)
        await revocations.refresh(store)
        await preferences.refresh(store)

        async def presence() -> list[str]:
            """Users connected anywhere in the cluster (this node's when alone or Redis is down)."""
            try:
                users = await broker.connected_users()
            except Exception:
                users = None
            return hub.user_ids() if users is None else users

        dispatcher = Dispatcher(settings.resolved_database_url, store, broker, stats, presence,
                                sqlite_synchronous=settings.sqlite_synchronous,
                                idempotency_ttl_s=settings.idempotency_ttl_s, preferences=preferences)
        await dispatcher.start()
        node = Node(node_id, hub, store, broker, stats, revocations,
                    reconcile_interval_s=settings.reconcile_interval_s, preferences=preferences)
        await broker.start(hub.deliver, on_gap=node.gap, describe=node.describe)
        node.start()
        webpush = WebPush(settings, vapid, Subscriptions(engine), hub, broker, stats.registry)
        await webpush.start()
        dispatcher.offline.append(webpush)
        sms = SmsService.build(settings, engine, dispatcher, stats.registry, node_id)
        sms.start()
        pruner = Pruner(settings, on_removed=stats.pruned)
        pruner.start()
        handshakes = None
        if settings.handshake_rate_per_ip:
            handshakes = handshake_limiter(settings.handshake_rate_per_ip, settings.handshake_burst_per_ip)
            stats.bind_refusals(lambda: handshakes.refused)
        app.state.services = Services(
            settings, verifier, store, broker, hub, dispatcher, stats, node, revocations, sms, handshakes=handshakes,
            push=webpush,
        )
        log.info("ready: node=%s database=%s broker=%s", node_id, engine.url.get_backend_name(),
                 settings.broker_url.split("://", 1)[0])
        try:
            yield
        finally:
            hub.close_all(1001, "server shutting down")
            await pruner.close()
            await sms.stop()
            await dispatcher.close()
            await webpush.close()
            await node.stop()
            await broker.close()
            store.close()
            await engine.dispose()

    docs = settings.docs  # NOTIFY_DOCS=false: the API's description is not served
    app = FastAPI(title="namaskah-notify", version="0.1.0", lifespan=lifespan,
                  generate_unique_id_function=operation_id, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    if settings.allowed_origins:
        # The browser client embedded in the main web app calls the HTTP API from that origin too.
        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"],
                           max_age=600)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(PageHeaders)  # CSP and the rest for / and /static
    app.add_middleware(Edge)  # outermost: sockets and backends' publishes skip the HTTP layers entirely
    app.include_router(notifications.router)
    app.include_router(admin.router)
    app.include_router(ops.router)
    app.include_router(verifications.router)
    app.include_router(people.router)
    app.include_router(push.router)
    _mount_static(app, settings)
    describe_api(app, settings)

    @app.exception_handler(NotifyError)
    async def _notify_error(_request: Request, exc: NotifyError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return Response(error_body(exc), status_code=exc.status, headers=headers, media_type="application/json")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        # The framework's own refusals (a body that is not JSON, an unknown path, a method not allowed) in
        # the API's error shape, with their headers (Allow on a 405).
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path only
            headers = {**(headers or {}), "Allow": _allowed(request, (headers or {}).get("Allow", ""))}
        return JSONResponse({"detail": exc.detail, "code": code}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input and fails with a 500 on bytes that are not UTF-8
        # or on lone surrogates; keep its shape but make every string encodable.
        detail = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")})
        return JSONResponse({"detail": _encodable(detail)}, status_code=422)

    return app


def _allowed(request: Request, default: str) -> str:
    """The methods the API description gives the request's path: its own path item when it has one (a
    concrete path before a templated one, as OpenAPI matches them), else those of the templates it fits;
    for a path the description leaves out (the dashboard, static files), the router's own answer."""
    path, root = request.scope.get("path", ""), request.scope.get("root_path", "")
    path = path[len(root):] if root and path.startswith(root) else path
    paths = request.app.openapi().get("paths", {})
    items = [paths[path]] if path in paths else [item for template, item in paths.items()
                                                 if "{" in template and _template(template).fullmatch(path)]
    methods = sorted({method.upper() for item in items for method in item if method in _METHODS})
    return ", ".join(methods) or default


_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@functools.cache
def _template(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)))


def _encodable(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    return value


def _mount_static(app: FastAPI, settings: Settings) -> None:
    """``/static`` (the browser client) and ``/`` (the demo dashboard), when the folder is there."""
    folder = settings.resolved_static_dir
    if not folder.is_dir():
        return
    worker = folder / "sw.js"

    @app.get("/static/sw.js", include_in_schema=False)
    async def service_worker() -> FileResponse:
        # Served from /static, it may still control the whole site: its push subscription belongs to /.
        if not worker.is_file():
            raise NotFound("no service worker in the static folder")
        return FileResponse(worker, media_type="text/javascript", headers={"Service-Worker-Allowed": "/"})

    app.mount("/static", StaticFiles(directory=folder), name="static")
    index = folder / "index.html"

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        if not index.is_file():
            raise NotFound("no dashboard in the static folder")
        return FileResponse(index)
