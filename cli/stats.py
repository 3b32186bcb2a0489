"""``notify stats``: poll ``/ws/stats`` and ``/metrics`` and show them in a Rich ``Live`` dashboard.

:class:`StatsSource` fetches (``httpx``, and the Prometheus text parser for close codes); the command's
loop feeds a :class:`~cli.stats_view.DashboardState` and redraws it with ``render_dashboard``. A server
that is down is a state to show ("unreachable, retrying"), never a traceback. Imports ``common`` and
``stats_view``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.live import Live
from rich.markup import escape

from .common import DEFAULT_URL, CliError, DataDir, Url, err, fail, http_base, local_token, out
from .stats_view import DashboardState, History, render_dashboard


class Unavailable(Exception):
    """This refresh failed; the next one may not."""


class StatsSource:
    """``GET /ws/stats`` (and ``/metrics``) with an admin token only if the server asks for one."""

    def __init__(self, base: str, token: str | None, data_dir: Path | None, timeout_s: float) -> None:
        self.base = base
        self._token = token
        self._data_dir = data_dir
        self._client = httpx.Client(base_url=base, timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            response = self._client.get(path, headers=headers)
        except httpx.ConnectError:
            raise Unavailable("connection refused") from None
        except httpx.TimeoutException:
            raise Unavailable("timed out") from None
        except httpx.HTTPError as exc:
            raise Unavailable(str(exc) or type(exc).__name__) from None
        if response.status_code == 401 and self._token is None:
            # NOTIFY_STATS_REQUIRE_ADMIN: try an admin token from the local secret, once.
            try:
                self._token = local_token(self._data_dir, "notify-cli", admin=True, ttl_s=24 * 3600)
            except CliError:
                return response
            return self._get(path)
        return response

    def snapshot(self) -> dict[str, Any]:
        response = self._get("/ws/stats")
        if response.status_code in (401, 403):
            raise CliError(f"{response.status_code} on /ws/stats: {_detail(response)}; "
                           "give an admin token with --token (or the server's --data-dir)")
        if response.status_code != 200:
            raise Unavailable(f"HTTP {response.status_code} on /ws/stats")
        try:
            body = response.json()
        except ValueError:
            raise Unavailable("/ws/stats did not answer JSON") from None
        if not isinstance(body, dict) or "total_connections" not in body:
            raise CliError(f"{self.base}/ws/stats is not a namaskah-notify stats document")
        return body

    def closes_by_code(self) -> dict[str, float] | None:
        """WebSocket closes by code from ``/metrics``; None when metrics are not available to us."""
        try:
            response = self._get("/metrics")
        except (Unavailable, CliError):
            return None
        if response.status_code != 200:
            return None
        closes: dict[str, float] = {}
        try:
            for family in text_string_to_metric_families(response.text):
                if family.name == "notify_connections_closed":
                    for sample in family.samples:
                        if sample.name.endswith("_total"):
                            closes[sample.labels.get("code", "?")] = sample.value
        except ValueError:
            return None
        return closes


def stats(
    url: Url = DEFAULT_URL,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes")] = 1.0,
    watch: Annotated[bool, typer.Option("--watch/--once", help="Keep refreshing, or print one snapshot")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: the /ws/stats document (one per line when watching)")]
    = False,
    iterations: Annotated[int, typer.Option(min=0, help="Stop after this many refreshes (0: until Ctrl-C)")] = 0,
    token: Annotated[str | None, typer.Option(envvar="NOTIFY_ADMIN_TOKEN",
                                              help="Admin token, when the server requires one for stats")] = None,
    data_dir: DataDir = None,
) -> None:
    """Watch the whole service live: status, connections, users, rates, latency, nodes, sparklines.

    Exit codes:
      0  ok, or stopped with Ctrl-C
      1  unreachable (--once), or unreachable at the last of --iterations refreshes

    Examples:

      notify stats

      notify stats --once --json | jq .total_connections

      notify stats --url http://127.0.0.1:9000 --interval 0.5
    """
    try:
        source = StatsSource(http_base(url), token, data_dir, timeout_s=max(1.0, min(5.0, interval * 2)))
    except CliError as exc:
        raise fail(exc.message, exc.exit_code) from None
    try:
        if not watch:
            _once(source, as_json)
        elif as_json:
            _json_lines(source, interval, iterations)
        else:
            _dashboard(source, interval, iterations)
    except CliError as exc:
        raise fail(exc.message, exc.exit_code) from None
    except KeyboardInterrupt:
        pass
    finally:
        source.close()


def _once(source: StatsSource, as_json: bool) -> None:
    try:
        snapshot = source.snapshot()
    except Unavailable as exc:
        raise CliError(f"cannot reach {source.base}: {exc}") from None
    if as_json:
        print(json.dumps(snapshot))
        return
    state = DashboardState(source.base, history=History(maxlen=1))
    state.succeeded(snapshot, source.closes_by_code(), time.time())
    out.print(render_dashboard(state))


def _json_lines(source: StatsSource, interval: float, iterations: int) -> None:
    done = 0
    ok = True
    while not iterations or done < iterations:
        try:
            sys.stdout.write(json.dumps(source.snapshot()) + "\n")
            sys.stdout.flush()
            ok = True
        except Unavailable as exc:
            err.print(f"[red]unreachable, retrying:[/] {escape(str(exc))}")
            ok = False
        done += 1
        if not iterations or done < iterations:
            time.sleep(interval)
    if not ok:
        raise typer.Exit(1)


def _dashboard(source: StatsSource, interval: float, iterations: int) -> None:
    state = DashboardState(source.base, interval_s=interval, history=History(maxlen=max(60, int(300 / interval))))
    done = 0
    with Live(render_dashboard(state), console=out, auto_refresh=False, transient=False) as live:
        while not iterations or done < iterations:
            started = time.monotonic()
            try:
                snapshot = source.snapshot()
                state.succeeded(snapshot, source.closes_by_code(), time.time())
            except Unavailable as exc:
                state.failed(str(exc))
            live.update(render_dashboard(state), refresh=True)
            done += 1
            if not iterations or done < iterations:
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
    if not out.is_terminal:
        out.line()  # Live leaves the cursor after its last frame when not on a terminal
    if state.error is not None:
        raise typer.Exit(1)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except (ValueError, AttributeError):
        return response.reason_phrase
