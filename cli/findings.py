"""What ``notify doctor`` finds: pure checks of the effective settings and of a running server's answers.

Each :class:`Finding` says how bad it is (``critical``: a production deployment must change it;
``warning``: it should, unless something in front of the service covers it), what it is, why it matters,
and the variable that fixes it. Nothing here does I/O except :func:`secret_file_finding`, which reads the
data folder's secret file the way the server would (it never creates one). Imports ``namaskah_notify``'s
``auth``, ``config``, ``pageheaders`` and ``secretfile``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from namaskah_notify.auth import SECRET_FILE
from namaskah_notify.config import Settings
from namaskah_notify.secretfile import UnsafeSecretFile, read_private

Severity = Literal["critical", "warning"]
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class Finding:
    key: str  # one per kind: a server's answer replaces what the settings alone suggested
    severity: Severity
    what: str
    why: str
    fix: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server said to one unauthenticated GET: its status and headers (lower-case names)."""

    status: int
    headers: Mapping[str, str]


def _hmac(settings: Settings) -> bool:
    return all(name.startswith("HS") for name in settings.jwt_algorithms)


def settings_findings(settings: Settings, workers: int = 1) -> list[Finding]:
    """What the settings alone say; ``workers`` as ``notify serve --workers`` (or ``WEB_CONCURRENCY``)."""
    found: list[Finding] = []
    add = found.append
    sqlite = settings.resolved_database_url.startswith("sqlite")
    shared_broker = not settings.broker_url.startswith("memory://")
    several = workers > 1 or shared_broker
    if not settings.jwt_audience:
        add(Finding("audience", "critical", "tokens are not checked for an audience",
                    "any token signed with this key is accepted, including one minted for another service "
                    "that shares the key or the issuer", "NOTIFY_JWT_AUDIENCE (and that aud in every token)"))
    if _hmac(settings) and settings.jwt_secret is None and several:
        add(Finding("generated-secret", "critical", "a generated JWT secret on a multi-node setup",
                    "each host generates its own: a token minted with one is refused by the others, and the "
                    "secret exists only on one host's disk", "NOTIFY_JWT_SECRET (the same on every node)"))
    if settings.jwt_secret is not None and len(settings.jwt_secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
        add(Finding("short-secret", "critical", f"NOTIFY_JWT_SECRET is under {MIN_SECRET_BYTES} bytes",
                    "the server refuses to start with it; a short key can be guessed offline from any token",
                    "NOTIFY_JWT_SECRET (e.g. python -c \"import secrets; print(secrets.token_urlsafe(48))\")"))
    if sqlite and several:
        add(Finding("sqlite-cluster", "critical", "SQLite with several workers or nodes",
                    "every process needs the one database: a SQLite file is not shared between hosts, and "
                    "worker processes contend for its single writer", "NOTIFY_DATABASE_URL=postgresql+asyncpg://…"))
    if workers > 1 and not shared_broker:
        add(Finding("memory-broker", "critical", "several workers with the in-process broker",
                    "a notification published in one worker never reaches the connections of the others",
                    "NOTIFY_BROKER_URL=redis://…"))
    if settings.sms_fake_provider:
        add(Finding("fake-provider", "critical", "the fake SMS provider is enabled",
                    "its inbox endpoint lets an admin token inject any SMS code for any verification; it is for "
                    "demos and tests", "NOTIFY_SMS_FAKE_PROVIDER=false"))
    if not settings.allowed_origins:
        add(Finding("origins", "warning", "any Origin may open a WebSocket",
                    "a page on any site can connect with a token it got hold of; browsers' Origin is the one "
                    "check a stolen token cannot pass", "NOTIFY_ALLOWED_ORIGINS=https://app.example.com"))
    if settings.stats_public and not settings.stats_require_admin:
        add(Finding("stats", "warning", "/ws/stats is public",
                    "it shows host names, process ids and traffic figures to anyone", "NOTIFY_STATS_PUBLIC=false"))
    if not settings.metrics_require_admin:
        add(Finding("metrics", "warning", "/metrics is public",
                    "traffic and error figures for anyone (or block the path at the proxy and scrape inside)",
                    "NOTIFY_METRICS_REQUIRE_ADMIN=true"))
    if settings.docs:
        add(Finding("docs", "warning", "/docs and /openapi.json are public",
                    "the whole API, with every admin route, described for whoever looks", "NOTIFY_DOCS=false"))
    if not settings.handshake_rate_per_ip:
        add(Finding("handshake-limit", "warning", "no limit on new connections per address",
                    "one client can open connections flat out (unless a proxy in front limits them)",
                    "NOTIFY_HANDSHAKE_RATE_PER_IP=50"))
    secret = settings.webhook_secret
    if secret is not None and len(secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
        add(Finding("webhook-secret", "warning", f"NOTIFY_WEBHOOK_SECRET is under {MIN_SECRET_BYTES} bytes",
                    "a short webhook secret can be guessed offline from one signed call", "NOTIFY_WEBHOOK_SECRET"))
    if settings.log_level.lower() == "debug":
        add(Finding("debug-log", "warning", "debug logging",
                    "uvicorn and websockets log frame contents at debug", "NOTIFY_LOG_LEVEL=info"))
    if sqlite and settings.sqlite_synchronous == "OFF":
        add(Finding("sqlite-sync", "warning", "SQLite with synchronous=OFF",
                    "an acknowledged notification can be lost if the machine crashes",
                    "NOTIFY_SQLITE_SYNCHRONOUS=FULL"))
    if settings.jwt_leeway_s > 60:
        add(Finding("leeway", "warning", f"a clock leeway of {settings.jwt_leeway_s:g} s",
                    "an expired token keeps working this long", "NOTIFY_JWT_LEEWAY_S=10"))
    file_finding = secret_file_finding(settings)
    if file_finding is not None:
        add(file_finding)
    return found


def secret_file_finding(settings: Settings) -> Finding | None:
    """The data folder's generated secret, when it is in use: refused by the server if others may read it."""
    if settings.jwt_secret is not None or not _hmac(settings):
        return None
    path = settings.data_dir / SECRET_FILE
    try:
        read_private(path)
    except FileNotFoundError:
        return None
    except UnsafeSecretFile as exc:
        return Finding("secret-file", "critical", f"{path} is not private", f"{exc}; the server refuses it",
                       f"chmod 600 {path} (or NOTIFY_JWT_SECRET)")
    except OSError as exc:
        return Finding("secret-file", "critical", f"{path} cannot be read", exc.strerror or str(exc),
                       "NOTIFY_DATA_DIR (the server's data folder)")
    return None


def server_findings(url: str, answers: Mapping[str, Answer | None]) -> list[Finding]:
    """What a running server shows anyone, from its answers to unauthenticated GETs of ``/``, ``/readyz``,
    ``/docs``, ``/openapi.json``, ``/ws/stats`` and ``/metrics`` (None: no answer)."""
    found: list[Finding] = []
    add = found.append
    if all(answer is None for answer in answers.values()):
        return [Finding("unreachable", "critical", f"no answer from {url}",
                        "the server is down, or not at this address", "--url (NOTIFY_URL)")]
    ready = answers.get("/readyz")
    if ready is None or ready.status != 200:
        add(Finding("not-ready", "critical", "the server is not ready",
                    "/readyz answers " + (str(ready.status) if ready else "nothing") + ": its database does not "
                    "answer", "NOTIFY_DATABASE_URL"))
    docs = [path for path in ("/docs", "/openapi.json") if _ok(answers.get(path))]
    if docs:
        add(Finding("docs", "warning", f"{' and '.join(docs)} answer without a token",
                    "the whole API, with every admin route, described for whoever looks", "NOTIFY_DOCS=false"))
    if _ok(answers.get("/ws/stats")):
        add(Finding("stats", "warning", "/ws/stats answers without a token",
                    "it shows host names, process ids and traffic figures to anyone", "NOTIFY_STATS_PUBLIC=false"))
    if _ok(answers.get("/metrics")):
        add(Finding("metrics", "warning", "/metrics answers without a token",
                    "traffic and error figures for anyone (or block the path at the proxy and scrape inside)",
                    "NOTIFY_METRICS_REQUIRE_ADMIN=true"))
    page = answers.get("/")
    if _ok(page) and page is not None and "content-security-policy" not in page.headers:
        add(Finding("csp", "warning", "the dashboard is served without a Content-Security-Policy",
                    "an older server, or a proxy that drops the header: injected script would run",
                    "upgrade the server; keep the proxy from stripping headers"))
    parts = urlsplit(url)
    if parts.scheme in ("http", "ws") and not _loopback(parts.hostname or ""):
        add(Finding("tls", "warning", f"{url} is plain HTTP",
                    "tokens and notifications cross the network readable by anyone on the path",
                    "TLS at the proxy; clients use https:// and wss://"))
    return found


# What a server's answers show for itself: once it has answered, they decide these rows, not the settings.
OBSERVED = {"docs", "stats", "metrics"}


def merge(from_settings: list[Finding], from_server: list[Finding] | None) -> list[Finding]:
    """One row per kind, critical rows first. What a server that answered showed wins over what the settings
    suggested (the doctor may run with other variables than the server has)."""
    rows = list(from_settings)
    if from_server is not None:
        reached = not any(finding.key == "unreachable" for finding in from_server)
        decided = {finding.key for finding in from_server} | (OBSERVED if reached else set())
        rows = [finding for finding in rows if finding.key not in decided] + from_server
    return sorted(rows, key=lambda finding: finding.severity != "critical")


def _ok(answer: Answer | None) -> bool:
    return answer is not None and answer.status == 200


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
