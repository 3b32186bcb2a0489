"""The ``notify`` command as a user runs it: real subprocesses (``python -m cli``) against the real server.

Argument handling uses Typer's CliRunner; the dashboard and listener views are checked by rendering the
pure render functions to a recording Rich console.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli.listen_view import notification_json, notification_text, status_text
from cli.main import app
from cli.serve import banner
from cli.stats_view import DashboardState, History, render_dashboard, resample, sparkline
from namaskah_notify.auth import mint_token
from namaskah_notify.config import Settings

from .conftest import ROOT, ServerProcess, free_port, new_user, recv_json, recv_until
from .leakcheck import RECORD

FAST_RETRY = ("--retries", "2", "--backoff", "0.05", "--backoff-max", "0.1")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def notify(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``notify ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


class Background:
    """``notify ARGS`` running in the background, its stdout and stderr going to files we can poll."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.out_path = folder / f"bg-{time.monotonic_ns()}.out"
        self.err_path = self.out_path.with_suffix(".err")
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env=_env(),
                                            stdout=out, stderr=err, text=True)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        if not condition():
            raise AssertionError(f"no {what}; rc={self.process.poll()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}")

    def finish(self, timeout: float = 20) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}") from None


@pytest.fixture
def background(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[Background] = []

    def start(*args: str) -> Background:
        started.append(Background(tmp_path, *args))
        return started[-1]

    yield start
    for job in started:
        if job.process.poll() is None:
            job.process.kill()
            job.process.wait()


def listener(background, server: ServerProcess, user: str, *extra: str) -> Background:  # type: ignore[no-untyped-def]
    """``notify listen USER --json`` against ``server``, waited for until it is connected."""
    job = background("listen", user, "--url", server.url, "--data-dir", str(server.data_dir), "--json", *extra)
    job.wait_for(lambda: "connected as" in job.stderr, "connected status line")
    return job


def assert_one_red_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- token ----------------------------------------------------------------------------------------------


def test_token_prints_only_a_token_the_server_accepts(server: ServerProcess) -> None:
    """`notify token USER` prints just the token (pipeable), and the server verifies it as that user."""
    result = notify("token", "alice_cli", "--data-dir", str(server.data_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.strip().count(".") == 2
    token = RECORD.token(result.stdout.strip())
    response = httpx.get(f"{server.url}/api/notifications/unread-count",
                         headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert response.status_code == 200 and response.json() == {"unread_count": 0}


def test_token_json_shows_claims_and_expiry_and_admin_can_publish(server: ServerProcess) -> None:
    """`notify token --admin --ttl 30m --json` prints claims and expiry; the token may publish."""
    result = notify("token", "ops_cli", "--admin", "--ttl", "30m", "--json", "--data-dir", str(server.data_dir))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    RECORD.token(body["token"])
    assert body["claims"]["sub"] == "ops_cli" and body["claims"]["role"] == "admin"
    assert body["claims"]["exp"] - body["claims"]["iat"] == 1800 and body["expires_at"].endswith("Z")
    response = httpx.post(f"{server.url}/api/notifications", json={"user_id": new_user(), "title": "hi"},
                          headers={"Authorization": f"Bearer {body['token']}"}, timeout=5)
    assert response.status_code == 201


# -- send-test and listen end to end -----------------------------------------------------------------------


def test_send_test_reaches_listen_json(server: ServerProcess, background) -> None:  # type: ignore[no-untyped-def]
    """`send-test --count 2` is received by `listen --count 2 --json`: exactly the origin document's SMS."""
    user, code = new_user(), RECORD.code("424242")
    job = listener(background, server, user, "--count", "2")
    sent = notify("send-test", user, "--url", server.url, "--data-dir", str(server.data_dir), "--count", "2",
                  "--service", "GitHub", "--code", code, "--verification-id", "ver_cli_1")
    assert sent.returncode == 0, sent.stderr
    assert "sent 2, failed 0" in sent.stdout
    assert job.finish() == 0, job.stderr
    lines = job.lines()
    assert [n["seq"] for n in lines] == [1, 2]
    for n in lines:
        assert n["title"] == "📱 SMS Code Received"
        assert n["message"] == "Verification code received for GitHub"
        assert n["type"] == "sms_received" and n["link"] == "/verify?id=ver_cli_1"
        assert n["replayed"] is False and 0 <= n["latency_ms"] < 5000
    assert code not in job.stdout  # the code is not part of the notification
    assert "eyJ" not in job.stdout + job.stderr + sent.stdout + sent.stderr  # no token printed


async def test_send_test_reaches_a_websocket_client(server: ServerProcess) -> None:
    """`send-test USER` pushes the SMS notification to that user's WebSocket client."""
    user = new_user()
    async with server.ws(server.token(user)) as ws:
        assert (await recv_json(ws))["type"] == "connected"
        result = await asyncio.to_thread(notify, "send-test", user, "--url", server.url,
                                         "--data-dir", str(server.data_dir), "--verification-id", "ver_ws")
        assert result.returncode == 0, result.stderr
        data = (await recv_until(ws, "notification"))["data"]
    assert (data["title"], data["message"], data["type"], data["link"]) == (
        "📱 SMS Code Received", "Verification code received for Google", "sms_received", "/verify?id=ver_ws")
    assert f"seq {data['seq']}" in result.stdout and data["id"] in result.stdout


async def test_send_test_via_provider_goes_through_the_sms_poller(make_server) -> None:
    """`send-test USER --via-provider` starts a verification, fills the fake inbox, and the poller notifies."""
    srv = make_server(NOTIFY_SMS_FAKE_PROVIDER="true", NOTIFY_SMS_POLL_INTERVAL_S="0.2")
    user = new_user()
    async with srv.ws(srv.token(user)) as ws:
        assert (await recv_json(ws))["type"] == "connected"
        result = await asyncio.to_thread(notify, "send-test", user, "--via-provider", "--service", "GitHub",
                                         "--url", srv.url, "--data-dir", str(srv.data_dir))
        assert result.returncode == 0, result.stderr
        data = (await recv_until(ws, "notification", timeout=10))["data"]
    assert (data["type"], data["message"]) == ("sms_received", "Verification code received for GitHub")
    assert data["link"] == f"/verify?id={data['meta']['verification_id']}"


def test_send_test_via_provider_without_the_fake_provider_says_how(server: ServerProcess) -> None:
    """Without NOTIFY_SMS_FAKE_PROVIDER, `--via-provider` fails with one line naming the setting."""
    result = notify("send-test", new_user(), "--via-provider", "--url", server.url,
                    "--data-dir", str(server.data_dir))
    assert_one_red_line(result, "NOTIFY_SMS_FAKE_PROVIDER=true")


def test_listen_pretty_output_and_mark_read(server: ServerProcess, background) -> None:  # type: ignore[no-untyped-def]
    """Pretty `listen --mark-read` shows title, message, link and latency, and marks what it showed read."""
    user = new_user()
    job = background("listen", user, "--url", server.url, "--data-dir", str(server.data_dir),
                     "--count", "1", "--mark-read")
    job.wait_for(lambda: "connected as" in job.stderr, "connected status line")
    assert server.publish(user, "Pretty", message="Body text", link="/inbox").status_code == 201
    assert job.finish() == 0, job.stderr
    assert all(part in job.stdout for part in ("#1", "Pretty", "Body text", "/inbox", " ms"))
    deadline = time.monotonic() + 5
    while (unread := httpx.get(f"{server.url}/api/notifications/unread-count", headers=server.user_headers(user),
                               timeout=5).json()["unread_count"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert unread == 0


def test_listen_since_seq_catches_up(server: ServerProcess) -> None:
    """`listen --since-seq 1` first replays every stored notification after seq 1, marked as replayed."""
    user = new_user()
    for title in ("a", "b", "c"):
        assert server.publish(user, title).status_code == 201
    result = notify("listen", user, "--url", server.url, "--data-dir", str(server.data_dir),
                    "--since-seq", "1", "--count", "2", "--json", timeout=20)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(n["seq"], n["title"], n["replayed"]) for n in lines] == [(2, "b", True), (3, "c", True)]


def test_listen_resyncs_over_http_past_the_replay_limit(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """When the server answers `resync_required`, listen fetches what it missed over HTTP, in order."""
    srv = make_server(NOTIFY_REPLAY_LIMIT=2)
    user = new_user()
    for i in range(5):
        assert srv.publish(user, f"n{i}").status_code == 201
    result = notify("listen", user, "--url", srv.url, "--data-dir", str(srv.data_dir),
                    "--since-seq", "0", "--count", "5", "--json", timeout=20)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1, 2, 3, 4, 5]
    assert "resynced over HTTP: 5 missed" in result.stderr


def test_listen_resumes_across_a_server_restart(make_server, tmp_path: Path, background) -> None:  # type: ignore[no-untyped-def]
    """A listener survives a server restart and still shows the notification published while it was away."""
    data_dir, port = tmp_path / "restart", free_port()
    first = make_server(data_dir=data_dir, port=port)
    user = new_user()
    job = listener(background, first, user, "--count", "3", "--retries", "200", "--backoff", "0.1",
                   "--backoff-max", "0.3")
    assert first.publish(user, "before").status_code == 201
    job.wait_for(lambda: len(job.lines()) == 1, "first notification")
    first.stop()
    # The listener's server is down: publish through another node on the same database meanwhile.
    other = make_server(data_dir=data_dir)
    assert other.publish(user, "while down").status_code == 201
    other.stop()
    job.wait_for(lambda: "reconnecting" in job.stderr, "reconnecting status line")
    again = make_server(data_dir=data_dir, port=port)
    job.wait_for(lambda: "resumed: 1 missed" in job.stderr, "resumed status line")
    assert again.publish(user, "after").status_code == 201
    assert job.finish() == 0, job.stderr
    assert [(n["seq"], n["title"], n["replayed"]) for n in job.lines()] == [
        (1, "before", False), (2, "while down", True), (3, "after", False)]


# -- listen failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["invalid", "expired"])
def test_listen_exits_2_on_a_rejected_token(server: ServerProcess, kind: str) -> None:
    """A token the server closes with 4401 (invalid or expired) ends listen with exit 2 and a clear line."""
    token = "not.a.jwt" if kind == "invalid" else server.token(new_user(), ttl=-120)
    result = notify("listen", "--token", token, "--url", server.url, *FAST_RETRY, timeout=20)
    assert result.returncode == 2
    assert_one_red_line(result, "token expired / invalid", "expired" if kind == "expired" else "invalid")


def test_listen_exits_1_when_nothing_listens() -> None:
    """With nothing on the port, listen retries with backoff, then exits 1 saying it cannot reach it."""
    started = time.monotonic()
    result = notify("listen", "--token", "x.y.z", "--url", f"http://127.0.0.1:{free_port()}", *FAST_RETRY)
    assert result.returncode == 1 and time.monotonic() - started < 15
    assert result.stderr.count("reconnecting in") == 2
    assert "error: cannot reach ws://127.0.0.1:" in result.stderr and "after 3 attempts" in result.stderr
    assert "Traceback" not in result.stderr


# -- send-test failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["401", "403", "422", "refused", "no secret"])
def test_send_test_errors_are_one_red_line(server: ServerProcess, tmp_path: Path, case: str) -> None:
    """send-test turns 401, 403, 422, a refused connection and a missing secret into one line and exit 1."""
    url, args, needles = server.url, [], [case]
    if case == "401":
        args = ["--token", RECORD.token(mint_token(Settings(data_dir=tmp_path / "other"), "ops", admin=True))]
        needles = ["401 unauthorized", "token signature invalid"]
    elif case == "403":
        args = ["--token", server.token("plain_user")]
        needles = ["403 forbidden", "--admin"]
    elif case == "422":
        args = ["--data-dir", str(server.data_dir), "--code", "not a code!"]
        needles = ["422 invalid request", "code"]
    elif case == "refused":
        url, args = f"http://127.0.0.1:{free_port()}", ["--data-dir", str(server.data_dir)]
        needles = ["cannot connect", "connection refused"]
    else:
        args = ["--data-dir", str(tmp_path / "nowhere")]
        needles = ["no secret at", "--data-dir"]
    result = notify("send-test", new_user(), "--url", url, *args)
    assert result.returncode == 1
    assert_one_red_line(result, *needles)
    assert not (tmp_path / "nowhere").exists()  # send-test never creates a secret the server would not know


# -- stats -------------------------------------------------------------------------------------------------


async def test_stats_once_json_matches_ws_stats_and_counts_the_listener(server: ServerProcess) -> None:
    """`stats --once --json` prints the /ws/stats document, counting an open listener."""
    async with server.ws(server.token(new_user())) as ws:
        assert (await recv_json(ws))["type"] == "connected"
        result = await asyncio.to_thread(notify, "stats", "--once", "--json", "--url", server.url)
        async with httpx.AsyncClient() as client:
            direct = (await client.get(f"{server.url}/ws/stats", timeout=5)).json()
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    assert set(snapshot) == set(direct)
    assert snapshot["total_connections"] >= 1 and snapshot["connected_users"] >= 1
    assert snapshot["status"] == "operational" and snapshot["nodes"][0]["connections"] >= 1


def test_stats_dashboard_against_a_live_server(server: ServerProcess) -> None:
    """The Live dashboard refreshes against a running server and exits 0 after --iterations."""
    result = notify("stats", "--url", server.url, "--iterations", "2", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    assert "operational" in result.stdout and "latency (ms)" in result.stdout and "Traceback" not in result.stderr


def test_stats_against_a_dead_port_keeps_going_without_a_traceback() -> None:
    """Against a dead port the dashboard shows "unreachable, retrying", keeps refreshing, never a traceback."""
    result = notify("stats", "--url", f"http://127.0.0.1:{free_port()}", "--iterations", "3", "--interval", "0.1")
    assert result.returncode == 1
    assert "unreachable, retrying" in result.stdout and "3 failed" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_stats_once_against_a_dead_port_is_one_red_line() -> None:
    """`stats --once --json` against a dead port prints one error line and exits 1."""
    result = notify("stats", "--once", "--json", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and result.stdout == ""
    assert_one_red_line(result, "cannot reach", "connection refused")


# -- pure renderables --------------------------------------------------------------------------------------

SNAPSHOT: dict[str, Any] = {
    "total_connections": 7, "connected_users": 4, "status": "operational", "uptime_s": 3725.0,
    "notifications_published": 1200, "notifications_pushed": 2400, "notifications_acked": 2390,
    "connections_opened": 31, "send_queue_overflows": 0, "notifications_replayed": 12,
    "published_per_s": 12.5, "pushed_per_s": 25.0,
    "push_latency_ms": {"p50": 1.2, "p90": 2.5, "p99": 9.75, "max": 14.0, "samples": 2400},
    "delivery_latency_ms": {"p50": 3.5, "p90": 6.0, "p99": 21.25, "max": 40.0, "samples": 2390},
    "broker": "redis",
    "nodes": [{"id": "node-a", "host": "h1", "pid": 11, "connections": 4, "users": 3, "heartbeat_age_s": 0.4},
              {"id": "node-b", "host": "h2", "pid": 12, "connections": 3, "users": 2, "heartbeat_age_s": 1.1}],
}


def render_text(renderable: Any, width: int = 120) -> str:
    console = Console(record=True, width=width, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_dashboard_frame_renders_a_snapshot_as_text() -> None:
    """One dashboard frame shows status, counts, rates, latency, close codes, sparklines and the node table."""
    state = DashboardState("http://127.0.0.1:8000", history=History(maxlen=300))
    for connections in (1, 3, 5, 7):
        state.succeeded({**SNAPSHOT, "total_connections": connections}, {"1000": 20, "4401": 2}, now=100.0)
    text = render_text(render_dashboard(state, now=101.0))
    for expected in ("● operational", "connections 7", "users 4", "notifications/s 12.50", "up 1h02m",
                     "broker redis", "delivery", "21.25", "4401", "node-a", "node-b", "0.4s ago",
                     "last minutes", "▂▄▆█"):
        assert expected in text, f"{expected!r} not in\n{text}"


def test_dashboard_frame_when_unreachable_keeps_the_last_figures() -> None:
    """After a failure the frame says "unreachable, retrying", how long ago it was seen, and the last figures."""
    state = DashboardState("http://127.0.0.1:8000")
    state.succeeded({**SNAPSHOT, "nodes": SNAPSHOT["nodes"][:1]}, None, now=100.0)
    state.failed("connection refused")
    state.failed("connection refused")
    text = render_text(render_dashboard(state, now=130.0))
    assert "unreachable, retrying" in text and "2 failed: connection refused" in text and "30s ago" in text
    assert "connections 7" in text and "node-a" not in text  # one node: no cluster table
    assert "unreachable" in render_text(render_dashboard(DashboardState("u", error="timed out", failures=1)))


def test_sparkline_scales_to_the_maximum_and_resamples_long_series() -> None:
    """Sparklines scale from zero to the maximum and average long series down to the width."""
    assert sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert sparkline([0, 0]) == "▁▁" and sparkline([]) == ""
    assert len(sparkline(list(range(500)), width=60)) == 60
    assert resample([1, 1, 3, 3], 2) == [1, 3]


def test_listen_views_render_a_notification_and_status_lines() -> None:
    """The listener's views show time, seq, title, message, link and latency; JSON adds latency and replayed."""
    from datetime import UTC, datetime

    data = {"id": "notif_1", "seq": 4, "title": "Hello", "message": "World", "type": "info", "link": "/x",
            "created_at": "2030-01-01T10:00:00.000Z", "is_read": False}
    now = datetime(2030, 1, 1, 10, 0, 0, 250000, tzinfo=UTC)
    text = render_text(notification_text(data, now))
    assert all(part in text for part in ("#4", "Hello", "World", "/x", "250 ms"))
    assert "missed, replayed" in render_text(notification_text(data, now, replayed=True))
    assert json.loads(notification_json(data, now)) == {**data, "latency_ms": 250.0, "replayed": False}
    assert "reconnecting in 1.5s" in render_text(status_text("reconnecting", "reconnecting in 1.5s"))


def test_serve_banner_shows_dashboard_and_next_commands(server: ServerProcess) -> None:
    """serve's banner shows the dashboard URL and the commands to try; a token only on a terminal."""
    logged = server.output()  # `notify serve` with its output going to a file: no token in it
    assert f"Dashboard  {server.url}/" in logged
    assert f"notify send-test demo --url {server.url} --data-dir {server.data_dir}" in logged
    assert "Demo token" not in logged
    settings = Settings(data_dir=Path("/srv/notify"), jwt_secret="s" * 40)
    shown = render_text(banner(settings, "0.0.0.0", 9000, show_token=True), width=200)
    assert "http://127.0.0.1:9000/" in shown and "Demo token eyJ" in shown
    assert "notify send-test demo --url http://127.0.0.1:9000 --data-dir /srv/notify" in shown
    assert "eyJ" not in render_text(banner(settings, "127.0.0.1", 8000, show_token=False), width=200)


# -- argument handling -------------------------------------------------------------------------------------


def test_arguments_are_checked_before_anything_runs() -> None:
    """CliRunner: --version, listen needs USER xor --token, bad --ttl, and --workers refused in memory."""
    runner = CliRunner()
    env = {"NOTIFY_BROKER_URL": "memory://"}
    assert runner.invoke(app, ["--version"]).stdout.startswith("notify (namaskah-notify) ")
    both = runner.invoke(app, ["listen", "alice", "--token", "t"], env=env)
    assert both.exit_code == 1 and "give a USER" in both.output
    assert runner.invoke(app, ["listen"], env=env).exit_code == 1
    assert runner.invoke(app, ["token", "a", "--ttl", "soon"], env=env).exit_code == 2
    assert runner.invoke(app, ["listen", "a", "--count", "0"], env=env).exit_code == 2
    workers = runner.invoke(app, ["serve", "--workers", "2"], env=env)
    assert workers.exit_code == 1 and "NOTIFY_BROKER_URL" in workers.output
    for command in ("serve", "token", "listen", "send-test", "stats"):
        assert "Examples" in runner.invoke(app, [command, "--help"]).output
