"""``notify listen``: a live terminal subscriber for one user's notifications.

Parses options, runs :func:`~cli.subscriber.listen_until` (the Python client's ``Subscriber``) and renders
what it reports with ``listen_view``: notifications on stdout (pretty, or one JSON object per line),
status lines on stderr. Imports ``common``, ``listen_view`` and ``subscriber``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from namaskah_notify.client import Backoff

from .common import DEFAULT_URL, CliError, DataDir, Url, err, fail, http_base, local_token, out
from .listen_view import notification_json, notification_text, status_text
from .subscriber import listen_until


def listen(
    user: Annotated[str | None, typer.Argument(help="User id; a token is minted from the local secret")] = None,
    token: Annotated[str | None, typer.Option(envvar="NOTIFY_TOKEN", help="Use this token instead of minting")] = None,
    url: Url = DEFAULT_URL,
    since_seq: Annotated[int | None, typer.Option(min=0, help="First show every notification after this seq")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Exit 0 after this many notifications")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout")] = False,
    mark_read: Annotated[bool, typer.Option("--mark-read", help="Mark each shown notification read")] = False,
    retries: Annotated[int, typer.Option(envvar="NOTIFY_RETRIES",
                                         help="Failed reconnects in a row before exit 1 (-1: forever)")] = 10,
    backoff: Annotated[float, typer.Option(min=0, help="First reconnect delay bound, seconds (doubles)")] = 0.5,
    backoff_max: Annotated[float, typer.Option(min=0, help="Largest reconnect delay bound, seconds")] = 30.0,
    ping_interval: Annotated[float, typer.Option(min=0.1, hidden=True)] = 20.0,
    data_dir: DataDir = None,
) -> None:
    """Watch a user's notifications arrive live; reconnects and resumes by itself.

    Exit codes:
      0  done: --count reached, or the server closed normally (1000)
      1  unreachable after the retries, or another error
      2  token expired / invalid (close 4401)

    Examples:

      notify listen alice

      notify listen --token "$TOKEN" --url http://127.0.0.1:9000

      notify listen alice --count 1 --json | jq .title
    """
    if (user is None) == (token is None):
        raise fail("give a USER (a token is minted from the local secret) or --token, not both")
    if user is not None:
        try:
            local_token(data_dir, user)  # fail now, not at the first connect, when there is no secret
        except CliError as exc:
            raise fail(exc.message, exc.exit_code) from None

        def token_source() -> str:
            return local_token(data_dir, user)

        source: str | Callable[[], str] = token_source  # a function: a token running out is refreshed
    else:
        source = token or ""

    def on_status(kind: str, message: str) -> None:
        err.print(status_text(kind, message), soft_wrap=True)

    def on_notification(data: dict[str, Any], replayed: bool) -> None:
        now = datetime.now(UTC)
        if as_json:
            sys.stdout.write(notification_json(data, now, replayed=replayed) + "\n")
            sys.stdout.flush()
        else:
            out.print(notification_text(data, now, replayed=replayed), soft_wrap=True)

    try:
        run = listen_until(http_base(url), source, on_notification=on_notification, on_status=on_status,
                           since_seq=since_seq, count=count, mark_read=mark_read, retries=retries,
                           backoff=Backoff(backoff, max(backoff, backoff_max)), ping_interval=ping_interval)
        asyncio.run(run)
    except CliError as exc:
        raise fail(exc.message, exc.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
