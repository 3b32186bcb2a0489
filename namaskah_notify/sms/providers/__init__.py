"""SMS providers, chosen by name: ``fake`` (an inbox kept by the service) and ``http`` (a generic JSON
polling adapter). Each is imported only when configured. Imports ``config`` and ``sms.store``.
"""

from __future__ import annotations

from ...config import Settings
from ..store import VerificationStore
from .base import Provider, ProviderError

__all__ = ["Provider", "ProviderError", "create_providers", "default_provider"]


def create_providers(settings: Settings, store: VerificationStore) -> dict[str, Provider]:
    """The providers this configuration enables, by name (checked first by ``sms.check_settings``)."""
    providers: dict[str, Provider] = {}
    if settings.sms_fake_provider:
        from .fake import FakeProvider

        providers["fake"] = FakeProvider(store)
    if settings.sms_http_base_url:
        from .http import HttpProvider

        providers["http"] = HttpProvider(settings)
    return providers


def default_provider(settings: Settings, providers: dict[str, Provider]) -> str | None:
    """The provider of a verification that names none: the configured one, else fake, else http."""
    if settings.sms_default_provider:
        return settings.sms_default_provider
    return next((name for name in ("fake", "http") if name in providers), None)
