"""Which users' older tokens are refused: an in-memory copy of the ``user_revocations`` table.

Kept fresh three ways: this node's own revocations, the notices other nodes send through the broker
(the close envelope carries ``revoked_before``), and a re-read of what changed, every reconcile interval,
for notices a broker outage lost. Checking a token is then a dictionary lookup on every request.
Imports ``auth`` and ``store``.
"""

from __future__ import annotations

from datetime import datetime

from .auth import Identity
from .store import Store


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
        changed = []
        for user_id, before, updated in await store.revocations_since(self._seen):
            self.note(user_id, before.timestamp())
            changed.append(user_id)
            if self._seen is None or updated > self._seen:
                self._seen = updated
        return changed
