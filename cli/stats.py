"""``notify stats``: poll ``/ws/stats`` and ``/metrics`` and show them in a Rich ``Live`` dashboard.

:class:`StatsSource` fetches (the Python client's ``NotifyClient``, and the Prometheus text parser for close
codes); the command's
loop feeds a :class:`~cli.stats_view.DashboardState` and redraws it with ``render_dashboard``. A server
that is down is a state to show ("unreachable, retrying"), never a traceback. Imports ``common`` and
``stats_view``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.live import Live
from rich.markup import escape

from namaskah_notify.client import (
    NO_RETRY,
    ConnectionFailed,
    Forbidden,
    NotifyClient,
    NotifyClientError,
    Unauthorized,
)

from .common import DEFAULT_URL, CliError, DataDir, Url, err, fail, http_base, local_token, out
from .stats_view import DashboardState, History, render_dashboard


class Unavailable(Exception):
    """This refresh failed; the next one may not."""


T = TypeVar("T")


class StatsSource:
    """``GET /ws/stats`` (and ``/metrics``) with an admin token only if the server asks for one. No retries
    here: the dashboard's next refresh is the retry, and it shows the failure meanwhile."""

    def __init__(self, base: str, token: str | None, data_dir: Path | None, timeout_s: float) -> None:
        self.base = base
        self._data_dir = data_dir
        self._timeout_s = timeout_s
        self._tried_local = token is not None
        self._client = self._connect(token)

    def _connect(self, token: str | None) -> NotifyClient:
        return NotifyClient(self.base, token, timeout=self._timeout_s, retry=NO_RETRY)

    def close(self) -> None:
        self._client.close()

    def _get(self, fetch: Callable[[NotifyClient], T]) -> T:
        try:
            return fetch(self._client)
        except Unauthorized:
            if self._tried_local:
                raise
            # NOTIFY_STATS_REQUIRE_ADMIN: try an admin token from the local secret, once.
            self._tried_local = True
            try:
                token = local_token(self._data_dir, "notify-cli", admin=True, ttl_s=24 * 3600)
            except CliError:
                raise Unauthorized("this server requires an admin token for stats") from None
            self._client.close()
            self._client = self._connect(token)
            return self._get(fetch)
        except ConnectionFailed as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx.ConnectError):
                raise Unavailable("connection refused") from None
            if isinstance(cause, httpx.TimeoutException):
                raise Unavailable("timed out") from None
            raise Unavailable(str(cause) or type(cause).__name__) from None

    def snapshot(self) -> dict[str, Any]:
        try:
            body = self._get(NotifyClient.stats)
        except (Unauthorized, Forbidden) as exc:
            raise CliError(f"{exc.status} on /ws/stats: {exc.message}; "
                           "give an admin token with --token (or the server's --data-dir)") from None
        except NotifyClientError as exc:
            raise Unavailable(f"HTTP {exc.status} on /ws/stats" if exc.status else exc.message) from None
        if not isinstance(body, dict) or "total_connections" not in body:
            raise CliError(f"{self.base}/ws/stats is not a namaskah-notify stats document")
        return body

    def closes_by_code(self) -> dict[str, float] | None:
        """WebSocket closes by code from ``/metrics``; None when metrics are not available to us."""
        try:
            text = self._get(NotifyClient.metrics)
        except (Unavailable, NotifyClientError):
            return None
        closes: dict[str, float] = {}
        try:
            for family in text_string_to_metric_families(text):
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
