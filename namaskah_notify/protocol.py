"""The WebSocket wire protocol (contract section 2) as plain functions: text in, frames out, no I/O.

``parse_client_frame`` turns a client's text frame into one of the frame classes below or raises
:class:`ProtocolError`; the ``*_frame`` builders return the JSON text the server sends. The route in
``routes/websocket.py`` only moves these between the socket and the hub. Imports ``errors`` and ``schemas``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .errors import ProtocolError
from .schemas import Content, Notification, iso, utcnow

MAX_ID_CHARS = 128
MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True, slots=True)
class Ping:
    text: bool  # the origin document's bare "ping" text frame, answered with bare "pong"


@dataclass(frozen=True, slots=True)
class Auth:
    token: str


@dataclass(frozen=True, slots=True)
class MarkRead:
    notification_id: str


@dataclass(frozen=True, slots=True)
class MarkAllRead:
    pass


@dataclass(frozen=True, slots=True)
class RefreshToken:
    token: str


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


ClientFrame = Ping | Auth | MarkRead | MarkAllRead | RefreshToken | Ack


def _string(body: dict[str, Any], key: str, limit: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"'{key}' must be a non-empty string", code="bad_frame")
    if len(value) > limit:
        raise ProtocolError(f"'{key}' is longer than {limit} characters", code="bad_frame")
    return value


def parse_client_frame(text: str) -> ClientFrame:
    """One client text frame to a frame object; the error's code is what the ``error`` reply carries."""
    stripped = text.strip()
    if stripped == "ping":
        return Ping(text=True)
    try:
        body = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        raise ProtocolError("frame is not JSON (nor the text 'ping')", code="bad_json") from None
    if not isinstance(body, dict):
        raise ProtocolError("frame must be a JSON object with a 'type'", code="bad_frame")
    kind = body.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("frame has no string 'type'", code="bad_frame")
    if kind == "ping":
        return Ping(text=False)
    if kind == "mark_read":
        return MarkRead(_string(body, "notification_id", MAX_ID_CHARS))
    if kind == "mark_all_read":
        return MarkAllRead()
    if kind == "ack":
        seq = body.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq < 2**63:
            raise ProtocolError("'seq' must be a positive integer", code="bad_frame")
        return Ack(seq)
    if kind == "refresh_token":
        return RefreshToken(_string(body, "token", MAX_TOKEN_CHARS))
    if kind == "auth":
        return Auth(_string(body, "token", MAX_TOKEN_CHARS))
    raise ProtocolError(f"unknown frame type {kind[:40]!r}", code="unknown_type")


def _dump(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def connected_frame(user_id: str, connection_id: str, unread_count: int, last_seq: int) -> str:
    return _dump(
        {
            "type": "connected",
            "message": "WebSocket connected successfully",
            "user_id": user_id,
            "timestamp": iso(utcnow()),
            "connection_id": connection_id,
            "unread_count": unread_count,
            "last_seq": last_seq,
        }
    )


class NotificationTemplate:
    """A notification's ``data`` with everything but ``id``, ``seq`` and ``user_id`` serialized already:
    built once per publish and stamped once per recipient, so a broadcast to thousands serializes its
    content once, and a single publish serializes it once for both the frame and the HTTP answer."""

    __slots__ = ("_tail",)

    def __init__(self, content: Content, created_at: datetime | str, is_read: bool = False,
                 read_at: datetime | None = None) -> None:
        created = created_at if isinstance(created_at, str) else iso(created_at)
        rest = orjson.dumps({"title": content.title, "message": content.message, "type": content.type,
                             "link": content.link, "created_at": created, "is_read": is_read,
                             "meta": content.meta, "priority": content.priority,
                             "expires_at": iso(content.expires_at) if content.expires_at else None,
                             "collapse_key": content.collapse_key,
                             "read_at": iso(read_at) if read_at else None})
        self._tail = rest.decode()[1:]  # without its opening brace

    def data(self, notification_id: str, seq: int, user_id: str) -> str:
        """The JSON object ``Notification.to_wire`` describes (ids are ours: letters and digits only)."""
        return f'{{"id":"{notification_id}","seq":{seq},"user_id":{_dump(user_id)},{self._tail}'


def wrap_notification(data: str) -> str:
    """The ``notification`` frame around a notification's JSON ``data``."""
    return '{"type":"notification","data":' + data + "}"


def notification_frame(notification: Notification) -> str:
    template = NotificationTemplate(notification.content, notification.created_at, notification.is_read,
                                    notification.read_at)
    return wrap_notification(template.data(notification.id, notification.seq, notification.user_id))


def pong_frame() -> str:
    return _dump({"type": "pong", "timestamp": iso(utcnow())})


def read_frame(notification_ids: list[str], all_read: bool, unread_count: int) -> str:
    return _dump(
        {"type": "read", "notification_ids": notification_ids, "all": all_read, "unread_count": unread_count}
    )


def unread_frame(notification_ids: list[str], unread_count: int) -> str:
    """The counterpart of ``read``: these were marked unread again."""
    return _dump({"type": "unread", "notification_ids": notification_ids, "unread_count": unread_count})


def deleted_frame(notification_ids: list[str], all_deleted: bool, unread_count: int) -> str:
    """``all``: every notification of the user is gone (``notification_ids`` is then empty)."""
    return _dump(
        {"type": "deleted", "notification_ids": notification_ids, "all": all_deleted, "unread_count": unread_count}
    )


def preferences_frame(preferences: dict[str, Any]) -> str:
    return _dump({"type": "preferences", "preferences": preferences})


def resumed_frame(replayed: int, last_seq: int) -> str:
    return _dump({"type": "resumed", "replayed": replayed, "last_seq": last_seq})


def resync_required_frame(last_seq: int) -> str:
    return _dump({"type": "resync_required", "last_seq": last_seq})


def token_expiring_frame(expires_in: float) -> str:
    return _dump({"type": "token_expiring", "expires_in": max(0, round(expires_in))})


def token_refreshed_frame(expires_at: float) -> str:
    return _dump({"type": "token_refreshed", "expires_at": iso(datetime.fromtimestamp(expires_at, UTC))})


def error_frame(code: str, message: str) -> str:
    return _dump({"type": "error", "code": code, "message": message})
