"""Idempotent publishing, expiry, priority, collapse, and broadcasts that reach users who are offline."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from .conftest import ServerProcess, eventually, new_user, recv_json, recv_until
from .test_cluster import cluster_env


def post(server: ServerProcess, body: dict[str, Any], key: str | None = None, *, browser: bool = False,
         path: str = "/api/notifications") -> httpx.Response:
    headers = server.admin_headers()
    if key is not None:
        headers["Idempotency-Key"] = key
    if browser:
        headers["Origin"] = "http://elsewhere.example"  # not a backend's call: the framework's route answers
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=10)


def listed(server: ServerProcess, user: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/notifications", headers=server.user_headers(user))
    assert response.status_code == 200, response.text
    return response.json()


def in_seconds(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def test_a_repeated_idempotency_key_answers_the_first_answer_and_stores_once(server: ServerProcess) -> None:
    user = new_user()
    for browser in (False, True):  # the lean way in and the framework's route keep the same keys
        key = f"retry-{new_user()}"
        body = {"user_id": user, "title": f"once {browser}"}
        first = post(server, body, key, browser=browser)
        assert first.status_code == 201, first.text
        again = post(server, {"title": f"once {browser}", "user_id": user}, key, browser=not browser)
        assert (again.status_code, again.json()) == (201, first.json())
    assert [item["title"] for item in listed(server, user)["items"]] == ["once True", "once False"]


def test_the_same_key_with_another_body_is_a_mismatch(server: ServerProcess) -> None:
    user, key = new_user(), f"k-{new_user()}"
    assert post(server, {"user_id": user, "title": "first"}, key).status_code == 201
    for browser in (False, True):
        response = post(server, {"user_id": user, "title": "second"}, key, browser=browser)
        assert response.status_code == 422 and response.json()["code"] == "idempotency_mismatch", response.text
    assert len(listed(server, user)["items"]) == 1


def test_keys_are_scoped_to_the_publisher_and_malformed_ones_are_refused(server: ServerProcess) -> None:
    user, key = new_user(), f"shared-{new_user()}"
    assert post(server, {"user_id": user, "title": "by ops"}, key).status_code == 201
    other = {"Authorization": f"Bearer {server.token('other-backend', admin=True)}", "Idempotency-Key": key}
    response = httpx.post(f"{server.url}/api/notifications", json={"user_id": user, "title": "by another"},
                          headers=other)
    assert response.status_code == 201, response.text  # another publisher's key space
    for bad in ("has space", "x" * 201, "é".encode()):
        response = httpx.post(f"{server.url}/api/notifications", json={"user_id": user, "title": "t"},
                              headers={**server.admin_headers(), "Idempotency-Key": bad})
        assert response.status_code in (400, 422), (bad, response.status_code)
    assert len(listed(server, user)["items"]) == 2


def test_sms_inbound_and_user_ids_and_broadcast_honour_the_key(server: ServerProcess) -> None:
    user, friend = new_user(), new_user()
    sms = {"user_id": user, "verification_id": "ver_1", "service": "Google", "code": "123456"}
    first = post(server, sms, "sms-1", path="/api/sms/inbound")
    assert first.status_code == 201
    assert post(server, sms, "sms-1", path="/api/sms/inbound").json() == first.json()
    many = {"user_ids": [user, friend], "title": "both"}
    assert post(server, many, "many-1").json() == post(server, many, "many-1").json()
    assert [len(listed(server, u)["items"]) for u in (user, friend)] == [2, 1]


async def test_twenty_concurrent_repeats_through_two_nodes_store_one(make_server, postgres, redis_server) -> None:
    env = cluster_env(postgres, redis_server)
    a, b = make_server(**env), make_server(**env)
    user, key = new_user(), "concurrent-retry"
    headers = {**a.admin_headers(), "Idempotency-Key": key}
    async with httpx.AsyncClient(timeout=20) as client:
        answers = await asyncio.gather(*(
            client.post(f"{(a, b)[i % 2].url}/api/notifications", headers=headers,
                        json={"user_id": user, "title": "exactly once"})
            for i in range(20)))
    assert {r.status_code for r in answers} == {201}
    assert len({r.text for r in answers}) == 1
    assert [item["seq"] for item in listed(a, user)["items"]] == [1]


def test_a_key_past_its_ttl_stores_again(make_server) -> None:
    server = make_server(NOTIFY_IDEMPOTENCY_TTL_S="1")
    user = new_user()
    first = post(server, {"user_id": user, "title": "daily"}, "daily-digest")
    time.sleep(1.5)
    second = post(server, {"user_id": user, "title": "daily"}, "daily-digest")
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"] and second.json()["seq"] == 2


async def test_an_expired_notification_is_not_pushed_listed_counted_or_replayed(server: ServerProcess) -> None:
    user = new_user()
    async with server.ws(server.token(user)) as tab:
        await recv_json(tab)
        past = post(server, {"user_id": user, "title": "too late", "expires_at": in_seconds(-5)})
        assert past.status_code == 201 and past.json()["expires_at"] is not None
        soon = post(server, {"user_id": user, "title": "brief", "expires_at": in_seconds(1.5), "priority": "high"})
        frame = await recv_until(tab, "notification")
        assert frame["data"]["title"] == "brief" and frame["data"]["priority"] == "high"  # "too late" never came
    assert [i["title"] for i in listed(server, user)["items"]] == ["brief"]
    await asyncio.sleep(2)
    page = listed(server, user)
    assert page["items"] == [] and page["unread_count"] == 0
    async with server.ws(server.token(user), query="since_seq=0") as tab:
        assert (await recv_json(tab))["unread_count"] == 0
        assert (await recv_json(tab))["type"] == "resumed"  # nothing replayed
    assert soon.json()["seq"] == 2


async def test_a_newer_notification_with_the_same_collapse_key_replaces_the_older(server: ServerProcess) -> None:
    user = new_user()
    async with server.ws(server.token(user)) as tab:
        await recv_json(tab)
        for n in (1, 2, 3):
            body = {"user_id": user, "title": f"{n} new messages", "collapse_key": "inbox"}
            assert post(server, body).status_code == 201
        post(server, {"user_id": user, "title": "something else"})
        frames = [(await recv_until(tab, "notification"))["data"] for _ in range(4)]
    assert [f["collapse_key"] for f in frames] == ["inbox", "inbox", "inbox", None]  # the browser replaces by key
    page = listed(server, user)
    assert [i["title"] for i in page["items"]] == ["something else", "3 new messages"]
    assert page["unread_count"] == 2
    assert httpx.get(f"{server.url}/api/notifications/unread-count",
                     headers=server.user_headers(user)).json()["unread_count"] == 2


async def test_a_broadcast_reaches_users_who_were_offline(make_server) -> None:
    server = make_server()
    notified, visited, online = new_user("notified"), new_user("visited"), new_user("online")
    assert server.publish(notified, "earlier").status_code == 201
    async with server.ws(server.token(visited)) as tab:  # connected once, never notified
        await recv_json(tab)
    await asyncio.sleep(1.5)  # connections are recorded within a second
    async with server.ws(server.token(online)) as live:
        await recv_json(live)
        response = post(server, {"broadcast": True, "title": "Maintenance at 22:00", "type": "system"})
        assert response.status_code == 201 and response.json()["count"] == 3, response.text
        assert (await recv_until(live, "notification"))["data"]["title"] == "Maintenance at 22:00"
        connected_only = post(server, {"broadcast": True, "audience": "connected", "title": "now only"})
        assert connected_only.json()["count"] == 1
    async with server.ws(server.token(notified), query="since_seq=1") as back:
        await recv_json(back)
        frame = await recv_until(back, "notification")
        assert frame["data"]["title"] == "Maintenance at 22:00" and frame["data"]["seq"] == 2
    assert [i["title"] for i in listed(server, visited)["items"]] == ["Maintenance at 22:00"]
    users = await eventually(lambda: httpx.get(f"{server.url}/ws/stats").json())
    assert users["status"] == "operational"


class AnswerLosingProxy:
    """Forwards each HTTP request to the server, but throws away the server's answer to the first one: the
    publish is stored, and the publisher sees only a dropped connection, as after a timeout."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.forwarded = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @staticmethod
    async def _message(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        return head + await reader.readexactly(length)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            request = await self._message(client_reader)
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            upstream_writer.write(request)
            answer = await self._message(upstream_reader)
            upstream_writer.close()
            self.forwarded += 1
            if self.forwarded > 1:
                client_writer.write(answer)
                await client_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            client_writer.close()


async def test_a_publish_whose_answer_was_lost_is_stored_once_when_the_client_retries(server: ServerProcess) -> None:
    """The Python client retries a dropped connection with the same Idempotency-Key: the server answers the
    retry with the first answer, and the notification is stored exactly once."""
    from namaskah_notify.client import AsyncNotifyClient

    user = new_user()
    proxy = AnswerLosingProxy(server.port)
    async with proxy as url, AsyncNotifyClient(url, server.token("ops", admin=True)) as client:
        stored = await client.publish(user, "exactly once")
    assert proxy.forwarded == 2  # the first try reached the server; its answer never came back
    assert [(i["id"], i["title"]) for i in listed(server, user)["items"]] == [(stored["id"], "exactly once")]
