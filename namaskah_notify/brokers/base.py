"""The broker interface: the backplane between nodes. Imports ``brokers.messages`` only.

Two jobs: carry published messages to every node's hub (``publish`` delivers to this node's hub at once
and queues them, in order, for the others), and, when shared by several nodes, keep the cluster's shared
view — each node's heartbeat, which users are connected anywhere, and the per-user connection count.
When the shared part is unreachable, a broker reports itself down (``up``) and never makes a caller wait.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from .messages import Message

Deliver = Callable[[list[Message]], None]
OnGap = Callable[[], None]
# This node's figures for the cluster view, and user -> that user's connections on this node.
Describe = Callable[[], tuple[dict[str, Any], dict[str, int]]]


class Broker(ABC):
    """Fan-out between publishers and hubs. Neither ``publish`` nor ``deliver`` waits: they only queue."""

    #: True when other processes share this broker: then nodes heartbeat and reconcile.
    shared = False
    #: False while other nodes cannot be reached (they catch up from the store once it is back).
    up = True
    #: When the broker went down (epoch seconds), or None while it is up.
    down_since: float | None = None
    #: Outages and recoveries so far.
    state_changes = 0
    #: How often this node renews its entry in the shared view (when shared).
    heartbeat_interval_s = 0.0

    @abstractmethod
    async def start(self, deliver: Deliver, on_gap: OnGap | None = None, describe: Describe | None = None) -> None:
        """Begin delivering; ``on_gap`` is called when this node may have missed broker traffic, and
        ``describe`` tells a shared broker what to publish about this node."""

    @abstractmethod
    def publish(self, messages: list[Message]) -> None:
        """Deliver to this node's hub now, then, in publishing order, to every other node. Never waits and
        never raises: what cannot reach the others now is found in the store by their catching up."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise when the broker cannot carry messages now (readiness)."""

    @abstractmethod
    async def close(self) -> None: ...

    # -- the cluster's shared view; a lone node answers from its own hub ------------------------------
    async def claim_connection(self, user_id: str, count: int, limit: int) -> bool:
        """Check the user's connections cluster-wide against ``limit``, ``count`` being this node's (the new
        one included), and record ``count``; False when over the limit."""
        return True

    async def release_connection(self, user_id: str, count: int) -> None:
        """Record that the user has ``count`` connections left on this node."""
        return None

    async def nodes(self) -> list[dict[str, Any]] | None:
        """Every live node's last heartbeat, or None when this node is alone."""
        return None

    async def connection_counts(self, user_ids: list[str]) -> dict[str, int] | None:
        """Each user's connections on every live node, or None when this node is alone."""
        return None

    async def connected_users(self) -> list[str] | None:
        """Users connected on any node, or None when this node is alone."""
        return None
