"""A Python client for namaskah-notify: the HTTP API and a live, resuming subscription.

    from namaskah_notify.client import NotifyClient, AsyncNotifyClient, Subscriber

:class:`AsyncNotifyClient` and :class:`NotifyClient` (its synchronous twin) call the HTTP API, with
retries on 429, 503 and connection failures; :class:`Subscriber` is an async iterator of one user's
notifications, in ``seq`` order across reconnects. Errors are the exceptions of ``errors``, named after the
service's error codes, all under :class:`NotifyClientError`.

This package needs only ``httpx`` and ``websockets``: it imports nothing else of ``namaskah_notify``, so
an application can use it without the server's dependencies.
"""

from ._retry import NO_RETRY, Backoff, RetryPolicy
from .errors import (
    BadRequest,
    BadSignature,
    Conflict,
    ConnectionFailed,
    Forbidden,
    IdempotencyMismatch,
    InsufficientScope,
    InternalError,
    InvalidRequest,
    NotFound,
    NotifyClientError,
    RateLimited,
    ResyncRequired,
    SequenceError,
    TooLarge,
    TooManyConnections,
    Unauthorized,
    Unavailable,
    Unstorable,
)
from .events import (
    Connected,
    Deleted,
    Disconnected,
    ErrorReported,
    Event,
    NotificationReceived,
    PreferencesChanged,
    Read,
    Resumed,
    Resynced,
    Resyncing,
    TokenExpiring,
    TokenRefreshed,
    UnknownFrame,
    Unread,
)
from .http import AsyncNotifyClient, NotifyClient
from .signing import WebhookSigner, sign
from .subscriber import Subscriber

__all__ = [
    "NO_RETRY",
    "AsyncNotifyClient",
    "Backoff",
    "BadRequest",
    "BadSignature",
    "Conflict",
    "Connected",
    "ConnectionFailed",
    "Deleted",
    "Disconnected",
    "ErrorReported",
    "Event",
    "Forbidden",
    "IdempotencyMismatch",
    "InsufficientScope",
    "InternalError",
    "InvalidRequest",
    "NotFound",
    "NotificationReceived",
    "NotifyClient",
    "NotifyClientError",
    "PreferencesChanged",
    "RateLimited",
    "Read",
    "Resumed",
    "ResyncRequired",
    "Resynced",
    "Resyncing",
    "RetryPolicy",
    "SequenceError",
    "Subscriber",
    "TokenExpiring",
    "TokenRefreshed",
    "TooLarge",
    "TooManyConnections",
    "Unauthorized",
    "Unavailable",
    "UnknownFrame",
    "Unread",
    "Unstorable",
    "WebhookSigner",
    "sign",
]
