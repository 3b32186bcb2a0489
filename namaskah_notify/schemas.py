"""Shapes of data: the stored notification as the rest of the code sees it, and HTTP request bodies.

The ORM classes stay inside ``store.py``; everything else passes :class:`Notification` around.
Imports nothing of ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

# How the API description states the text rules (in JSON Schema only: validation stays pydantic's own).
# Bodies strip Unicode White_Space before checking lengths and patterns (Rust's char::is_whitespace: neither
# Python's str.isspace nor JSON Schema's \s), so a field's schema is one pattern over the text as sent: any
# padding of that set, then the stripped text, whose lengths move into the pattern.
_PADDING = r"\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SOLID = f"[^{_PADDING}]"


def solid(min_length: int, max_length: int) -> str:
    """Any stripped text of 0 or 1 to ``max_length`` characters: a kept character at each end."""
    body = f"{_SOLID}(?:[\\s\\S]{{0,{max_length - 2}}}{_SOLID})?"
    return body if min_length else f"(?:{body})?"


def stripped(body: str) -> dict[str, Any]:
    """``Field`` arguments that describe a text whose stripped form fully matches the regex ``body``."""
    pattern = f"^[{_PADDING}]*(?:{body})[{_PADDING}]*$"

    def describe(schema: dict[str, Any]) -> None:
        text = next((s for s in schema.get("anyOf", ()) if s.get("type") == "string"), schema)
        text.pop("minLength", None)
        text.pop("maxLength", None)
        text["pattern"] = pattern

    return {"json_schema_extra": describe}


UserId = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True),
                   Field(**stripped(solid(1, 128)))]
# No backslash anywhere: browsers read one as "/" in http(s) URLs, so "/\evil.example" would leave the site.
_LINK = re.compile(r"^(/(?!/)|https?://)[^\s<>\"'`\\]*$")
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})")


def _rfc3339(value: Any) -> Any:
    """Only the date-time the API description states, not the numbers and dates pydantic would also take."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time, e.g. 2025-01-01T12:00:00Z")
    return value


DateTime = Annotated[datetime, BeforeValidator(_rfc3339)]
# ``meta`` holds any JSON whose integers fit in 64 bits (what orjson, and so the store, can write).
JSON_VALUE = {"description": "Any JSON value; integers within 64 bits.", "anyOf": [
    {"type": ["string", "boolean", "null"]},
    {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1},
    {"type": "number", "not": {"type": "integer"}},
    {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
    {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
]}
# The same rule over at most 2048 characters; its \s is Python's (a Python regex, run on the stripped text).
_NOT_IN_LINK = r"\t\n\v\f\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000<>\"'`\\"
_LINK_BODY = (f"/|/[^/{_NOT_IN_LINK}][^{_NOT_IN_LINK}]{{0,2046}}|http://[^{_NOT_IN_LINK}]{{0,2041}}"
              f"|https://[^{_NOT_IN_LINK}]{{0,2040}}")


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
    priority: str = "normal"  # low | normal | high
    expires_at: datetime | None = None  # afterwards neither pushed, replayed nor listed
    collapse_key: str | None = None  # a newer one with the same key replaces this one for its user


@dataclass(frozen=True, slots=True)
class Notification:
    """A stored notification: its content, whose it is, and where it stands in the user's sequence."""

    id: str
    user_id: str
    seq: int
    content: Content
    created_at: datetime
    is_read: bool = False
    read_at: datetime | None = None

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
            "priority": content.priority,
            "expires_at": iso(content.expires_at) if content.expires_at else None,
            "collapse_key": content.collapse_key,
            "read_at": iso(self.read_at) if self.read_at else None,
        }


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ``audience`` (even null) only beside ``broadcast: true``.
_AUDIENCE_WITH_BROADCAST = [
    {"not": {"required": ["audience"]}},
    {"required": ["broadcast"], "properties": {"broadcast": {"const": True}}},
]
# Exactly one audience, as the model validator below checks (a null counts as absent).
_ONE_AUDIENCE = [
    {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
    {"required": ["user_ids"], "properties": {"user_ids": {"type": "array"}}},
    {"required": ["broadcast"], "properties": {"broadcast": {"const": True}}},
]


class PublishBody(_Body):
    """``POST /api/notifications``: exactly one of ``user_id``, ``user_ids`` or ``broadcast``."""

    model_config = ConfigDict(json_schema_extra={
        "oneOf": _ONE_AUDIENCE, "anyOf": _AUDIENCE_WITH_BROADCAST, "examples": [
        {"user_id": "alice", "title": "Hello", "message": "First notification", "link": "/inbox"},
        {"user_ids": ["alice", "bob"], "title": "Deploy finished", "type": "deploy", "meta": {"build": 42}},
        {"broadcast": True, "title": "Maintenance at 22:00", "type": "system"},
    ]})

    user_id: UserId | None = Field(default=None, description="One recipient.")
    user_ids: list[UserId] | None = Field(default=None, min_length=1, max_length=1000,
                                          description="Several recipients (duplicates count once).")
    broadcast: StrictBool = Field(default=False, description="true: every user the service knows (anyone who "
                                  "ever connected or was notified), or with `audience: connected` only those "
                                  "connected right now.")
    audience: Literal["all", "connected"] | None = Field(
        default=None, description="With `broadcast`: `all` (the default) or `connected`.")
    title: str = Field(min_length=1, max_length=200, **stripped(solid(1, 200)))
    message: str = Field(default="", max_length=2000, **stripped(solid(0, 2000)))
    type: str = Field(default="info", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                      **stripped("[A-Za-z0-9_.:-]{1,64}"))
    link: str | None = Field(default=None, max_length=2048, description="A path (`/…`) or an http(s) URL.",
                             **stripped(_LINK_BODY))
    meta: dict[str, Any] = Field(default_factory=dict, description="At most 32 keys and 4 KiB of JSON.",
                                 json_schema_extra={"maxProperties": 32,
                                                    "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}})
    priority: Literal["low", "normal", "high"] = Field(default="normal")
    expires_at: DateTime | None = Field(
        default=None, description="ISO-8601 with a zone; afterwards the notification is neither pushed, "
        "replayed nor listed, and the pruner removes it (one already past is stored and never shown).")
    collapse_key: str | None = Field(
        default=None, min_length=1, max_length=64, description="A newer notification with the same key for "
        "the same user replaces the older one in lists, in the unread count and in the browser.",
        **stripped(solid(1, 64)))

    @field_validator("link")
    @classmethod
    def _safe_link(cls, value: str | None) -> str | None:
        if value is not None and not _LINK.match(value):
            raise ValueError("link must be a path starting with / or an http(s) URL, with no backslash")
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
        if "audience" in self.model_fields_set and not self.broadcast:
            raise ValueError("audience goes with broadcast: true")
        return self

    def recipients(self) -> list[str]:
        if self.user_id is not None:
            return [self.user_id]
        return list(dict.fromkeys(self.user_ids or []))

    def content(self) -> Content:
        return Content(self.title, self.message, self.type, self.link, self.meta, self.priority,
                       self.expires_at.astimezone(UTC) if self.expires_at else None, self.collapse_key)


class SmsInboundBody(_Body):
    """``POST /api/sms/inbound``: a provider saw a code for a verification."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"user_id": "alice", "verification_id": "ver_123", "service": "Google", "code": "481516", "message_id": "m-1"},
    ]})

    user_id: UserId
    verification_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
                                 **stripped("[A-Za-z0-9_.:-]{1,128}"))
    service: str = Field(min_length=1, max_length=64, **stripped(solid(1, 64)))
    code: str = Field(min_length=3, max_length=16, pattern=r"^[A-Za-z0-9-]+$", **stripped("[A-Za-z0-9-]{3,16}"))
    message_id: str | None = Field(default=None, min_length=1, max_length=256,
                                   description="The provider's id: a repeated one is answered 200, pushed once.",
                                   **stripped(solid(1, 256)))
