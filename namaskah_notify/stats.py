"""Counters, rates and latency percentiles for ``/ws/stats``, and the same figures for ``/metrics``.

Recording is a few integer and deque operations, cheap enough for the send path. Each app owns its
own Prometheus registry, so several apps in one process never collide. Imports nothing of ours.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RateWindow:
    """Events per second over the last ``seconds`` whole seconds."""

    def __init__(self, seconds: int = 10) -> None:
        self._seconds = seconds
        self._buckets: deque[list[int]] = deque()  # [second, count]

    def add(self, count: int = 1, now: float | None = None) -> None:
        second = int(now if now is not None else time.time())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])
            while self._buckets and self._buckets[0][0] <= second - self._seconds - 1:
                self._buckets.popleft()

    def per_second(self, now: float | None = None) -> float:
        second = int(now if now is not None else time.time())
        # The current second is partial; average the last complete ones.
        total = sum(c for s, c in self._buckets if second - self._seconds <= s < second)
        return total / self._seconds


def percentiles(samples: deque[float] | list[float]) -> dict[str, float | None]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50": None, "p90": None, "p99": None, "max": None, "samples": 0}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1], 2),
            "samples": len(ordered)}


class Stats:
    """The service's figures; the hub and dispatcher record, the ops routes read."""

    def __init__(self, window_s: int = 10, samples: int = 4096) -> None:
        self.started_at = time.time()
        self.published_total = 0
        self.commits_total = 0  # group commits that stored notifications: published / commits = rows per commit
        self.pushed_total = 0
        self.acked_total = 0
        self.connections_total = 0
        self.overflows_total = 0
        self.replayed_total = 0
        self._refused: Callable[[], int] = lambda: 0
        self.published_rate = RateWindow(window_s)
        self.pushed_rate = RateWindow(window_s)
        self.push_latency_ms: deque[float] = deque(maxlen=samples)
        self.ack_latency_ms: deque[float] = deque(maxlen=samples)

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._m_published = Counter("notify_notifications_published", "Notifications stored and published",
                                    registry=r)
        # Recorded per frame sent, so kept as plain numbers and read by Prometheus when it scrapes: no lock on
        # the send path.
        r.register(_CounterFunction("notify_frames_pushed", "Notification frames written to sockets",
                                    lambda: self.pushed_total))
        r.register(_CounterFunction("notify_store_commits", "Group commits that stored notifications",
                                    lambda: self.commits_total))
        self._m_acked = Counter("notify_acks", "Notifications acknowledged by clients", registry=r)
        self._m_opened = Counter("notify_connections_opened", "WebSocket connections accepted", registry=r)
        self._m_closed = Counter("notify_connections_closed", "WebSocket connections closed, by close code",
                                 ["code"], registry=r)
        self._m_overflows = Counter("notify_send_queue_overflows", "Connections closed for a full send queue",
                                    registry=r)
        self._m_client_errors = Counter("notify_client_frame_errors", "Client frames answered with an error",
                                        ["code"], registry=r)
        self._m_pruned = Counter("notify_pruned_rows", "Rows the retention pruner removed, by table", ["table"],
                                 registry=r)
        self._push_latency = _Histogram("notify_push_latency_seconds", "created_at to written on the socket")
        r.register(self._push_latency)
        self._m_ack_latency = Histogram("notify_delivery_latency_seconds",
                                        "created_at to the client's ack (end to end)",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self._m_connections = Gauge("notify_connections", "Open WebSocket connections on this node", registry=r)
        self._m_users = Gauge("notify_connected_users", "Users with at least one connection on this node",
                              registry=r)

    def bind_gauges(self, connections: Callable[[], float], users: Callable[[], float]) -> None:
        self._m_connections.set_function(connections)
        self._m_users.set_function(users)

    def bind_broker(self, up: Callable[[], float], state_changes: Callable[[], int]) -> None:
        """1 while the broker carries messages between nodes, 0 while they catch up from the store."""
        Gauge("notify_broker_up", "1 while the broker reaches the other nodes (always 1 alone)",
              registry=self.registry).set_function(up)
        self.registry.register(_CounterFunction("notify_broker_state_changes", "Broker outages and recoveries",
                                                state_changes))

    def bind_refusals(self, refused: Callable[[], int]) -> None:
        """New connections refused over the per-address rate; counted by the limiter, which the accept
        path shares."""
        self._refused = refused
        self.registry.register(_CounterFunction("notify_connections_refused", "New connections refused over "
                                                "NOTIFY_HANDSHAKE_RATE_PER_IP", refused))

    def published(self, count: int) -> None:
        """One group commit's notifications, handed to the broker."""
        self.commits_total += 1
        self.published_total += count
        self.published_rate.add(count)
        self._m_published.inc(count)

    def pushed(self, created_at: float, now: float) -> None:
        self.pushed_total += 1
        self.pushed_rate.add(1, now)
        latency = now - created_at if now > created_at else 0.0
        self.push_latency_ms.append(latency * 1000)
        self._push_latency.observe(latency)

    def acked(self, created_at: float, now: float) -> None:
        self.acked_total += 1
        latency = max(0.0, now - created_at)
        self.ack_latency_ms.append(latency * 1000)
        self._m_acked.inc()
        self._m_ack_latency.observe(latency)

    def opened(self) -> None:
        self.connections_total += 1
        self._m_opened.inc()

    def closed(self, code: int) -> None:
        self._m_closed.labels(code=str(code)).inc()

    def overflowed(self) -> None:
        self.overflows_total += 1
        self._m_overflows.inc()

    def client_error(self, code: str) -> None:
        self._m_client_errors.labels(code=code).inc()

    def pruned(self, table: str, rows: int) -> None:
        self._m_pruned.labels(table=table).inc(rows)

    def snapshot(self) -> dict:
        """Counters, rates and latency percentiles (milliseconds) for ``/ws/stats``."""
        return {
            "uptime_s": round(time.time() - self.started_at, 1),
            "notifications_published": self.published_total,
            "store_commits": self.commits_total,
            "notifications_pushed": self.pushed_total,
            "notifications_acked": self.acked_total,
            "connections_opened": self.connections_total,
            "send_queue_overflows": self.overflows_total,
            "notifications_replayed": self.replayed_total,
            "connections_refused": self._refused(),
            "published_per_s": round(self.published_rate.per_second(), 2),
            "pushed_per_s": round(self.pushed_rate.per_second(), 2),
            "push_latency_ms": percentiles(self.push_latency_ms),
            "delivery_latency_ms": percentiles(self.ack_latency_ms),
        }

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)


class _Histogram:
    """A Prometheus histogram kept as plain integers per bucket, collected when scraped."""

    def __init__(self, name: str, documentation: str) -> None:
        self._name, self._documentation = name, documentation
        self._counts = [0] * (len(_LATENCY_BUCKETS) + 1)  # the last is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(_LATENCY_BUCKETS, value)] += 1
        self._sum += value

    def collect(self) -> list[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, _LATENCY_BUCKETS), "+Inf"), self._counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return [HistogramMetricFamily(self._name, self._documentation, buckets=buckets, sum_value=self._sum)]


class _CounterFunction:
    """A Prometheus counter whose value is read from a function when scraped."""

    def __init__(self, name: str, documentation: str, value: Callable[[], int]) -> None:
        self._name, self._documentation, self._value = name, documentation, value

    def collect(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self._name, self._documentation, value=self._value())]
