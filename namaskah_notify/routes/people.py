"""A user's own preferences, and who is online: ``/api/preferences`` and ``/api/presence``."""

from __future__ import annotations

import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from .. import openapi as api
from ..brokers import Preferred
from ..deps import ServicesDep, UserDep
from ..errors import Forbidden
from ..preferences import DEFAULTS, Preferences
from ..schemas import iso

router = APIRouter(prefix="/api")
_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
ZONES = sorted(available_timezones())  # what this machine's time zone database knows
NotificationType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class QuietHoursBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(pattern=_TIME, examples=["22:00"])
    end: str = Field(pattern=_TIME, examples=["07:00"])
    tz: str = Field(min_length=1, max_length=64, description="An IANA time zone, e.g. Europe/Berlin.",
                    json_schema_extra={"enum": ZONES})

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", value):
            raise ValueError(f"unknown time zone {value!r}")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class PreferencesBody(BaseModel):
    """The whole of a user's preferences: a PUT replaces them (a field left out takes its default)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"muted_types": ["marketing"], "sound": True, "desktop": False,
         "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Europe/Berlin"}},
    ]})

    muted_types: list[NotificationType] = Field(default_factory=list, max_length=100,
                                                description="Types delivered silently.")
    sound: StrictBool = True
    desktop: StrictBool = True
    quiet_hours: QuietHoursBody | None = Field(
        default=None, description="Delivered silently in these hours (the user's time), except `high` priority.")


class PreferencesAnswer(BaseModel):
    muted_types: list[str]
    sound: bool
    desktop: bool
    quiet_hours: dict[str, str] | None


@router.get("/preferences", tags=["preferences"], response_model=PreferencesAnswer,
            responses=api.errors(400, 401, 503))
async def get_preferences(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """The caller's notification preferences (the defaults until they change them)."""
    stored = await services.store.preferences_of(user.user_id)
    return Preferences.from_wire(stored).to_wire() if stored else DEFAULTS.to_wire()


@router.put("/preferences", tags=["preferences"], response_model=PreferencesAnswer,
            responses=api.errors(400, 401, 413, 422, 503))
async def put_preferences(services: ServicesDep, user: UserDep, body: PreferencesBody) -> dict[str, Any]:
    """Replace the caller's preferences; every tab of theirs gets a ``preferences`` frame. A muted type, or
    quiet hours (unless priority is ``high``), silences a notification: stored, listed, counted and pushed
    with ``"silent": true``, but no toast, sound, desktop notification or Web Push."""
    preferences = Preferences.from_wire(body.model_dump())
    wire = preferences.to_wire()
    await services.store.put_preferences(user.user_id, wire)
    services.dispatcher.preferences.note(user.user_id, preferences)
    services.broker.publish([Preferred(user.user_id, wire)])  # every node notes them; every tab hears
    return wire


def _too_long_a_url() -> dict[int | str, dict[str, Any]]:
    """Up to 1,000 ids of up to 128 characters make a URL longer than the HTTP server reads: its own 400."""
    answers = api.errors(400, 401, 403, 422, 503)
    answers[400] = {**answers[400], "content": {**answers[400].get("content", {}),
                                                "text/plain": {"schema": {"type": "string"}}}}
    answers[400]["description"] += " Or, as plain text, a URL longer than the server reads."
    return answers


@router.get("/presence", tags=["presence"], response_model=api.Presence, responses=_too_long_a_url())
async def presence(
    services: ServicesDep, caller: UserDep,
    user_id: Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]],
                       Query(min_length=1, max_length=1000, description="Up to 1,000 users.")],
) -> dict[str, Any]:
    """Whether each user is connected anywhere in the cluster, with how many connections, and when they were
    last seen (stored when their last connection closes, so it survives restarts). An admin may ask about
    anyone; a user only about themself."""
    wanted = list(dict.fromkeys(user_id))
    if not caller.is_admin and wanted != [caller.user_id]:
        raise Forbidden("a user may ask only about themself; an admin about anyone")
    counts = await _connection_counts(services, wanted)
    seen = await services.store.last_seen(wanted)
    return {"users": {user: {"online": counts[user] > 0, "connections": counts[user],
                             "last_seen": iso(seen[user]) if user in seen else None} for user in wanted}}


async def _connection_counts(services: ServicesDep, user_ids: list[str]) -> dict[str, int]:
    """Cluster-wide from the broker; this node's own while it is alone or the broker is down."""
    if services.broker.shared and services.broker.up:
        try:
            counts = await services.broker.connection_counts(user_ids)
            if counts is not None:
                return counts
        except Exception:  # the broker marks itself down; this node's figures follow
            pass
    return {user: services.hub.connections_of(user) for user in user_ids}
