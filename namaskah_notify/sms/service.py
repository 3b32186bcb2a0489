"""The SMS side as one part of the app: its store, providers, figures and poller, built in the lifespan
and kept on ``Services.sms``. ``check_settings`` runs in ``create_app`` so that a bad pattern, path
template or provider name stops the server before it serves.
Imports ``config``, ``dispatcher``, ``errors`` and ``sms.*``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from ..config import Settings
from ..dispatcher import Dispatcher
from ..errors import Conflict, ProtocolError
from .codes import compile_pattern
from .poller import SMSPollingService
from .providers import Provider, create_providers, default_provider
from .stats import SmsStats
from .store import VerificationStore


def check_settings(settings: Settings) -> None:
    """Raise ``ValueError`` for an SMS configuration that cannot work."""
    compile_pattern(settings.sms_code_pattern)
    enabled = [name for name, on in (("fake", settings.sms_fake_provider), ("http", settings.sms_http_base_url))
               if on]
    if settings.sms_default_provider is not None and settings.sms_default_provider not in enabled:
        raise ValueError(f"NOTIFY_SMS_DEFAULT_PROVIDER={settings.sms_default_provider!r} is not enabled; "
                         f"enabled: {enabled}")
    if settings.sms_http_base_url:
        from .providers.http import template_fields

        template_fields(settings.sms_http_path)


@dataclass(slots=True)
class SmsService:
    settings: Settings
    store: VerificationStore
    providers: dict[str, Provider]
    stats: SmsStats
    poller: SMSPollingService

    @classmethod
    def build(cls, settings: Settings, engine: AsyncEngine, dispatcher: Dispatcher, registry: CollectorRegistry,
              node_id: str) -> SmsService:
        store = VerificationStore(engine)
        providers = create_providers(settings, store)
        stats = SmsStats(registry)
        poller = SMSPollingService(
            store, providers, dispatcher, stats, node_id=node_id, interval_s=settings.sms_poll_interval_s,
            concurrency=settings.sms_poll_concurrency, lease_s=settings.sms_lease_s,
            max_leases=settings.sms_max_leases, fetch_timeout_s=settings.sms_http_timeout_s,
            backoff_max_s=settings.sms_backoff_max_s, code_pattern=settings.sms_code_pattern,
        )
        return cls(settings, store, providers, stats, poller)

    def start(self) -> None:
        self.poller.start()

    async def stop(self) -> None:
        await self.poller.stop()

    def choose_provider(self, requested: str | None, phone_number: str | None) -> str:
        """The provider a new verification is polled at; ``ProtocolError`` when it cannot be."""
        name = requested or default_provider(self.settings, self.providers)
        if name is None:  # the server's state, not the request's fault: 409, as the API description says
            raise Conflict("no SMS provider is enabled: set NOTIFY_SMS_FAKE_PROVIDER=true or "
                           "NOTIFY_SMS_HTTP_BASE_URL", code="no_provider")
        provider = self.providers.get(name)
        if provider is None:
            raise ProtocolError(f"provider {name!r} is not enabled; enabled: {sorted(self.providers)}",
                                code="unknown_provider")
        if provider.needs_phone_number and not phone_number:
            raise ProtocolError(f"provider {name!r} needs phone_number", code="phone_number_required")
        return name

    def snapshot(self) -> dict:
        return {"providers_enabled": sorted(self.providers), **self.stats.snapshot()}
