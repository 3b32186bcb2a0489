"""The poller's figures: for ``/ws/stats`` (``snapshot``) and, in the app's Prometheus registry, for
``/metrics``. Imports ``stats`` (for its rate window and percentiles).
"""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..stats import RateWindow, percentiles

_DETECTION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class SmsStats:
    def __init__(self, registry: CollectorRegistry, window_s: int = 10, samples: int = 4096) -> None:
        self.pending = 0  # pending verifications in the whole cluster, read from the database each round
        self.leased = 0  # verifications this node polls
        self.polls_total = 0
        self.codes_detected = 0
        self.errors: dict[str, dict[str, int]] = {}  # provider → kind → count
        self.poll_rate = RateWindow(window_s)
        self.detection_latency_ms: deque[float] = deque(maxlen=samples)
        self.backoff: dict[str, dict[str, float | int]] = {}  # provider → state, filled by the poller

        r = registry
        self._m_pending = Gauge("notify_sms_pending_verifications", "Pending verifications (cluster-wide)",
                                registry=r)
        self._m_leased = Gauge("notify_sms_leased_verifications", "Verifications this node polls", registry=r)
        self._m_polls = Counter("notify_sms_polls", "Provider polls made by this node", ["provider"], registry=r)
        self._m_errors = Counter("notify_sms_provider_errors", "Failed provider polls", ["provider", "kind"],
                                 registry=r)
        self._m_detected = Counter("notify_sms_codes_detected", "Codes detected and notified", ["provider"],
                                   registry=r)
        self._m_latency = Histogram("notify_sms_detection_latency_seconds",
                                    "Provider receive time to the stored notification",
                                    buckets=_DETECTION_BUCKETS, registry=r)

    def counted(self, pending: int, leased: int) -> None:
        self.pending, self.leased = pending, leased
        self._m_pending.set(pending)
        self._m_leased.set(leased)

    def polled(self, provider: str) -> None:
        self.polls_total += 1
        self.poll_rate.add()
        self._m_polls.labels(provider=provider).inc()

    def failed(self, provider: str, kind: str) -> None:
        by_kind = self.errors.setdefault(provider, {})
        by_kind[kind] = by_kind.get(kind, 0) + 1
        self._m_errors.labels(provider=provider, kind=kind).inc()

    def detected(self, provider: str, latency_s: float | None) -> None:
        self.codes_detected += 1
        self._m_detected.labels(provider=provider).inc()
        if latency_s is not None:
            latency_s = max(0.0, latency_s)
            self.detection_latency_ms.append(latency_s * 1000)
            self._m_latency.observe(latency_s)

    def snapshot(self) -> dict:
        return {
            "pending_verifications": self.pending,
            "leased_here": self.leased,
            "polls": self.polls_total,
            "polls_per_s": round(self.poll_rate.per_second(), 2),
            "provider_errors": {name: sum(kinds.values()) for name, kinds in sorted(self.errors.items())},
            "provider_errors_by_kind": {name: dict(sorted(kinds.items())) for name, kinds in
                                        sorted(self.errors.items())},
            "codes_detected": self.codes_detected,
            "detection_latency_ms": percentiles(self.detection_latency_ms),
            "providers": self.backoff,
        }
