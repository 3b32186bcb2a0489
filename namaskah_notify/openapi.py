"""The HTTP API's description (``/openapi.json``): the answer models, the answers each route declares, the
tags, and what only the running configuration knows (the SMS providers it enables).

The models describe what the handlers build; a handler that already answers JSON text (the publishing
routes) is described, not re-validated. ``tests/test_openapi.py`` holds description and server together by
running an outside fuzzer against a live server. The WebSocket protocol is described in
``docs/asyncapi.yaml``. Imports ``config``, ``schemas`` and ``sms.providers``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from .config import Settings
from .schemas import JSON_VALUE
from .sms.providers import default_provider, offered

DESCRIPTION = """\
Real-time notifications: stored, numbered per user without gaps, pushed to every connection of the user
over the WebSocket `/ws/notifications` (described in `docs/asyncapi.yaml`), and served here for publishing
backends and as the polling fallback.

**Auth**: `Authorization: Bearer <JWT>`; `sub` (or `user_id`) is the user. The `scope` claim (space-separated)
adds privileged routes: `notify:publish` publishing, `notify:webhook` the SMS webhook only, `notify:admin`
(or `role: "admin"`) everything; a missing scope is `403 insufficient_scope`. With a webhook secret
configured, the SMS webhook also accepts `X-Notify-Signature` instead of a token (`401 bad_signature`).
**Errors** are `{"detail": str, "code": str}` with the status; a request that fails
validation is `422 {"detail": [...]}`.
"""

TAGS = [
    {"name": "notifications", "description": "A user's own notifications: the polling fallback, unread count, "
                                             "marking read. Each change reaches every tab as a `read` event."},
    {"name": "publishing", "description": "Backends publish (admin): stored, then pushed to every connection."},
    {"name": "sms", "description": "SMS verifications and the provider webhook (see docs/sms.md)."},
    {"name": "admin", "description": "Administration (admin tokens)."},
    {"name": "operations", "description": "Health, readiness, stats and Prometheus metrics."},
    {"name": "push", "description": "Web Push: the server's VAPID key and a user's own browser subscriptions; "
                                    "notifications stored while the user has no tab open are pushed to them."},
]

_ISO = {"format": "date-time"}


class _Answer(BaseModel):
    # Documents the fields every answer has; a field a handler adds is passed on, never dropped.
    model_config = ConfigDict(extra="allow")


class Error(BaseModel):
    """Every error answer but a failed validation."""

    detail: str = Field(description="What went wrong, for a person.")
    code: str = Field(description="What went wrong, for a program: `unauthorized`, `forbidden`, `not_found`, "
                                  "`conflict`, `bad_request`, `too_large`, `unstorable`, `rate_limited`, "
                                  "`unavailable`, `insufficient_scope`, `bad_signature`, …")


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationFailed(BaseModel):
    """A body or parameter the API cannot accept: FastAPI's list of issues."""

    detail: list[ValidationIssue]


class Notification(_Answer):
    """A stored notification: the ``data`` of a ``notification`` frame, and an item of the list."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "notif_1a2b3c4d5e6f", "seq": 42, "user_id": "alice", "title": "📱 SMS Code Received",
        "message": "Verification code received for Google", "type": "sms_received", "link": "/verify?id=ver_123",
        "created_at": "2025-01-01T12:00:00.000Z", "is_read": False,
        "meta": {"verification_id": "ver_123", "service": "Google"}, "priority": "normal", "expires_at": None,
        "collapse_key": None, "read_at": None,
    }]})

    id: str
    seq: int = Field(ge=1, description="The user's sequence number: 1, 2, 3, … with no gaps, in commit order.")
    user_id: str
    title: str
    message: str
    type: str
    link: str | None
    created_at: str = Field(json_schema_extra=_ISO)
    is_read: bool
    meta: dict[str, Any]
    priority: Literal["low", "normal", "high"]
    expires_at: str | None = Field(json_schema_extra=_ISO, description="Afterwards it is neither pushed, "
                                   "replayed nor listed.")
    collapse_key: str | None = Field(description="A newer one with the same key replaces this one.")
    read_at: str | None = Field(json_schema_extra=_ISO)


class UserPresence(_Answer):
    online: bool = Field(description="Connected on any node now.")
    connections: int = Field(ge=0)
    last_seen: str | None = Field(json_schema_extra=_ISO, description="When a connection of theirs last opened "
                                  "or closed; null if never.")


class Presence(_Answer):
    users: dict[str, UserPresence]


class NotificationPage(_Answer):
    items: list[Notification]
    unread_count: int = Field(ge=0)
    last_seq: int = Field(ge=0, description="The user's latest seq (0: none yet).")
    has_more: bool


class UnreadCount(_Answer):
    unread_count: int = Field(ge=0, examples=[3])


class Marked(_Answer):
    """The notifications this call changed (the caller's, not already so), and the unread count after it."""

    notification_ids: list[str]
    unread_count: int = Field(ge=0)


class Deleted(_Answer):
    deleted: int = Field(ge=0, description="How many were deleted.")
    unread_count: int = Field(ge=0)


class Erased(_Answer):
    """Rows deleted per table: notifications, user_seqs, verifications, sms_fake_inbox, user_revocations,
    idempotency_keys, preferences, push_subscriptions, users."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"deleted": {
        "notifications": 42, "user_seqs": 1, "verifications": 2, "sms_fake_inbox": 1, "user_revocations": 0,
        "idempotency_keys": 0, "preferences": 1, "push_subscriptions": 2, "users": 1}}]})

    deleted: dict[str, int]


class Published(_Answer):
    """``user_ids``: one stored notification per distinct recipient."""

    count: int = Field(ge=0)
    items: list[Notification]


class Broadcast(_Answer):
    """``broadcast``: how many users it was stored for."""

    count: int = Field(ge=0, examples=[1200])


class Disconnected(_Answer):
    user_id: str
    revoked_before: str | None = Field(json_schema_extra=_ISO,
                                       description="Tokens issued before this are refused; null without revoke.")
    other_nodes: Literal["notified", "pending", "unreachable"]


class Verification(_Answer):
    id: str = Field(examples=["ver_8f14e45fceea167a"])
    user_id: str
    service: str
    phone_number: str | None
    provider: str
    status: Literal["pending", "received", "expired", "cancelled"]
    created_at: str = Field(json_schema_extra=_ISO)
    expires_at: str = Field(json_schema_extra=_ISO)
    received_at: str | None = Field(json_schema_extra=_ISO)
    notification_id: str | None
    code: str | None = Field(default=None, description="Once received; shown to the owner and admins.")


class FakeMessageAccepted(_Answer):
    verification_id: str
    message_id: str
    received_at: str = Field(json_schema_extra=_ISO)
    verification_status: Literal["pending", "received", "expired", "cancelled"]


class Health(_Answer):
    status: Literal["ok"]


class Readiness(_Answer):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ready", "database": "ok", "broker": "ok"},
    ]})

    status: Literal["ready", "not ready"]
    database: str
    broker: str


class Stats(_Answer):
    """The origin document's three keys (cluster-wide), then counters, rates, latency and every node."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"total_connections": 5, "connected_users": 3, "status": "operational"},
    ]})

    total_connections: int = Field(ge=0)
    connected_users: int = Field(ge=0)
    status: str = Field(description="`operational`, or `degraded` while the broker is out of reach.")


_WHY = {
    400: "The request cannot be read: a body that is not JSON, or parameters that exclude each other.",
    401: "No token, or one that is invalid, expired or revoked.",
    403: "The token may not do this (an admin token is needed).",
    404: "Not there, or not the caller's.",
    409: "Not in a state that allows it.",
    413: "The body is larger than `NOTIFY_MAX_BODY_BYTES`.",
    422: "The body or a parameter does not validate.",
    429: "Too many new connections from this address (with `NOTIFY_HANDSHAKE_RATE_PER_IP` set).",
    503: "The database is unavailable; retry later.",
}
_CODE = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
         413: "too_large", 429: "rate_limited", 503: "unavailable"}
_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait.", "required": True, "schema": {"type": "string"}}},
}


def operation_id(route: APIRoute) -> str:
    """A route's ``operationId`` is its function's name: ``list_notifications``, ``publish``, …"""
    return route.name


# What a started verification leads to, for clients and the fuzzer's stateful phase.
VERIFICATION_LINKS = {
    "get_verification": {"operationId": "get_verification", "parameters": {"verification_id": "$response.body#/id"}},
    "cancel_verification": {"operationId": "cancel_verification",
                            "parameters": {"verification_id": "$response.body#/id"}},
    "fake_message": {"operationId": "fake_message", "description": "With the fake provider: deliver its SMS.",
                     "requestBody": {"verification_id": "$response.body#/id", "text": "Your code is 481516"}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def errors(*statuses: int | tuple[int, str], unstorable: bool = False) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, each ``status`` or ``(status, why)``; 429 is added to every route (the
    handshake limit refuses a connection before any route is chosen). ``unstorable``: a 422 can also be the
    database refusing the notification."""
    answers: dict[int | str, dict[str, Any]] = {}
    for item in (*statuses, 429):
        status, why = item if isinstance(item, tuple) else (item, _WHY[item])
        if status == 422:
            schema = {"anyOf": [_ref("ValidationFailed"), _ref("Error")]} if unstorable else _ref("ValidationFailed")
            if unstorable:
                why += " Or `unstorable`: the database refused this one notification."
            content = {"schema": schema}
        else:
            content = {"schema": _ref("Error"), "example": {"detail": why, "code": _CODE[status]}}
        answers[status] = {"description": why, "content": {"application/json": content}}
        if status in _HEADERS:
            answers[status]["headers"] = _HEADERS[status]
    return answers


def seq_page_parameter(max_seq: int) -> dict[str, Any]:
    """``limit``, ``before_seq`` and ``since_seq`` as one form-exploded query object, which can say what
    separate parameters cannot: ``before_seq`` and ``since_seq`` exclude each other."""
    seq = {"type": "integer", "maximum": max_seq}
    return {
        "name": "page", "in": "query", "required": False, "style": "form", "explode": True,
        "description": "Each property is its own query parameter: `?limit=20&since_seq=40`.",
        "schema": {
            "type": "object",
            "properties": {
                "limit": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                "before_seq": {**seq, "minimum": 1, "description": "Newest first, older than this seq."},
                "since_seq": {**seq, "minimum": 0, "description": "Oldest first, newer than this seq."},
            },
            "not": {"required": ["before_seq", "since_seq"]},
        },
    }


def install(app: FastAPI, settings: Settings) -> None:
    """Complete FastAPI's description of ``app`` with what this module adds, once, when first asked."""
    app.description = DESCRIPTION
    app.openapi_tags = TAGS
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _, shared = models_json_schema([(m, "serialization") for m in (Error, ValidationFailed)],
                                           ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(shared["$defs"], JsonValue=JSON_VALUE)
            _offer_providers(schema["components"]["schemas"].get("StartVerificationBody"), settings)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _offer_providers(body: dict[str, Any] | None, settings: Settings) -> None:
    """``provider`` is one this server enables, and a provider that polls by phone number needs one."""
    if body is None:
        return
    providers = offered(settings)
    names = sorted(providers)
    field = body["properties"]["provider"]
    field["anyOf"] = [{"type": "string", "enum": names}, {"type": "null"}] if names else [{"type": "null"}]
    phone = {"required": ["phone_number"], "properties": {"phone_number": {"type": "string"}}}
    rules = [{"if": {"required": ["provider"], "properties": {"provider": {"const": name}}}, "then": phone}
             for name in names if providers[name]]
    default = default_provider(settings, providers)
    if default is not None and providers.get(default):
        absent = {"anyOf": [{"not": {"required": ["provider"]}}, {"properties": {"provider": {"type": "null"}}}]}
        rules.append({"if": absent, "then": phone})
    if rules:
        body["allOf"] = rules
