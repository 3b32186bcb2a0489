"""Shapes of data: the stored notification as the rest of the code sees it, and HTTP request bodies.

The ORM classes stay inside ``store.py``; everything else passes :class:`Notification` around.
Imports nothing of ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

UserId = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
_LINK = re.compile(r"^(/(?!/)|https?://)[^\s<>\"'`]*$")


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and ``Z``: what browsers and Python both parse."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Content:
    """What a publisher says: the one value that travels from the request body to the stored row and the
    frame. Validated once, at the border (``PublishBody``, ``SmsInboundBody`` or the SMS poller)."""

    title: str
    message: str = ""
    type: str = "info"
    link: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notification:
    """A stored notification: its content, whose it is, and where it stands in the user's sequence."""

    id: str
    user_id: str
    seq: int
    content: Content
    created_at: datetime
    is_read: bool = False

    def to_wire(self) -> dict[str, Any]:
        """The ``data`` of a ``notification`` frame, and an item of the HTTP list."""
        content = self.content
        return {
            "id": self.id,
            "seq": self.seq,
            "user_id": self.user_id,
            "title": content.title,
            "message": content.message,
            "type": content.type,
            "link": content.link,
            "created_at": iso(self.created_at),
            "is_read": self.is_read,
            "meta": content.meta,
        }


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PublishBody(_Body):
    """``POST /api/notifications``: exactly one of ``user_id``, ``user_ids`` or ``broadcast``."""

    user_id: UserId | None = None
    user_ids: list[UserId] | None = Field(default=None, min_length=1, max_length=1000)
    broadcast: bool = False
    title: str = Field(min_length=1, max_length=200)
    message: str = Field(default="", max_length=2000)
    type: str = Field(default="info", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    link: str | None = Field(default=None, max_length=2048)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("link")
    @classmethod
    def _safe_link(cls, value: str | None) -> str | None:
        if value is not None and not _LINK.match(value):
            raise ValueError("link must be a path starting with / or an http(s) URL")
        return value

    @field_validator("meta")
    @classmethod
    def _small_meta(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return value
        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError:  # an integer past 64 bits: checked here, before it reaches the store
            raise ValueError("meta numbers must fit in 64 bits") from None
        if len(value) > 32 or size > 4096:
            raise ValueError("meta must be at most 32 keys and 4 KiB")
        return value

    @model_validator(mode="after")
    def _one_audience(self) -> PublishBody:
        chosen = sum([self.user_id is not None, self.user_ids is not None, self.broadcast])
        if chosen != 1:
            raise ValueError("give exactly one of user_id, user_ids or broadcast: true")
        return self

    def recipients(self) -> list[str]:
        if self.user_id is not None:
            return [self.user_id]
        return list(dict.fromkeys(self.user_ids or []))

    def content(self) -> Content:
        return Content(self.title, self.message, self.type, self.link, self.meta)


class SmsInboundBody(_Body):
    """``POST /api/sms/inbound``: a provider saw a code for a verification."""

    user_id: UserId
    verification_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    service: str = Field(min_length=1, max_length=64)
    code: str = Field(min_length=3, max_length=16, pattern=r"^[A-Za-z0-9-]+$")
    message_id: str | None = Field(default=None, min_length=1, max_length=256)
