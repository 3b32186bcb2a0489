"""The subscriber's protocol core, with no I/O: server text frames in, events out.

:class:`Stream` keeps the cursor (the highest ``seq`` handed on) across connections and checks the order:
a ``seq`` at or below the cursor is a repeat (a replay overlapping a catch-up) and is dropped; one past
``cursor + 1`` in a live frame is a gap and raises :class:`SequenceError`, for the I/O layer to fill over
HTTP or to pass on. What the server sends from its store (a resume's replay, the HTTP list) may skip a
``seq``: a notification deleted or expired keeps its number. Imports ``errors`` and ``events``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import SequenceError
from .events import (
    Connected,
    Deleted,
    ErrorReported,
    Event,
    NotificationReceived,
    PreferencesChanged,
    Read,
    Resumed,
    TokenExpiring,
    TokenRefreshed,
    UnknownFrame,
    Unread,
)


@dataclass(frozen=True, slots=True)
class Resync:
    """``resync_required``: too much was missed to replay; the I/O layer fetches it over HTTP."""

    last_seq: int


class Stream:
    """Everything one subscription remembers between connections."""

    def __init__(self, since_seq: int | None = None) -> None:
        self.cursor = since_seq  # None until the first ``connected`` says where "now" is
        self.replaying = False
        self.duplicates = 0  # repeats dropped: expected around a catch-up, counted for anyone measuring

    def opening(self) -> int | None:
        """A connection is about to open; the ``since_seq`` to resume from (None: from now on)."""
        self.replaying = self.cursor is not None
        return self.cursor

    def accept(self, data: dict[str, Any], replayed: bool, *, stored: bool = False) -> NotificationReceived | None:
        """One notification: the event when it is the next one, None when already handed on. ``stored``: it
        comes from the server's store, in order (a resume's replay, the HTTP list, or a live one after the
        list filled what it could), where a skipped ``seq`` is a notification deleted or expired, not lost."""
        seq = int(data["seq"])
        if self.cursor is not None:
            if seq <= self.cursor:
                self.duplicates += 1
                return None
            if seq != self.cursor + 1 and not stored:
                raise SequenceError(f"notifications {self.cursor + 1}..{seq - 1} are missing (got seq {seq})",
                                    expected=self.cursor + 1, got=seq)
        self.cursor = seq
        return NotificationReceived(data, replayed)

    def feed(self, text: str, *, stored: bool = False) -> Event | Resync | None:
        """One server text frame; None for frames that carry nothing for the caller (``pong``, repeats).
        ``stored``: a gap before this notification was checked against the store (see ``accept``)."""
        if text == "pong":
            return None
        try:
            frame = json.loads(text)
        except ValueError:
            return None
        if not isinstance(frame, dict):
            return None
        match frame.get("type"):
            case "notification":
                return self.accept(frame["data"], self.replaying, stored=stored or self.replaying)
            case "connected":
                last_seq = int(frame.get("last_seq", 0))
                if self.cursor is None:
                    self.cursor = last_seq
                return Connected(str(frame.get("user_id", "")), str(frame.get("connection_id", "")),
                                 int(frame.get("unread_count", 0)), last_seq)
            case "resumed":
                self.replaying = False
                return Resumed(int(frame.get("replayed", 0)), int(frame.get("last_seq", 0)))
            case "resync_required":
                self.replaying = False
                return Resync(int(frame.get("last_seq", 0)))
            case "read":
                return Read(list(frame.get("notification_ids", [])), bool(frame.get("all")),
                            int(frame.get("unread_count", 0)))
            case "unread":
                return Unread(list(frame.get("notification_ids", [])), int(frame.get("unread_count", 0)))
            case "deleted":
                return Deleted(list(frame.get("notification_ids", [])), bool(frame.get("all")),
                               int(frame.get("unread_count", 0)))
            case "preferences":
                return PreferencesChanged(dict(frame.get("preferences") or {}))
            case "token_expiring":
                return TokenExpiring(float(frame.get("expires_in", 0)))
            case "token_refreshed":
                return TokenRefreshed(str(frame.get("expires_at", "")))
            case "error":
                return ErrorReported(str(frame.get("code", "")), str(frame.get("message", "")))
            case "pong":
                return None
            case _:
                return UnknownFrame(frame)
