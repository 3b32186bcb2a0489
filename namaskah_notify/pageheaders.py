"""The headers the dashboard (``/``) and the browser client (``/static``) are served with.

A strict Content-Security-Policy: scripts, styles, sounds and connections from this origin only, no inline
script or style, no plugins, no ``<base>``, and never inside a frame; ``nosniff``, so a file is only ever
what its content type says; and no ``Referer`` when the dashboard follows a notification's link. The API's
JSON answers need none of this (browsers do not render them). Imports nothing of ours.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",  # the inline SVG favicon
    "media-src 'self'",
    "connect-src 'self'",  # the API and the WebSocket of this origin (CSP 3: 'self' covers ws: and wss:)
    "manifest-src 'self'",
    "worker-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cross-Origin-Opener-Policy": "same-origin",
}
_RAW = [(name.lower().encode(), value.encode()) for name, value in PAGE_HEADERS.items()]


def is_page(path: str) -> bool:
    return path == "/" or path == "/static" or path.startswith("/static/")


class PageHeaders:
    """Adds :data:`PAGE_HEADERS` to every HTTP answer for ``/`` and ``/static/…``, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *_RAW]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
