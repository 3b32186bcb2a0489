"""What every ``notify`` command shares: the consoles, the one-red-line error, the common options, and
turning the local secret into a token.

Imports ``namaskah_notify.auth`` and ``namaskah_notify.config`` only; every command module imports this.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from namaskah_notify.auth import SECRET_FILE, mint_token
from namaskah_notify.config import Settings

DEFAULT_URL = "http://127.0.0.1:8000"

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="NOTIFY_DATA_DIR",
                 help="The server's data folder, for its secret (default ./.notify)"),
]
Url = Annotated[
    str, typer.Option("--url", envvar="NOTIFY_URL", help="The server's base URL (http:// or ws://)")
]


class CliError(Exception):
    """A failure the user can act on: shown as one red line, then ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` in red on stderr; returns the ``typer.Exit`` to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def settings_from(**overrides: object) -> Settings:
    """Settings from NOTIFY_* variables, with the flags that were given on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise fail(f"bad configuration: {first['loc']}: {first['msg']}") from None


def parse_ttl(text: str) -> int:
    """``3600``, ``90s``, ``30m``, ``1h``, ``2d`` to seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise typer.BadParameter("use seconds or 30s / 30m / 1h / 2d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def local_token(data_dir: Path | None, user: str, *, admin: bool = False, ttl_s: int = 3600) -> str:
    """A token signed with the secret the local server uses (``NOTIFY_JWT_SECRET`` or the data folder).

    Unlike ``notify token``, this never creates a secret: a fresh one would only earn a 401.
    """
    settings = settings_from(data_dir=data_dir)
    secret_file = settings.data_dir / SECRET_FILE
    if settings.jwt_secret is None and not secret_file.exists():
        raise CliError(
            f"no secret at {secret_file}: pass the server's --data-dir (or NOTIFY_DATA_DIR), "
            "set NOTIFY_JWT_SECRET, or give --token"
        )
    try:
        return mint_token(settings, user, admin=admin, ttl_s=ttl_s)
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot mint a token: {exc}") from None


def http_base(url: str) -> str:
    """``http(s)://host:port`` from whatever the user gave (``ws://…/ws/notifications`` included)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"not a server URL: {url!r} (expected e.g. {DEFAULT_URL})")
    path = parts.path.rstrip("/")
    for suffix in ("/ws/notifications", "/ws/stats"):
        path = path.removesuffix(suffix)
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def ws_url(url: str, path: str = "/ws/notifications") -> str:
    """The WebSocket URL of ``path`` on the server at ``url``."""
    base = http_base(url)
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"
