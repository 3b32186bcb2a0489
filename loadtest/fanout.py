"""Fan-out bookkeeping for the Locust run, with no I/O: what the publishers got back, what each tab saw.

The server numbers each user's notifications 1, 2, 3, … (``seq``), so a tab can check on its own that it
got them exactly once and in order; what it never got at all is found by comparing the tab with the
:class:`Ledger` of the ``seq`` values the publishers received in their 201 answers. Imports nothing of ours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

GAP = "gap"  # a seq arrived while earlier ones had not
DUPLICATE = "duplicate"  # a seq arrived twice
OUT_OF_ORDER = "out of order"  # a seq that had been skipped arrived late
MISSED = "missed"  # published, acknowledged with 201, and never delivered to this tab
CLOSED = "closed"  # the server closed a tab the run still wanted open

MEANING = {
    GAP: "a notification arrived while earlier ones of its user had not",
    DUPLICATE: "a notification arrived a second time",
    OUT_OF_ORDER: "a skipped notification arrived late",
    MISSED: "a published notification never reached this tab",
    CLOSED: "the server closed the tab during the run",
}


@dataclass
class TabState:
    """What one tab of one user has been sent; ``start_seq`` is the ``last_seq`` of its ``connected``."""

    user_id: str
    index: int
    start_seq: int = 0
    last_seq: int = 0
    reported_upto: int = 0  # misses up to here are reported already
    closed_at: float | None = None
    holes: set[int] = field(default_factory=set)

    def begin(self, start_seq: int) -> None:
        self.start_seq = self.last_seq = self.reported_upto = start_seq

    def receive(self, seq: int) -> tuple[str, int] | None:
        """Account for one delivered ``seq``; ``(problem, count)`` when it breaks the order, else None."""
        if seq == self.last_seq + 1:
            self.last_seq = seq
            return None
        if seq > self.last_seq:
            skipped = range(self.last_seq + 1, seq)
            self.holes.update(skipped)
            self.last_seq = seq
            return GAP, len(skipped)
        if seq in self.holes:
            self.holes.discard(seq)
            return OUT_OF_ORDER, 1
        return DUPLICATE, 1

    def missing(self, published_upto: int) -> int:
        """How many of the seqs up to ``published_upto`` this tab has not had and nobody has reported yet."""
        floor = max(self.last_seq, self.reported_upto)
        if published_upto <= floor:
            return 0
        self.reported_upto = published_upto
        return published_upto - floor


class Ledger:
    """The ``seq`` of every notification a publisher of this process got a 201 for, per user."""

    def __init__(self) -> None:
        self._published: dict[str, list[tuple[float, int]]] = {}
        self.closed = False  # set when the run stops: publishers send nothing more

    def record(self, user_id: str, seq: int, at: float | None = None) -> None:
        self._published.setdefault(user_id, []).append((time.time() if at is None else at, seq))

    def count(self) -> int:
        return sum(len(items) for items in self._published.values())

    def last_seq(self, user_id: str, before: float | None = None) -> int:
        """The highest seq published to the user (at or before ``before``, when given); 0 for none."""
        items = self._published.get(user_id, ())
        return max((seq for at, seq in items if before is None or at <= before), default=0)
