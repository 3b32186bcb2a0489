"""Scale-out on real engines: every storage × broker backend, several nodes on PostgreSQL and Redis, faults."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from namaskah_notify.db import upgrade_schema
from namaskah_notify.models import metadata

from .conftest import ROOT, PostgresDatabase, RedisServer, ServerProcess, eventually, new_user, recv_json
from .leakcheck import RECORD
from .test_websocket import expect_close, publish_async

BACKENDS = [("sqlite", "memory"), ("sqlite", "redis"), ("postgres", "memory"), ("postgres", "redis")]


def cluster_env(postgres: PostgresDatabase, redis: RedisServer, **extra: Any) -> dict[str, Any]:
    return {"NOTIFY_DATABASE_URL": postgres.url, "NOTIFY_BROKER_URL": redis.url,
            "NOTIFY_JWT_SECRET": CLUSTER_SECRET, **extra}


CLUSTER_SECRET = secrets.token_urlsafe(48)


@pytest.fixture(params=BACKENDS, ids=[f"{d}-{b}" for d, b in BACKENDS])
def backend(request: pytest.FixtureRequest, make_server) -> ServerProcess:
    """One server on each storage × broker combination."""
    database, broker = request.param
    env: dict[str, Any] = {}
    if database == "postgres":
        env["NOTIFY_DATABASE_URL"] = request.getfixturevalue("postgres").url
    if broker == "redis":
        env["NOTIFY_BROKER_URL"] = request.getfixturevalue("redis_server").url
    return make_server(**env)


async def test_every_backend_stores_orders_pushes_and_resumes(backend: ServerProcess) -> None:
    """On every backend: pushed in seq order, listed, resumed, marked read, SMS de-duplicated, broadcast."""
    user = new_user()
    async with backend.ws(backend.token(user)) as ws:
        assert (await recv_json(ws))["last_seq"] == 0
        for i in range(3):
            assert backend.publish(user, f"n{i}").status_code == 201
        got = [(await recv_json(ws))["data"] for _ in range(3)]
        assert [n["seq"] for n in got] == [1, 2, 3]
        await ws.send(json.dumps({"type": "mark_read", "notification_id": got[0]["id"]}))
        assert (await recv_json(ws))["unread_count"] == 2
        sms = {"user_id": user, "verification_id": "ver_9", "service": "Google", "code": RECORD.code("111222"),
               "message_id": "m9"}
        first = httpx.post(f"{backend.url}/api/sms/inbound", json=sms, headers=backend.admin_headers())
        again = httpx.post(f"{backend.url}/api/sms/inbound", json=sms, headers=backend.admin_headers())
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        assert (await recv_json(ws))["data"]["seq"] == 4
        broadcast = httpx.post(f"{backend.url}/api/notifications", headers=backend.admin_headers(),
                               json={"broadcast": True, "title": "everyone"})
        assert broadcast.status_code == 201 and broadcast.json()["count"] >= 1
        assert (await recv_json(ws))["data"]["title"] == "everyone"
    async with backend.ws(backend.token(user), query="since_seq=2") as ws:
        await recv_json(ws)
        assert [(await recv_json(ws))["data"]["seq"] for _ in range(3)] == [3, 4, 5]
        assert (await recv_json(ws))["type"] == "resumed"
    listing = httpx.get(f"{backend.url}/api/notifications", headers=backend.user_headers(user)).json()
    assert [n["seq"] for n in listing["items"]] == [5, 4, 3, 2, 1] and listing["unread_count"] == 4


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_migrations_build_exactly_the_models(database: str, request: pytest.FixtureRequest, tmp_path) -> None:
    """Alembic's head builds the schema the code declares, with nothing missing or extra."""
    url = (request.getfixturevalue("postgres").url if database == "postgres"
           else f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    engine = create_async_engine(url)
    try:
        await upgrade_schema(engine)
        await upgrade_schema(engine)  # a second run finds nothing to do
        async with engine.connect() as connection:
            diff = await connection.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    finally:
        await engine.dispose()
    assert diff == []


async def test_seq_is_gap_free_with_eight_publishers_in_two_processes(make_server, postgres, redis_server) -> None:
    """8 publishers on 2 nodes × 500 notifications to one user: seq is exactly 1…4000, and a tab on one
    node receives all 4,000 once each, in order (no per-user cap: the pruner keeps them all)."""
    env = cluster_env(postgres, redis_server, NOTIFY_MAX_PER_USER=0)
    a, b = make_server(**env), make_server(**env)
    user = new_user()
    async with a.ws(a.token(user)) as ws, httpx.AsyncClient(timeout=60) as client:
        await recv_json(ws)

        async def publisher(node: ServerProcess, index: int) -> None:
            for i in range(500):
                await publish_async(client, node, user, f"p{index}-{i}")

        publishing = asyncio.gather(*(publisher(a if i % 2 else b, i) for i in range(8)))
        seqs = [(await recv_json(ws, timeout=60))["data"]["seq"] for _ in range(4000)]
        await publishing
    assert seqs == list(range(1, 4001))
    stored, before = [], None
    while True:
        query = f"?limit=200&before_seq={before}" if before else "?limit=200"
        page = httpx.get(f"{a.url}/api/notifications{query}", headers=a.user_headers(user)).json()
        stored += [n["seq"] for n in page["items"]]
        if not page["has_more"]:
            break
        before = page["items"][-1]["seq"]
    assert sorted(stored) == list(range(1, 4001))


async def test_tabs_on_two_nodes_get_every_notification_once(make_server, postgres, redis_server) -> None:
    """A user's tab on node A and tab on node B each get what is published via A and via B, once, in order."""
    env = cluster_env(postgres, redis_server)
    a, b = make_server(**env), make_server(**env)
    user = new_user()
    async with a.ws(a.token(user)) as on_a, b.ws(b.token(user)) as on_b:
        await recv_json(on_a)
        await recv_json(on_b)
        for i in range(10):
            assert (a if i % 2 == 0 else b).publish(user, f"n{i}").status_code == 201
        for tab in (on_a, on_b):
            got = [(await recv_json(tab))["data"] for _ in range(10)]
            assert [n["seq"] for n in got] == list(range(1, 11))
            assert [n["title"] for n in got] == [f"n{i}" for i in range(10)]
            await tab.send("ping")
            assert await asyncio.wait_for(tab.recv(), 5) == "pong"  # nothing twice


async def test_cluster_stats_agree_and_a_dead_node_drops_out(make_server, postgres, redis_server) -> None:
    """Both nodes report the same cluster totals and node list; a SIGKILLed node leaves it after the TTL."""
    env = cluster_env(postgres, redis_server, NOTIFY_NODE_TTL_S=2)
    a, b = make_server(**env), make_server(**env)
    users = [new_user() for _ in range(3)]
    async with a.ws(a.token(users[0])) as t1, a.ws(a.token(users[1])) as t2, b.ws(b.token(users[2])) as t3:
        for tab in (t1, t2, t3):
            await recv_json(tab)

        def agreed() -> dict | None:
            views = [httpx.get(f"{n.url}/ws/stats").json() for n in (a, b)]
            keys = [(v["total_connections"], v["connected_users"], [n["id"] for n in v["nodes"]]) for v in views]
            return views[0] if keys[0] == keys[1] and keys[0][0] == 3 and len(keys[0][2]) == 2 else None

        view = await eventually(agreed)
        assert view["connected_users"] == 3
        assert sorted(n["connections"] for n in view["nodes"]) == [1, 2]
        b.stop(signal.SIGKILL)
        nodes = await eventually(lambda: (v := httpx.get(f"{a.url}/ws/stats").json()) and len(v["nodes"]) == 1
                                and v, timeout=10)
        assert nodes["total_connections"] == 2


async def test_connection_limit_holds_across_the_cluster(make_server, postgres, redis_server) -> None:
    """With a limit of 2 per user, one tab on each node fills it: a third on either node gets 4429."""
    env = cluster_env(postgres, redis_server, NOTIFY_MAX_CONNECTIONS_PER_USER=2)
    a, b = make_server(**env), make_server(**env)
    user = new_user()
    async with a.ws(a.token(user)) as one, b.ws(b.token(user)) as two:
        await recv_json(one)
        await recv_json(two)
        for node in (a, b):
            async with node.ws(node.token(user)) as third:
                code, _ = await expect_close(third)
            assert code == 4429
    async with b.ws(b.token(user)) as again:  # released when closed
        assert (await recv_json(again))["type"] == "connected"


async def test_redis_outage_loses_nothing(make_server, postgres, redis_server) -> None:
    """Redis stopped: publishes are stored and acknowledged, the publishing node's tabs still get them,
    /readyz stays 200 with the broker reported degraded; when Redis returns, the other node's tabs catch
    up — nothing lost, nothing twice."""
    env = cluster_env(postgres, redis_server)
    a, b = make_server(**env), make_server(**env)
    user = new_user()
    async with a.ws(a.token(user)) as on_a, b.ws(b.token(user)) as on_b:
        await recv_json(on_a)
        await recv_json(on_b)
        redis_server.stop()
        ready = await eventually(lambda: (r := httpx.get(f"{a.url}/readyz")).json()["broker"] != "ok" and r)
        assert ready.status_code == 200 and ready.json()["broker"].startswith("degraded")
        stats = httpx.get(f"{a.url}/ws/stats").json()
        assert stats["status"] == "degraded" and stats["broker_state"]["up"] is False
        for i in range(3):
            assert a.publish(user, f"during outage {i}").status_code == 201
        assert [(await recv_json(on_a))["data"]["seq"] for _ in range(3)] == [1, 2, 3]
        stopped_at = time.monotonic()
        redis_server.start()
        got_b = [(await recv_json(on_b, timeout=30))["data"]["seq"] for _ in range(3)]
        recovered_s = time.monotonic() - stopped_at
        assert got_b == [1, 2, 3]
        await eventually(lambda: httpx.get(f"{b.url}/readyz").json()["broker"] == "ok")
        assert b.publish(user, "after").status_code == 201
        for tab in (on_a, on_b):
            assert (await recv_json(tab))["data"]["seq"] == 4
            await tab.send("ping")
            assert await asyncio.wait_for(tab.recv(), 5) == "pong"
    for node in (a, b):  # one line when the broker goes down and one when it is back, whatever was published
        log = node.output()
        assert "Traceback" not in log
        assert log.count("broker down:") == 1 and log.count("broker up: redis reachable again") == 1, log[-3000:]
    print(f"\nredis outage: 0 lost; other node's tab caught up {recovered_s:.2f}s after Redis restarted")


async def test_postgres_outage_answers_503_and_recovers(make_server, postgres) -> None:
    """PostgreSQL refusing connections: publishing answers 503 JSON, open WebSockets stay up, /readyz is 503,
    a new WebSocket (which must read its unread count and last seq) is closed 1011 without a traceback;
    when it returns, publishing and delivery work again."""
    srv = make_server(NOTIFY_DATABASE_URL=postgres.url)
    user = new_user()
    async with srv.ws(srv.token(user)) as ws:
        await recv_json(ws)
        postgres.cut()
        try:
            response = srv.publish(user, "while down")
            assert response.status_code == 503
            assert response.json()["code"] == "unavailable" and "database" in response.json()["detail"]
            assert httpx.get(f"{srv.url}/readyz").status_code == 503
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 5) == "pong"
            async with srv.ws(srv.token(user)) as newcomer:
                code, reason = await expect_close(newcomer)
                assert code == 1011 and reason.startswith("database unavailable"), (code, reason)
        finally:
            postgres.restore()
        started = time.monotonic()
        await eventually(lambda: srv.publish(user, "back").status_code == 201)
        recovered_s = time.monotonic() - started
        assert (await recv_json(ws))["data"]["title"] == "back"
    assert "Traceback" not in srv.output()
    print(f"\npostgres outage: open sockets kept; publishing recovered {recovered_s:.2f}s after it returned")


async def test_sigkilled_node_clients_resume_elsewhere(make_server, postgres, redis_server) -> None:
    """A node killed with SIGKILL: its client reconnects to the other node with since_seq and misses nothing."""
    env = cluster_env(postgres, redis_server)
    a, b = make_server(**env), make_server(**env)
    user = new_user()
    last_seen = 0
    async with b.ws(b.token(user)) as on_b:
        await recv_json(on_b)
        for i in range(3):
            a.publish(user, f"before {i}")
        for _ in range(3):
            last_seen = (await recv_json(on_b))["data"]["seq"]
        b.stop(signal.SIGKILL)
        code, _ = await expect_close(on_b)
        assert code is None  # no closing handshake: the process is gone
    for i in range(5):
        assert a.publish(user, f"after {i}").status_code == 201
    async with a.ws(a.token(user), query=f"since_seq={last_seen}") as on_a:
        await recv_json(on_a)
        assert [(await recv_json(on_a))["data"]["seq"] for _ in range(5)] == [4, 5, 6, 7, 8]
        assert (await recv_json(on_a))["type"] == "resumed"


async def test_serve_with_two_workers_forms_a_cluster(make_server, postgres, redis_server) -> None:
    """`notify serve --workers 2` with Redis: both workers heartbeat as nodes and every tab gets each push."""
    srv = make_server(args=("--workers", "2"), **cluster_env(postgres, redis_server))
    await eventually(lambda: len(httpx.get(f"{srv.url}/ws/stats").json()["nodes"]) == 2)
    user = new_user()
    tabs = [await srv.ws(srv.token(user)).__aenter__() for _ in range(6)]
    try:
        for tab in tabs:
            await recv_json(tab)
        assert srv.publish(user, "to all workers").status_code == 201
        for tab in tabs:
            assert (await recv_json(tab))["data"]["title"] == "to all workers"
    finally:
        for tab in tabs:
            await tab.close()


def test_notify_db_upgrade_migrates_postgres(postgres) -> None:
    """`notify db upgrade` brings an empty PostgreSQL database to the latest revision; `db current` says so."""
    def notify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli", "db", *args, "--database-url", postgres.url],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert notify("current").stdout.strip() == "none"
    upgraded = notify("upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    head = notify("current").stdout.strip()
    assert head != "none" and head in upgraded.stdout
