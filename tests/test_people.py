"""Preferences kept by the server and synced to every tab; presence across the cluster."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from namaskah_notify.preferences import Preferences

from .conftest import ServerProcess, eventually, new_user, recv_json, recv_until
from .test_cluster import cluster_env


def put(server: ServerProcess, user: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(f"{server.url}/api/preferences", json=body, headers=server.user_headers(user))


def presence(server: ServerProcess, *users: str, as_user: str | None = None) -> httpx.Response:
    headers = server.user_headers(as_user) if as_user else server.admin_headers()
    return httpx.get(f"{server.url}/api/presence", params=[("user_id", u) for u in users], headers=headers)


QUIET = {"start": "22:00", "end": "07:00", "tz": "Asia/Kolkata"}  # UTC+5:30, no daylight saving


@pytest.mark.parametrize(("utc", "kind", "priority", "silent"), [
    ("2026-12-01T16:29:00", "info", "normal", False),   # 21:59 in Kolkata
    ("2026-12-01T16:30:00", "info", "normal", True),    # 22:00: quiet hours begin
    ("2026-12-01T20:00:00", "info", "low", True),       # 01:30, across midnight
    ("2026-12-02T01:29:00", "info", "normal", True),    # 06:59
    ("2026-12-02T01:30:00", "info", "normal", False),   # 07:00: over
    ("2026-12-01T20:00:00", "info", "high", False),     # high priority breaks through quiet hours
    ("2026-12-01T12:00:00", "marketing", "high", True),  # a muted type is silent at any hour, any priority
])
def test_what_silences_a_notification(utc: str, kind: str, priority: str, silent: bool) -> None:
    preferences = Preferences.from_wire({"muted_types": ["marketing"], "quiet_hours": QUIET})
    moment = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert preferences.silences(kind, priority, moment) is silent
    daytime = Preferences.from_wire({"quiet_hours": {"start": "09:00", "end": "17:00", "tz": "UTC"}})
    assert daytime.silences("info", "normal", datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert not daytime.silences("info", "normal", datetime(2026, 12, 1, 18, tzinfo=UTC))


async def test_preferences_are_kept_synced_to_every_tab_and_silence_muted_types(server: ServerProcess) -> None:
    user = new_user()
    assert httpx.get(f"{server.url}/api/preferences", headers=server.user_headers(user)).json() == {
        "muted_types": [], "sound": True, "desktop": True, "quiet_hours": None}
    async with server.ws(server.token(user)) as one, server.ws(server.token(user)) as two:
        await recv_json(one)
        await recv_json(two)
        later = datetime.now(UTC) + timedelta(hours=6)  # quiet hours that do not cover now
        quiet = {"start": f"{later.hour:02d}:00", "end": f"{(later.hour + 1) % 24:02d}:00", "tz": "UTC"}
        body = {"muted_types": ["marketing"], "sound": False, "desktop": True, "quiet_hours": quiet}
        response = put(server, user, body)
        assert response.status_code == 200 and response.json() == body, response.text
        for tab in (one, two):
            assert (await recv_until(tab, "preferences"))["preferences"] == body
        server.publish(user, "Sale!", type="marketing")
        server.publish(user, "Your code", type="sms_received")
        for tab in (one, two):
            muted = (await recv_until(tab, "notification"))["data"]
            loud = (await recv_until(tab, "notification"))["data"]
            assert muted["title"] == "Sale!" and muted["silent"] is True
            assert loud["title"] == "Your code" and "silent" not in loud
    listed = httpx.get(f"{server.url}/api/notifications", headers=server.user_headers(user)).json()
    assert listed["unread_count"] == 2 and len(listed["items"]) == 2  # stored, listed and counted all the same
    assert httpx.get(f"{server.url}/api/preferences", headers=server.user_headers(user)).json() == body
    assert put(server, user, {}).json()["muted_types"] == []  # a PUT replaces the whole object


@pytest.mark.parametrize(("body", "field"), [
    ({"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Mars/Olympus"}}, "tz"),
    ({"quiet_hours": {"start": "24:00", "end": "07:00", "tz": "UTC"}}, "start"),
    ({"quiet_hours": {"start": "22:00", "end": "7am", "tz": "UTC"}}, "end"),
    ({"muted_types": [f"type{i}" for i in range(101)]}, "muted_types"),
    ({"sound": "yes"}, "sound"),
    ({"colour": "red"}, "colour"),
])
def test_bad_preferences_name_the_field(server: ServerProcess, body: dict[str, Any], field: str) -> None:
    response = put(server, new_user(), body)
    assert response.status_code == 422, response.text
    assert field in json.dumps(response.json()["detail"])


async def test_presence_of_oneself_and_for_an_admin_and_last_seen_after_a_restart(make_server) -> None:
    server = make_server()
    alice, bob = new_user("alice"), new_user("bob")
    assert presence(server, bob, as_user=alice).status_code == 403
    async with server.ws(server.token(alice)) as one, server.ws(server.token(alice)) as two:
        await recv_json(one)
        await recv_json(two)
        mine = presence(server, alice, as_user=alice).json()["users"][alice]
        assert mine["online"] is True and mine["connections"] == 2
    await asyncio.sleep(1.5)  # a closed connection's time is recorded within a second
    seen = presence(server, alice, bob).json()["users"]
    assert seen[alice]["online"] is False and seen[alice]["last_seen"] is not None
    assert seen[bob] == {"online": False, "connections": 0, "last_seen": None}
    server.stop()
    server.start()
    assert presence(server, alice).json()["users"][alice]["last_seen"] == seen[alice]["last_seen"]
    assert presence(server, *[f"u{i}" for i in range(1001)]).status_code == 422


async def test_presence_and_preferences_across_two_nodes(make_server, postgres, redis_server) -> None:
    env = cluster_env(postgres, redis_server)
    a, b = make_server(**env), make_server(**env)
    user = new_user()
    async with b.ws(b.token(user)) as tab:
        await recv_json(tab)
        answer = await eventually(lambda: (p := presence(a, user).json()["users"][user])["online"] and p)
        assert answer["connections"] == 1
        assert put(a, user, {"muted_types": ["chat"]}).status_code == 200  # changed on a, the tab is on b
        assert (await recv_until(tab, "preferences"))["preferences"]["muted_types"] == ["chat"]
        b.publish(user, "hi", type="chat")  # b stores it: b must know the new preferences
        assert (await recv_until(tab, "notification"))["data"]["silent"] is True


async def test_notify_presence_prints_who_is_online(server: ServerProcess) -> None:
    from .test_cli import notify

    user = new_user()
    async with server.ws(server.token(user)) as tab:
        await recv_json(tab)
        result = await asyncio.to_thread(notify, "presence", user, "nobody-here", "--json", "--url", server.url,
                                         "--data-dir", str(server.data_dir))
    assert result.returncode == 0, result.stderr
    users = json.loads(result.stdout)["users"]
    assert users[user]["online"] is True and users["nobody-here"]["online"] is False


def test_the_python_client_reads_and_writes_preferences_and_presence(server: ServerProcess) -> None:
    from namaskah_notify.client import NotifyClient

    user = new_user()
    with NotifyClient(server.url, server.token(user)) as client:
        stored = client.set_preferences(muted_types=["chat"], sound=False)
        assert stored == client.preferences() == {"muted_types": ["chat"], "sound": False, "desktop": True,
                                                  "quiet_hours": None}
        assert client.presence(user) == {user: {"online": False, "connections": 0, "last_seen": None}}
