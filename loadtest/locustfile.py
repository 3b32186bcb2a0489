"""Locust scenarios for namaskah-notify: users with several tabs open, publishers, fan-out checks.

``NotifyUser`` opens ``--tabs`` WebSockets for one user id and checks, tab by tab, that every notification
published to that user arrives exactly once and in ``seq`` order; each delivery is a ``NOTIFY delivery``
request whose response time is the end-to-end latency. ``Publisher`` posts notifications (and SMS
webhooks) to the connected users at ``--publish-rate`` per second with an admin token. Both sides keep
their books in this process (``fanout.Ledger``), so run it as one process (no ``--processes``), from the
checkout (``loadtest`` is imported as a package from the working directory).
``--shape steady|ramp|spike`` (or ``LOCUST_SHAPE``) picks a load shape; a headless run exits 1 when any
request failed or p99 delivery exceeded ``--max-p99-ms``. Commands: ``loadtest/README.md``.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
from locust import User, constant, constant_throughput, events, task
from locust.env import Environment

from loadtest.fanout import MISSED, Ledger, TabState
from loadtest.shapes import SHAPES
from loadtest.wsclient import NotifyTab
from namaskah_notify.auth import SECRET_FILE, mint_token
from namaskah_notify.client import NO_RETRY, NotifyClient, NotifyClientError
from namaskah_notify.config import Settings

log = logging.getLogger("loadtest")
DEFAULT_HOST = "http://127.0.0.1:8000"
RUN_ID = uuid.uuid4().hex[:6]  # user ids of this run are new to the server

LEDGER = Ledger()
READY: dict[str, NotifyUser] = {}  # users whose every tab is connected: the publishers' targets
TABS: list[NotifyTab] = []


def _shape_name() -> str:
    """The shape must be known when Locust collects classes, before options are parsed."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--shape" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--shape="):
            return arg.split("=", 1)[1]
    return os.environ.get("LOCUST_SHAPE", "none")


if _shape_name() in SHAPES:
    NotifyShape = SHAPES[_shape_name()]


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("namaskah-notify")
    group.add_argument("--shape", choices=["none", *SHAPES], default="none", env_var="LOCUST_SHAPE",
                       help="Load shape: -u peak WebSocket users, -t run time (none: a plain -u/-r/-t run)")
    group.add_argument("--tabs", type=int, default=2, env_var="LOCUST_TABS", help="WebSockets per user")
    group.add_argument("--publish-rate", type=float, default=20.0, env_var="LOCUST_PUBLISH_RATE",
                       help="Notifications per second, all publishers together")
    group.add_argument("--publishers", type=int, default=1, env_var="LOCUST_PUBLISHERS",
                       help="Publisher users (on top of -u)")
    group.add_argument("--sms-share", type=float, default=0.25, env_var="LOCUST_SMS_SHARE",
                       help="Share of publishes sent as SMS webhooks (POST /api/sms/inbound)")
    group.add_argument("--notify-data-dir", default=os.environ.get("NOTIFY_DATA_DIR", ".notify"),
                       help="The server's data folder, for its JWT secret (or set NOTIFY_JWT_SECRET)")
    group.add_argument("--max-p99-ms", type=float, default=1000.0, env_var="LOCUST_MAX_P99_MS",
                       help="A headless run fails when p99 delivery latency is above this")
    group.add_argument("--miss-grace", type=float, default=3.0, env_var="LOCUST_MISS_GRACE",
                       help="Seconds a tab has to get a notification before it counts as missed")


def _settings(environment: Environment) -> Settings:
    data_dir = Path(environment.parsed_options.notify_data_dir)
    if not os.environ.get("NOTIFY_JWT_SECRET") and not (data_dir / SECRET_FILE).exists():
        raise SystemExit(f"no JWT secret: {data_dir / SECRET_FILE} does not exist and NOTIFY_JWT_SECRET "
                         "is unset; pass --notify-data-dir with the server's data folder")
    return Settings(data_dir=data_dir)


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    if environment.parsed_options is not None:
        Publisher.fixed_count = environment.parsed_options.publishers


def _report_misses(tab: NotifyTab, cutoff: float) -> None:
    """Everything published to the tab's user before ``cutoff`` should have reached it by now."""
    if not tab.open or tab.closing:
        return
    missing = tab.state.missing(LEDGER.last_seq(tab.state.user_id, before=cutoff))
    if missing:
        tab.fanout_failure(MISSED, missing, f"{missing} below seq {tab.state.reported_upto}, has {tab.state.last_seq}")


@events.test_stopping.add_listener
def _drain(environment: Environment, **_: Any) -> None:
    """Before users stop: no more publishing, give open tabs the grace to catch up, count what never came."""
    LEDGER.closed = True
    grace = environment.parsed_options.miss_grace if environment.parsed_options else 3.0
    deadline = time.time() + grace
    gevent.sleep(0.2)  # publishes in flight get their 201 recorded
    while time.time() < deadline:
        behind = [t for t in TABS if t.open and not t.closing
                  and t.state.last_seq < LEDGER.last_seq(t.state.user_id)]
        if not behind:
            break
        gevent.sleep(0.05)
    now = time.time()
    for tab in TABS:
        _report_misses(tab, now)


@events.quitting.add_listener
def _verdict(environment: Environment, **_: Any) -> None:
    """Exit 1 when anything failed, nothing was delivered, or p99 delivery is over the limit."""
    options = environment.parsed_options
    stats = environment.stats
    delivery = stats.entries.get(("delivery", "NOTIFY"))
    problems = []
    if stats.total.num_failures:
        problems.append(f"{stats.total.num_failures} failed requests")
    delivered = delivery.num_requests if delivery is not None else 0
    if options is not None and options.publish_rate > 0 and not (LEDGER.count() and delivered):
        problems.append(f"nothing to judge: {LEDGER.count()} published, {delivered} delivered")
    if delivery is not None and delivery.num_requests:
        p99 = delivery.get_response_time_percentile(0.99)
        limit = options.max_p99_ms if options is not None else 1000.0
        if p99 > limit:
            problems.append(f"p99 delivery {p99:.0f} ms > {limit:.0f} ms")
        log.info("delivery: %d notifications, p50 %.0f ms, p99 %.0f ms; %d published",
                 delivery.num_requests, delivery.get_response_time_percentile(0.5), p99, LEDGER.count())
    for problem in problems:
        log.error("load test failed: %s", problem)
    if problems:
        environment.process_exit_code = 1


class NotifyUser(User):
    """One signed-in user with ``--tabs`` tabs open; checks the fan-out once a second."""

    host = DEFAULT_HOST
    wait_time = constant(1)
    _serial = 0

    def on_start(self) -> None:
        NotifyUser._serial += 1
        self.user_id = f"lt_{RUN_ID}_{NotifyUser._serial}"
        options = self.environment.parsed_options
        token = mint_token(_settings(self.environment), self.user_id, ttl_s=6 * 3600)
        ws_url = self.host.replace("http", "ws", 1).rstrip("/") + "/ws/notifications"
        self.tabs = [NotifyTab(self.environment, ws_url, token, TabState(self.user_id, i))
                     for i in range(max(1, options.tabs))]
        TABS.extend(self.tabs)
        if all([tab.connect() for tab in self.tabs]):
            READY[self.user_id] = self

    @task
    def check_fanout(self) -> None:
        cutoff = time.time() - self.environment.parsed_options.miss_grace
        for tab in self.tabs:
            _report_misses(tab, cutoff)

    def on_stop(self) -> None:
        READY.pop(getattr(self, "user_id", ""), None)
        for tab in getattr(self, "tabs", ()):
            tab.close()


class Publisher(User):
    """Publishes to connected users through the Python client (``NotifyClient``) with an admin token, at its
    share of ``--publish-rate``; each call is a Locust ``POST`` request. (The tabs stay on websocket-client:
    Locust runs users as gevent greenlets, and the client's Subscriber is asyncio, which does not run
    inside them; ``NotifyClient`` is plain blocking httpx, which gevent makes cooperative.)"""

    host = DEFAULT_HOST
    fixed_count = 1

    def on_start(self) -> None:
        options = self.environment.parsed_options
        token = mint_token(_settings(self.environment), f"lt_publisher_{RUN_ID}", admin=True, ttl_s=6 * 3600)
        # No retries: a retried publish would hide a 429 or 503 from the run's failure count.
        self.api = NotifyClient(self.host, token, retry=NO_RETRY)
        self.sms_share = options.sms_share
        rate = options.publish_rate / max(1, options.publishers)
        self._pace = constant_throughput(rate) if rate > 0 else constant(3600)

    def on_stop(self) -> None:
        self.api.close()

    def wait_time(self) -> float:
        return self._pace(self)

    @task
    def publish(self) -> None:
        if LEDGER.closed or not READY:
            return
        user_id = random.choice(list(READY))
        started, t0 = time.time(), time.perf_counter()
        stored: dict[str, Any] | None = None
        error: Exception | None = None
        try:
            if random.random() < self.sms_share:
                name = "/api/sms/inbound"
                stored = self.api.sms_inbound(user_id, f"ver_{uuid.uuid4().hex[:12]}", "Google",
                                              f"{random.randrange(10**6):06d}", message_id=uuid.uuid4().hex)
            else:
                name = "/api/notifications"
                stored = self.api.publish(user_id, "Load test", "A notification from Locust", type="loadtest",
                                          meta={"sent_at": time.time()})
        except NotifyClientError as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="POST", name=name, start_time=started, response_time=(time.perf_counter() - t0) * 1000,
            response_length=0, exception=error, context={"user_id": user_id})
        if stored is not None:
            LEDGER.record(user_id, int(stored["seq"]))
