"""Contract section 3 (HTTP) against the real server with httpx: the polling fallback, reading, admin
publishing, the SMS webhook, errors as JSON with the right status, and the operator endpoints."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import ServerProcess, new_user, recv_json, recv_until

STRICT_BODY_BYTES = 4096
NOTIFICATION_FIELDS = {"id", "seq", "title", "message", "type", "link", "created_at", "is_read"}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a small body limit and admin-only stats and metrics; no other test uses it."""
    env = {
        "NOTIFY_MAX_BODY_BYTES": str(STRICT_BODY_BYTES),
        "NOTIFY_STATS_REQUIRE_ADMIN": "true",
        "NOTIFY_METRICS_REQUIRE_ADMIN": "true",
    }
    process = ServerProcess(tmp_path_factory.mktemp("strict") / "data", env).start()
    yield process
    process.stop()


def _get(server: ServerProcess, path: str, user: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", params=params, headers=server.user_headers(user), timeout=10)


def _post(server: ServerProcess, path: str, headers: dict[str, str], body: Any = None) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=10)


def _seqs(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["seq"] for item in response.json()["items"]]


def _publish_n(server: ServerProcess, user: str, count: int) -> list[dict]:
    records = []
    for index in range(count):
        response = server.publish(user, f"n{index + 1}")
        assert response.status_code == 201, response.text
        records.append(response.json())
    return records


def _assert_json_error(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert detail
    return detail


def _sms(user: str, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "verification_id": "ver_42", "service": "Google", "code": "123456", **extra}


# ---- the list (polling fallback) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def five(server: ServerProcess) -> str:
    """A user with five notifications, seq 1..5."""
    user = new_user("five")
    _publish_n(server, user, 5)
    return user


def test_list_newest_first(server, five):
    """GET /api/notifications lists the caller's notifications newest first with unread count and last seq."""
    response = _get(server, "/api/notifications", five)
    body = response.json()
    assert _seqs(response) == [5, 4, 3, 2, 1]
    assert [item["title"] for item in body["items"]] == ["n5", "n4", "n3", "n2", "n1"]
    assert body["unread_count"] == 5 and body["has_more"] is False and body["last_seq"] == 5
    assert all(set(item) >= NOTIFICATION_FIELDS for item in body["items"])


def test_list_before_seq_pages_back(server, five):
    """``limit`` and ``before_seq`` page back through the list, ``has_more`` saying when to stop."""
    first = _get(server, "/api/notifications", five, limit=2)
    assert _seqs(first) == [5, 4] and first.json()["has_more"] is True
    second = _get(server, "/api/notifications", five, limit=2, before_seq=4)
    assert _seqs(second) == [3, 2] and second.json()["has_more"] is True
    last = _get(server, "/api/notifications", five, limit=2, before_seq=2)
    assert _seqs(last) == [1] and last.json()["has_more"] is False
    assert _seqs(_get(server, "/api/notifications", five, before_seq=1)) == []


def test_list_since_seq_oldest_first(server, five):
    """``since_seq`` lists what came after it, oldest first (catching up)."""
    assert _seqs(_get(server, "/api/notifications", five, since_seq=2)) == [3, 4, 5]
    page = _get(server, "/api/notifications", five, since_seq=0, limit=2)
    assert _seqs(page) == [1, 2] and page.json()["has_more"] is True
    done = _get(server, "/api/notifications", five, since_seq=5)
    assert _seqs(done) == [] and done.json()["has_more"] is False


def test_list_limit_bounds(server, five):
    """``limit`` outside 1..200 (or not a number) is 422 JSON; 1 and 200 are served."""
    for bad in (0, -1, 201, "abc"):
        _assert_json_error(_get(server, "/api/notifications", five, limit=bad), 422)
    assert _seqs(_get(server, "/api/notifications", five, limit=1)) == [5]
    assert len(_seqs(_get(server, "/api/notifications", five, limit=200))) == 5


def test_list_seq_bounds(server, five):
    """Negative, zero or out-of-range ``before_seq`` / ``since_seq`` are 422 JSON, never a 500."""
    for params in ({"before_seq": 0}, {"since_seq": -1}, {"before_seq": "x"},
                   {"before_seq": 10**30}, {"since_seq": 10**30}):
        _assert_json_error(_get(server, "/api/notifications", five, **params), 422)
    assert _seqs(_get(server, "/api/notifications", five, before_seq=2**63 - 1)) == [5, 4, 3, 2, 1]


def test_list_before_and_since_together(server, five):
    """``before_seq`` and ``since_seq`` together is 400 JSON."""
    _assert_json_error(_get(server, "/api/notifications", five, before_seq=3, since_seq=1), 400)


def test_list_is_only_the_callers(server, five):
    """Another user sees none of these notifications."""
    response = _get(server, "/api/notifications", new_user())
    assert response.json() == {"items": [], "unread_count": 0, "last_seq": 0, "has_more": False}


# ---- unread count, read, read-all ------------------------------------------------------------------


def test_unread_count(server):
    """GET /api/notifications/unread-count is exactly ``{"unread_count": n}``."""
    user = new_user()
    assert _get(server, "/api/notifications/unread-count", user).json() == {"unread_count": 0}
    _publish_n(server, user, 3)
    assert _get(server, "/api/notifications/unread-count", user).json() == {"unread_count": 3}


def test_read_one(server):
    """POST /api/notifications/{id}/read answers the notification with is_read true and lowers the count."""
    user = new_user()
    first, second = _publish_n(server, user, 2)
    response = _post(server, f"/api/notifications/{first['id']}/read", server.user_headers(user))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == first["id"] and body["seq"] == 1 and body["is_read"] is True
    assert body["title"] == first["title"]
    assert _get(server, "/api/notifications/unread-count", user).json() == {"unread_count": 1}
    again = _post(server, f"/api/notifications/{first['id']}/read", server.user_headers(user))
    assert again.status_code == 200 and again.json()["is_read"] is True
    items = _get(server, "/api/notifications", user).json()["items"]
    assert {item["id"]: item["is_read"] for item in items} == {first["id"]: True, second["id"]: False}


def test_read_another_users_notification_is_404(server):
    """Reading someone else's notification is 404 and leaves it unread."""
    owner, intruder = new_user("owner"), new_user("intruder")
    (record,) = _publish_n(server, owner, 1)
    response = _post(server, f"/api/notifications/{record['id']}/read", server.user_headers(intruder))
    _assert_json_error(response, 404)
    assert _get(server, "/api/notifications/unread-count", owner).json() == {"unread_count": 1}
    assert _get(server, "/api/notifications", owner).json()["items"][0]["is_read"] is False


def test_read_unknown_id_is_404(server):
    """Reading an id that does not exist (or is absurdly long) is 404 JSON."""
    user = new_user()
    _assert_json_error(_post(server, "/api/notifications/notif_nope/read", server.user_headers(user)), 404)
    _assert_json_error(_post(server, f"/api/notifications/{'x' * 3000}/read", server.user_headers(user)), 404)


def test_read_all(server):
    """POST /api/notifications/read-all answers ``{"unread_count": 0}`` and every item is read."""
    user, other = new_user(), new_user()
    _publish_n(server, user, 3)
    _publish_n(server, other, 1)
    response = _post(server, "/api/notifications/read-all", server.user_headers(user))
    assert response.status_code == 200 and response.json() == {"unread_count": 0}
    assert all(item["is_read"] for item in _get(server, "/api/notifications", user).json()["items"])
    assert _get(server, "/api/notifications/unread-count", user).json() == {"unread_count": 0}
    assert _get(server, "/api/notifications/unread-count", other).json() == {"unread_count": 1}


# ---- admin publish --------------------------------------------------------------------------------


def test_publish_one_user(server):
    """Publishing with ``user_id`` answers 201 with the stored notification."""
    user = new_user()
    body = {"user_id": user, "title": "Order shipped", "message": "It is on its way", "type": "order",
            "link": "/orders/7"}
    response = _post(server, "/api/notifications", server.admin_headers(), body)
    assert response.status_code == 201
    record = response.json()
    assert set(record) >= NOTIFICATION_FIELDS
    assert record["id"].startswith("notif_") and record["seq"] == 1 and record["is_read"] is False
    assert (record["title"], record["message"], record["type"], record["link"]) == (
        "Order shipped", "It is on its way", "order", "/orders/7")
    assert _get(server, "/api/notifications", user).json()["items"] == [record]


def test_publish_defaults(server):
    """Only ``title`` is needed besides the audience; link defaults to null."""
    response = _post(server, "/api/notifications", server.admin_headers(), {"user_id": new_user(), "title": "Hi"})
    assert response.status_code == 201
    record = response.json()
    assert record["link"] is None and record["message"] == "" and record["type"]


def test_publish_many_users_each_own_seq(server):
    """Publishing with ``user_ids`` answers 201 with count and items, each user numbered on its own."""
    busy, fresh = new_user("busy"), new_user("fresh")
    _publish_n(server, busy, 2)
    body = {"user_ids": [busy, fresh, busy], "title": "Maintenance tonight"}
    response = _post(server, "/api/notifications", server.admin_headers(), body)
    assert response.status_code == 201
    result = response.json()
    assert result["count"] == 2 and len(result["items"]) == 2
    by_user = {item["user_id"]: item for item in result["items"]}
    assert by_user[busy]["seq"] == 3 and by_user[fresh]["seq"] == 1
    assert by_user[busy]["id"] != by_user[fresh]["id"]
    assert _seqs(_get(server, "/api/notifications", fresh)) == [1]


async def test_broadcast_to_the_connected_audience_reaches_every_connected_user(make_server):
    """``broadcast: true, audience: connected`` stores one notification per user connected now (own seq) and
    pushes it to each tab; a user who is not connected gets nothing."""
    dedicated = make_server()
    alice, bob, absent = new_user("alice"), new_user("bob"), new_user("absent")
    assert dedicated.publish(bob, "before").status_code == 201
    assert dedicated.publish(absent, "before").status_code == 201
    async with dedicated.ws(dedicated.token(alice)) as a1, dedicated.ws(dedicated.token(alice)) as a2, \
            dedicated.ws(dedicated.token(bob)) as b1:
        for ws in (a1, a2, b1):
            assert (await recv_json(ws))["type"] == "connected"
        response = await asyncio.to_thread(
            _post, dedicated, "/api/notifications", dedicated.admin_headers(),
            {"broadcast": True, "audience": "connected", "title": "We are live", "type": "announcement"},
        )
        assert response.status_code == 201 and response.json()["count"] == 2
        got = {}
        for name, ws in (("a1", a1), ("a2", a2), ("b1", b1)):
            frame = await recv_until(ws, "notification")
            got[name] = frame["data"]
            assert frame["data"]["title"] == "We are live"
        assert got["a1"] == got["a2"] and got["a1"]["seq"] == 1
        assert got["b1"]["seq"] == 2 and got["b1"]["id"] != got["a1"]["id"]
    assert _seqs(_get(dedicated, "/api/notifications", absent)) == [1]
    assert _seqs(_get(dedicated, "/api/notifications", alice)) == [1]


def test_broadcast_with_nobody_connected(make_server):
    """A broadcast with nobody connected answers 201 with count 0."""
    dedicated = make_server()
    response = _post(dedicated, "/api/notifications", dedicated.admin_headers(), {"broadcast": True, "title": "x"})
    assert response.status_code == 201 and response.json()["count"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "u"},
        {"user_id": "u", "title": ""},
        {"title": "no audience"},
        {"user_id": "u", "user_ids": ["v"], "title": "two audiences"},
        {"user_id": "u", "broadcast": True, "title": "two audiences"},
        {"user_ids": [], "title": "empty"},
        {"user_id": "u", "title": "t", "link": "javascript:alert(1)"},
        {"user_id": "u", "title": "t", "link": "//evil.example/x"},
        {"user_id": "u", "title": "t", "link": "data:text/html,hi"},
        {"user_id": "u", "title": "t", "colour": "red"},
        {"user_id": "u", "title": "t", "type": "has spaces"},
        {"user_id": "u", "title": "x" * 201},
        {"user_id": "", "title": "t"},
        {"user_id": 5, "title": "t"},
        {"user_id": "u", "title": "t", "broadcast": "yes please"},
    ],
    ids=lambda body: json.dumps(body)[:50],
)
def test_publish_validation(server, body):
    """Bad publish bodies (missing title, zero or two audiences, unsafe link, unknown field, ...) are 422 JSON."""
    detail = _assert_json_error(_post(server, "/api/notifications", server.admin_headers(), body), 422)
    assert isinstance(detail, list) and all("msg" in error for error in detail)


# ---- the SMS webhook ------------------------------------------------------------------------------


async def test_sms_inbound(server):
    """/api/sms/inbound stores and pushes exactly the origin document's SMS notification (201)."""
    user = new_user()
    async with server.ws(server.token(user)) as ws:
        assert (await recv_json(ws))["type"] == "connected"
        response = await asyncio.to_thread(_post, server, "/api/sms/inbound", server.admin_headers(), _sms(user))
        assert response.status_code == 201
        record = response.json()
        assert record["title"] == "📱 SMS Code Received"
        assert record["message"] == "Verification code received for Google"
        assert record["type"] == "sms_received"
        assert record["link"] == "/verify?id=ver_42"
        assert record["is_read"] is False and record["seq"] == 1
        pushed = await recv_until(ws, "notification")
        assert pushed["data"]["id"] == record["id"] and pushed["data"]["title"] == "📱 SMS Code Received"


async def test_sms_repeated_message_id(server):
    """A repeated ``message_id`` answers 200 with the first notification and pushes nothing again."""
    user = new_user()
    body = _sms(user, message_id=new_user("msg"))
    async with server.ws(server.token(user)) as ws:
        assert (await recv_json(ws))["type"] == "connected"
        first = await asyncio.to_thread(_post, server, "/api/sms/inbound", server.admin_headers(), body)
        assert first.status_code == 201
        assert (await recv_until(ws, "notification"))["data"]["id"] == first.json()["id"]
        for _ in range(2):
            again = await asyncio.to_thread(_post, server, "/api/sms/inbound", server.admin_headers(), body)
            assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        # A later notification is the next one pushed: the retries pushed nothing in between.
        marker = await asyncio.to_thread(server.publish, user, "marker")
        assert (await recv_until(ws, "notification"))["data"]["id"] == marker.json()["id"]
        assert marker.json()["seq"] == 2
    assert _seqs(_get(server, "/api/notifications", user)) == [2, 1]


def test_sms_without_message_id_is_not_deduplicated(server):
    """Without a ``message_id`` every call is a new notification (201 each)."""
    user = new_user()
    ids = [_post(server, "/api/sms/inbound", server.admin_headers(), _sms(user)) for _ in range(2)]
    assert [r.status_code for r in ids] == [201, 201]
    assert ids[0].json()["id"] != ids[1].json()["id"]


@pytest.mark.parametrize("missing", ["user_id", "verification_id", "service", "code"])
def test_sms_validation(server, missing):
    """An SMS webhook body missing a required field is 422 JSON."""
    body = _sms(new_user())
    del body[missing]
    _assert_json_error(_post(server, "/api/sms/inbound", server.admin_headers(), body), 422)


# ---- auth on HTTP --------------------------------------------------------------------------------


USER_ENDPOINTS = [
    ("GET", "/api/notifications"),
    ("GET", "/api/notifications/unread-count"),
    ("POST", "/api/notifications/notif_x/read"),
    ("POST", "/api/notifications/read-all"),
]
ADMIN_ENDPOINTS = [("POST", "/api/notifications"), ("POST", "/api/sms/inbound")]


@pytest.mark.parametrize(("method", "path"), USER_ENDPOINTS + ADMIN_ENDPOINTS)
def test_401_without_token_or_with_bad_token(server, method, path):
    """Without a token, with a bad one, or with a non-Bearer scheme, every API endpoint is 401 JSON."""
    for headers in ({}, {"Authorization": "Bearer not.a.token"}, {"Authorization": "Basic dXNlcjpwdw=="}):
        response = httpx.request(method, f"{server.url}{path}", headers=headers, json={"title": "x"})
        _assert_json_error(response, 401)


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_403_for_user_token_on_admin_endpoints(server, method, path):
    """A valid user token on an admin endpoint is 403 JSON, and nothing is stored."""
    user = new_user()
    body = _sms(user) if "sms" in path else {"user_id": user, "title": "sneaky"}
    _assert_json_error(httpx.request(method, f"{server.url}{path}", headers=server.user_headers(user), json=body),
                       403)
    assert _get(server, "/api/notifications/unread-count", user).json() == {"unread_count": 0}


# ---- bodies ----------------------------------------------------------------------------------------


def _big_body(size: int) -> bytes:
    return json.dumps({"user_id": "big", "title": "t", "message": "m" * size}).encode()


def test_413_with_content_length(strict):
    """A body declared larger than NOTIFY_MAX_BODY_BYTES is refused with 413 JSON."""
    headers = {**strict.admin_headers(), "content-type": "application/json"}
    response = httpx.post(f"{strict.url}/api/notifications", content=_big_body(STRICT_BODY_BYTES), headers=headers)
    assert "content-length" in {k.lower() for k in response.request.headers}
    _assert_json_error(response, 413)


def test_413_chunked(strict):
    """A chunked body that grows past NOTIFY_MAX_BODY_BYTES is refused with 413 JSON."""
    body = _big_body(STRICT_BODY_BYTES * 2)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start:start + 1000]

    headers = {**strict.admin_headers(), "content-type": "application/json"}
    response = httpx.post(f"{strict.url}/api/notifications", content=chunks(), headers=headers)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    _assert_json_error(response, 413)


def test_chunked_body_under_the_limit_is_served(strict):
    """A chunked body under the limit reaches the endpoint intact (201)."""
    user = new_user()
    body = json.dumps({"user_id": user, "title": "chunked", "message": "m" * 2000}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 300):
            yield body[start:start + 300]

    headers = {**strict.admin_headers(), "content-type": "application/json"}
    response = httpx.post(f"{strict.url}/api/notifications", content=chunks(), headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["message"] == "m" * 2000


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{", "application/json"),
        (b'{"user_id": "u", "title": ', "application/json"),
        (b"[]", "application/json"),
        (b"null", "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"\xff\xfe\x00", None),
        (b"title=x", "application/x-www-form-urlencoded"),
        (b'{"user_id":"u","title":"\\ud800"}', "application/json"),
        (b'{"user_id":"u","title":"t","\\udc00":1}', "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),
    ],
    ids=["open-brace", "truncated", "array", "null", "empty", "bad-utf8", "bad-utf8-no-type", "form",
         "lone-surrogate", "surrogate-key", "deep-nesting"],
)
def test_malformed_body_is_4xx_json(server, content, content_type):
    """Malformed bodies are answered with a 4xx JSON error, never a 500."""
    headers = server.admin_headers()
    if content_type:
        headers["content-type"] = content_type
    response = httpx.post(f"{server.url}/api/notifications", content=content, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"]


# ---- operator endpoints ------------------------------------------------------------------------


def _stats(server: ServerProcess, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/ws/stats", headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()


def test_stats_shape(server):
    """GET /ws/stats has the origin document's three keys and counters, open to anyone by default."""
    stats = _stats(server)
    assert stats["status"] == "operational"
    assert isinstance(stats["total_connections"], int) and isinstance(stats["connected_users"], int)
    for key in ("notifications_published", "notifications_pushed", "published_per_s", "push_latency_ms",
                "delivery_latency_ms", "nodes"):
        assert key in stats
    assert len(stats["nodes"]) >= 1


def test_stats_published_counter_moves(server):
    """A publish raises ``notifications_published``."""
    before = _stats(server)["notifications_published"]
    assert server.publish(new_user(), "count me").status_code == 201
    assert _stats(server)["notifications_published"] >= before + 1


async def test_stats_connections_and_pushes(strict):
    """On a quiet server, an open socket shows in total_connections / connected_users and a push is counted."""
    admin = strict.admin_headers()
    user = new_user()
    before = await asyncio.to_thread(_stats, strict, admin)
    async with strict.ws(strict.token(user)) as ws, strict.ws(strict.token(user)) as ws2:
        for socket in (ws, ws2):
            assert (await recv_json(socket))["type"] == "connected"
        during = await asyncio.to_thread(_stats, strict, admin)
        assert during["total_connections"] == before["total_connections"] + 2
        assert during["connected_users"] == before["connected_users"] + 1
        await asyncio.to_thread(strict.publish, user, "pushed twice")
        for socket in (ws, ws2):
            await recv_until(socket, "notification")
        after = await asyncio.to_thread(_stats, strict, admin)
        assert after["notifications_published"] == before["notifications_published"] + 1
        assert after["notifications_pushed"] >= before["notifications_pushed"] + 2


def test_healthz(server):
    """GET /healthz is 200 without auth."""
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_readyz(server):
    """GET /readyz is 200 with the database and the broker both ok."""
    response = httpx.get(f"{server.url}/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok" and body["broker"] == "ok"


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics(server):
    """GET /metrics is Prometheus text whose published counter moves after a publish."""
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE notify_notifications_published_total counter" in response.text
    before = _metric(response.text, "notify_notifications_published_total")
    assert server.publish(new_user(), "metric").status_code == 201
    after = _metric(httpx.get(f"{server.url}/metrics").text, "notify_notifications_published_total")
    assert after >= before + 1


@pytest.mark.parametrize("path", ["/nope", "/api/nope", "/api/notifications/x/y/z"])
def test_unknown_route_is_404_json(server, path):
    """An unknown route is 404 JSON."""
    _assert_json_error(httpx.get(f"{server.url}{path}", headers=server.user_headers(new_user())), 404)


def test_wrong_method_is_405_json(server):
    """A known route with the wrong method is 405 JSON."""
    _assert_json_error(httpx.put(f"{server.url}/api/notifications", headers=server.admin_headers()), 405)


@pytest.mark.parametrize("path", ["/ws/stats", "/metrics"])
def test_admin_only_stats_and_metrics(strict, path):
    """With NOTIFY_STATS_REQUIRE_ADMIN / NOTIFY_METRICS_REQUIRE_ADMIN, no token is 401, a user token 403."""
    url = f"{strict.url}{path}"
    _assert_json_error(httpx.get(url), 401)
    _assert_json_error(httpx.get(url, headers={"Authorization": "Bearer junk"}), 401)
    _assert_json_error(httpx.get(url, headers=strict.user_headers(new_user())), 403)
    assert httpx.get(url, headers=strict.admin_headers()).status_code == 200


def test_health_stays_open_when_stats_are_admin_only(strict):
    """/healthz and /readyz need no token even when stats and metrics do."""
    assert httpx.get(f"{strict.url}/healthz").status_code == 200
    assert httpx.get(f"{strict.url}/readyz").status_code == 200


def test_dashboard_and_client_are_served(server):
    """GET / is the demo dashboard (HTML) and the browser client it uses is served under /static."""
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    client = httpx.get(f"{server.url}/static/js/notification-system.js")
    assert client.status_code == 200
    assert "javascript" in client.headers["content-type"]
    scripts = [httpx.get(f"{server.url}{src}").text for src in re.findall(r'<script[^>]*src="(/[^"]+)"', page.text)]
    assert any("notification-system.js" in text for text in [page.text, *scripts])


def test_cors_follows_the_origin_allow_list(make_server) -> None:
    """With NOTIFY_ALLOWED_ORIGINS set, the HTTP API answers CORS for those origins only."""
    srv = make_server(NOTIFY_ALLOWED_ORIGINS="https://app.example")
    asked = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET",
             "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(f"{srv.url}/api/notifications", headers=asked)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = httpx.options(f"{srv.url}/api/notifications", headers={**asked, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers
    listed = httpx.get(f"{srv.url}/api/notifications", headers={"Origin": "https://app.example",
                                                                **srv.user_headers("cors_user")})
    assert listed.headers["access-control-allow-origin"] == "https://app.example"
