"""Web Push (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID) to users with no tab open.

``endpoints`` decides which endpoints may be sent to; ``message`` builds one push (no network I/O);
``store`` holds the subscriptions' SQL; ``sender`` makes the HTTP requests; ``channel`` queues what the
dispatcher offers and delivers it. Imports ``brokers``, ``config``, ``db``, ``dispatcher``, ``errors``,
``hub``, ``models``, ``schemas`` and ``secretfile``.
"""

from .channel import WebPush
from .endpoints import EndpointPolicy
from .message import VapidKey, auth_secret, client_key
from .store import MAX_PER_USER, Subscriptions

__all__ = ["MAX_PER_USER", "EndpointPolicy", "Subscriptions", "VapidKey", "WebPush", "auth_secret", "client_key"]
