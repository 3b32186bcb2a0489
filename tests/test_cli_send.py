"""``notify send``: any notification, with every field of the publish body, from the terminal."""

from __future__ import annotations

import json

import httpx

from .conftest import ServerProcess, new_user
from .test_cli import assert_one_red_line, notify


def listed(server: ServerProcess, user: str) -> list[dict]:
    return httpx.get(f"{server.url}/api/notifications", headers=server.user_headers(user)).json()["items"]


def test_send_publishes_every_field_once_per_idempotency_key(server: ServerProcess) -> None:
    user = new_user()
    args = ("send", user, "--title", "3 new messages", "--message", "from Bob", "--type", "chat", "--link", "/inbox",
            "--priority", "high", "--collapse-key", "inbox", "--meta", '{"count": 3}',
            "--idempotency-key", f"cli-{user}", "--url", server.url, "--data-dir", str(server.data_dir), "--json")
    first, again = notify(*args), notify(*args)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert json.loads(first.stdout) == json.loads(again.stdout)
    [item] = listed(server, user)
    assert (item["title"], item["priority"], item["collapse_key"], item["meta"], item["link"]) == (
        "3 new messages", "high", "inbox", {"count": 3}, "/inbox")
    expiring = notify("send", user, "--title", "brief", "--expires-in", "10m", "--url", server.url,
                      "--data-dir", str(server.data_dir), "--json")
    assert expiring.returncode == 0, expiring.stderr
    assert json.loads(expiring.stdout)["expires_at"] is not None


def test_send_broadcast_and_bad_input(server: ServerProcess) -> None:
    result = notify("send", "--broadcast", "--connected-only", "--title", "now", "--url", server.url,
                    "--data-dir", str(server.data_dir))
    assert result.returncode == 0 and "broadcast" in result.stdout, result.stderr
    both = notify("send", "alice", "--broadcast", "--title", "x", "--url", server.url,
                  "--data-dir", str(server.data_dir))
    assert both.returncode == 1
    assert_one_red_line(both, "USER, or --broadcast")
    bad = notify("send", "alice", "--title", "x", "--link", "javascript:alert(1)", "--url", server.url,
                 "--data-dir", str(server.data_dir))
    assert bad.returncode == 1
    assert_one_red_line(bad, "422")
