"""The client's errors: one base class, one subclass per error code the service answers with.

An HTTP error answer is ``{"detail": ..., "code": ...}``; the exception is picked by ``code`` first and by
status when the code is one this client does not know (a newer server), so ``except NotFound`` keeps
working. WebSocket close codes that retrying cannot fix map onto the same classes::

    NotifyClientError                      base: .message .status .code .detail
    ├── BadRequest            400          bad_request, bad_frame, bad_json, unknown_type, ...
    ├── Unauthorized          401 / 4401   unauthorized: missing, invalid, expired or revoked token
    │   └── BadSignature      401          bad_signature (signed webhooks)
    ├── Forbidden             403 / 4403   forbidden: not admin, or Origin not allowed
    │   └── InsufficientScope 403          insufficient_scope
    ├── NotFound              404          not_found: not there, not the caller's, or no such route
    ├── Conflict              409          conflict
    ├── TooLarge              413 / 1009   too_large
    ├── InvalidRequest        422          a body the server's validation refused
    │   ├── Unstorable        422          unstorable: the database refused this one notification
    │   └── IdempotencyMismatch 422        idempotency_mismatch: a key reused with another body
    ├── RateLimited           429          rate_limited (retried first; raised when retries run out)
    ├── TooManyConnections    429 / 4429   too_many_connections
    ├── InternalError         500          internal
    ├── Unavailable           503          unavailable (retried first)
    ├── ConnectionFailed      -            the server could not be reached, after the retries
    └── SequenceError         -            a Subscriber saw a gap in ``seq`` it could not fill
        └── ResyncRequired    -            the server could not replay what was missed, nor could HTTP

Imports nothing but the standard library.
"""

from __future__ import annotations

from typing import Any


class NotifyClientError(Exception):
    """Base of every error this client raises; ``status`` is the HTTP status (0 when there was none),
    ``close_code`` the WebSocket close code that ended a subscription (None when there was none)."""

    status = 0
    code = "error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 detail: Any = None, close_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail if detail is not None else message
        self.close_code = close_code
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class BadRequest(NotifyClientError):
    status = 400
    code = "bad_request"


class Unauthorized(NotifyClientError):
    """A new token is needed; retrying with the same one cannot help."""

    status = 401
    code = "unauthorized"


class BadSignature(Unauthorized):
    code = "bad_signature"


class Forbidden(NotifyClientError):
    status = 403
    code = "forbidden"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"


class NotFound(NotifyClientError):
    status = 404
    code = "not_found"


class Conflict(NotifyClientError):
    status = 409
    code = "conflict"


class TooLarge(NotifyClientError):
    status = 413
    code = "too_large"


class InvalidRequest(NotifyClientError):
    """The server's validation refused the body; ``detail`` has its list of errors."""

    status = 422
    code = "invalid_request"


class Unstorable(InvalidRequest):
    code = "unstorable"


class IdempotencyMismatch(InvalidRequest):
    code = "idempotency_mismatch"


class RateLimited(NotifyClientError):
    status = 429
    code = "rate_limited"


class TooManyConnections(NotifyClientError):
    status = 429
    code = "too_many_connections"


class InternalError(NotifyClientError):
    status = 500
    code = "internal"


class Unavailable(NotifyClientError):
    status = 503
    code = "unavailable"


class ConnectionFailed(NotifyClientError):
    """No answer at all (refused, reset, timed out) after every retry."""

    code = "connection_failed"


class SequenceError(NotifyClientError):
    """Notifications were missed and could not be fetched: raised rather than carrying on silently.
    ``expected`` is the first ``seq`` missing, ``got`` the one that arrived instead (or the server's
    ``last_seq``)."""

    code = "sequence_gap"

    def __init__(self, message: str, *, expected: int, got: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class ResyncRequired(SequenceError):
    """The server answered a resume with ``resync_required`` and the missed notifications could not be
    loaded over HTTP (catching up is off, or the server has fewer than the client saw)."""

    code = "resync_required"


_BY_CODE: dict[str, type[NotifyClientError]] = {
    cls.code: cls
    for cls in (BadRequest, Unauthorized, BadSignature, Forbidden, InsufficientScope, NotFound, Conflict,
                TooLarge, Unstorable, IdempotencyMismatch, RateLimited, TooManyConnections, InternalError,
                Unavailable)
}
_BY_STATUS: dict[int, type[NotifyClientError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: NotFound, 409: Conflict,
    413: TooLarge, 422: InvalidRequest, 429: RateLimited, 500: InternalError, 503: Unavailable,
}
# Close codes after which reconnecting cannot help.
_BY_CLOSE: dict[int, type[NotifyClientError]] = {4401: Unauthorized, 4403: Forbidden, 1009: TooLarge}


def from_answer(status: int, body: Any) -> NotifyClientError:
    """The exception for an HTTP error answer (``body`` is its parsed JSON, or None)."""
    code = body.get("code") if isinstance(body, dict) else None
    detail = body.get("detail") if isinstance(body, dict) else None
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        cls = _BY_STATUS.get(status) or (InternalError if status >= 500 else BadRequest)
    if isinstance(detail, str):
        message = detail
    elif isinstance(detail, list) and detail and isinstance(detail[0], dict):  # the framework's 422 list
        first = detail[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    else:
        message = f"HTTP {status}"
    return cls(message, status=status, code=code if isinstance(code, str) else None, detail=detail)


def from_close(code: int, reason: str) -> NotifyClientError | None:
    """The exception for a WebSocket close code that ends a subscription; None when reconnecting may help."""
    cls = _BY_CLOSE.get(code)
    if cls is None:
        return None
    return cls(f"closed {code}: {reason or cls.code}", status=cls.status, close_code=code)
