"""The broker interface: the backplane between nodes. Imports nothing of ours.

Two jobs: carry published frames to every node's hub (``publish`` delivers to this node's hub at once,
then to the others), and, when shared by several nodes, keep the cluster's shared view — each node's
heartbeat, which users are connected anywhere, and the per-user connection count.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Envelope:
    """One frame for every connection of one user.

    Notification frames carry their ``seq`` (for ordering and de-duplication on each connection) and
    ``created`` (epoch seconds, for the push latency figure). An envelope with an empty ``frame`` and a
    ``seq`` asks each connection to catch up from the store to that ``seq``. One with a ``close_code``
    closes every connection of the user (``frame`` is the reason); ``revoked_before`` (epoch seconds) then
    tells every node that the user's tokens issued earlier are refused.
    """

    user_id: str
    frame: str
    seq: int | None = None
    created: float | None = None
    close_code: int | None = None
    revoked_before: float | None = None


Deliver = Callable[[list[Envelope]], None]
OnGap = Callable[[], None]


class Broker(ABC):
    """Fan-out between publishers and hubs. ``deliver`` must not block: it only queues."""

    #: True when other processes share this broker: then nodes heartbeat and reconcile.
    shared = False

    @abstractmethod
    async def start(self, deliver: Deliver, on_gap: OnGap | None = None) -> None:
        """Begin delivering; ``on_gap`` is called when this node may have missed broker traffic."""

    @abstractmethod
    async def publish(self, envelopes: list[Envelope]) -> None:
        """Deliver to this node's hub now, then to every other node. Raises when the others cannot be
        reached; this node's connections have their frames regardless."""

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
