"""The in-process broker: one process, no services; the reference every other broker must match."""

from __future__ import annotations

from .base import Broker, Deliver, Describe, OnGap
from .messages import Message


class MemoryBroker(Broker):
    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, on_gap: OnGap | None = None, describe: Describe | None = None) -> None:
        self._deliver = deliver

    def publish(self, messages: list[Message]) -> None:
        if self._deliver is not None:
            self._deliver(messages)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._deliver = None
