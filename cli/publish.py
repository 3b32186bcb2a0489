"""``notify send``: publish any notification — to one user, or with ``--broadcast`` to every user the service
knows — through the Python client, with every field of the publish body. Imports ``common`` and ``send``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape

from namaskah_notify.client import ConnectionFailed, NotifyClient, NotifyClientError

from .common import DEFAULT_URL, CliError, DataDir, Url, fail, http_base, local_token, out, parse_ttl
from .send import _connection_error, explain


def send(
    title: Annotated[str, typer.Option(help="The notification's title")],
    user: Annotated[str | None, typer.Argument(help="The user to notify (or --broadcast)")] = None,
    message: Annotated[str, typer.Option(help="Its text")] = "",
    type: Annotated[str, typer.Option("--type", help="Its type (what a client may filter or mute)")] = "info",
    link: Annotated[str | None, typer.Option(help="A path (/…) or an http(s) URL to open")] = None,
    priority: Annotated[str, typer.Option(help="low, normal or high")] = "normal",
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="Hide it after 90s, 10m, 2h, 1d…")] = None,
    collapse_key: Annotated[str | None, typer.Option(help="A newer one with the same key replaces it")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Send again with the same key: stored once")] = None,
    meta: Annotated[str | None, typer.Option(help="A JSON object of extra data")] = None,
    broadcast: Annotated[bool, typer.Option("--broadcast", help="Every user the service knows")] = False,
    connected_only: Annotated[bool, typer.Option("--connected-only",
                                                 help="With --broadcast: only users connected now")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's answer as JSON")] = False,
    url: Url = DEFAULT_URL,
    token: Annotated[str | None, typer.Option(envvar="NOTIFY_ADMIN_TOKEN",
                                              help="Admin token (default: minted from the local secret)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Publish a notification (POST /api/notifications): stored, then pushed to every tab of the user.

    Exit codes:
      0  stored
      1  refused, or the server cannot be reached

    Examples:

      notify send alice --title "Deploy finished" --type deploy --link /builds/42

      notify send alice --title "3 new messages" --collapse-key inbox --priority high --expires-in 1h

      notify send --broadcast --title "Maintenance at 22:00" --type system --idempotency-key maint-1
    """
    try:
        if (user is None) == (not broadcast):
            raise CliError("give a USER, or --broadcast (not both)")
        if connected_only and not broadcast:
            raise CliError("--connected-only goes with --broadcast")
        if priority not in ("low", "normal", "high"):
            raise CliError("--priority is low, normal or high")
        fields: dict[str, Any] = {"type": type, "link": link, "priority": priority}
        if collapse_key is not None:
            fields["collapse_key"] = collapse_key
        if expires_in is not None:
            fields["expires_at"] = (datetime.now(UTC) + timedelta(seconds=parse_ttl(expires_in))).isoformat()
        if meta is not None:
            fields["meta"] = _object(meta)
        base = http_base(url)
        admin = token or local_token(data_dir, "notify-cli", admin=True, ttl_s=300)
    except CliError as exc:
        raise fail(exc.message, exc.exit_code) from None
    try:
        with NotifyClient(base, admin) as client:
            if broadcast:
                if connected_only:
                    fields["audience"] = "connected"
                answer: Any = client.broadcast(title, message, idempotency_key=idempotency_key, **fields)
            else:
                answer = client.publish(user, title, message, idempotency_key=idempotency_key, **fields)  # type: ignore[arg-type]
    except ConnectionFailed as exc:
        raise fail(_connection_error(exc.__cause__, base)) from None
    except NotifyClientError as exc:
        raise fail(explain(exc.status, {"detail": exc.detail, "code": exc.code}, base)) from None
    if as_json:
        out.print_json(json.dumps(answer if isinstance(answer, dict) else {"count": answer}))
    elif broadcast:
        out.print(f"[green]broadcast[/] {escape(title)!r} to {answer} users")
    else:
        out.print(f"[green]sent[/] {escape(title)!r} to {escape(str(user))} (id {answer.get('id')}, "
                  f"seq {answer.get('seq')})")


def _object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--meta is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError("--meta must be a JSON object")
    return value
