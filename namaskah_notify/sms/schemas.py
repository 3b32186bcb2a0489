"""Shapes of the SMS side: a verification and a provider's message as the code sees them, and the
HTTP bodies of ``routes/verifications.py``. Imports ``schemas`` (for ``iso`` and ``UserId``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..schemas import UserId, iso

Status = Literal["pending", "received", "expired", "cancelled"]


@dataclass(frozen=True, slots=True)
class Verification:
    id: str
    user_id: str
    service: str
    phone_number: str | None
    provider: str
    status: str
    created_at: datetime
    expires_at: datetime
    received_at: datetime | None = None
    message_id: str | None = None
    code: str | None = None
    notification_id: str | None = None

    def to_wire(self, *, with_code: bool = False) -> dict[str, Any]:
        """The HTTP answer; the code only for its owner or an admin, once received."""
        body: dict[str, Any] = {
            "id": self.id,
            "user_id": self.user_id,
            "service": self.service,
            "phone_number": self.phone_number,
            "provider": self.provider,
            "status": self.status,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "received_at": iso(self.received_at) if self.received_at else None,
            "notification_id": self.notification_id,
        }
        if with_code:
            body["code"] = self.code
        return body


@dataclass(frozen=True, slots=True)
class ProviderMessage:
    """One SMS as a provider lists it. ``received_at`` is the provider's time, when it gives one."""

    id: str
    text: str
    received_at: datetime | None = None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class StartVerificationBody(_Body):
    """``POST /api/verifications``."""

    user_id: UserId
    service: str = Field(min_length=1, max_length=64)
    phone_number: str | None = Field(default=None, min_length=3, max_length=32, pattern=r"^\+?[0-9 ()-]+$")
    provider: str | None = Field(default=None, min_length=1, max_length=32)
    ttl_s: int | None = Field(default=None, ge=1, le=86400)


class FakeMessageBody(_Body):
    """``POST /api/fake-provider/messages``: an SMS arriving at the fake provider for a verification."""

    verification_id: str = Field(min_length=1, max_length=40)
    text: str = Field(min_length=1, max_length=1600)
    message_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    received_at: datetime | None = None
