"""The broker interface: publish envelopes after commit; each node's hub receives them.

Imports nothing of ours.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Envelope:
    """One frame for every connection of one user.

    Notification frames carry their ``seq`` (for ordering and de-duplication on each connection) and
    ``created`` (epoch seconds, for the push latency figure).
    """

    user_id: str
    frame: str
    seq: int | None = None
    created: float | None = None


Deliver = Callable[[list[Envelope]], None]


class Broker(ABC):
    """Fan-out between publishers and hubs. ``deliver`` must not block: it only queues."""

    @abstractmethod
    async def start(self, deliver: Deliver) -> None: ...

    @abstractmethod
    async def publish(self, envelopes: list[Envelope]) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise when the broker cannot carry messages now (readiness)."""

    @abstractmethod
    async def close(self) -> None: ...
