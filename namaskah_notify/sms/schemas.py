"""Shapes of the SMS side: a verification and a provider's message as the code sees them, and the
HTTP bodies of ``routes/verifications.py``. Imports ``schemas`` (for ``iso`` and ``UserId``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..schemas import DateTime, UserId, iso, solid, stripped

Status = Literal["pending", "received", "expired", "cancelled"]
def _json_number(value: Any) -> Any:
    """A JSON integer, 60 or 60.0 alike; not the text "60" or true, which pydantic would also take."""
    if isinstance(value, (str, bool)):
        raise ValueError("must be a JSON integer")
    return value



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

    model_config = ConfigDict(json_schema_extra={"examples": [{"user_id": "alice", "service": "Google"}]})

    user_id: UserId
    service: str = Field(min_length=1, max_length=64, **stripped(solid(1, 64)))
    phone_number: str | None = Field(default=None, min_length=3, max_length=32, pattern=r"^\+?[0-9 ()-]+$",
                                     **stripped(r"\+[0-9 ()-]{1,30}[0-9()-]|[0-9()-][0-9 ()-]{1,30}[0-9()-]"))
    provider: str | None = Field(default=None, min_length=1, max_length=32,
                                 description="One of the providers enabled on this server; default: the default one.")
    ttl_s: Annotated[int, Field(ge=1, le=86400), BeforeValidator(_json_number)] | None = None


class FakeMessageBody(_Body):
    """``POST /api/fake-provider/messages``: an SMS arriving at the fake provider for a verification."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"verification_id": "ver_8f14e45fceea167a", "text": "Your Google code is 481516", "message_id": "sms-1"},
    ]})

    verification_id: str = Field(min_length=1, max_length=40, **stripped(solid(1, 40)))
    text: str = Field(min_length=1, max_length=1600, **stripped(solid(1, 1600)))
    message_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                   **stripped("[A-Za-z0-9_.:-]{1,64}"))
    received_at: DateTime | None = None
