"""The Python client (``namaskah_notify.client``) against the real server: the HTTP API sync and async, its
errors and retries, and the Subscriber across reconnects, restarts and gaps it cannot fill."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from namaskah_notify.client import (
    AsyncNotifyClient,
    Backoff,
    Connected,
    ConnectionFailed,
    Disconnected,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotificationReceived,
    NotifyClient,
    NotifyClientError,
    Read,
    Resumed,
    Resynced,
    Resyncing,
    ResyncRequired,
    RetryPolicy,
    SequenceError,
    Subscriber,
    Unauthorized,
)
from namaskah_notify.client.stream import Stream

from .conftest import ROOT, ServerProcess, free_port, new_user

FAST = RetryPolicy(attempts=3, backoff=Backoff(0.01, 0.05))
QUICK = Backoff(0.05, 0.3)


def notification_frame(seq: int) -> str:
    return json.dumps({"type": "notification", "data": {"id": f"n{seq}", "seq": seq, "title": "t"}})


async def take(subscriber: Subscriber, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The next ``count`` notifications from ``subscriber``."""
    got: list[dict[str, Any]] = []

    async def run() -> None:
        async for notification in subscriber:
            got.append(notification)
            if len(got) == count:
                return

    await asyncio.wait_for(run(), timeout)
    return got


# -- HTTP ---------------------------------------------------------------------------------------------------


def test_sync_client_covers_every_publisher_and_user_route(server: ServerProcess) -> None:
    """NotifyClient publishes one and many, takes an SMS webhook once per message_id, lists, counts,
    marks read one and all; publish answers the stored notification and unread_count an int."""
    alice, bob = new_user("alice"), new_user("bob")
    with NotifyClient(server.url, server.token("ops", admin=True)) as api:
        first = api.publish(alice, "Hello", "First", link="/inbox", meta={"k": 1})
        assert (first["user_id"], first["seq"], first["title"], first["link"], first["meta"]) == (
            alice, 1, "Hello", "/inbox", {"k": 1})
        many = api.publish_many([alice, bob], "Both", type="digest")
        assert [(n["user_id"], n["seq"], n["type"]) for n in many] == [(alice, 2, "digest"), (bob, 1, "digest")]
        sms = api.sms_inbound(alice, "ver_1", "Google", "123456", message_id="m-1")
        again = api.sms_inbound(alice, "ver_1", "Google", "123456", message_id="m-1")
        assert sms["title"] == "📱 SMS Code Received" and again["id"] == sms["id"] and sms["seq"] == 3
    with NotifyClient(server.url, server.token(alice)) as mine:
        assert mine.unread_count() == 3
        page = mine.list(limit=2)
        assert [n["seq"] for n in page["items"]] == [3, 2] and page["has_more"] and page["last_seq"] == 3
        assert [n["seq"] for n in mine.list(since_seq=1)["items"]] == [2, 3]
        assert mine.mark_read(first["id"])["is_read"] is True
        assert mine.unread_count() == 2
        assert mine.read_all() == 0 and mine.unread_count() == 0
        with pytest.raises(NotFound):
            mine.mark_read("notif_not_mine")


async def test_async_client_publishes_broadcasts_and_reads(make_server) -> None:  # type: ignore[no-untyped-def]
    """AsyncNotifyClient does the same over asyncio; broadcast answers how many connected users it reached."""
    srv = make_server()
    user = new_user()
    async with (Subscriber(srv.url, srv.token(user)) as sub,
                AsyncNotifyClient(srv.url, srv.token("ops", admin=True)) as api):
        stored = await api.publish(user, "One")
        assert await api.broadcast("Everyone") == 1
        got = await take(sub, 2)
        assert [(n["seq"], n["title"]) for n in got] == [(1, "One"), (2, "Everyone")] and stored["seq"] == 1
    async with AsyncNotifyClient(srv.url, srv.token(user)) as mine:
        assert await mine.unread_count() == 2
        assert (await mine.mark_read(stored["id"]))["is_read"]
        assert await mine.read_all() == 0
        assert [n["seq"] for n in (await mine.list())["items"]] == [2, 1]


def test_errors_are_named_after_the_codes(server: ServerProcess, tmp_path: Path) -> None:
    """A bad token is Unauthorized, a user's token publishing is Forbidden, a blank title is InvalidRequest,
    deleting a notification that is not the caller's is NotFound, and all derive from one base class."""
    with pytest.raises(Unauthorized) as refused, NotifyClient(server.url, "not.a.jwt") as api:
        api.unread_count()
    assert refused.value.status == 401 and refused.value.code == "unauthorized"
    with pytest.raises(Forbidden), NotifyClient(server.url, server.token(new_user())) as api:
        api.publish("someone", "Hi")
    with pytest.raises(InvalidRequest) as invalid, NotifyClient(server.url, server.token("ops", admin=True)) as api:
        api.publish("someone", "   ")
    assert invalid.value.status == 422 and "title" in invalid.value.message
    with pytest.raises(NotFound) as missing, NotifyClient(server.url, server.token(new_user())) as api:
        api.delete("notif_x")
    assert isinstance(missing.value, NotifyClientError)


def test_connection_failures_are_retried_then_raised(tmp_path: Path) -> None:
    """Against a port nobody listens on, the client tries `attempts` times with backoff, then raises
    ConnectionFailed saying so."""
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as failed, NotifyClient(f"http://127.0.0.1:{free_port()}", "t",
                                                                 retry=FAST) as api:
        api.unread_count()
    assert "after 3 attempts" in failed.value.message and time.monotonic() - started < 5


def test_a_429_with_retry_after_is_waited_for_and_retried(make_server) -> None:  # type: ignore[no-untyped-def]
    """Past the per-address connection rate the server answers 429 with Retry-After: 1; the client waits
    that long (not its short backoff) and the retried call succeeds. The client is 127.0.0.2: 127.0.0.1 is
    a proxy the server trusts, whose connections are not counted."""
    srv = make_server(NOTIFY_HANDSHAKE_RATE_PER_IP=1, NOTIFY_HANDSHAKE_BURST_PER_IP=1)
    admin = srv.token("ops", admin=True)
    user = new_user()
    quick = RetryPolicy(attempts=5, backoff=Backoff(0.01, 0.01))

    def client() -> NotifyClient:
        return NotifyClient(srv.url, admin, retry=quick, transport=httpx.HTTPTransport(local_address="127.0.0.2"))

    with client() as api:
        api.publish(user, "uses the burst")  # this connection took the address's one token
        with client() as other:
            started = time.monotonic()
            stored = other.publish(user, "a new connection: 429 first")
            waited = time.monotonic() - started
    assert stored["seq"] == 2 and waited >= 0.9


class _Proxy503:
    """A load balancer in front of the service while it restarts: answers the first ``refusals`` requests
    503 (Retry-After: 0), then passes requests on to ``upstream``; records each request's headers."""

    def __init__(self, upstream: str, refusals: int) -> None:
        self.upstream = upstream
        self.refusals = refusals
        self.seen: list[dict[str, str]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
                while len(body) < int(headers.get("content-length", 0)):
                    body += conn.recv(65536)
                self.seen.append(headers)
                if len(self.seen) <= self.refusals:
                    answer = b'{"detail":"restarting","code":"unavailable"}'
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 0\r\nconnection: close\r\n"
                                 b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(answer), answer))
                    continue
                method, path, _ = lines[0].split(" ", 2)
                forward = {k: v for k, v in headers.items() if k in ("authorization", "content-type")}
                reply = httpx.request(method, self.upstream + path, content=body, headers=forward, timeout=10)
                conn.sendall(b"HTTP/1.1 %d X\r\nconnection: close\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (reply.status_code, len(reply.content), reply.content))

    def close(self) -> None:
        self.sock.close()


def test_a_retried_publish_sends_one_idempotency_key_and_is_stored_once(server: ServerProcess) -> None:
    """Two 503s from a proxy, then the service: the publish is stored once, and all three tries carried the
    same Idempotency-Key (a fresh one for the next publish)."""
    proxy = _Proxy503(server.url, refusals=2)
    user = new_user()
    try:
        with NotifyClient(proxy.url, server.token("ops", admin=True), retry=FAST) as api:
            stored = api.publish(user, "once")
            api.publish(user, "twice")
    finally:
        proxy.close()
    keys = [h.get("idempotency-key") for h in proxy.seen]
    assert len(keys) == 4 and keys[0] == keys[1] == keys[2] and keys[3] != keys[0]
    assert re.fullmatch(r"[0-9a-f-]{36}", keys[0] or "")
    with NotifyClient(server.url, server.token(user)) as mine:
        assert [n["title"] for n in mine.list()["items"]] == ["twice", "once"] and stored["seq"] == 1


def test_a_publish_retried_while_the_server_restarts_is_stored_once(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The server is stopped; a publish and an SMS webhook retry until it is back on the same port, and each
    is stored once. (A try that never connected stored nothing; a webhook repeated after its answer was
    lost is stored once by its message_id; a publish repeated after a lost answer is stored once only by a
    server that honours the Idempotency-Key the client sends.)"""
    data_dir, port = tmp_path / "restart", free_port()
    srv = make_server(data_dir=data_dir, port=port)
    admin, user = srv.token("ops", admin=True), new_user()
    srv.stop()
    results: dict[str, Any] = {}
    patient = RetryPolicy(attempts=200, backoff=Backoff(0.05, 0.2))

    def publish() -> None:
        with NotifyClient(srv.url, admin, retry=patient) as api:
            results["publish"] = api.publish(user, "while down")
            results["sms"] = api.sms_inbound(user, "ver_9", "Google", "424242", message_id="m-9")

    worker = threading.Thread(target=publish)
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive()  # still retrying
    again = make_server(data_dir=data_dir, port=port)
    worker.join(30)
    with NotifyClient(again.url, admin) as api:
        repeat = api.sms_inbound(user, "ver_9", "Google", "424242", message_id="m-9")  # a webhook's own retry
    with NotifyClient(again.url, again.token(user)) as mine:
        items = mine.list()["items"]
    assert results["publish"]["seq"] == 1 and results["sms"]["seq"] == 2 and repeat["id"] == results["sms"]["id"]
    assert [n["seq"] for n in items] == [2, 1]


# -- Subscriber -----------------------------------------------------------------------------------------------


async def test_subscriber_delivers_in_order_with_every_way_to_authenticate(server: ServerProcess) -> None:
    """Header, first-frame and query authentication each deliver the user's notifications in seq order."""
    for auth in ("header", "frame", "query"):
        user = new_user()
        async with Subscriber(server.url, server.token(user), auth=auth) as sub:  # type: ignore[arg-type]
            with NotifyClient(server.url, server.token("ops", admin=True)) as api:
                for i in range(3):
                    api.publish(user, f"n{i}")
            got = await take(sub, 3)
        assert [(n["seq"], n["title"]) for n in got] == [(1, "n0"), (2, "n1"), (3, "n2")], auth


async def test_subscriber_resumes_across_a_server_restart_with_every_seq_once(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Across a restart (with notifications published while it was down, through another node on the same
    database), the subscriber gets seq 1..9 once each, in order, the missed ones marked replayed."""
    data_dir, port = tmp_path / "restart", free_port()
    first = make_server(data_dir=data_dir, port=port)
    user = new_user()
    admin = first.token("ops", admin=True)
    events: list[Any] = []
    sub = Subscriber(first.url, first.token(user), backoff=QUICK, max_retries=None)

    async def collect() -> None:
        async for event in sub.events():
            events.append(event)
            if sum(isinstance(e, NotificationReceived) for e in events) == 9 and any(
                    isinstance(e, Resumed) for e in events):
                return

    async with sub:
        reader = asyncio.create_task(collect())
        with NotifyClient(first.url, admin) as api:
            for i in range(3):
                api.publish(user, f"before {i}")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(first.stop)
        other = await asyncio.to_thread(make_server, data_dir=data_dir)
        with NotifyClient(other.url, admin) as api:
            for i in range(3):
                api.publish(user, f"down {i}")
        await asyncio.to_thread(other.stop)
        again = await asyncio.to_thread(make_server, data_dir=data_dir, port=port)
        with NotifyClient(again.url, admin) as api:
            for i in range(3):
                api.publish(user, f"after {i}")
        await asyncio.wait_for(reader, 30)
    received = [e for e in events if isinstance(e, NotificationReceived)]
    assert [e.seq for e in received] == list(range(1, 10))
    assert [e.replayed for e in received[3:6]] == [True] * 3 and not any(e.replayed for e in received[:3])
    assert any(isinstance(e, Disconnected) and e.code in (1001, 1012) for e in events)
    assert any(isinstance(e, Resumed) for e in events) and sub.duplicates == 0


async def test_past_the_replay_limit_the_subscriber_catches_up_over_http(make_server) -> None:  # type: ignore[no-untyped-def]
    """`resync_required` (more missed than NOTIFY_REPLAY_LIMIT): the missed ones are fetched over HTTP, in
    order, then live ones follow."""
    srv = make_server(NOTIFY_REPLAY_LIMIT=2)
    user = new_user()
    with NotifyClient(srv.url, srv.token("ops", admin=True)) as api:
        for i in range(5):
            api.publish(user, f"n{i}")
        events = []
        async with Subscriber(srv.url, srv.token(user), since_seq=0) as sub:
            async for event in sub.events():
                events.append(event)
                if isinstance(event, Resynced):
                    api.publish(user, "live")
                if isinstance(event, NotificationReceived) and event.seq == 6:
                    break
    seqs = [(e.seq, e.replayed) for e in events if isinstance(e, NotificationReceived)]
    assert seqs == [(1, True), (2, True), (3, True), (4, True), (5, True), (6, False)]
    assert Resyncing(5) in events and Resynced(5, 5) in events


async def test_a_gap_the_subscriber_cannot_fill_raises(make_server) -> None:  # type: ignore[no-untyped-def]
    """With catching up off, `resync_required` raises ResyncRequired; a since_seq ahead of everything the
    server has raises even with catching up on; a skipped seq on the wire raises SequenceError."""
    srv = make_server(NOTIFY_REPLAY_LIMIT=2)
    user = new_user()
    with NotifyClient(srv.url, srv.token("ops", admin=True)) as api:
        for i in range(5):
            api.publish(user, f"n{i}")
    with pytest.raises(ResyncRequired) as off:
        async with Subscriber(srv.url, srv.token(user), since_seq=0, catch_up=False) as sub:
            await take(sub, 5)
    assert (off.value.expected, off.value.got) == (1, 5)
    with pytest.raises(ResyncRequired) as ahead:
        async with Subscriber(srv.url, srv.token(user), since_seq=50) as sub:
            await take(sub, 1)
    assert "behind" in ahead.value.message
    stream = Stream(since_seq=0)
    assert stream.feed(notification_frame(1)) == NotificationReceived({"id": "n1", "seq": 1, "title": "t"})
    assert stream.feed(notification_frame(1)) is None and stream.duplicates == 1
    with pytest.raises(SequenceError) as gap:
        stream.feed(notification_frame(3))
    assert (gap.value.expected, gap.value.got) == (2, 3)


async def test_a_rejected_token_raises_without_retrying(server: ServerProcess) -> None:
    """Close 4401 (an expired token) raises Unauthorized at once instead of reconnecting."""
    started = time.monotonic()
    with pytest.raises(Unauthorized) as refused:
        async with Subscriber(server.url, server.token(new_user(), ttl=-120), backoff=Backoff(1, 1)):
            pass
    assert "4401" in refused.value.message and time.monotonic() - started < 3


async def test_events_surface_read_and_connected_and_aclose_ends_a_waiting_iteration(server: ServerProcess) -> None:
    """events() yields Connected first and a Read when the user marks one read over HTTP; aclose() from
    another task ends the iteration that waits for the next frame."""
    user = new_user()
    with NotifyClient(server.url, server.token("ops", admin=True)) as api:
        stored = api.publish(user, "to read")
    sub = Subscriber(server.url, server.token(user))
    seen: list[Any] = []

    async def read_all() -> None:
        async for event in sub.events():
            seen.append(event)
            if isinstance(event, Connected):
                with NotifyClient(server.url, server.token(user)) as mine:
                    await asyncio.to_thread(mine.mark_read, stored["id"])

    async with sub:
        reader = asyncio.create_task(read_all())
        for _ in range(100):
            if any(isinstance(e, Read) for e in seen):
                break
            await asyncio.sleep(0.05)
    await asyncio.wait_for(reader, 5)  # ended by the end of `async with`
    assert isinstance(seen[0], Connected) and seen[0].unread_count == 1
    assert Read([stored["id"]], False, 0) in seen


# -- the README and the package's imports -----------------------------------------------------------------------


def readme_python_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_readme_use_it_from_python_runs_as_written(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The README's "Use it from Python" code, run as written against a live server, publishes and
    receives the notification."""
    srv = make_server()
    blocks = readme_python_blocks("Use it from Python")
    assert blocks
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    env.update(NOTIFY_URL=srv.url, TOKEN=srv.token("alice"), ADMIN=srv.token("ops", admin=True))
    for block in blocks:
        result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=60,
                                env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert "Hello from Python" in result.stdout


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment with nothing but httpx and websockets installed from the package index."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    venv.create(folder, with_pip=True, system_site_packages=False)
    python = folder / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "httpx", "websockets"], check=True, timeout=300)
    yield python


def test_the_client_imports_with_only_httpx_and_websockets(bare_venv: Path) -> None:
    """In a venv holding only httpx and websockets, `import namaskah_notify.client` works and loads no
    module of the server (nor FastAPI, pydantic, SQLAlchemy or Starlette)."""
    check = ("import sys, namaskah_notify.client as c\n"
             "assert c.Subscriber and c.NotifyClient and c.AsyncNotifyClient\n"
             "print(sorted(m for m in sys.modules if m.startswith('namaskah_notify')))\n")
    result = subprocess.run([bare_venv, "-c", check], capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")})
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.replace("'", '"')))
    assert "namaskah_notify.client" in loaded
    assert all(name == "namaskah_notify" or name.startswith("namaskah_notify.client") for name in loaded), loaded
    with contextlib.suppress(FileNotFoundError):
        for name in ("fastapi", "pydantic", "sqlalchemy", "starlette"):
            assert not list((bare_venv.parent.parent / "lib").glob(f"python*/site-packages/{name}"))
