"""The publish path (``POST /api/notifications`` and the ``POST /api/sms/inbound`` webhook) under the
behaviour its rewrite must keep or newly guarantee: the longest ids the API accepts alongside concurrent
publishes, one row the database refuses inside a group commit, revocation and expiry of (cached) tokens,
the exact errors of both routes, and order without loss under concurrent publishers.

Every test starts the real server and talks to it over real HTTP (httpx) and WebSockets; on PostgreSQL
and SQLite where it says so. A missing PostgreSQL fails (conftest raises), it is never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from .conftest import POSTGRES, PostgresDatabase, ServerProcess, new_user, recv_json, recv_until
from .leakcheck import RECORD

PUBLISH = "/api/notifications"
WEBHOOK = "/api/sms/inbound"
ROUTES = [PUBLISH, WEBHOOK]
USERS_PER_BURST = 30


@dataclass
class Backend:
    """A dedicated server on one storage backend, and its PostgreSQL database when that is the backend."""

    name: str
    server: ServerProcess
    postgres: PostgresDatabase | None = None


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, make_server) -> Backend:
    """A fresh server on SQLite (the defaults) or on a scratch PostgreSQL database."""
    if request.param == "postgres":
        database = request.getfixturevalue("postgres")
        return Backend("postgres", make_server(NOTIFY_DATABASE_URL=database.url), database)
    return Backend("sqlite", make_server())


# ---- helpers ---------------------------------------------------------------------------------------


def _sms_body(user: str, **extra: Any) -> dict[str, Any]:
    code = RECORD.code(str(100000 + secrets.randbelow(900000)))
    return {"user_id": user, "verification_id": "ver_long", "service": "Google", "code": code, **extra}


async def _post_all(srv: ServerProcess, requests: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    """Send every request at once, each on its own connection, and answer in the order given."""
    headers = srv.admin_headers()
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    async with httpx.AsyncClient(base_url=srv.url, timeout=30, limits=limits) as client:
        return list(await asyncio.gather(*(client.post(path, json=body, headers=headers) for path, body in requests)))


async def _listings(srv: ServerProcess, users: list[str]) -> dict[str, dict[str, Any]]:
    """``GET /api/notifications`` as each user, concurrently."""
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
        answers = await asyncio.gather(*(client.get(PUBLISH, headers=srv.user_headers(u)) for u in users))
    for answer in answers:
        assert answer.status_code == 200, answer.text
    return {user: answer.json() for user, answer in zip(users, answers, strict=True)}


async def _open_tabs(stack: contextlib.AsyncExitStack, srv: ServerProcess,
                     users: list[str]) -> dict[str, ClientConnection]:
    """One connected tab per user (its ``connected`` frame already read)."""
    tabs = {user: await stack.enter_async_context(srv.ws(srv.token(user))) for user in users}
    for ws in tabs.values():
        assert (await recv_json(ws))["type"] == "connected"
    return tabs


async def _next_notification(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return (await recv_until(ws, "notification", timeout))["data"]


async def _publish_one(srv: ServerProcess, user: str, title: str) -> dict[str, Any]:
    response = await asyncio.to_thread(srv.publish, user, title)
    assert response.status_code == 201, response.text
    return response.json()


def _statuses(responses: list[httpx.Response]) -> str:
    """How many answered each status, and the first answer of each status other than 201."""
    counts = Counter(r.status_code for r in responses)
    firsts = {r.status_code: r.text[:160] for r in reversed(responses) if r.status_code != 201}
    return f"statuses {dict(counts)}; " + "; ".join(f"{code}: {text}" for code, text in sorted(firsts.items()))


def _install_poison_trigger(backend: Backend) -> None:
    """Make the database itself refuse any notification titled ``poison``."""
    if backend.postgres is not None:
        url = f"{POSTGRES.rsplit('/', 1)[0]}/{backend.postgres.name}"
        sql = (
            "CREATE FUNCTION poison_row() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'poison row'; END $$;\n"
            "CREATE TRIGGER poison BEFORE INSERT ON notifications FOR EACH ROW "
            "WHEN (NEW.title = 'poison') EXECUTE FUNCTION poison_row();"
        )
        result = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", sql],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return
    connection = sqlite3.connect(backend.server.data_dir / "notify.db", timeout=30)
    try:
        connection.execute("CREATE TRIGGER poison BEFORE INSERT ON notifications WHEN NEW.title = 'poison' "
                           "BEGIN SELECT RAISE(ABORT, 'poison row'); END;")
        connection.commit()
    finally:
        connection.close()


# ---- 1. the longest ids the webhook accepts, alongside concurrent publishes -------------------------


async def test_longest_ids_webhook_alongside_concurrent_publishes(backend: Backend) -> None:
    """Longest-ids webhook amid 30 publishes: all 201, stored and pushed; its retry is 200 and pushes nothing."""
    srv = backend.server
    long_user = ("long_" + uuid.uuid4().hex * 4)[:128]
    message_id = ("m_" + uuid.uuid4().hex * 8)[:256]
    assert (len(long_user), len(message_id)) == (128, 256)
    users = [new_user(f"pub{i}") for i in range(USERS_PER_BURST)]
    sms = _sms_body(long_user, message_id=message_id)
    requests: list[tuple[str, dict[str, Any]]] = [(PUBLISH, {"user_id": u, "title": f"hello {u}"}) for u in users]
    requests.insert(USERS_PER_BURST // 2, (WEBHOOK, sms))
    async with contextlib.AsyncExitStack() as stack:
        tabs = await _open_tabs(stack, srv, [*users, long_user])
        responses = await _post_all(srv, requests)
        assert [r.status_code for r in responses] == [201] * len(requests), _statuses(responses)
        records = {r.json()["user_id"]: r.json() for r in responses}
        assert set(records) == {*users, long_user}
        assert all(record["seq"] == 1 for record in records.values())
        assert records[long_user]["type"] == "sms_received"
        listings = await _listings(srv, [*users, long_user])
        for user, record in records.items():
            assert listings[user]["items"] == [record], user
            assert (await _next_notification(tabs[user])) == record, user
        again = await asyncio.to_thread(
            httpx.post, f"{srv.url}{WEBHOOK}", json=sms, headers=srv.admin_headers(), timeout=10)
        assert again.status_code == 200, again.text
        assert again.json() == records[long_user]
        marker = await _publish_one(srv, long_user, "marker")
        assert marker["seq"] == 2
        assert (await _next_notification(tabs[long_user]))["id"] == marker["id"]
    listing = (await _listings(srv, [long_user]))[long_user]
    assert [item["seq"] for item in listing["items"]] == [2, 1]


# ---- 2. one row the database refuses inside a group commit -----------------------------------------


async def test_one_refused_row_fails_alone_with_422_and_consumes_no_seq(backend: Backend) -> None:
    """A row the database refuses is 422 unstorable alone, takes no seq; the 29 beside it are stored and pushed."""
    srv = backend.server
    _install_poison_trigger(backend)
    users = [new_user(f"burst{i}") for i in range(USERS_PER_BURST)]
    poisoned = users[USERS_PER_BURST // 3]
    async with contextlib.AsyncExitStack() as stack:
        tabs = await _open_tabs(stack, srv, users)
        for burst in (1, 2):
            requests = [(PUBLISH, {"user_id": u, "title": "poison" if u == poisoned else f"burst {burst}"})
                        for u in users]
            responses = dict(zip(users, await _post_all(srv, requests), strict=True))
            refused = responses.pop(poisoned)
            assert [r.status_code for r in responses.values()] == [201] * (USERS_PER_BURST - 1), (
                f"burst {burst}, the 29 others: {_statuses(list(responses.values()))}; "
                f"the poison one: {refused.status_code} {refused.text[:160]}")
            assert refused.status_code == 422, f"burst {burst}, the poison one: {refused.status_code} {refused.text}"
            assert refused.headers["content-type"].startswith("application/json")
            error = refused.json()
            assert set(error) == {"detail", "code"} and error["code"] == "unstorable", error
            assert isinstance(error["detail"], str) and error["detail"]
            listings = await _listings(srv, users)
            for user, response in responses.items():
                record = response.json()
                assert (record["user_id"], record["seq"], record["title"]) == (user, burst, f"burst {burst}")
                assert listings[user]["items"][0] == record and listings[user]["last_seq"] == burst, user
                assert (await _next_notification(tabs[user])) == record, user
            # Nothing stored for the refused row, and its seq was not consumed: the next one is gap-free.
            assert [item["title"] for item in listings[poisoned]["items"]] == ["after"] * (burst - 1)
            assert listings[poisoned]["last_seq"] == burst - 1
            after = await _publish_one(srv, poisoned, "after")
            assert after["seq"] == burst
            assert (await _next_notification(tabs[poisoned])) == after
    final = (await _listings(srv, [poisoned]))[poisoned]
    assert [(item["seq"], item["title"]) for item in final["items"]] == [(2, "after"), (1, "after")]


# ---- 3. (cached) token verification honours revocation and expiry -----------------------------------


async def test_revoked_admin_token_is_refused_on_both_routes(server: ServerProcess) -> None:
    """An admin token that was served gets 401 "token revoked" on both routes right after its revocation."""
    victim, caller, user = new_user("victim"), new_user("caller"), new_user()
    token = server.token(victim, admin=True, iat=int(time.time()) - 5)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for _ in range(2):  # served twice, so a cache of verified tokens would hold it
            served = await client.post(PUBLISH, json={"user_id": user, "title": "t"}, headers=headers)
            assert served.status_code == 201, served.text
            served = await client.post(WEBHOOK, json=_sms_body(user), headers=headers)
            assert served.status_code == 201, served.text
        revoked = await client.post(f"/api/admin/users/{victim}/disconnect", json={"revoke_tokens": True},
                                    headers={"Authorization": f"Bearer {server.token(caller, admin=True)}"})
        assert revoked.status_code == 200, revoked.text
        before = datetime.fromisoformat(revoked.json()["revoked_before"].replace("Z", "+00:00")).timestamp()
        for path, body in ((PUBLISH, {"user_id": user, "title": "after"}), (WEBHOOK, _sms_body(user))):
            refused = await client.post(path, json=body, headers=headers)
            assert refused.status_code == 401, (path, refused.status_code, refused.text)
            assert refused.json() == {"detail": "token revoked", "code": "unauthorized"}
            assert refused.headers["www-authenticate"] == "Bearer"
        # A token issued in the revocation's second or later is served: only the older ones are refused.
        fresh = {"Authorization": f"Bearer {server.token(victim, admin=True, iat=int(before))}"}
        assert (await client.post(PUBLISH, json={"user_id": user, "title": "fresh"}, headers=fresh)).status_code == 201
        listing = await client.get(PUBLISH, headers=server.user_headers(user))
    assert [item["title"] for item in listing.json()["items"] if item["type"] == "info"] == ["fresh", "t", "t"]


async def test_expired_admin_token_is_refused_after_being_served(make_server) -> None:
    """With no leeway, an admin token served twice before exp gets 401 "token expired" on both routes after it."""
    srv = make_server(NOTIFY_JWT_LEEWAY_S=0)
    user = new_user()
    now = time.time()
    exp = int(now) + 3  # 2 to 3 s ahead
    token = srv.token(new_user("shortlived"), admin=True, iat=int(now), exp=exp)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
        for title in ("first", "second"):
            response = await client.post(PUBLISH, json={"user_id": user, "title": title}, headers=headers)
            assert response.status_code == 201, response.text
        assert time.time() < exp, "the two publishes took too long to prove anything"
        await asyncio.sleep(exp - time.time() + 0.3)
        for path, body in ((PUBLISH, {"user_id": user, "title": "late"}), (WEBHOOK, _sms_body(user))):
            refused = await client.post(path, json=body, headers=headers)
            assert refused.status_code == 401, (path, refused.status_code, refused.text)
            assert refused.json() == {"detail": "token expired", "code": "unauthorized"}
        listing = await client.get(PUBLISH, headers=srv.user_headers(user))
    assert [item["title"] for item in listing.json()["items"]] == ["second", "first"]


# ---- 4. the errors of both routes, exactly as today ---------------------------------------------------


def _raw_post(srv: ServerProcess, path: str, content: bytes, content_type: str | None = "application/json",
              headers: dict[str, str] | None = None) -> httpx.Response:
    sent = dict(srv.admin_headers() if headers is None else headers)
    if content_type:
        sent["content-type"] = content_type
    return httpx.post(f"{srv.url}{path}", content=content, headers=sent, timeout=10)


def _valid_body(path: str) -> dict[str, Any]:
    return _sms_body(new_user()) if path == WEBHOOK else {"user_id": new_user(), "title": "t"}


def _validation_errors(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], list) and body["detail"], body
    return body["detail"]


@pytest.mark.parametrize("path", ROUTES)
def test_malformed_json_is_422_json_invalid(server: ServerProcess, path: str) -> None:
    """A truncated JSON body is 422 with FastAPI's json_invalid error located in the body at an offset."""
    errors = _validation_errors(_raw_post(server, path, b'{"user_id": "u", "title": '))
    assert errors[0]["type"] == "json_invalid"
    assert errors[0]["loc"][0] == "body" and isinstance(errors[0]["loc"][1], int)


@pytest.mark.parametrize("path", ROUTES)
def test_json_array_body_is_422(server: ServerProcess, path: str) -> None:
    """A JSON array body is 422 with a list detail saying the body must be an object."""
    errors = _validation_errors(_raw_post(server, path, b"[1, 2]"))
    assert [(e["type"], e["loc"]) for e in errors] == [("model_attributes_type", ["body"])]


@pytest.mark.parametrize("path", ROUTES)
def test_unknown_field_is_422_extra_forbidden(server: ServerProcess, path: str) -> None:
    """A valid body with an unknown field is 422 naming exactly that field as forbidden."""
    body = {**_valid_body(path), "colour": "red"}
    errors = _validation_errors(_raw_post(server, path, json.dumps(body).encode()))
    assert [(e["type"], e["loc"]) for e in errors] == [("extra_forbidden", ["body", "colour"])]


@pytest.mark.parametrize("path", ROUTES)
def test_missing_authorization_is_401_bearer(server: ServerProcess, path: str) -> None:
    """Without Authorization both routes answer 401 JSON with a code and WWW-Authenticate: Bearer."""
    response = _raw_post(server, path, json.dumps(_valid_body(path)).encode(), headers={})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"detail": "token missing: send Authorization: Bearer <JWT>", "code": "unauthorized"}


@pytest.mark.parametrize("path", ROUTES)
def test_user_token_is_403(server: ServerProcess, path: str) -> None:
    """A valid token without the route's scope gets 403 JSON naming the scope on both routes."""
    body = _valid_body(path)
    response = _raw_post(server, path, json.dumps(body).encode(), headers=server.user_headers(body["user_id"]))
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/json")
    scope = "notify:publish" if path == PUBLISH else "notify:webhook"
    assert response.json() == {"detail": f"this endpoint needs a token with the {scope} scope",
                               "code": "insufficient_scope"}


@pytest.mark.parametrize("path", ROUTES)
def test_body_over_the_limit_is_413_too_large(server: ServerProcess, path: str) -> None:
    """A body over NOTIFY_MAX_BODY_BYTES (default 256 KiB) gets 413 JSON with code too_large."""
    body = {**_valid_body(path), "message": "m" * 300_000}
    response = _raw_post(server, path, json.dumps(body).encode())
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"detail": "request body larger than 262144 bytes", "code": "too_large"}


@pytest.mark.parametrize("path", ROUTES)
def test_non_utf8_body_is_400_json_not_500(server: ServerProcess, path: str) -> None:
    """A JSON body that is not UTF-8 gets the API's 400 JSON error "error parsing the body", never a 500."""
    response = _raw_post(server, path, b'{"user_id": "u\xff\xfe", "title": "t"}')
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"detail": "There was an error parsing the body", "code": "bad_request"}


@pytest.mark.parametrize("path", ROUTES)
def test_text_plain_with_json_body_is_422(server: ServerProcess, path: str) -> None:
    """A valid JSON body sent as text/plain is not parsed as JSON: 422 saying the body must be an object."""
    body = _valid_body(path)
    errors = _validation_errors(_raw_post(server, path, json.dumps(body).encode(), content_type="text/plain"))
    assert [(e["type"], e["loc"]) for e in errors] == [("model_attributes_type", ["body"])]
    listing = httpx.get(f"{server.url}{PUBLISH}", headers=server.user_headers(body["user_id"]), timeout=10)
    assert listing.json()["items"] == []


def test_openapi_documents_both_routes_and_their_bodies(server: ServerProcess) -> None:
    """/openapi.json documents both POST routes with their PublishBody and SmsInboundBody request bodies."""
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    schemas = spec["components"]["schemas"]
    for path, name in ((PUBLISH, "PublishBody"), (WEBHOOK, "SmsInboundBody")):
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert "201" in spec["paths"][path]["post"]["responses"]
    assert {"user_id", "user_ids", "broadcast", "title", "message", "type", "link", "meta"} <= set(
        schemas["PublishBody"]["properties"])
    assert set(schemas["PublishBody"]["required"]) == {"title"}
    assert set(schemas["SmsInboundBody"]["properties"]) == {"user_id", "verification_id", "service", "code",
                                                            "message_id"}
    assert set(schemas["SmsInboundBody"]["required"]) == {"user_id", "verification_id", "service", "code"}
    message_id = re.compile(schemas["SmsInboundBody"]["properties"]["message_id"]["anyOf"][0]["pattern"])
    assert message_id.search("m" * 256) and not message_id.search("m" * 257)  # the length, once stripped


# ---- 5. order and no loss under concurrent publishers ---------------------------------------------


async def test_concurrent_publishers_lose_nothing_and_keep_order(backend: Backend) -> None:
    """200 publishes from 8 clients reach both tabs as seq 1..200 once, in order, each frame equal to its 201 answer."""
    srv = backend.server
    user = new_user("busy")
    total, clients = 200, 8
    answers: dict[int, dict[str, Any]] = {}
    titles = iter(range(total))
    headers = srv.admin_headers()

    async def publisher() -> None:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
            for index in titles:  # shared: each title is taken by exactly one publisher
                response = await client.post(PUBLISH, json={"user_id": user, "title": f"n{index}"}, headers=headers)
                assert response.status_code == 201, response.text
                record = response.json()
                assert record["seq"] not in answers, record
                answers[record["seq"]] = record

    async def collect(ws: ClientConnection) -> list[dict[str, Any]]:
        frames = []
        while len(frames) < total:
            frames.append(await _next_notification(ws, timeout=20))
        return frames

    async with contextlib.AsyncExitStack() as stack:
        tabs = list((await _open_tabs(stack, srv, [user])).values())
        tabs.append(await stack.enter_async_context(srv.ws(srv.token(user))))
        assert (await recv_json(tabs[1]))["type"] == "connected"
        collectors = [asyncio.create_task(collect(ws)) for ws in tabs]
        await asyncio.gather(*(publisher() for _ in range(clients)))
        received = await asyncio.gather(*collectors)
        for ws in tabs:  # nothing after the 200th: no duplicate arrives late
            with pytest.raises(TimeoutError):
                await recv_until(ws, "notification", timeout=0.5)
    assert sorted(answers) == list(range(1, total + 1))
    assert sorted(a["title"] for a in answers.values()) == sorted(f"n{i}" for i in range(total))
    for frames in received:
        assert [f["seq"] for f in frames] == list(range(1, total + 1))
        assert frames == [answers[seq] for seq in range(1, total + 1)]


async def test_meta_number_past_64_bits_is_422_and_the_writer_keeps_serving(backend: Backend) -> None:
    """A ``meta`` number no JSON encoder of the store can write is refused at the border (422), before it
    reaches the writer, and the publishes after it are stored and pushed."""
    srv = backend.server
    user = new_user()
    async with srv.ws(srv.token(user)) as ws:
        assert (await recv_json(ws))["type"] == "connected"
        refused = await asyncio.to_thread(srv.publish, user, "too big", meta={"n": 2**70})
        assert refused.status_code == 422, refused.text
        assert "64 bits" in refused.text
        stored = await _publish_one(srv, user, "after")
        assert stored["seq"] == 1
        assert (await _next_notification(ws))["id"] == stored["id"]


async def test_group_commits_are_counted(server: ServerProcess) -> None:
    """``/ws/stats`` counts the group commits that stored notifications, next to the notifications: a
    publish to 3 users is one commit of 3."""
    before = httpx.get(f"{server.url}/ws/stats", timeout=5).json()
    response = await asyncio.to_thread(server.publish, [new_user(), new_user(), new_user()], "three")
    assert response.status_code == 201, response.text
    after = httpx.get(f"{server.url}/ws/stats", timeout=5).json()
    assert after["notifications_published"] - before["notifications_published"] >= 3
    assert after["store_commits"] > before["store_commits"]
