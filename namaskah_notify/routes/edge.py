"""The outermost ASGI layer: ``/ws/notifications`` and the backends' publishing calls are served here, as
plain ASGI; everything else goes on to the FastAPI app.

Every open WebSocket keeps its whole call chain suspended in memory for as long as it lives, and every
publish would pass through the framework's routing, dependency solving and middleware: here, neither does.
``server.py`` wraps the whole FastAPI app in :class:`Edge`; ``create_app`` also installs it as the
outermost middleware, for ``uvicorn --factory create_app``. Imports ``routes.publish`` and
``routes.websocket``.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .publish import ROUTES, serve_fast
from .websocket import PATH, Socket, serve_socket


class Edge:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["method"] == "POST":
            route = ROUTES.get(scope["path"])
            if route is not None:
                owner = scope.get("app", self.app)  # the FastAPI app, inside or outside of it
                await serve_fast(owner.state.services, route, scope, receive, send, self.app)
                return
        elif kind == "websocket" and scope["path"] == PATH:
            owner = scope.get("app", self.app)
            await serve_socket(owner.state.services, Socket(scope, receive, send))
            return
        await self.app(scope, receive, send)
