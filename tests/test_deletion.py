"""Deleting, marking several read, marking unread and erasing a user, against real servers: the answers,
the ``deleted`` / ``read`` / ``unread`` frames in every tab, resumes across deleted rows (raw and with the
Python client's Subscriber), erasure checked by SQL on SQLite and PostgreSQL, and ``notify delete`` /
``notify erase``."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.ext.asyncio import create_async_engine

from cli.subscriber import _status as cli_status
from namaskah_notify.brokers.messages import CatchUp, Push
from namaskah_notify.client import Deleted, NotificationReceived, Read, Resumed, Resynced, Subscriber, Unread
from namaskah_notify.hub import Connection
from namaskah_notify.models import metadata, sms_fake_inbox
from namaskah_notify.schemas import Content, Notification
from namaskah_notify.stats import Stats

from .conftest import ROOT, ServerProcess, eventually, new_user, recv_json, recv_until
from .test_cluster import cluster_env
from .test_sms import code8, fake_sms, start_verification
from .test_websocket import expect_close


def delete(server: ServerProcess, user: str, path: str = "", **params: str) -> httpx.Response:
    return httpx.delete(f"{server.url}/api/notifications{path}", params=params, headers=server.user_headers(user),
                        timeout=10)


def post(server: ServerProcess, user: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.post(f"{server.url}/api/notifications{path}", json=body, headers=server.user_headers(user),
                      timeout=10)


def publish(server: ServerProcess, user: str, count: int) -> list[dict[str, Any]]:
    records = []
    for index in range(count):
        response = server.publish(user, f"n{index + 1}")
        assert response.status_code == 201, response.text
        records.append(response.json())
    return records


def listed(server: ServerProcess, user: str) -> dict[str, Any]:
    return httpx.get(f"{server.url}/api/notifications", headers=server.user_headers(user), timeout=10).json()


async def nothing_more(ws: Any, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await recv_json(ws, wait)


async def test_delete_one_reaches_every_tab_and_is_the_owners_only(server: ServerProcess) -> None:
    """DELETE /api/notifications/{id} answers 204 and every tab of the owner gets ``deleted`` with the id and
    the unread count; someone else's id, or an unknown one, is 404 and changes nothing."""
    user, other = new_user("owner"), new_user("other")
    first, second = publish(server, user, 2)
    async with server.ws(server.token(user)) as one, server.ws(server.token(user)) as two, \
            server.ws(server.token(other)) as bystander:
        for tab in (one, two, bystander):
            await recv_until(tab, "connected")
        assert delete(server, other, f"/{first['id']}").status_code == 404
        assert delete(server, user, "/notif_not_there").json()["code"] == "not_found"
        answer = delete(server, user, f"/{first['id']}")
        assert answer.status_code == 204 and answer.content == b""
        for tab in (one, two):
            assert await recv_json(tab) == {"type": "deleted", "notification_ids": [first["id"]], "all": False,
                                            "unread_count": 1}
        assert delete(server, user, f"/{first['id']}").status_code == 404  # gone: a second delete is 404
        await nothing_more(bystander)
    page = listed(server, user)
    assert [n["id"] for n in page["items"]] == [second["id"]]
    assert page["unread_count"] == 1 and page["last_seq"] == 2
    assert server.publish(user, "next").json()["seq"] == 3  # a deleted seq is never reused


async def test_delete_read_ones_then_all(server: ServerProcess) -> None:
    """``?read=true`` deletes only the read ones (their ids in the frame); without it everything goes and the
    frame says ``all``; both answer ``{"deleted", "unread_count"}``; the sequence carries on."""
    user = new_user("clear")
    records = publish(server, user, 4)
    assert post(server, user, "/read", {"ids": [records[0]["id"], records[2]["id"]]}).status_code == 200
    async with server.ws(server.token(user)) as tab:
        await recv_until(tab, "connected")
        answer = delete(server, user, read="true")
        assert answer.json() == {"deleted": 2, "unread_count": 2}
        frame = await recv_json(tab)
        assert sorted(frame.pop("notification_ids")) == sorted([records[0]["id"], records[2]["id"]])
        assert frame == {"type": "deleted", "all": False, "unread_count": 2}
        assert delete(server, user, read="true").json() == {"deleted": 0, "unread_count": 2}
        await nothing_more(tab)  # nothing deleted: no frame
        assert delete(server, user, read="false").json() == {"deleted": 2, "unread_count": 0}
        assert await recv_json(tab) == {"type": "deleted", "notification_ids": [], "all": True, "unread_count": 0}
    assert listed(server, user)["items"] == []
    assert delete(server, user, read="yes").status_code == 422
    assert server.publish(user, "after").json()["seq"] == 5


async def test_deleting_thousands_sends_the_ids_in_frames_of_a_thousand(make_server) -> None:
    """2,100 read notifications (seeded with SQL) deleted with ``?read=true``: three ``deleted`` frames of at
    most 1,000 ids, every id once, the unread ones kept."""
    server = make_server()
    user = new_user("many")
    publish(server, user, 1)
    with sqlite3.connect(server.data_dir / "notify.db", timeout=30) as db:
        db.execute("""
            WITH RECURSIVE k(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM k WHERE i < 2101)
            INSERT INTO notifications (id, user_id, seq, title, message, type, meta, created_at, is_read, read_at,
                                       priority, replaced)
            SELECT printf('notif_seed%06d', i), ?, i, 'seeded', '', 'info', '{}',
                   strftime('%Y-%m-%d %H:%M:%f', 'now'), 1, strftime('%Y-%m-%d %H:%M:%f', 'now'), 'normal', 0 FROM k
        """, (user,))
        db.execute("UPDATE user_seqs SET last_seq = 2101 WHERE user_id = ?", (user,))
    db.close()
    async with server.ws(server.token(user)) as tab:
        await recv_until(tab, "connected")
        assert delete(server, user, read="true").json() == {"deleted": 2100, "unread_count": 1}
        frames = [await recv_json(tab) for _ in range(3)]
    assert [len(f["notification_ids"]) for f in frames] == [1000, 1000, 100]
    ids = [i for f in frames for i in f["notification_ids"]]
    assert len(set(ids)) == 2100 and all(f["unread_count"] == 1 and f["all"] is False for f in frames)
    assert listed(server, user)["last_seq"] == 2101


async def test_read_several_and_unread_reach_every_tab(server: ServerProcess) -> None:
    """POST /api/notifications/read marks those of the ids that are the caller's and unread (one ``read``
    frame with them); POST /api/notifications/{id}/unread makes one unread again (an ``unread`` frame);
    repeats change nothing and send nothing; bad bodies are 422, another's id 404."""
    user, other = new_user("reader"), new_user("other")
    mine = publish(server, user, 3)
    theirs = publish(server, other, 1)[0]
    async with server.ws(server.token(user)) as one, server.ws(server.token(user)) as two:
        for tab in (one, two):
            await recv_until(tab, "connected")
        ids = [mine[0]["id"], mine[1]["id"], theirs["id"], "notif_unknown", mine[0]["id"]]
        answer = post(server, user, "/read", {"ids": ids})
        assert answer.status_code == 200
        assert answer.json() == {"notification_ids": [mine[0]["id"], mine[1]["id"]], "unread_count": 1}
        for tab in (one, two):
            assert await recv_json(tab) == {"type": "read", "notification_ids": [mine[0]["id"], mine[1]["id"]],
                                            "all": False, "unread_count": 1}
        assert post(server, user, "/read", {"ids": ids}).json() == {"notification_ids": [], "unread_count": 1}
        unread = post(server, user, f"/{mine[0]['id']}/unread")
        assert unread.status_code == 200
        assert unread.json()["is_read"] is False and unread.json()["read_at"] is None
        for tab in (one, two):
            assert await recv_json(tab) == {"type": "unread", "notification_ids": [mine[0]["id"]],
                                            "unread_count": 2}
        assert post(server, user, f"/{mine[0]['id']}/unread").status_code == 200  # already unread: no frame
        assert post(server, user, f"/{theirs['id']}/unread").status_code == 404
        await nothing_more(one)
    assert listed(server, other)["unread_count"] == 1  # untouched
    for body in ({"ids": []}, {"ids": ["x"] * 1001}, {"ids": [""]}, {"ids": [1]}, {"id": "x"}, [1]):
        assert post(server, user, "/read", body).status_code == 422, body


async def test_resume_across_deleted_rows_sends_the_rest_and_does_not_stall(server: ServerProcess) -> None:
    """A tab resuming across deleted notifications gets the ones still stored, ``resumed`` with the latest
    seq, and then live ones at once (no wait on what is no longer stored)."""
    user = new_user("gaps")
    records = publish(server, user, 5)
    for record in (records[2], records[4]):  # seq 3, and the latest, seq 5
        assert delete(server, user, f"/{record['id']}").status_code == 204
    async with server.ws(server.token(user), query="since_seq=1") as tab:
        await recv_until(tab, "connected")
        assert [(await recv_json(tab))["data"]["seq"] for _ in range(2)] == [2, 4]
        assert await recv_json(tab) == {"type": "resumed", "replayed": 2, "last_seq": 5}
        server.publish(user, "live")
        assert (await recv_json(tab, 2))["data"]["seq"] == 6


# -- erasure -----------------------------------------------------------------------------------------
async def mentions(url: str, user: str, verification_ids: list[str]) -> dict[str, int]:
    """Rows of every table that mention ``user`` in any column (as text), plus the fake-inbox rows of the
    user's verifications (which name only the verification)."""
    engine = create_async_engine(url)
    found: dict[str, int] = {}
    try:
        async with engine.connect() as connection:
            for table in metadata.sorted_tables:
                columns = [cast(column, Text).like(f"%{user}%") for column in table.c]
                if table is sms_fake_inbox:
                    columns.append(sms_fake_inbox.c.verification_id.in_(verification_ids))
                query = select(func.count()).select_from(table).where(or_(*columns))
                found[table.name] = int((await connection.execute(query)).scalar() or 0)
    finally:
        await engine.dispose()
    return found


async def erase_and_check(server: ServerProcess, database_url: str) -> None:
    user = new_user("erased")
    assert httpx.post(f"{server.url}/api/admin/users/{user}/disconnect", json={"revoke_tokens": True},
                      headers=server.admin_headers(), timeout=10).status_code == 200
    await asyncio.sleep(1.1)  # a token issued in a later second than the revocation
    publish(server, user, 3)
    verification = start_verification(server, user, provider="fake")
    assert fake_sms(server, verification["id"], f"Your code is {code8()}", message_id="m1").status_code == 201
    # The poller stores the code's notification: let it finish first (an erasure racing a poll in flight is a
    # known limit: the poll's notification can land after the erasure).
    await eventually(lambda: any(item["type"] == "sms_received" for item in listed(server, user)["items"]),
                     timeout=15)
    keyed = httpx.post(f"{server.url}/api/notifications", json={"user_id": new_user("someone"), "title": "hi"},
                       headers={"Authorization": f"Bearer {server.token(user, admin=True)}",
                                "Idempotency-Key": "erase-me"}, timeout=10)
    assert keyed.status_code == 201, keyed.text
    before = await mentions(database_url, user, [verification["id"]])
    assert all(before[t] for t in ("notifications", "user_seqs", "verifications", "sms_fake_inbox",
                                   "user_revocations", "idempotency_keys")), before
    async with server.ws(server.token(user)) as tab:
        await recv_until(tab, "connected")
        await eventually(lambda: asyncio.run(mentions(database_url, user, []))["users"], timeout=10)
        answer = httpx.delete(f"{server.url}/api/admin/users/{user}", headers=server.admin_headers(), timeout=10)
        assert answer.status_code == 200, answer.text
        assert await expect_close(tab) == (1008, "user erased")
    counts = answer.json()["deleted"]
    assert counts["notifications"] >= 3 and counts["verifications"] == 1 and counts["sms_fake_inbox"] >= 1
    assert counts["user_seqs"] == counts["user_revocations"] == counts["idempotency_keys"] == counts["users"] == 1
    await asyncio.sleep(1.2)  # whatever the server still had to record about the user has been
    after = await mentions(database_url, user, [verification["id"]])
    assert after == dict.fromkeys(after, 0), after
    assert server.publish(user, "a new start").json()["seq"] == 1
    again = httpx.delete(f"{server.url}/api/admin/users/{new_user('never')}", headers=server.admin_headers())
    assert again.status_code == 200 and set(again.json()["deleted"].values()) == {0}
    assert httpx.delete(f"{server.url}/api/admin/users/{user}", headers=server.user_headers(user)).status_code == 403


async def test_erasure_leaves_nothing_of_the_user_on_sqlite(make_server) -> None:
    """DELETE /api/admin/users/{id} removes every row about the user from every table (checked by SQL in the
    server's SQLite file), closes their tab with 1008 "user erased", and their next notification is seq 1;
    an unknown user erases nothing; a user token is 403."""
    server = make_server(NOTIFY_SMS_FAKE_PROVIDER="true")
    await erase_and_check(server, f"sqlite+aiosqlite:///{server.data_dir / 'notify.db'}")


async def test_erasure_leaves_nothing_of_the_user_on_postgres(make_server, postgres) -> None:
    """The same on PostgreSQL, with the Redis-free in-process broker."""
    server = make_server(NOTIFY_SMS_FAKE_PROVIDER="true", NOTIFY_DATABASE_URL=postgres.url)
    await erase_and_check(server, postgres.url)


# -- the CLI -----------------------------------------------------------------------------------------
def notify(server: ServerProcess, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    return subprocess.run([sys.executable, "-m", "cli", *args, "--url", server.url, "--data-dir",
                           str(server.data_dir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                          input=stdin)


def test_cli_delete_and_erase(server: ServerProcess) -> None:
    """``notify delete ID --user`` deletes one (a second time exits 1 with the 404), ``--read`` and ``--all``
    print what went; ``notify erase`` asks first (no: exit 1, nothing erased), ``--yes --json`` erases."""
    user = new_user("cli")
    records = publish(server, user, 3)
    one = notify(server, "delete", records[0]["id"], "--user", user)
    assert one.returncode == 0 and f"deleted {records[0]['id']}" in one.stdout
    twice = notify(server, "delete", records[0]["id"], "--user", user)
    assert twice.returncode == 1 and "404" in twice.stderr
    assert notify(server, "delete", "--read", "--user", user).stdout.startswith("deleted 0 read notifications")
    everything = notify(server, "delete", "--all", "--token", server.token(user), "--json")
    assert json.loads(everything.stdout) == {"deleted": 2, "unread_count": 0}
    assert notify(server, "delete", "--user", user).returncode == 1  # nothing said what to delete
    publish(server, user, 1)
    refused = notify(server, "erase", user, stdin="n\n")
    assert refused.returncode == 1 and listed(server, user)["items"]
    erased = notify(server, "erase", user, "--yes", "--json")
    assert erased.returncode == 0, erased.stderr
    assert json.loads(erased.stdout)["deleted"]["notifications"] == 1
    assert listed(server, user)["last_seq"] == 0


async def test_python_subscriber_resumes_across_deleted_ones_and_reports_deletions(make_server) -> None:
    """The Python client's Subscriber takes a seq the server no longer stores as deleted, not lost: a replay
    and a resync over HTTP (``NOTIFY_REPLAY_LIMIT`` 4) both pass over deleted ones, the latest included, then
    live ones follow; a deletion arrives as a ``Deleted`` event, marking read and unread as ``Read`` and
    ``Unread``."""
    server = make_server(NOTIFY_REPLAY_LIMIT="4")
    user = new_user("subscriber")
    records = publish(server, user, 5)
    for record in (records[1], records[4]):  # seq 2, and the latest, seq 5
        assert delete(server, user, f"/{record['id']}").status_code == 204
    token = server.token(user)
    async with Subscriber(server.url, token, since_seq=1) as sub:  # a replay: 3, 4
        events = sub.events()
        seen = [event async for event in _until(events, Resumed)]
        assert [e.seq for e in seen if isinstance(e, NotificationReceived)] == [3, 4]
    async with Subscriber(server.url, token, since_seq=0) as sub:  # too many to replay: over HTTP
        events = sub.events()
        seen = [event async for event in _until(events, Resynced)]
        assert [e.seq for e in seen if isinstance(e, NotificationReceived)] == [1, 3, 4]
        assert seen[-1] == Resynced(3, 5)
        server.publish(user, "live")
        live = await asyncio.wait_for(anext(events), 5)
        assert isinstance(live, NotificationReceived) and (live.seq, live.replayed) == (6, False)
        assert delete(server, user, f"/{records[0]['id']}").status_code == 204
        deleted = await asyncio.wait_for(anext(events), 5)
        assert deleted == Deleted([records[0]["id"]], False, 3)
        marked = httpx.post(f"{server.url}/api/notifications/read", json={"ids": [records[2]["id"]]},
                            headers=server.user_headers(user))
        assert marked.status_code == 200
        assert await asyncio.wait_for(anext(events), 5) == Read([records[2]["id"]], False, 2)
        assert post(server, user, f"/{records[2]['id']}/unread").status_code == 200
        assert await asyncio.wait_for(anext(events), 5) == Unread([records[2]["id"]], 3)


async def _until(events: Any, kind: type) -> Any:
    while True:
        event = await asyncio.wait_for(anext(events), 5)
        yield event
        if isinstance(event, kind):
            return


async def test_erasure_closes_the_users_tabs_on_every_node(make_server, postgres, redis_server) -> None:
    """Erased through node A, the user's tabs on A and on B close with 1008 "user erased"; another user's
    tab stays open; the next notification through B is seq 1."""
    env = cluster_env(postgres, redis_server)
    a, b = make_server(**env), make_server(**env)
    user, bystander = new_user("erased"), new_user("stays")
    publish(a, user, 2)
    async with a.ws(a.token(user)) as on_a, b.ws(b.token(user)) as on_b, b.ws(b.token(bystander)) as other:
        for tab in (on_a, on_b, other):
            await recv_until(tab, "connected")
        answer = httpx.delete(f"{a.url}/api/admin/users/{user}", headers=a.admin_headers(), timeout=10)
        assert answer.json()["deleted"]["notifications"] == 2
        for tab in (on_a, on_b):
            assert await expect_close(tab) == (1008, "user erased")
        await other.send("ping")
        assert await asyncio.wait_for(other.recv(), 5) == "pong"
    assert b.publish(user, "again").json()["seq"] == 1


async def test_a_tab_behind_deleted_rows_catches_up_without_waiting() -> None:
    """The hub, without sockets: a connection told to catch up to a seq whose rows were deleted, and then
    pushed a seq past such a hole, sends what is stored and moves on, with no fetch left pending."""
    sent: list[str] = []
    fetches: list[tuple[int, int | None]] = []
    stored = {2: "two", 5: "five"}  # 3, 4 and 6 were deleted

    async def fetch(user_id: str, after: int, upto: int | None, limit: int) -> list[Notification]:
        fetches.append((after, upto))
        return [Notification(f"notif_{s}", user_id, s, Content(title), datetime.now(UTC))
                for s, title in sorted(stored.items()) if after < s <= (upto or s)][:limit]

    async def send(text: str) -> None:
        sent.append(text)

    async def close(code: int, reason: str) -> None:
        raise AssertionError(f"closed {code} {reason}")

    connection = Connection("u", send, close, fetch=fetch, stats=Stats(), queue_size=16, replay_limit=100)
    connection.last_seq = 1
    connection.start_sender()
    connection.enqueue(CatchUp("u", 4))
    connection.enqueue(Push("u", 7, time.time(), '{"type":"notification","data":{"seq":7}}'))
    for _ in range(100):
        if connection.last_seq == 7:
            break
        await asyncio.sleep(0.01)
    assert [json.loads(f)["data"]["seq"] for f in sent] == [2, 5, 7]
    assert connection.last_seq == 7 and fetches == [(1, 4), (4, 6)]
    await connection.finish()


def test_listen_prints_deletions() -> None:
    """``notify listen`` turns a ``deleted`` event into one status line: the ids (five at most), or all."""
    lines: list[tuple[str, str]] = []
    report = lambda kind, text: lines.append((kind, text))  # noqa: E731
    cli_status(Deleted([f"notif_{i}" for i in range(7)], False, 3), report, "10", refreshable=True)
    cli_status(Deleted([], True, 0), report, "10", refreshable=True)
    assert lines == [("deleted", "deleted notif_0, notif_1, notif_2, notif_3, notif_4 and 2 more (unread 3)"),
                     ("deleted", "deleted all notifications (unread 0)")]
