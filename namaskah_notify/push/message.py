"""One Web Push message, built without network I/O: the VAPID key (RFC 8292) and its ``Authorization``, the
payload (what a tab's ``notification`` frame carries, trimmed to what push services take), its ``aes128gcm``
encryption for one subscription (RFC 8291), and the other headers (``TTL``, ``Urgency``, ``Topic``).

The cryptography is the maintained libraries': ``py_vapid`` signs the ES256 JWT, ``http_ece`` encrypts, both
on ``cryptography``; they are used here and nowhere else. The key is read once: ``NOTIFY_VAPID_PRIVATE_KEY``
(PEM text or a path to it) or, without it, ``vapid_private_key.pem`` in the data folder, generated once with
mode 0600 (``secretfile``). Imports ``config`` and ``secretfile``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import http_ece
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from py_vapid.jwt import sign
from py_vapid.utils import b64urlencode

from ..config import Settings
from ..secretfile import read_or_create

KEY_FILE = "vapid_private_key.pem"
# RFC 8030 push services take at least 4,096 bytes of body; aes128gcm adds a header of 86 bytes (salt, record
# size, the sender's public key) and 17 to the record (the delimiter and the tag).
MAX_PAYLOAD = 4096 - 86 - 17
JWT_LIFETIME_S = 12 * 3600  # RFC 8292: at most 24 h
URGENCY = {"low": "low", "normal": "normal", "high": "high"}
_PEM_KEY = re.compile(r"-----BEGIN ((?:EC )?PRIVATE KEY)-----.+?-----END \1-----", re.S)
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding (as browsers give subscription keys); ValueError otherwise."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def client_key(p256dh: str) -> bytes:
    """The subscription's public key: an uncompressed P-256 point (65 bytes); ValueError otherwise."""
    raw = b64url_decode(p256dh)
    if len(raw) != 65 or raw[0] != 4:
        raise ValueError("p256dh must be an uncompressed P-256 point: 65 bytes, base64url")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise ValueError("p256dh is not a point on the P-256 curve") from None
    return raw


def auth_secret(auth: str) -> bytes:
    raw = b64url_decode(auth)
    if len(raw) != 16:
        raise ValueError("auth must be 16 bytes, base64url")
    return raw


class VapidKey:
    """The server's VAPID key pair, and the ``Authorization`` it sends each push service (one JWT per
    audience, reused until less than an hour of it is left)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, subject: str | None = None) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("a VAPID key must be a P-256 (prime256v1) key")
        self._key = private_key
        self.subject = subject
        raw = private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                    serialization.PublicFormat.UncompressedPoint)
        self.public_key = b64urlencode(raw)  # what browsers take as applicationServerKey
        self._tokens: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> VapidKey:
        """``NOTIFY_VAPID_PRIVATE_KEY``, else the data folder's key (made on first start); a key that is not
        P-256 stops the server with one line."""
        if settings.vapid_private_key is not None:
            text = settings.vapid_private_key.get_secret_value().strip()
            if "-----BEGIN" not in text:
                try:
                    text = Path(text).read_text()
                except OSError as exc:
                    raise ValueError(f"NOTIFY_VAPID_PRIVATE_KEY: cannot read {text}: {exc.strerror}") from None
            where = "NOTIFY_VAPID_PRIVATE_KEY"
        else:
            path = settings.data_dir / KEY_FILE
            text = read_or_create(path, lambda: _generated_pem()).decode()
            where = str(path)
        return cls(_load_pem(text, where), settings.vapid_subject)

    def authorization(self, audience: str, now: float | None = None) -> str:
        """``vapid t=<JWT>, k=<public key>`` for a push service's origin."""
        now = time.time() if now is None else now
        cached = self._tokens.get(audience)
        if cached is None or cached[1] - now < 3600:
            claims: dict[str, Any] = {"aud": audience, "exp": int(now) + JWT_LIFETIME_S}
            if self.subject:
                claims["sub"] = self.subject
            if len(self._tokens) > 1000:  # push services are few; bound it all the same
                self._tokens.clear()
            cached = self._tokens[audience] = (sign(claims, self._key), now + JWT_LIFETIME_S)
        return f"vapid t={cached[0]}, k={self.public_key}"


def _generated_pem() -> bytes:
    vapid = Vapid02()
    vapid.generate_keys()
    return vapid.private_pem()


def _load_pem(text: str, where: str) -> ec.EllipticCurvePrivateKey:
    # ``openssl ecparam -genkey`` writes an EC PARAMETERS block first: take the key's own block.
    found = _PEM_KEY.search(text)
    try:
        key = serialization.load_pem_private_key((found.group(0) if found else text).encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{where} holds no usable PEM private key (unencrypted PKCS#8 or SEC1)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{where} is not a P-256 (prime256v1) EC private key, as VAPID needs")
    return key


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint: str
    user_id: str
    p256dh: str
    auth: str
    failures: int = 0


def payload(data: str) -> tuple[bytes, dict[str, Any]]:
    """The push's body before encryption — ``{"type":"notification","data":{...}}``, the frame a tab gets —
    and the notification. One too large for push services loses its ``meta``, then the end of its message
    (``"truncated": true``)."""
    notification = orjson.loads(data)
    body = b'{"type":"notification","data":' + data.encode() + b"}"
    if len(body) <= MAX_PAYLOAD:
        return body, notification
    slim = {key: value for key, value in notification.items() if key != "meta"} | {"truncated": True}
    message = str(slim.get("message") or "")
    while True:
        body = orjson.dumps({"type": "notification", "data": slim})
        if len(body) <= MAX_PAYLOAD or not message:
            return body, notification  # title and link alone always fit: never reached with the API's limits
        message = message[: max(0, len(message) - (len(body) - MAX_PAYLOAD) - 1)]
        slim["message"] = message + "…"


def headers(notification: dict[str, Any], ttl_s: int, now: datetime) -> dict[str, str] | None:
    """``TTL`` (no longer than until the notification expires), ``Urgency`` from its priority, and a ``Topic``
    from its collapse key (so a push service replaces an undelivered older one); None once it has expired."""
    ttl = ttl_s
    expires = notification.get("expires_at")
    if expires:
        left = (datetime.fromisoformat(expires.replace("Z", "+00:00")) - now).total_seconds()
        if left <= 0:
            return None
        ttl = min(ttl, int(left))
    answer = {"TTL": str(ttl), "Urgency": URGENCY.get(notification.get("priority") or "normal", "normal")}
    if notification.get("collapse_key"):
        # RFC 8030: at most 32 characters of the base64url alphabet.
        answer["Topic"] = b64urlencode(hashlib.sha256(str(notification["collapse_key"]).encode()).digest())[:32]
    return answer


def encrypt(body: bytes, subscription: Subscription) -> bytes:
    """RFC 8291: ``aes128gcm`` for this subscription, with a fresh key pair and salt for each message."""
    return http_ece.encrypt(body, private_key=ec.generate_private_key(ec.SECP256R1()),
                            dh=client_key(subscription.p256dh), auth_secret=auth_secret(subscription.auth),
                            version="aes128gcm")
