"""SMS providers, chosen by name: ``fake`` (an inbox kept by the service) and ``http`` (a generic JSON
polling adapter). Each is imported only when configured. Imports ``config`` and ``sms.store``.
"""

from __future__ import annotations

from collections.abc import Collection

from ...config import Settings
from ..store import VerificationStore
from .base import Provider, ProviderError

__all__ = ["Provider", "ProviderError", "create_providers", "default_provider", "offered"]


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


def offered(settings: Settings) -> dict[str, bool]:
    """The providers this configuration enables, by name, each with whether a verification there needs a
    phone number: what the API description offers, known without building a provider."""
    names: dict[str, bool] = {}
    if settings.sms_fake_provider:
        names["fake"] = False
    if settings.sms_http_base_url:
        from .http import template_fields

        names["http"] = "phone_number" in template_fields(settings.sms_http_path)
    return names


def default_provider(settings: Settings, providers: Collection[str]) -> str | None:
    """The provider of a verification that names none: the configured one, else fake, else http."""
    if settings.sms_default_provider:
        return settings.sms_default_provider
    return next((name for name in ("fake", "http") if name in providers), None)
