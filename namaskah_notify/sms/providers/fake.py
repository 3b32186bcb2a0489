"""The ``fake`` provider: an inbox kept by the service in its own database, filled through
``POST /api/fake-provider/messages``. It lets the whole polling path run on one machine, and, being in
the database, it is shared by every node. Imports ``sms.providers.base``, ``sms.schemas``, ``sms.store``.
"""

from __future__ import annotations

from ..schemas import ProviderMessage, Verification
from ..store import VerificationStore
from .base import Provider


class FakeProvider(Provider):
    name = "fake"

    def __init__(self, store: VerificationStore) -> None:
        self._store = store

    async def fetch_messages(self, verification: Verification) -> list[ProviderMessage]:
        return await self._store.fake_messages(verification.id)
