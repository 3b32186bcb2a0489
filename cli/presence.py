"""``notify presence``: who is online across the cluster, and when each user was last seen. Imports
``common`` and ``send``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from namaskah_notify.client import ConnectionFailed, NotifyClient, NotifyClientError

from .common import DEFAULT_URL, CliError, DataDir, Url, fail, http_base, local_token, out
from .send import _connection_error, explain


def presence(
    users: Annotated[list[str], typer.Argument(help="User ids (up to 1,000)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's answer as JSON")] = False,
    url: Url = DEFAULT_URL,
    token: Annotated[str | None, typer.Option(envvar="NOTIFY_ADMIN_TOKEN",
                                              help="Admin token (default: minted from the local secret)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Whether each user is connected anywhere (GET /api/presence), with how many connections, and when they
    were last seen.

    Examples:

      notify presence alice bob

      notify presence alice --json
    """
    try:
        base = http_base(url)
        admin = token or local_token(data_dir, "notify-cli", admin=True, ttl_s=300)
    except CliError as exc:
        raise fail(exc.message, exc.exit_code) from None
    try:
        with NotifyClient(base, admin) as client:
            answer = client.request("GET", "/api/presence", params=[("user_id", user) for user in users])
    except ConnectionFailed as exc:
        raise fail(_connection_error(exc.__cause__, base)) from None
    except NotifyClientError as exc:
        raise fail(explain(exc.status, {"detail": exc.detail, "code": exc.code}, base)) from None
    if as_json:
        out.print_json(json.dumps(answer))
        return
    table = Table("user", "online", "connections", "last seen", title="presence", title_justify="left")
    for user, state in answer["users"].items():
        table.add_row(user, "[green]yes[/]" if state["online"] else "[dim]no[/]", str(state["connections"]),
                      state["last_seen"] or "[dim]never[/]")
    out.print(table)
