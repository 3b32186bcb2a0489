"""Which users' older tokens are refused: an in-memory copy of the ``user_revocations`` table.

Kept fresh three ways: this node's own revocations, the notices other nodes send through the broker
(``Revoked`` carries ``revoked_before``), and a re-read of what changed, every reconcile interval, for
notices a broker outage lost. The re-read goes by the database's clock, never a node's: each row is
stamped by the database, and each read asks from the database's time of the previous read, less
``LOOKBACK`` for a revocation committed late. So neither clock skew nor commit order can hide one.
Checking a token is then a dictionary lookup on every request.
Imports ``auth`` and ``store``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .auth import Identity
from .store import Store

LOOKBACK = timedelta(seconds=60)  # longer than any revocation's own transaction


class Revocations:
    def __init__(self) -> None:
        self._before: dict[str, float] = {}
        self._seen: datetime | None = None

    def refuses(self, identity: Identity) -> bool:
        """A token of a revoked user issued before the revocation (or with no ``iat`` to tell)."""
        return self.refuses_issued(identity.user_id, identity.issued_at)

    def note(self, user_id: str, before: float) -> None:
        self._before[user_id] = max(before, self._before.get(user_id, 0.0))

    def refuses_issued(self, user_id: str, issued_at: float | None) -> bool:
        before = self._before.get(user_id)
        return before is not None and (issued_at is None or issued_at < before)

    async def refresh(self, store: Store) -> list[str]:
        """Read what changed since the last read (everything, the first time); the users it names."""
        rows, now = await store.revocations_since(self._seen)
        self._seen = now - LOOKBACK
        for user_id, before in rows:
            self.note(user_id, before.timestamp())
        return [user_id for user_id, _ in rows]
