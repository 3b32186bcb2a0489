"""The two publishing routes, ``POST /api/notifications`` and ``POST /api/sms/inbound``: what they do, and
the lean way in that a backend's publish takes.

``publish`` and ``sms_inbound`` are the routes' whole work, shared by both ways in. The FastAPI routes in
``notifications.py`` are the API surface (OpenAPI, CORS, every error answer); :func:`serve_fast`, called
by the outermost ASGI layer (``edge.py``), serves the common case of the same request without the
framework's routing, dependency solving and middleware: a JSON body of declared size, no ``Origin``
(a backend, not a browser), a token with the route's scope (or, on the webhook with
``NOTIFY_WEBHOOK_SECRET`` set, a valid signature over the body's bytes), a valid body. Anything else — a
bad token, scope, signature or body, a browser's call — is handed to the framework with the body it has
read, so that every answer but the success is the framework's own. Imports ``auth``, ``deps``,
``errors``, ``limits`` and ``schemas``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import PUBLISH, WEBHOOK, bearer_token
from ..deps import Services, webhook_caller_of
from ..errors import NotifyError
from ..limits import replaying
from ..schemas import PublishBody, SmsInboundBody

Answer = tuple[int, str]  # status and JSON text


async def publish(services: Services, body: PublishBody) -> Answer:
    """Store and push to one user, several, or every user connected right now."""
    content = body.content()
    if body.broadcast:
        stored = await services.dispatcher.broadcast(content)
        return 201, f'{{"count":{len(stored.records)}}}'
    stored = await services.dispatcher.notify(body.recipients(), content)
    if body.user_id is not None:
        return 201, stored.data[0]
    return 201, f'{{"count":{len(stored.data)},"items":[{",".join(stored.data)}]}}'


async def sms_inbound(services: Services, body: SmsInboundBody) -> Answer:
    """The origin document's SMS notification; a retried ``message_id`` answers the first one with 200."""
    stored = await services.dispatcher.on_sms_received(
        body.user_id, body.verification_id, body.service, body.code, body.message_id
    )
    return (201 if stored.created else 200), stored.data[0]


Route = tuple[type[BaseModel], Callable[[Services, Any], Awaitable[Answer]], str]  # body, work, scope
ROUTES: dict[str, Route] = {
    "/api/notifications": (PublishBody, publish, PUBLISH),
    "/api/sms/inbound": (SmsInboundBody, sms_inbound, WEBHOOK),
}
_JSON = [(b"content-type", b"application/json")]


def error_body(exc: NotifyError) -> str:
    """The API's error answer, ``{"detail", "code"}``, for the framework's handler and for this path."""
    return orjson.dumps({"detail": exc.message, "code": exc.code}).decode()


async def serve_fast(services: Services, route: Route, scope: Scope, receive: Receive, send: Send,
                     app: ASGIApp) -> None:
    token = length = content_type = signature = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = token or value  # the first, as the framework reads it
        elif name == b"x-notify-signature":
            signature = signature or value
        elif name == b"content-length":
            length = value
        elif name == b"content-type":
            content_type = value
        elif name == b"origin":
            await app(scope, receive, send)  # a browser: CORS and the rest are the framework's
            return
    if (content_type is None or not content_type.startswith(b"application/json") or length is None
            or not length.isdigit() or int(length) > services.settings.max_body_bytes):
        await app(scope, receive, send)
        return
    raw = await _read(receive)
    model, handler, needed = route
    try:
        bearer = bearer_token(token.decode("latin-1")) if token else None
        if needed == WEBHOOK:
            webhook_caller_of(services, bearer, signature.decode("latin-1") if signature else None, raw)
        elif not services.identify(bearer).allows(needed):
            raise ValueError("scope missing")
        body = model.model_validate_json(raw)
    except (NotifyError, ValidationError, ValueError):
        await app(scope, replaying(raw, receive), send)  # the framework's own 401, 403 or 422
        return
    try:
        status, text = await handler(services, body)
    except NotifyError as exc:
        status, text = exc.status, error_body(exc)
    payload = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON, (b"content-length", b"%d" % len(payload))]})
    await send({"type": "http.response.body", "body": payload})


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
