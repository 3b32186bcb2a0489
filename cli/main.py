"""``notify``: parse the command line, call the library, render with Rich; errors become one red line."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel

from namaskah_notify.auth import mint_token
from namaskah_notify.config import Settings

app = typer.Typer(help="namaskah-notify: real-time notifications over WebSocket.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True)
out = Console()

DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="NOTIFY_DATA_DIR",
                                              help="Secret and SQLite file [default: ./.notify]")]


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def settings_from(**overrides: object) -> Settings:
    """Settings from NOTIFY_* variables, with the flags that were given on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise fail(f"bad configuration: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def parse_ttl(text: str) -> int:
    """``3600``, ``90s``, ``30m``, ``1h``, ``2d`` to seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise typer.BadParameter("use seconds or 30s / 30m / 1h / 2d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@app.command()
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
    """Start the server (embedded default: SQLite in the data folder, in-process broker)."""
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
    _banner(settings, host, port)
    if workers > 1 or reload:
        import uvicorn

        # Each worker builds its own app from the environment, so hand the flags on through it.
        for key, value in (("NOTIFY_DATA_DIR", str(settings.data_dir)), ("NOTIFY_LOG_LEVEL", settings.log_level),
                           ("NOTIFY_DATABASE_URL", settings.database_url), ("NOTIFY_BROKER_URL", settings.broker_url)):
            if value:
                os.environ[key] = value
        uvicorn.run("namaskah_notify.app:create_app", factory=True, host=host, port=port,
                    workers=workers, reload=reload, **uvicorn_options(settings))
        return
    NotifyServer(uvicorn_config(application, settings, host=host, port=port), application).run()


def _banner(settings: Settings, host: str, port: int) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    lines = [
        f"[bold]namaskah-notify[/] on [cyan]{base}[/]",
        f"WebSocket  [cyan]ws://{shown}:{port}/ws/notifications[/]",
        f"Stats      [cyan]{base}/ws/stats[/]   Metrics [cyan]{base}/metrics[/]",
        f"Data       {settings.data_dir.resolve()}",
    ]
    if sys.stdout.isatty():  # a token on an interactive screen is a convenience; in a log it is a leak
        token = mint_token(settings, "demo", ttl_s=8 * 3600)
        lines.append(f"Demo token [green]{token}[/]  (user demo, 8 h)")
    lines.append("Try        [yellow]notify token demo[/]  ·  "
                 f"[yellow]curl -H \"Authorization: Bearer $(notify token admin --admin)\" "
                 f"-d '{{\"user_id\":\"demo\",\"title\":\"Hello\"}}' -H 'content-type: application/json' "
                 f"{base}/api/notifications[/]")
    out.print(Panel("\n".join(lines), expand=False))


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="User id (the sub claim)")],
    admin: Annotated[bool, typer.Option("--admin", help="Add role admin (publishing endpoints)")] = False,
    ttl: Annotated[str, typer.Option(help="Lifetime: seconds, or 30m / 1h / 2d")] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="Print the token with its claims")] = False,
    data_dir: DataDir = None,
) -> None:
    """Mint a test token with the server's own secret; prints only the token (pipeable)."""
    settings = settings_from(data_dir=data_dir)
    seconds = parse_ttl(ttl)
    try:
        minted = mint_token(settings, user, admin=admin, ttl_s=seconds)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if as_json:
        import jwt

        claims = jwt.decode(minted, options={"verify_signature": False})
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))
        print(json.dumps({"token": minted, "claims": claims, "expires_at": expires}))
    else:
        print(minted)
