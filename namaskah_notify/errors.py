"""The service's errors; each knows its HTTP status, WebSocket close code and wire code.

Routes map errors in one place (``app.py`` for HTTP, ``routes/websocket.py`` for sockets)::

    NotifyError                      500 / 1011  internal
    ├── AuthError                    401 / 4401  unauthorized   missing, invalid or expired token
    │   └── BadSignature             401 / -     bad_signature  a webhook's X-Notify-Signature is missing or wrong
    ├── Forbidden                    403 / 4403  forbidden      Origin not allowed
    │   └── InsufficientScope        403 / -     insufficient_scope  the token lacks the scope the route needs
    ├── NotFound                     404 / -     not_found      not there, or not the caller's
    ├── Conflict                     409 / -     conflict       not in a state that allows it
    ├── ProtocolError                400 / -     bad_json, unknown_type, bad_frame, ...
    ├── TooLarge                     413 / 1009  too_large
    ├── Unstorable                   422 / -     unstorable     the database refused this one notification
    ├── BadEndpoint                  422 / -     bad_endpoint   a Web Push endpoint this server will not send to
    ├── TooManyConnections           429 / 4429  too_many_connections
    ├── RateLimited                  429 / 1008  rate_limited
    └── Unavailable                  503 / 1011  unavailable    database or broker down

Imports nothing of ours.
"""

from __future__ import annotations


class NotifyError(Exception):
    status = 500
    close_code = 1011
    code = "internal"

    def __init__(self, message: str = "internal error", *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class AuthError(NotifyError):
    status = 401
    close_code = 4401
    code = "unauthorized"


class Forbidden(NotifyError):
    status = 403
    close_code = 4403
    code = "forbidden"


class BadSignature(AuthError):
    code = "bad_signature"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"


class NotFound(NotifyError):
    status = 404
    close_code = 1008
    code = "not_found"


class Conflict(NotifyError):
    status = 409
    close_code = 1008
    code = "conflict"


class ProtocolError(NotifyError):
    """A client frame that cannot be served; answered with an ``error`` frame, connection kept."""

    status = 400
    close_code = 1003
    code = "bad_frame"


class TooLarge(NotifyError):
    status = 413
    close_code = 1009
    code = "too_large"


class Unstorable(NotifyError):
    """The database refused one notification (a constraint or trigger of its own); the others committed
    with it in the same group are stored and pushed."""

    status = 422
    close_code = 1011
    code = "unstorable"


class BadEndpoint(NotifyError):
    """A push subscription's endpoint that is not a URL, not ``https:`` (unless its host is allowed plain
    ``http:``), or names a local or private address."""

    status = 422
    close_code = 1008
    code = "bad_endpoint"


class IdempotencyMismatch(NotifyError):
    """An ``Idempotency-Key`` seen before with a different body."""

    status = 422
    close_code = 1008
    code = "idempotency_mismatch"


class TooManyConnections(NotifyError):
    status = 429
    close_code = 4429
    code = "too_many_connections"


class RateLimited(NotifyError):
    status = 429
    close_code = 1008
    code = "rate_limited"


class Unavailable(NotifyError):
    status = 503
    close_code = 1011
    code = "unavailable"
