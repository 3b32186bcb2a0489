"""Signed webhooks: ``X-Notify-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.

With ``NOTIFY_WEBHOOK_SECRET`` set, ``POST /api/sms/inbound`` accepts a request signed this way instead of a
token (as Stripe signs its calls). The signature covers the body's exact bytes and a timestamp; one more
than :data:`TOLERANCE_S` away from this server's clock is refused, and a replay inside that window is
stopped by the body's ``message_id`` (answered with the first notification, pushed once). Several ``v1``
values may be sent (a provider rotating its secret); one matching is enough. The comparison runs in
constant time. No I/O here: the routes read the body and the header. Imports ``errors``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from .errors import BadSignature

HEADER = "x-notify-signature"
TOLERANCE_S = 300
_FIELD = re.compile(r"\s*([a-z0-9]+)=([^,\s]*)\s*")
_HEX = re.compile(r"[0-9a-f]{64}")


def parse(header: str) -> tuple[int, list[bytes]]:
    """The timestamp and the ``v1`` signatures of a header; ``BadSignature`` when it is malformed."""
    timestamp: int | None = None
    signatures: list[bytes] = []
    if len(header) > 1024:
        raise BadSignature("X-Notify-Signature is malformed: too long")
    for part in header.split(","):
        match = _FIELD.fullmatch(part)
        if match is None:
            raise BadSignature("X-Notify-Signature is malformed: expected t=<unix seconds>,v1=<hex>")
        name, value = match.groups()
        if name == "t":
            if timestamp is not None or not value.isdigit() or len(value) > 12:
                raise BadSignature("X-Notify-Signature is malformed: t must be one whole number of seconds")
            timestamp = int(value)
        elif name == "v1":
            value = value.lower()
            if not _HEX.fullmatch(value):
                raise BadSignature("X-Notify-Signature is malformed: v1 must be 64 hex digits")
            signatures.append(value.encode())
        # Other schemes (v0, v2, ...) are skipped, so a provider may send a newer one alongside.
    if timestamp is None or not signatures:
        raise BadSignature("X-Notify-Signature is malformed: expected t=<unix seconds>,v1=<hex>")
    return timestamp, signatures


def signature(secret: bytes, timestamp: int, body: bytes) -> bytes:
    """The ``v1`` value, as lowercase hex."""
    return hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest().encode()


def verify(secret: bytes, header: str | None, body: bytes, now: float | None = None) -> None:
    """Return when ``header`` signs ``body`` with ``secret`` within the tolerance; else ``BadSignature``."""
    if header is None:
        raise BadSignature("signature missing: send X-Notify-Signature (or Authorization: Bearer <JWT>)")
    timestamp, signatures = parse(header)
    # Whole seconds on both sides, as the header carries them: 301 s off is refused whatever the fraction.
    skew = int(time.time() if now is None else now) - timestamp
    if abs(skew) > TOLERANCE_S:
        raise BadSignature(f"X-Notify-Signature timestamp is {abs(skew):.0f} s from this server's clock "
                           f"(at most {TOLERANCE_S} s)")
    expected = signature(secret, timestamp, body)
    matched = False
    for given in signatures:  # every one compared, in constant time each
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise BadSignature("X-Notify-Signature does not match the body")
