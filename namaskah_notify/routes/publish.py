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

import hashlib
import re
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
from ..writer import Idempotency, Stored

Answer = tuple[int, str]  # status and JSON text
Key = tuple[str, str, str]  # an Idempotency-Key: (publisher, key, hash of the body)
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,200}")  # 1-200 visible ASCII characters


def idempotency_key(publisher: str, header: str | None, body: BaseModel) -> Key | None:
    """The publisher's key (its token's ``sub``) with the hash of the body as validated, so that the same
    body sent again with other spacing or key order is the same request."""
    if header is None:
        return None
    header = header.strip(" \t")  # as HTTP reads a header's value
    if not KEY_PATTERN.fullmatch(header):
        raise ValueError("Idempotency-Key must be 1-200 visible ASCII characters")
    return publisher, header, hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def _claim(key: Key | None, answer: Callable[[Stored], Answer]) -> Idempotency | None:
    return Idempotency(*key, answer) if key is not None else None


async def publish(services: Services, body: PublishBody, key: Key | None = None) -> Answer:
    """Store and push to one user, several, or every user the service knows (or connected right now)."""
    content = body.content()
    if body.broadcast:
        users = await services.dispatcher.audience(body.audience or "all")
        answer: Answer = (201, f'{{"count":{len(users)}}}')
        stored = await services.dispatcher.notify(users, content, _claim(key, lambda _stored: answer))
        return stored.replay or answer
    if body.user_id is not None:
        stored = await services.dispatcher.notify([body.user_id], content, _claim(key, _one))
        return stored.replay or _one(stored)
    stored = await services.dispatcher.notify(body.recipients(), content, _claim(key, _many))
    return stored.replay or _many(stored)


def _one(stored: Stored) -> Answer:
    return 201, stored.data[0]


def _many(stored: Stored) -> Answer:
    return 201, f'{{"count":{len(stored.data)},"items":[{",".join(stored.data)}]}}'


def _sms(stored: Stored) -> Answer:
    return (201 if stored.created else 200), stored.data[0]


async def sms_inbound(services: Services, body: SmsInboundBody, key: Key | None = None) -> Answer:
    """The origin document's SMS notification; a retried ``message_id`` answers the first one with 200."""
    stored = await services.dispatcher.on_sms_received(
        body.user_id, body.verification_id, body.service, body.code, body.message_id, _claim(key, _sms)
    )
    return stored.replay or _sms(stored)


Route = tuple[type[BaseModel], Callable[[Services, Any, Key | None], Awaitable[Answer]], str]  # body, work, scope
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
    token = length = content_type = signature = key = None
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            key = value
        elif name == b"authorization":
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
            caller = webhook_caller_of(services, bearer, signature.decode("latin-1") if signature else None, raw)
        elif not (caller := services.identify(bearer)).allows(needed):
            raise ValueError("scope missing")
        body = model.model_validate_json(raw)
        claim = idempotency_key(caller.user_id, key.decode("latin-1") if key is not None else None, body)
    except (NotifyError, ValidationError, ValueError):
        await app(scope, replaying(raw, receive), send)  # the framework's own 401, 403 or 422
        return
    try:
        status, text = await handler(services, body, claim)
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
