"""The SMS side end to end through the real server: verifications, the fake and http providers, the
poller (once-only, backoff, expiry, leases across nodes), code extraction, and what never reaches the logs."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from namaskah_notify.sms.codes import extract_code, extract_codes

from .conftest import ServerProcess, eventually, new_user, recv_json
from .leakcheck import RECORD

POLL = {"NOTIFY_SMS_POLL_INTERVAL_S": 0.2, "NOTIFY_SMS_LEASE_S": 2, "NOTIFY_SMS_HTTP_TIMEOUT_S": 0.5,
        "NOTIFY_SMS_BACKOFF_MAX_S": 1}
FAKE = {"NOTIFY_SMS_FAKE_PROVIDER": "true", **POLL}


def code8() -> str:
    """A random 8-digit code: long enough never to turn up in a log line by chance."""
    return RECORD.code(str(10_000_000 + secrets.randbelow(90_000_000)))


def start_verification(server: ServerProcess, user: str, **fields: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/api/verifications", headers=server.admin_headers(),
                          json={"user_id": user, "service": "Google", **fields}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def fake_sms(server: ServerProcess, verification_id: str, text: str, **fields: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/api/fake-provider/messages", headers=server.admin_headers(),
                      json={"verification_id": verification_id, "text": RECORD.sms_text(text), **fields}, timeout=10)


def verification(server: ServerProcess, verification_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{server.url}/api/verifications/{verification_id}",
                     headers=headers or server.admin_headers(), timeout=10)


def sms_stats(server: ServerProcess) -> dict[str, Any]:
    return httpx.get(f"{server.url}/ws/stats", timeout=10).json()["sms"]


async def nothing_more(ws: ClientConnection, wait_s: float = 1.0) -> None:
    """After ``wait_s`` (several poll rounds), the next frame is the answer to our ping: nothing else came."""
    await asyncio.sleep(wait_s)
    await ws.send("ping")
    assert await asyncio.wait_for(ws.recv(), 5) == "pong"


def assert_sms_frame(frame: dict[str, Any], user: str, verification_id: str, service: str = "Google") -> None:
    assert frame["type"] == "notification"
    data = frame["data"]
    assert (data["title"], data["message"], data["type"], data["link"], data["user_id"]) == (
        "📱 SMS Code Received", f"Verification code received for {service}", "sms_received",
        f"/verify?id={verification_id}", user)
    assert data["is_read"] is False


# -- code extraction (no server) -------------------------------------------------------------------
@pytest.mark.parametrize(("text", "codes"), [
    ("Your Google verification code is 482913. Do not share it.", ["482913"]),
    ("G-482913 is your Google verification code.", ["482913"]),
    ("WhatsApp code 123-456. Don't share this code with others", ["123456"]),
    ("Order 99123 shipped on 12/05/2024 at 10:30. Your code: 4821", ["4821", "99123"]),
    ("Call 1-800-555-0199 about your $1,234.50 refund, ref ID12345 #9876", []),
    ("Your code is 1234. Ignore the earlier code 5678.", ["1234", "5678"]),
    ("123456789 is not a code but 4321 is your PIN", ["4321"]),
    ("Welcome to the service! Reply STOP to opt out.", []),
    ("Your code is 123", []),
    ("", []),
])
def test_code_extraction_finds_the_code_among_other_digits(text: str, codes: list[str]) -> None:
    """Codes stand alone (not phone numbers, dates, amounts or ids); the first near a code keyword wins."""
    assert extract_codes(text) == codes
    assert extract_code(text) == (codes[0] if codes else None)


def test_code_extraction_with_a_configured_pattern() -> None:
    """A configured pattern replaces the default; its first group is the code."""
    pattern = r"\b([A-Z]{2}-\d{4})\b"
    assert extract_code("Use AB-1234 to sign in, not 567890", pattern) == "AB1234"
    assert extract_code("no code here 567890", pattern) is None


# -- the fake provider, end to end -----------------------------------------------------------------
async def test_fake_provider_code_reaches_every_tab_once(make_server) -> None:
    """A code put in the fake inbox reaches both tabs once, even as the provider keeps listing it and the
    same message is posted again; the owner reads the code on the verification, others get 404."""
    server = make_server(**FAKE)
    user = new_user()
    code = code8()
    async with server.ws(server.token(user)) as tab1, server.ws(server.token(user)) as tab2:
        for tab in (tab1, tab2):
            assert (await recv_json(tab))["type"] == "connected"
        started = start_verification(server, user, phone_number="+1 555 0100", ttl_s=120)
        assert started["id"].startswith("ver_") and started["status"] == "pending"
        assert started["expires_at"] and started["provider"] == "fake"
        sent = fake_sms(server, started["id"], f"Your Google verification code is {code}. Ref 2024",
                        message_id="m-1")
        assert sent.status_code == 201, sent.text
        for tab in (tab1, tab2):
            assert_sms_frame(await recv_json(tab, timeout=3), user, started["id"])
        assert fake_sms(server, started["id"], f"Your code is {code}", message_id="m-1").status_code == 200
        assert fake_sms(server, started["id"], f"Your new code is {code8()}").status_code == 201
        for tab in (tab1, tab2):
            await nothing_more(tab)
    mine = verification(server, started["id"], server.user_headers(user)).json()
    assert (mine["status"], mine["code"]) == ("received", code)
    assert mine["received_at"] and mine["notification_id"]
    listed = httpx.get(f"{server.url}/api/notifications", headers=server.user_headers(user)).json()
    assert [n["id"] for n in listed["items"]] == [mine["notification_id"]]
    assert verification(server, started["id"], server.user_headers(new_user())).status_code == 404
    assert verification(server, "ver_nothere").status_code == 404
    stats = sms_stats(server)
    assert stats["codes_detected"] == 1 and stats["pending_verifications"] == 0
    assert stats["detection_latency_ms"]["samples"] == 1 and stats["detection_latency_ms"]["max"] < 2000


async def test_expired_and_cancelled_verifications_stop_being_polled(make_server) -> None:
    """Past its ttl a verification is expired; a cancelled one too: a message arriving after either
    notifies no one; cancelling again is 200, cancelling an expired one is 409."""
    server = make_server(**FAKE)
    user = new_user()
    short = start_verification(server, user, ttl_s=1)
    kept = start_verification(server, user, ttl_s=120)
    await eventually(lambda: sms_stats(server)["pending_verifications"] >= 1, timeout=3)
    await eventually(lambda: verification(server, short["id"]).json()["status"] == "expired", timeout=5)
    cancel = httpx.post(f"{server.url}/api/verifications/{kept['id']}/cancel", headers=server.user_headers(user))
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    again = httpx.post(f"{server.url}/api/verifications/{kept['id']}/cancel", headers=server.user_headers(user))
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    late = httpx.post(f"{server.url}/api/verifications/{short['id']}/cancel", headers=server.admin_headers())
    assert late.status_code == 409
    async with server.ws(server.token(user)) as tab:
        await recv_json(tab)
        for record in (short, kept):
            assert fake_sms(server, record["id"], f"Your code is {code8()}").status_code == 201
        await nothing_more(tab, 1.5)
    assert [verification(server, r["id"]).json()["status"] for r in (short, kept)] == ["expired", "cancelled"]
    assert await eventually(lambda: sms_stats(server)["pending_verifications"] == 0, timeout=3)


async def test_verification_endpoints_refuse_what_they_should(make_server, server: ServerProcess) -> None:
    """Starting needs admin and an enabled provider; the fake inbox is 404 unless enabled; bad input is 4xx."""
    user = new_user()
    body = {"user_id": user, "service": "Google"}
    assert httpx.post(f"{server.url}/api/verifications", json=body,
                      headers=server.user_headers(user)).status_code == 403
    assert httpx.post(f"{server.url}/api/verifications", json=body).status_code == 401
    none = httpx.post(f"{server.url}/api/verifications", json=body, headers=server.admin_headers())
    assert none.status_code == 409 and none.json()["code"] == "no_provider"
    assert fake_sms(server, "ver_x", "code 1234").status_code == 404
    fake = make_server(**FAKE)
    unknown = httpx.post(f"{fake.url}/api/verifications", json={**body, "provider": "twilio"},
                         headers=fake.admin_headers())
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_provider"
    for bad in ({**body, "ttl_s": 0}, {**body, "service": ""}, {"service": "Google"}, {**body, "phone_number": "x"}):
        assert httpx.post(f"{fake.url}/api/verifications", json=bad,
                          headers=fake.admin_headers()).status_code == 422
    assert fake_sms(fake, "ver_nothere", "code 1234").status_code == 404
    assert httpx.post(f"{fake.url}/api/fake-provider/messages", json={"verification_id": "v", "text": "1234"},
                      headers=fake.user_headers(user)).status_code == 403


async def test_logs_hold_no_code_no_sms_text_and_no_token(make_server) -> None:
    """At debug level, a whole flow (start, poll, detect, notify, read) logs ids but never the code, the SMS
    text or a token."""
    server = make_server(NOTIFY_LOG_LEVEL="debug", **FAKE)
    user = new_user()
    code = code8()
    text = RECORD.sms_text(f"Your Google verification code is {code}")
    user_token = server.token(user)
    admin_token = server.token("ops", admin=True)
    admin = {"Authorization": f"Bearer {admin_token}"}
    async with server.ws(user_token) as tab:
        await recv_json(tab)
        started = httpx.post(f"{server.url}/api/verifications", headers=admin,
                             json={"user_id": user, "service": "Google"}).json()
        assert httpx.post(f"{server.url}/api/fake-provider/messages", headers=admin,
                          json={"verification_id": started["id"], "text": text}).status_code == 201
        assert_sms_frame(await recv_json(tab, timeout=3), user, started["id"])
    assert verification(server, started["id"], {"Authorization": f"Bearer {user_token}"}).json()["code"] == code
    await eventually(lambda: f"sms code detected: verification={started['id']}" in server.output(), timeout=3)
    output = server.output()
    for secret in (code, text, user_token, admin_token, user_token.rsplit(".", 1)[1], admin_token.rsplit(".", 1)[1]):
        assert secret not in output


# -- the http provider against a provider server of our own --------------------------------------------
class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # two nodes' concurrent polls must not overflow the default backlog of 5


class ProviderServer:
    """A small SMS provider on 127.0.0.1: ``GET /v1/activations/<id>/sms`` answers as ``mode`` says —
    slowly, with 500, with garbage, with the wrong shape, or with ``messages[id]``. It records each request
    (time, verification id, auth header)."""

    def __init__(self, slow_s: float = 1.5) -> None:
        self.mode = "ok"
        self.slow_s = slow_s
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[float, str, str | None]] = []
        self.served: Counter[str] = Counter()
        self.httpd = _Listener(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def polls(self, verification_id: str) -> list[tuple[float, str | None]]:
        return [(t, auth) for t, vid, auth in list(self.requests) if vid == verification_id]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real providers do

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                match = re.match(r"^/v1/activations/([^/?]+)/sms\?service=Google$", self.path)
                if match is None:
                    return self._answer(404, b'{"error":"no such path"}')
                vid = match.group(1)
                mode = provider.mode
                provider.requests.append((time.monotonic(), vid, self.headers.get("X-Api-Key")))
                provider.served[mode] += 1
                if mode == "slow":
                    time.sleep(provider.slow_s)
                    return self._answer(200, b'{"data":{"items":[]}}')
                if mode == "500":
                    return self._answer(500, b"internal error")
                if mode == "garbage":
                    return self._answer(200, b"<html>\x00\xff not json")
                if mode == "shape":
                    return self._answer(200, json.dumps({"data": {"items": "nope"}}).encode())
                items = provider.messages.get(vid, [])
                return self._answer(200, json.dumps({"status": "ok", "data": {"items": items}}).encode())

            def _answer(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the poller gave up waiting and closed the connection

        return Handler

    def __enter__(self) -> ProviderServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def http_env(provider: ProviderServer, key: str) -> dict[str, Any]:
    return {
        "NOTIFY_SMS_HTTP_BASE_URL": provider.url,
        "NOTIFY_SMS_HTTP_PATH": "/v1/activations/{id}/sms?service={service}",
        "NOTIFY_SMS_HTTP_AUTH_HEADER": "X-Api-Key",
        "NOTIFY_SMS_HTTP_AUTH_VALUE": key,
        "NOTIFY_SMS_HTTP_MESSAGES_FIELD": "data.items",
        "NOTIFY_SMS_HTTP_ID_FIELD": "sms_id",
        "NOTIFY_SMS_HTTP_TEXT_FIELD": "body",
        "NOTIFY_SMS_HTTP_RECEIVED_FIELD": "ts",
        **POLL,
    }


async def test_http_provider_survives_slow_500_garbage_then_answers(make_server) -> None:
    """The http adapter against a provider that answers slowly, with 500s, with garbage and the wrong shape,
    then correctly (the same message every time): one notification, every failure counted and backed off,
    and meanwhile the fake provider's verifications are not held up."""
    key = secrets.token_urlsafe(24)
    with ProviderServer() as provider:
        server = make_server(NOTIFY_SMS_FAKE_PROVIDER="true", **http_env(provider, key))
        user = new_user()
        code = code8()
        provider.mode = "slow"
        async with server.ws(server.token(user)) as tab:
            await recv_json(tab)
            polled = start_verification(server, user, provider="http")
            await eventually(lambda: provider.served["slow"] >= 1, timeout=5)

            # The http provider is hanging: a fake-provider verification still gets through at once.
            other = start_verification(server, user, provider="fake", service="GitHub")
            sent_at = time.monotonic()
            assert fake_sms(server, other["id"], f"GitHub code {code8()}").status_code == 201
            assert_sms_frame(await recv_json(tab, timeout=3), user, other["id"], "GitHub")
            assert time.monotonic() - sent_at < 1.5

            for mode in ("500", "garbage", "shape"):
                provider.mode = mode
                await eventually(lambda mode=mode: provider.served[mode] >= 1, timeout=5)
            text = RECORD.sms_text(f"G-{code} is your Google verification code.")
            provider.messages[polled["id"]] = [
                {"sms_id": 1, "body": RECORD.sms_text("Welcome to Google"), "ts": time.time() - 1},
                {"sms_id": 2, "body": text, "ts": time.time()},
            ]
            provider.mode = "ok"
            frame = await recv_json(tab, timeout=5)
            assert_sms_frame(frame, user, polled["id"])
            await nothing_more(tab)

        assert provider.served["ok"] >= 1
        assert {auth for _, auth in provider.polls(polled["id"])} == {key}
        record = verification(server, polled["id"]).json()
        assert (record["status"], record["code"], record["notification_id"]) == ("received", code, frame["data"]["id"])
        stats = sms_stats(server)
        kinds = stats["provider_errors_by_kind"]["http"]
        assert kinds["timeout"] >= 1 and kinds["http_500"] >= 1 and kinds["bad_response"] >= 2
        assert stats["provider_errors"].get("fake", 0) == 0
        assert stats["providers"]["http"]["failures"] == 0  # recovered
        assert stats["codes_detected"] == 2 and stats["detection_latency_ms"]["samples"] == 2
        metrics = httpx.get(f"{server.url}/metrics").text
        for name in ("notify_sms_pending_verifications", 'notify_sms_polls_total{provider="http"}',
                     'notify_sms_provider_errors_total{kind="timeout",provider="http"}',
                     "notify_sms_detection_latency_seconds_count 2.0"):
            assert name in metrics
        output = server.output()
        assert code not in output and key not in output
        assert "provider http failed" in output  # the warning names the provider and the failure


# -- several nodes on PostgreSQL and Redis ---------------------------------------------------------
async def test_two_nodes_poll_each_verification_once_and_take_over_from_a_dead_node(
    make_server, postgres, redis_server
) -> None:
    """Two nodes on PostgreSQL + Redis: every verification is polled by exactly one node; a SIGKILLed node's
    verifications are polled by the other within a lease period, and a code for one reaches the user."""
    secret = secrets.token_urlsafe(48)
    lease_s = float(POLL["NOTIFY_SMS_LEASE_S"])
    with ProviderServer() as provider:
        def node(name: str, **extra: Any) -> ServerProcess:
            return make_server(NOTIFY_DATABASE_URL=postgres.url, NOTIFY_BROKER_URL=redis_server.url,
                               NOTIFY_JWT_SECRET=secret, NOTIFY_NODE_ID=name,
                               **{**http_env(provider, name), **extra})

        a = node("node-a", NOTIFY_SMS_MAX_LEASES=6)
        user = new_user()
        first = [start_verification(a, user)["id"] for _ in range(3)]  # only A is up: A takes these
        await eventually(lambda: all(provider.polls(v) for v in first))
        b = node("node-b")
        more = [start_verification(b, user)["id"] for _ in range(6)]  # A has room for 3 more: a race
        ids = first + more
        await eventually(lambda: all(provider.polls(v) for v in ids))
        watched_from = time.monotonic()
        await asyncio.sleep(2 * lease_s)

        def pollers(vid: str, since: float) -> set[str | None]:
            return {auth for t, auth in provider.polls(vid) if t >= since}

        owner = {v: pollers(v, 0) for v in ids}
        assert all(len(nodes) == 1 for nodes in owner.values()), owner
        on_a = [v for v in ids if owner[v] == {"node-a"}]
        assert set(first) <= set(on_a) and 3 <= len(on_a) <= 6
        assert all(len(provider.polls(v)) >= 5 for v in ids)  # every one kept being polled
        assert all(pollers(v, watched_from) for v in ids)

        async with b.ws(b.token(user)) as tab:
            await recv_json(tab)
            a.stop(signal.SIGKILL)
            killed_at = time.monotonic()
            await eventually(lambda: all("node-b" in pollers(v, killed_at) for v in on_a), timeout=3 * lease_s)
            taken_over_s = max(min(t for t, auth in provider.polls(v) if t >= killed_at and auth == "node-b")
                               for v in on_a) - killed_at
            assert taken_over_s < lease_s + 1.5, taken_over_s
            in_transit = killed_at + 0.5  # a request A sent just before it died may be recorded just after
            assert all(pollers(v, in_transit) == {"node-b"} for v in ids)
            code = code8()
            text = RECORD.sms_text(f"Your code is {code}")
            provider.messages[on_a[0]] = [{"sms_id": "x1", "body": text, "ts": time.time()}]
            assert_sms_frame(await recv_json(tab, timeout=5), user, on_a[0])
            await nothing_more(tab)
        assert verification(b, on_a[0]).json()["code"] == code
        await eventually(lambda: sms_stats(b)["leased_here"] == len(ids) - 1, timeout=3)
        print(f"\nSIGKILLed node's verifications polled elsewhere after {taken_over_s:.2f}s (lease {lease_s}s)")
