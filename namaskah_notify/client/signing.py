"""Signing a webhook call as the service checks it (``NOTIFY_WEBHOOK_SECRET`` on the server):
``X-Notify-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.

:func:`sign` makes the header's value for a body; :class:`WebhookSigner` is an ``httpx.Auth`` that signs
the exact bytes of each request it sends, with a fresh timestamp on every retry, so that a client built
with ``auth=WebhookSigner(secret)`` needs no token for ``sms_inbound``. Imports ``httpx`` only.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Generator

import httpx

HEADER = "X-Notify-Signature"


def sign(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Notify-Signature`` value for ``body`` at ``timestamp`` (default: now)."""
    key = secret.encode() if isinstance(secret, str) else secret
    moment = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(key, b"%d." % moment + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


class WebhookSigner(httpx.Auth):
    """Signs every request's body with the webhook secret."""

    requires_request_body = True

    def __init__(self, secret: str | bytes) -> None:
        self._secret = secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[HEADER] = sign(self._secret, request.content)
        yield request
