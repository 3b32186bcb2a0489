"""What :meth:`Subscriber.events` yields: one frozen dataclass per kind of server frame, plus the
subscriber's own ``Disconnected``, ``Resyncing`` and ``Resynced``. Iterating the Subscriber itself yields only the
notifications (``NotificationReceived.data``). Imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is open and authenticated (the ``connected`` frame). On a resume, ``unread_count``
    already counts the notifications replayed right after it."""

    user_id: str
    connection_id: str
    unread_count: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class NotificationReceived:
    """A notification, in ``seq`` order, each once. ``replayed``: sent again on a resume or fetched over
    HTTP after ``resync_required``, rather than pushed live."""

    data: dict[str, Any]
    replayed: bool = False

    @property
    def seq(self) -> int:
        return int(self.data["seq"])

    @property
    def id(self) -> str:
        return str(self.data["id"])


@dataclass(frozen=True, slots=True)
class Read:
    """Notifications were marked read, from any tab or over HTTP (``all``: every one of the user's)."""

    notification_ids: list[str]
    all: bool
    unread_count: int


@dataclass(frozen=True, slots=True)
class Unread:
    """Notifications were marked unread again (``POST /api/notifications/{id}/unread``)."""

    notification_ids: list[str]
    unread_count: int


@dataclass(frozen=True, slots=True)
class Deleted:
    """Notifications were deleted (servers with ``DELETE /api/notifications``)."""

    notification_ids: list[str]
    all: bool
    unread_count: int


@dataclass(frozen=True, slots=True)
class PreferencesChanged:
    """The user's preferences changed (servers with ``/api/preferences``)."""

    preferences: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Resumed:
    """A resume replayed ``replayed`` missed notifications; what follows is live."""

    replayed: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class Resyncing:
    """The server could not replay what was missed (``resync_required``; it has up to ``last_seq``): the
    missed ones follow, fetched over HTTP, then ``Resynced``."""

    last_seq: int


@dataclass(frozen=True, slots=True)
class Resynced:
    """The server could not replay (``resync_required``); ``fetched`` missed ones came over HTTP instead."""

    fetched: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class TokenExpiring:
    """The token expires in ``expires_in`` seconds; a Subscriber given a token function refreshes it by itself."""

    expires_in: float


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    expires_at: str


@dataclass(frozen=True, slots=True)
class ErrorReported:
    """The server could not serve a frame this client sent (an ``error`` frame); the connection stays open."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection dropped, or an attempt to open one failed; the next attempt is in ``retry_in`` s.
    ``code`` is the close code (None when no WebSocket was opened), ``status`` the HTTP status of a
    refused handshake, ``attempt`` the number of failed attempts in a row."""

    code: int | None
    reason: str
    retry_in: float
    attempt: int
    status: int | None = None


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame type this client does not know (a newer server); passed on as it came."""

    frame: dict[str, Any]


Event = (Connected | NotificationReceived | Read | Unread | Deleted | PreferencesChanged | Resumed | Resyncing
         | Resynced | TokenExpiring | TokenRefreshed | ErrorReported | Disconnected | UnknownFrame)
