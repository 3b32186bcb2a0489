"""The ``notify stats`` dashboard as pure functions of data: a snapshot (and history) in, Rich renderables out.

:class:`DashboardState` holds what the refresh loop learned (last ``/ws/stats`` snapshot, close codes from
``/metrics``, the error while the server is down, a few minutes of history); :func:`render_dashboard`
draws it. Nothing here does I/O, so a frame can be checked by rendering to ``Console(record=True)``.
Imports nothing of ours.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

BARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """Values scaled from 0 to their maximum as block characters; longer series are averaged down."""
    if not values:
        return ""
    points = resample(values, width)
    top = max(points)
    if top <= 0:
        return BARS[0] * len(points)
    return "".join(BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))] for v in points)


def resample(values: list[float], width: int) -> list[float]:
    """At most ``width`` points: the mean of equal slices, oldest first."""
    if len(values) <= width:
        return list(values)
    size = len(values) / width
    return [
        sum(chunk) / len(chunk)
        for i in range(width)
        if (chunk := values[int(i * size): max(int((i + 1) * size), int(i * size) + 1)])
    ]


@dataclass
class History:
    """The last few minutes of the figures drawn as sparklines."""

    maxlen: int = 300
    connections: deque[float] = field(default_factory=deque)
    published_per_s: deque[float] = field(default_factory=deque)
    pushed_per_s: deque[float] = field(default_factory=deque)

    def add(self, snapshot: dict[str, Any]) -> None:
        for series, key in ((self.connections, "total_connections"), (self.published_per_s, "published_per_s"),
                            (self.pushed_per_s, "pushed_per_s")):
            value = snapshot.get(key)
            series.append(float(value) if isinstance(value, int | float) else 0.0)
            while len(series) > self.maxlen:
                series.popleft()


@dataclass
class DashboardState:
    url: str
    interval_s: float = 1.0
    snapshot: dict[str, Any] | None = None
    closes_by_code: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    failures: int = 0
    updated_at: float | None = None
    history: History = field(default_factory=History)

    def succeeded(self, snapshot: dict[str, Any], closes_by_code: dict[str, float] | None, now: float) -> None:
        self.snapshot = snapshot
        if closes_by_code is not None:
            self.closes_by_code = closes_by_code
        self.error = None
        self.failures = 0
        self.updated_at = now
        self.history.add(snapshot)

    def failed(self, error: str) -> None:
        self.error = error
        self.failures += 1


def render_dashboard(state: DashboardState, now: float | None = None) -> RenderableType:
    """The whole frame: header, counters, latency, sparklines, nodes (cluster) and close codes."""
    now = time.time() if now is None else now
    parts: list[RenderableType] = [header(state, now)]
    snap = state.snapshot
    if snap is not None:
        grid = Table.grid(padding=(0, 3))
        grid.add_row(counters_table(snap), Group(latency_table(snap), Text(""), closes_table(state.closes_by_code)))
        parts.append(grid)
        if len(state.history.connections) > 1:  # one point is not a trend (``--once``)
            parts.append(sparklines(state.history))
        nodes = snap.get("nodes") or []
        if len(nodes) > 1:
            parts.append(nodes_table(nodes))
    return Group(*parts)


def header(state: DashboardState, now: float) -> Panel:
    snap = state.snapshot
    line = Text()
    if state.error is not None:
        line.append("● unreachable, retrying", style="bold red")
        line.append(f"  ({state.failures} failed: {state.error})", style="red")
        if state.updated_at is not None:
            line.append(f"  last seen {now - state.updated_at:.0f}s ago", style="dim")
    elif snap is None:
        line.append("● connecting…", style="yellow")
    else:
        status = str(snap.get("status", "?"))
        line.append(f"● {status}", style="bold green" if status == "operational" else "bold yellow")
    if snap is not None:
        line.append(f"   connections {snap.get('total_connections', 0)}", style="bold")
        line.append(f"   users {snap.get('connected_users', 0)}", style="bold")
        line.append(f"   notifications/s {_num(snap.get('published_per_s'))}")
        line.append(f"   up {_duration(snap.get('uptime_s'))}   broker {snap.get('broker', '?')}", style="dim")
        broker = snap.get("broker_state") or {}
        if broker.get("up") is False:
            line.append(f"   broker down {_duration(broker.get('down_for_s'))}: other nodes catch up from the store",
                        style="bold yellow")
    title = Text(f"notify stats · {state.url}")  # Text: a URL like http://[::1]:8000 is not markup
    return Panel(line, title=title, title_align="left", border_style="red" if state.error else "blue")


def counters_table(snap: dict[str, Any]) -> Table:
    table = Table(title="traffic", title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column(style="dim")
    table.add_column(justify="right")
    for label, key in (("published/s", "published_per_s"), ("pushed/s", "pushed_per_s"),
                       ("published", "notifications_published"), ("pushed", "notifications_pushed"),
                       ("acked", "notifications_acked"), ("replayed", "notifications_replayed"),
                       ("connections opened", "connections_opened"), ("queue overflows", "send_queue_overflows"),
                       ("connections refused", "connections_refused")):
        table.add_row(label, _num(snap.get(key)))
    return table


def latency_table(snap: dict[str, Any]) -> Table:
    table = Table(title="latency (ms)", title_justify="left", box=None, padding=(0, 1))
    table.add_column("", style="dim")
    for column in ("p50", "p90", "p99", "max", "n"):
        table.add_column(column, justify="right")
    for label, key in (("delivery", "delivery_latency_ms"), ("push", "push_latency_ms")):
        figures = snap.get(key) or {}
        table.add_row(label, *(_num(figures.get(p)) for p in ("p50", "p90", "p99", "max", "samples")))
    return table


def closes_table(closes: dict[str, float]) -> Table:
    table = Table(title="closes by code", title_justify="left", show_header=False, box=None, padding=(0, 1),
                  min_width=16)
    table.add_column(style="dim")
    table.add_column(justify="right")
    for code, total in sorted(closes.items()):
        table.add_row(code, _num(total))
    if not closes:
        table.add_row("none", "")
    return table


def sparklines(history: History) -> Table:
    table = Table(title="last minutes", title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column(style="dim")
    table.add_column(style="cyan", no_wrap=True)
    table.add_column(justify="right")
    for label, series in (("connections", history.connections), ("notifications/s", history.published_per_s),
                          ("pushed/s", history.pushed_per_s)):
        values = list(series)
        table.add_row(label, sparkline(values), f"max {_num(max(values, default=0))}")
    return table


def nodes_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table(title="nodes", title_justify="left")
    for column in ("node", "host", "pid", "connections", "users", "heartbeat"):
        table.add_column(column, justify="left" if column in ("node", "host") else "right")
    for node in nodes:
        age = node.get("heartbeat_age_s")
        table.add_row(Text(str(node.get("id", "?"))), Text(str(node.get("host", "?"))), str(node.get("pid", "")),
                      _num(node.get("connections")), _num(node.get("users")),
                      f"{age:.1f}s ago" if isinstance(age, int | float) else "")
    return table


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)  # a field this version does not know: show it rather than fail
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
