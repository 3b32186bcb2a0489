"""``notify serve``: start uvicorn with the app and show where to look and what to try first.

Imports ``common`` and, lazily, ``namaskah_notify.app`` / ``namaskah_notify.server`` (so other commands
start fast).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from namaskah_notify.auth import mint_token
from namaskah_notify.config import Settings

from .common import DataDir, fail, out, settings_from


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (needs a shared broker)")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
    log_level: Annotated[str | None, typer.Option(envvar="NOTIFY_LOG_LEVEL")] = None,
    database_url: Annotated[str | None, typer.Option(envvar="NOTIFY_DATABASE_URL")] = None,
    broker_url: Annotated[str | None, typer.Option(envvar="NOTIFY_BROKER_URL")] = None,
    data_dir: DataDir = None,
) -> None:
    """Start the server (embedded default: SQLite in the data folder, in-process broker).

    Examples:

      notify serve

      notify serve --port 9000 --data-dir /var/lib/notify
    """
    settings = settings_from(log_level=log_level, database_url=database_url, broker_url=broker_url,
                             data_dir=data_dir)
    if workers > 1 and settings.broker_url.startswith("memory://"):
        raise fail("--workers > 1 needs a shared broker: set NOTIFY_BROKER_URL=redis://… "
                   "(the in-process broker cannot reach other workers)")
    try:
        from namaskah_notify.app import create_app
        from namaskah_notify.server import NotifyServer, uvicorn_config, uvicorn_options

        application = create_app(settings)
    except ValueError as exc:
        raise fail(str(exc)) from None
    # In a log nobody resizes the window: keep each command on one line so it can be copied.
    console = out if out.is_terminal else Console(width=200, highlight=False)
    console.print(banner(settings, host, port, show_token=sys.stdout.isatty()))
    if workers > 1 or reload:
        import uvicorn

        # Each worker builds its own app from the environment, so hand the flags on through it.
        for key, value in (("NOTIFY_DATA_DIR", str(settings.data_dir)), ("NOTIFY_LOG_LEVEL", settings.log_level),
                           ("NOTIFY_DATABASE_URL", settings.database_url), ("NOTIFY_BROKER_URL", settings.broker_url)):
            if value:
                os.environ[key] = value
        uvicorn.run("namaskah_notify.server:create_asgi", factory=True, host=host, port=port,
                    workers=workers, reload=reload, **uvicorn_options(settings))
        return
    NotifyServer(uvicorn_config(application, settings, host=host, port=port), application).run()


def banner(settings: Settings, host: str, port: int, *, show_token: bool) -> Panel:
    """The start-up panel: URLs, a demo token (interactive screens only) and commands to try."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    flags = "" if base == "http://127.0.0.1:8000" else f" --url {base}"
    if settings.data_dir != Path(".notify"):
        flags += f" --data-dir {settings.data_dir}"
    lines = [
        f"[bold]namaskah-notify[/] on [cyan]{base}[/]",
        f"Dashboard  [cyan]{base}/[/]",
        f"WebSocket  [cyan]ws://{shown}:{port}/ws/notifications[/]",
        f"Stats      [cyan]{base}/ws/stats[/]",
        f"Metrics    [cyan]{base}/metrics[/]",
        f"Data       {settings.data_dir.resolve()}",
    ]
    if show_token:  # a token on an interactive screen is a convenience; in a log it is a leak
        try:
            token = mint_token(settings, "demo", ttl_s=8 * 3600)
            lines.append(f"Demo token [green]{token}[/]  (user demo, 8 h)")
        except ValueError:
            pass  # public-key setups: the web app mints tokens, not us
    lines += [
        f"Watch      [yellow]notify listen demo{flags}[/]",
        f"Send       [yellow]notify send-test demo{flags}[/]",
        f"Live stats [yellow]notify stats{flags}[/]",
    ]
    return Panel("\n".join(lines), expand=False)
