"""Contract section 2 against the real server: frames both ways, ordering, resume, limits and closing."""

from __future__ import annotations

import asyncio
import json
import signal
import socket

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .conftest import ServerProcess, new_user, recv_json, recv_until


async def expect_close(ws: ClientConnection, timeout: float = 10) -> tuple[int | None, str]:
    """Read until the server closes; the close code and reason it sent."""
    async def drain() -> tuple[int | None, str]:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")

    return await asyncio.wait_for(drain(), timeout)


async def publish_async(client: httpx.AsyncClient, server: ServerProcess, user: str, title: str, **fields) -> dict:
    response = await client.post(f"{server.url}/api/notifications", headers=server.admin_headers(),
                                 json={"user_id": user, "title": title, **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def test_connected_frame_has_every_contract_field(server: ServerProcess) -> None:
    """The first frame is `connected` with the origin document's fields plus connection id, unread and last seq."""
    user = new_user()
    server.publish(user, "before")
    async with server.ws(server.token(user)) as ws:
        frame = await recv_json(ws)
    assert frame["type"] == "connected"
    assert frame["message"] == "WebSocket connected successfully"
    assert frame["user_id"] == user
    assert frame["timestamp"].endswith("Z")
    assert isinstance(frame["connection_id"], str) and frame["connection_id"]
    assert frame["unread_count"] == 1
    assert frame["last_seq"] == 1


async def test_text_and_json_ping(server: ServerProcess) -> None:
    """Text `ping` gets text `pong`; `{"type":"ping"}` gets a JSON pong with a timestamp."""
    async with server.ws(server.token(new_user())) as ws:
        await recv_json(ws)
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "pong"
        await ws.send(json.dumps({"type": "ping"}))
        pong = await recv_json(ws)
        assert pong["type"] == "pong" and "timestamp" in pong


async def test_fan_out_two_users_three_tabs(server: ServerProcess) -> None:
    """Each of a user's three tabs gets each notification exactly once; the other user gets nothing."""
    alice, bob = new_user("alice"), new_user("bob")
    tabs = {alice: [], bob: []}
    for user in tabs:
        for _ in range(3):
            ws = await server.ws(server.token(user)).__aenter__()
            await recv_json(ws)
            tabs[user].append(ws)
    try:
        for i in range(3):
            assert server.publish(alice, f"for alice {i}").status_code == 201
        server.publish(bob, "for bob")
        for ws in tabs[alice]:
            got = [(await recv_json(ws))["data"] for _ in range(3)]
            assert [n["title"] for n in got] == ["for alice 0", "for alice 1", "for alice 2"]
            assert [n["seq"] for n in got] == [1, 2, 3]
        for ws in tabs[bob]:
            only = await recv_json(ws)
            assert only["data"]["title"] == "for bob" and only["data"]["seq"] == 1
        # Nothing more for anyone: a ping round trip proves the queue is empty.
        for ws in tabs[alice] + tabs[bob]:
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 5) == "pong"
    finally:
        for ws in tabs[alice] + tabs[bob]:
            await ws.close()


async def test_notification_frame_shape(server: ServerProcess) -> None:
    """A pushed notification carries id, seq, title, message, type, link, created_at and is_read false."""
    user = new_user()
    async with server.ws(server.token(user)) as ws:
        await recv_json(ws)
        stored = server.publish(user, "Shape", message="body", type="promo", link="/offers").json()
        frame = await recv_json(ws)
    assert frame["type"] == "notification"
    data = frame["data"]
    assert data == stored
    assert {"id", "seq", "title", "message", "type", "link", "created_at", "is_read"} <= set(data)
    assert data["id"].startswith("notif_") and data["is_read"] is False and data["link"] == "/offers"


async def test_mark_read_reaches_every_tab(server: ServerProcess) -> None:
    """`mark_read` from one tab sends `read` with the new unread count to all of the user's tabs."""
    user = new_user()
    first = server.publish(user, "one").json()
    server.publish(user, "two")
    async with server.ws(server.token(user)) as tab1, server.ws(server.token(user)) as tab2:
        assert (await recv_json(tab1))["unread_count"] == 2
        await recv_json(tab2)
        await tab1.send(json.dumps({"type": "mark_read", "notification_id": first["id"]}))
        for tab in (tab1, tab2):
            event = await recv_json(tab)
            assert event == {"type": "read", "notification_ids": [first["id"]], "all": False, "unread_count": 1}
        await tab2.send(json.dumps({"type": "mark_all_read"}))
        for tab in (tab1, tab2):
            event = await recv_json(tab)
            assert event["type"] == "read" and event["all"] is True and event["unread_count"] == 0


async def test_mark_read_of_another_users_notification(server: ServerProcess) -> None:
    """Marking another user's notification answers `not_found` and changes nothing."""
    owner, intruder = new_user("owner"), new_user("intruder")
    theirs = server.publish(owner, "private").json()
    async with server.ws(server.token(intruder)) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "mark_read", "notification_id": theirs["id"]}))
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "not_found"
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "pong"
    count = httpx.get(f"{server.url}/api/notifications/unread-count", headers=server.user_headers(owner))
    assert count.json() == {"unread_count": 1}


async def test_ack_is_recorded_as_delivery_latency(make_server) -> None:
    """An `ack` for a pushed seq counts in stats and in the delivery latency histogram."""
    srv = make_server()
    user = new_user()
    async with srv.ws(srv.token(user)) as ws:
        await recv_json(ws)
        srv.publish(user, "ack me")
        note = await recv_json(ws)
        await ws.send(json.dumps({"type": "ack", "seq": note["data"]["seq"]}))
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "pong"
    stats = httpx.get(f"{srv.url}/ws/stats").json()
    assert stats["notifications_acked"] == 1
    assert stats["delivery_latency_ms"]["samples"] == 1
    metrics = httpx.get(f"{srv.url}/metrics").text
    assert "notify_delivery_latency_seconds_count 1.0" in metrics


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('{"type": 5}', "bad_frame"),
        ('{"type": "mark_read"}', "bad_frame"),
        ('{"type": "ack", "seq": "x"}', "bad_frame"),
        ('{"type": "ack", "seq": 99999999999999999999999}', "bad_frame"),
        ('{"type": "subscribe"}', "unknown_type"),
        ("\x00\x01 control", "bad_json"),
        ('{"type": "auth", "token": "again"}', "bad_frame"),
    ],
)
async def test_bad_frames_get_error_and_connection_stays(server: ServerProcess, frame: str, code: str) -> None:
    """A frame that cannot be served gets an `error` with a code, and the connection keeps working."""
    async with server.ws(server.token(new_user())) as ws:
        await recv_json(ws)
        await ws.send(frame)
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == code and error["message"]
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "pong"


async def test_binary_frame_gets_error(server: ServerProcess) -> None:
    """A binary frame is answered `unsupported_data`; the connection stays open."""
    async with server.ws(server.token(new_user())) as ws:
        await recv_json(ws)
        await ws.send(b"\x00\xff binary")
        error = await recv_json(ws)
        assert error["code"] == "unsupported_data"
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "pong"


async def test_refresh_token_extends_and_refuses_other_user(server: ServerProcess) -> None:
    """`refresh_token` with the same user answers `token_refreshed`; another user's token is refused."""
    user = new_user()
    async with server.ws(server.token(user, ttl=600)) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "refresh_token", "token": server.token(user, ttl=7200)}))
        refreshed = await recv_json(ws)
        assert refreshed["type"] == "token_refreshed" and refreshed["expires_at"].endswith("Z")
        await ws.send(json.dumps({"type": "refresh_token", "token": server.token(new_user())}))
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "invalid_token"
        await ws.send(json.dumps({"type": "refresh_token", "token": "garbage"}))
        assert (await recv_json(ws))["code"] == "invalid_token"


async def test_token_expiry_warns_then_closes_4401(make_server) -> None:
    """A connection whose token expires gets `token_expiring`, then is closed 4401 `token expired`."""
    srv = make_server(NOTIFY_TOKEN_EXPIRY_WARNING_S=2, NOTIFY_JWT_LEEWAY_S=0)
    async with srv.ws(srv.token(new_user(), ttl=3)) as ws:
        await recv_json(ws)
        warning = await recv_until(ws, "token_expiring", timeout=5)
        assert 0 <= warning["expires_in"] <= 3
        code, reason = await expect_close(ws, timeout=8)
    assert (code, reason) == (4401, "token expired")


async def test_refreshed_connection_outlives_first_token(make_server) -> None:
    """After `refresh_token`, the connection stays open past the first token's expiry."""
    srv = make_server(NOTIFY_TOKEN_EXPIRY_WARNING_S=1, NOTIFY_JWT_LEEWAY_S=0)
    user = new_user()
    async with srv.ws(srv.token(user, ttl=2)) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "refresh_token", "token": srv.token(user, ttl=3600)}))
        assert (await recv_json(ws))["type"] == "token_refreshed"
        await asyncio.sleep(3.5)
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "pong"


async def test_oversized_frame_closes_1009(make_server) -> None:
    """A frame of exactly the limit is served; one byte more closes the connection with 1009."""
    srv = make_server(NOTIFY_MAX_MESSAGE_BYTES=1024)
    async with srv.ws(srv.token(new_user())) as ws:
        await recv_json(ws)
        padded = json.dumps({"type": "ping", "pad": ""})
        exact = padded[:-2] + "x" * (1024 - len(padded)) + '"}'
        assert len(exact.encode()) == 1024
        await ws.send(exact)
        assert (await recv_json(ws))["type"] == "pong"
        await ws.send(exact[:-2] + 'x"}')
        code, _ = await expect_close(ws)
    assert code == 1009


async def test_rate_limit_errors_then_closes_1008(make_server) -> None:
    """Frames over the rate get `rate_limited`; a client that keeps going is closed with 1008."""
    srv = make_server(NOTIFY_CLIENT_RATE_PER_S=2, NOTIFY_CLIENT_RATE_BURST=5)
    async with srv.ws(srv.token(new_user())) as ws:
        await recv_json(ws)
        for _ in range(7):
            await ws.send(json.dumps({"type": "ping"}))
        kinds = [(await recv_json(ws)).get("code", "pong") for _ in range(7)]
        assert kinds.count("pong") == 5 and kinds.count("rate_limited") == 2
        for _ in range(20):
            try:
                await ws.send("ping")
            except ConnectionClosed:
                break
        code, _ = await expect_close(ws)
    assert code == 1008


async def test_connection_limit_per_user_4429(make_server) -> None:
    """Past NOTIFY_MAX_CONNECTIONS_PER_USER the next connection is closed 4429; other users are unaffected."""
    srv = make_server(NOTIFY_MAX_CONNECTIONS_PER_USER=2)
    user = new_user()
    async with srv.ws(srv.token(user)) as one, srv.ws(srv.token(user)) as two:
        await recv_json(one)
        await recv_json(two)
        async with srv.ws(srv.token(user)) as three:
            code, _ = await expect_close(three)
        assert code == 4429
        async with srv.ws(srv.token(new_user())) as other:
            assert (await recv_json(other))["type"] == "connected"
    async with srv.ws(srv.token(user)) as again:  # slots free again once closed
        assert (await recv_json(again))["type"] == "connected"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example", True),
        ("https://APP.example/", True),
        ("https://evil.example", False),
        ("https://app.example.evil.com", False),
        ("null", False),
        (None, True),
    ],
)
async def test_origin_allow_list(make_server, origin: str | None, allowed: bool) -> None:
    """With NOTIFY_ALLOWED_ORIGINS set, only exact origins pass (4403 otherwise); no Origin means no browser."""
    srv = make_server(NOTIFY_ALLOWED_ORIGINS="https://app.example,https://admin.example")
    extra = {"origin": origin} if origin is not None else {}
    async with srv.ws(srv.token(new_user()), **extra) as ws:
        if allowed:
            assert (await recv_json(ws))["type"] == "connected"
        else:
            code, reason = await expect_close(ws)
            assert code == 4403 and "origin" in reason


async def test_resume_replays_missed_in_order(server: ServerProcess) -> None:
    """`since_seq=N` sends every stored seq > N in order, then `resumed`, then live ones."""
    user = new_user()
    for i in range(5):
        server.publish(user, f"n{i}")
    async with server.ws(server.token(user), query="since_seq=2") as ws:
        connected = await recv_json(ws)
        assert connected["last_seq"] == 5
        replayed = [(await recv_json(ws))["data"]["seq"] for _ in range(3)]
        assert replayed == [3, 4, 5]
        assert await recv_json(ws) == {"type": "resumed", "replayed": 3, "last_seq": 5}
        server.publish(user, "live")
        assert (await recv_json(ws))["data"]["seq"] == 6


async def test_resume_during_concurrent_publishing(server: ServerProcess) -> None:
    """Resuming while 50 notifications are published concurrently: none missing, none twice, in order."""
    user = new_user()
    async with httpx.AsyncClient(timeout=20) as client:
        for i in range(150):
            await publish_async(client, server, user, f"before {i}")

        async def publish_during() -> None:
            await asyncio.gather(*(publish_async(client, server, user, f"during {i}") for i in range(50)))

        async with server.ws(server.token(user), query="since_seq=0") as ws:
            racing = asyncio.create_task(publish_during())
            seqs = []
            resumed = None
            while len(seqs) < 200:
                frame = await recv_json(ws, timeout=20)
                if frame["type"] == "notification":
                    seqs.append(frame["data"]["seq"])
                elif frame["type"] == "resumed":
                    resumed = frame
            await racing
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 5) == "pong"  # and nothing after the 200th
    assert seqs == list(range(1, 201))
    assert resumed is not None and resumed["replayed"] >= 150


async def test_resync_required_past_the_replay_bound(make_server) -> None:
    """Missing more than NOTIFY_REPLAY_LIMIT sends `resync_required` instead of a replay; live ones follow."""
    srv = make_server(NOTIFY_REPLAY_LIMIT=10)
    user = new_user()
    for i in range(15):
        srv.publish(user, f"n{i}")
    async with srv.ws(srv.token(user), query="since_seq=0") as ws:
        await recv_json(ws)
        assert await recv_json(ws) == {"type": "resync_required", "last_seq": 15}
        srv.publish(user, "live")
        assert (await recv_json(ws))["data"]["seq"] == 16
    async with srv.ws(srv.token(user), query="since_seq=99") as ws:  # ahead of the server: reload too
        await recv_json(ws)
        assert await recv_json(ws) == {"type": "resync_required", "last_seq": 16}


async def test_bad_since_seq_is_refused(server: ServerProcess) -> None:
    """A `since_seq` that is not a non-negative integer closes with 1008 and a reason."""
    async with server.ws(server.token(new_user()), query="since_seq=-3") as ws:
        code, reason = await expect_close(ws)
    assert code == 1008 and "since_seq" in reason


async def test_slow_consumer_is_closed_and_others_unaffected(make_server) -> None:
    """A client that stops reading while 2,000 notifications are published to it is closed (1008), and
    another user's notifications keep arriving meanwhile; the slow one recovers everything by resuming."""
    srv = make_server(NOTIFY_SEND_QUEUE_SIZE=64)
    slow_user, other_user = new_user("slow"), new_user("other")
    # A modest receive buffer (set before connecting, so the window is small from the start) and a short
    # client-side queue, so the stalled client's backlog has to pile up on the server.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", srv.port))
    slow = await srv.ws(srv.token(slow_user), sock=sock, max_queue=4, ping_interval=None).__aenter__()
    await recv_json(slow)
    body, meta = "x" * 2000, {"pad": "y" * 3500}  # ~6 KB frames: 12 MB in all, more than socket buffers hold
    async with srv.ws(srv.token(other_user)) as other, httpx.AsyncClient(timeout=30) as client:
        await recv_json(other)
        for batch in range(20):
            await asyncio.gather(*(publish_async(client, srv, slow_user, f"s{batch}-{i}", message=body, meta=meta)
                                   for i in range(100)))
            await publish_async(client, srv, other_user, f"o{batch}")
            frame = await recv_json(other, timeout=10)
            assert frame["data"]["title"] == f"o{batch}"
    code, _ = await expect_close(slow, timeout=60)
    assert code == 1008
    stats = httpx.get(f"{srv.url}/ws/stats").json()
    assert stats["send_queue_overflows"] >= 1
    async with srv.ws(srv.token(slow_user), query="since_seq=1990") as again:
        await recv_json(again)
        seqs = [(await recv_json(again))["data"]["seq"] for _ in range(10)]
        assert seqs == list(range(1991, 2001))


async def test_shutdown_closes_with_1001(make_server) -> None:
    """SIGTERM closes every open connection with 1001 (going away) before the process exits."""
    srv = make_server()
    async with srv.ws(srv.token(new_user())) as one, srv.ws(srv.token(new_user())) as two:
        await recv_json(one)
        await recv_json(two)
        stopping = asyncio.get_running_loop().run_in_executor(None, srv.stop)
        codes = await asyncio.gather(expect_close(one), expect_close(two))
        # uvicorn re-raises the caught SIGTERM after a clean shutdown, so either status is a clean exit.
        assert await stopping in (0, -signal.SIGTERM)
    assert [c for c, _ in codes] == [1001, 1001]


async def test_restart_on_same_data_folder_loses_nothing(make_server, tmp_path) -> None:
    """Stored notifications, read state and seq survive a restart; seq continues without a gap."""
    data = tmp_path / "kept"
    srv = make_server(data_dir=data)
    user = new_user()
    ids = [srv.publish(user, f"n{i}").json()["id"] for i in range(3)]
    httpx.post(f"{srv.url}/api/notifications/{ids[0]}/read", headers=srv.user_headers(user))
    srv.stop()
    again = make_server(data_dir=data)
    listing = httpx.get(f"{again.url}/api/notifications", headers=again.user_headers(user)).json()
    assert [n["id"] for n in listing["items"]] == ids[::-1]
    assert listing["unread_count"] == 2
    assert again.publish(user, "after").json()["seq"] == 4
