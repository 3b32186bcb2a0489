"""The provider seam: where the SMS of a verification's rented number are read. Imports ``sms.schemas``.

A provider lists the messages it holds for one verification; the poller does the rest (codes,
de-duplication, backoff, leases). A provider raises :class:`ProviderError` for anything that went
wrong; its message names what failed (status, shape), never an SMS text or a credential, because the
poller logs it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..schemas import ProviderMessage, Verification


class ProviderError(Exception):
    """A poll failed. ``kind`` is a short label for stats: ``timeout``, ``http_500``, ``bad_response``, …"""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Provider(ABC):
    #: The name a verification selects this provider by.
    name: str
    #: True when the provider cannot look messages up without the verification's phone number.
    needs_phone_number = False

    @abstractmethod
    async def fetch_messages(self, verification: Verification) -> list[ProviderMessage]:
        """Every message the provider holds for ``verification`` (repeats are expected)."""

    async def close(self) -> None:
        return None
