"""Brokers carry published messages from the dispatcher to every node's hub. Chosen by URL scheme.

``memory://`` is the in-process reference implementation; others are imported only when named.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Broker, Deliver, Describe, OnGap
from .messages import CatchUp, CloseUser, Frame, Message, Preferred, Push, Revoked

__all__ = ["Broker", "CatchUp", "CloseUser", "Deliver", "Describe", "Frame", "Message", "OnGap", "Preferred", "Push",
           "Revoked", "create_broker"]


def create_broker(url: str, node_id: str, node_ttl_s: float = 3.0) -> Broker:
    """The broker for ``url``; an unknown scheme is a configuration error at start-up."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker()
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBroker

        return RedisBroker(url, node_id, node_ttl_s=node_ttl_s)
    raise ValueError(f"NOTIFY_BROKER_URL scheme {scheme!r} is not supported (use memory:// or redis://)")
