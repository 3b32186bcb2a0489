"""What ``notify listen`` shows: pure functions from a notification or a status to Rich text.

No I/O here, so the output can be checked by rendering to a recording console. Imports nothing of ours.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.text import Text

_STATUS_STYLE = {
    "connected": ("●", "green"),
    "resumed": ("⇣", "cyan"),
    "reconnecting": ("↻", "yellow"),
    "refreshed": ("⟳", "cyan"),
    "expiring": ("!", "yellow"),
    "error": ("!", "red"),
    "closed": ("■", "dim"),
    "deleted": ("✕", "magenta"),
}


def created_at(data: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(data["created_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


def latency_ms(data: dict[str, Any], now: datetime) -> float | None:
    """Delivery latency: the moment it is shown minus the notification's ``created_at``."""
    created = created_at(data)
    return None if created is None else round(max(0.0, (now - created).total_seconds() * 1000), 1)


def notification_text(data: dict[str, Any], now: datetime, *, replayed: bool = False) -> Text:
    """One notification: local time, title, message, link and delivery latency."""
    created = created_at(data)
    stamp = created.astimezone().strftime("%H:%M:%S") if created else "--:--:--"
    text = Text()
    text.append(f"{stamp} ", style="dim")
    text.append(f"#{data.get('seq', '?')} ", style="dim")
    text.append(str(data.get("title", "")), style="bold")
    if data.get("message"):
        text.append(f"  {data['message']}")
    if data.get("link"):
        text.append(f"  {data['link']}", style="cyan underline")
    latency = latency_ms(data, now)
    if replayed:
        text.append("  (missed, replayed)", style="yellow")
    elif latency is not None:
        text.append(f"  {_human_ms(latency)}", style="green" if latency < 1000 else "yellow")
    return text


def notification_json(data: dict[str, Any], now: datetime, *, replayed: bool = False) -> str:
    """The notification as one JSON line, with ``latency_ms`` and ``replayed`` added for scripts."""
    return json.dumps({**data, "latency_ms": latency_ms(data, now), "replayed": replayed}, ensure_ascii=False)


def status_text(kind: str, message: str, now: datetime | None = None) -> Text:
    """A connection status line: connected / reconnecting in Ns / resumed N missed / …"""
    mark, style = _STATUS_STYLE.get(kind, ("·", "dim"))
    stamp = (now or datetime.now(UTC)).astimezone().strftime("%H:%M:%S")
    return Text.assemble((f"{stamp} ", "dim"), (f"{mark} ", style), (message, style))


def _human_ms(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"
