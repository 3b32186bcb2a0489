"""The broker interface: the backplane between nodes. Imports ``brokers.messages`` only.

Two jobs: carry published messages to every node's hub (``publish`` delivers to this node's hub at once
and queues them, in order, for the others), and, when shared by several nodes, keep the cluster's shared
view — each node's heartbeat, which users are connected anywhere, and the per-user connection count.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from .messages import Message

Deliver = Callable[[list[Message]], None]
OnGap = Callable[[], None]


class Broker(ABC):
    """Fan-out between publishers and hubs. Neither ``publish`` nor ``deliver`` waits: they only queue."""

    #: True when other processes share this broker: then nodes heartbeat and reconcile.
    shared = False
    #: False while other nodes cannot be reached (they catch up from the store once it is back).
    up = True

    @abstractmethod
    async def start(self, deliver: Deliver, on_gap: OnGap | None = None) -> None:
        """Begin delivering; ``on_gap`` is called when this node may have missed broker traffic."""

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
    async def claim_connection(self, user_id: str, connection_id: str, limit: int) -> bool:
        """Count a new connection against the user's cluster-wide limit; False when over it."""
        return True

    async def release_connection(self, user_id: str, connection_id: str, last_here: bool = False) -> None:
        """Forget a closed connection; ``last_here``: the user has none left on this node."""
        return None

    async def heartbeat(self, node: dict[str, Any]) -> None:
        return None

    async def nodes(self) -> list[dict[str, Any]] | None:
        """Every live node's last heartbeat, or None when this node is alone."""
        return None

    async def connected_users(self) -> list[str] | None:
        """Users connected on any node, or None when this node is alone."""
        return None
