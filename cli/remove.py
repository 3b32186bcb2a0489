"""``notify delete`` (a user's notifications: one, all, or the read ones) and ``notify erase`` (everything
stored for a user, as an administrator), through the Python client. Imports ``common`` and ``send``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from namaskah_notify.client import ConnectionFailed, NotFound, NotifyClient, NotifyClientError

from .common import DEFAULT_URL, CliError, DataDir, Url, fail, http_base, local_token, out
from .send import _connection_error, explain


def erased_table(user: str, counts: dict[str, int]) -> Table:
    table = Table(title=f"erased {user}", title_justify="left")
    table.add_column("table")
    table.add_column("rows deleted", justify="right")
    for name, rows in counts.items():
        table.add_row(name, f"{rows:,}", style=None if rows else "dim")
    table.add_section()
    table.add_row("total", f"{sum(counts.values()):,}", style="bold")
    return table


def delete(
    notification_id: Annotated[str | None, typer.Argument(help="The notification to delete")] = None,
    user: Annotated[str | None, typer.Option(help="Whose it is: a token is minted from the local secret")] = None,
    token: Annotated[str | None, typer.Option(envvar="NOTIFY_TOKEN", help="The user's token instead of --user")]
    = None,
    all_: Annotated[bool, typer.Option("--all", help="Delete all of the user's notifications")] = False,
    read: Annotated[bool, typer.Option("--read", help="Delete the user's read notifications")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's answer as JSON")] = False,
    url: Url = DEFAULT_URL,
    data_dir: DataDir = None,
) -> None:
    """Delete one of a user's notifications, all of them (--all), or the read ones (--read).

    Every open tab of the user removes them at once (a `deleted` event).

    Exit codes:
      0  deleted
      1  not the user's (or no such notification), refused, or the server cannot be reached

    Examples:

      notify delete notif_01931f2a0b3c9d8e7f6a5b4c --user alice

      notify delete --read --user alice

      notify delete --all --token "$TOKEN"
    """
    try:
        if sum([notification_id is not None, all_, read]) != 1:
            raise CliError("give a NOTIFICATION_ID, --all or --read (one of them)")
        if (user is None) == (token is None):
            raise CliError("give --user (a token is minted from the local secret) or --token, not both")
        base = http_base(url)
        bearer = token or local_token(data_dir, user or "", ttl_s=300)
    except CliError as exc:
        raise fail(exc.message, exc.exit_code) from None
    try:
        with NotifyClient(base, bearer) as client:
            if notification_id is not None:
                client.delete(notification_id)
                answer = {"deleted": 1}
            else:
                answer = client.delete_all(read_only=read)
    except NotFound:
        raise fail(f"404: no notification {notification_id} of this user") from None
    except ConnectionFailed as exc:
        raise fail(_connection_error(exc.__cause__, base)) from None
    except NotifyClientError as exc:
        raise fail(explain(exc.status, {"detail": exc.detail, "code": exc.code}, base)) from None
    if as_json:
        print(json.dumps(answer))
    elif notification_id is not None:
        out.print(f"[green]deleted[/] {escape(notification_id)}")
    else:
        which = "read notifications" if read else "notifications"
        out.print(f"[green]deleted[/] {answer['deleted']} {which}; unread now {answer['unread_count']}")


def erase(
    user: Annotated[str, typer.Argument(help="The user whose every stored row is deleted")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows deleted per table as JSON")] = False,
    url: Url = DEFAULT_URL,
    token: Annotated[str | None, typer.Option(envvar="NOTIFY_ADMIN_TOKEN",
                                              help="Admin token (default: minted from the local secret)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Erase everything stored for a user, and close their connections (admin).

    DELETE /api/admin/users/USER: notifications, sequence, verifications, revocation, idempotency keys, the
    known-user row. Their open connections close (1008); a later notification for them starts again at
    seq 1. Cannot be undone.

    Exit codes:
      0  erased (also when nothing was stored)
      1  not confirmed, refused, or the server cannot be reached

    Examples:

      notify erase alice

      notify erase alice --yes --json
    """
    try:
        base = http_base(url)
        admin = token or local_token(data_dir, "notify-cli", admin=True, ttl_s=300)
    except CliError as exc:
        raise fail(exc.message, exc.exit_code) from None
    if not yes and not typer.confirm(f"Erase everything stored for {user}? This cannot be undone"):
        raise fail("not erased")
    try:
        with NotifyClient(base, admin) as client:
            counts = client.erase_user(user)
    except ConnectionFailed as exc:
        raise fail(_connection_error(exc.__cause__, base)) from None
    except NotifyClientError as exc:
        raise fail(explain(exc.status, {"detail": exc.detail, "code": exc.code}, base)) from None
    if as_json:
        print(json.dumps({"user_id": user, "deleted": counts}))
    else:
        out.print(erased_table(user, counts))
