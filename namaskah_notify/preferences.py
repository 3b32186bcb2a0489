"""Each user's notification preferences, and whether they silence a notification now. Imports ``store``.

A silenced notification is still stored, listed, counted and pushed, with ``"silent": true`` in its data:
the browser then makes no toast, sound or desktop notification, and no Web Push is sent. A notification
is silenced when its type is muted, or during the user's quiet hours (in their time zone, across midnight
too) unless its priority is ``high``.

Every push asks, so the answer comes from memory: :class:`PreferenceBook` holds the preferences of every
user who changed the defaults. It is kept fresh as revocations are: this node's own changes at once,
other nodes' through the ``preferences`` frame they send every tab, and a re-read of what changed (by the
database's clock) every reconcile interval for what a broker outage lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .store import Store

LOOKBACK = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time
    tz: ZoneInfo

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.tz).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # across midnight, 22:00-07:00


@dataclass(frozen=True, slots=True)
class Preferences:
    muted_types: frozenset[str] = frozenset()
    sound: bool = True
    desktop: bool = True
    quiet_hours: QuietHours | None = None

    def silences(self, notification_type: str, priority: str, moment: datetime) -> bool:
        if notification_type in self.muted_types:
            return True
        return self.quiet_hours is not None and priority != "high" and self.quiet_hours.contains(moment)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Preferences:
        quiet = body.get("quiet_hours")
        return cls(frozenset(body.get("muted_types") or ()), bool(body.get("sound", True)),
                   bool(body.get("desktop", True)),
                   QuietHours(time.fromisoformat(quiet["start"]), time.fromisoformat(quiet["end"]),
                              ZoneInfo(quiet["tz"])) if quiet else None)

    def to_wire(self) -> dict[str, Any]:
        quiet = self.quiet_hours
        return {"muted_types": sorted(self.muted_types), "sound": self.sound, "desktop": self.desktop,
                "quiet_hours": {"start": quiet.start.strftime("%H:%M"), "end": quiet.end.strftime("%H:%M"),
                                "tz": quiet.tz.key} if quiet else None}


DEFAULTS = Preferences()


class PreferenceBook:
    """The preferences of every user who changed them, in memory."""

    def __init__(self) -> None:
        self.changed: dict[str, Preferences] = {}  # only users off the defaults: most pushes find nobody here
        self._seen: datetime | None = None

    def get(self, user_id: str) -> Preferences:
        return self.changed.get(user_id, DEFAULTS)

    def note(self, user_id: str, preferences: Preferences) -> None:
        if preferences == DEFAULTS:
            self.changed.pop(user_id, None)
        else:
            self.changed[user_id] = preferences

    def forget(self, user_id: str) -> None:
        self.changed.pop(user_id, None)

    async def refresh(self, store: Store) -> None:
        """Read what changed since the last read (everything, the first time)."""
        rows, now = await store.preferences_since(self._seen)
        self._seen = now - LOOKBACK
        for user_id, body in rows:
            try:
                self.note(user_id, Preferences.from_wire(body))
            except (KeyError, ValueError, TypeError):
                continue  # written by a newer version, or by hand: the defaults hold
