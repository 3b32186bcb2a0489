"""The ``http`` provider: a generic JSON polling adapter for providers that offer "list the SMS of this
number/activation" over HTTP. All use of ``httpx`` by the SMS side lives here.

Configured by ``NOTIFY_SMS_HTTP_*``: the base URL; an auth header (name and secret value); a path
template with ``{id}``, ``{phone_number}``, ``{service}`` and ``{user_id}`` (URL-quoted); where the list
of messages is in the JSON answer (a dotted path, empty for a top-level list); and the id, text and
received-time fields of each message. Anything else the provider answers (a timeout, a non-2xx status,
a body that is not JSON or not of that shape) is a :class:`ProviderError`.
Imports ``config``, ``sms.providers.base`` and ``sms.schemas``.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from ...config import Settings
from ..schemas import ProviderMessage, Verification
from .base import Provider, ProviderError

FIELDS = {"id", "phone_number", "service", "user_id"}


def template_fields(template: str) -> set[str]:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"NOTIFY_SMS_HTTP_PATH is not a valid template: {exc}") from None
    unknown = names - FIELDS
    if unknown:
        raise ValueError(f"NOTIFY_SMS_HTTP_PATH uses {sorted(unknown)}; allowed: {sorted(FIELDS)}")
    return names


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 text or epoch seconds (or milliseconds); None when absent or unreadable."""
    try:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int | float):
            seconds = value / 1000 if value > 1e11 else value
            return datetime.fromtimestamp(seconds, UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.strip())
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


class HttpProvider(Provider):
    name = "http"

    def __init__(self, settings: Settings) -> None:
        if not settings.sms_http_base_url:
            raise ValueError("the http provider needs NOTIFY_SMS_HTTP_BASE_URL")
        self._path = settings.sms_http_path
        self.needs_phone_number = "phone_number" in template_fields(self._path)
        headers = {"Accept": "application/json", "User-Agent": "namaskah-notify"}
        if settings.sms_http_auth_value is not None:
            headers[settings.sms_http_auth_header] = settings.sms_http_auth_value.get_secret_value()
        self._list_at = [part for part in settings.sms_http_messages_field.split(".") if part]
        self._id = settings.sms_http_id_field
        self._text = settings.sms_http_text_field
        self._received = settings.sms_http_received_field
        self._client = httpx.AsyncClient(base_url=settings.sms_http_base_url, headers=headers,
                                         timeout=settings.sms_http_timeout_s, follow_redirects=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def fetch_messages(self, verification: Verification) -> list[ProviderMessage]:
        values = {"id": verification.id, "phone_number": verification.phone_number or "",
                  "service": verification.service, "user_id": verification.user_id}
        path = self._path.format(**{k: quote(str(value), safe="") for k, value in values.items()})
        try:
            response = await self._client.get(path)
        except httpx.TimeoutException:
            raise ProviderError("timeout", "no answer in time") from None
        except httpx.HTTPError as exc:
            raise ProviderError("connection", f"request failed: {type(exc).__name__}") from None
        if not response.is_success:
            raise ProviderError(f"http_{response.status_code}", f"answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise ProviderError("bad_response", "the answer is not JSON") from None
        return self._messages(body)

    def _messages(self, body: Any) -> list[ProviderMessage]:
        items = body
        for part in self._list_at:
            items = items.get(part) if isinstance(items, dict) else None
        if items is None and self._list_at:
            return []  # the provider leaves the list out while there is nothing
        if not isinstance(items, list):
            raise ProviderError("bad_response", f"no list of messages at {'.'.join(self._list_at) or 'the top'}")
        messages = []
        for item in items:
            if not isinstance(item, dict):
                raise ProviderError("bad_response", "a message is not an object")
            message_id, text = item.get(self._id), item.get(self._text)
            if isinstance(message_id, bool) or not isinstance(message_id, str | int) or not isinstance(text, str):
                raise ProviderError("bad_response", f"a message lacks {self._id!r} or {self._text!r}")
            messages.append(ProviderMessage(str(message_id)[:200], text, parse_time(item.get(self._received))))
        return messages
