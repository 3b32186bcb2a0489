"""``notify``: the Typer app. Each command lives in its own module; this one only wires them together.

Commands parse, call and render; a failure is one red line on stderr and a non-zero exit.
Imports ``db``, ``doctor``, ``listen``, ``prune``, ``publish``, ``remove``, ``send``, ``serve``, ``stats`` and
``tokens``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from namaskah_notify import __version__

from .db import db_app
from .doctor import doctor
from .listen import listen
from .presence import presence
from .prune import prune
from .publish import send
from .remove import delete, erase
from .send import send_test
from .serve import serve
from .stats import stats
from .tokens import token

app = typer.Typer(
    help="namaskah-notify: real-time notifications over WebSocket.\n\n"
    "Quick start: `notify serve`, then in other terminals `notify listen demo` and `notify send-test demo`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"notify (namaskah-notify) {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit")] = False,
) -> None:
    """namaskah-notify: real-time notifications over WebSocket."""


app.command()(serve)
app.command()(token)
app.command()(listen)
app.command()(send)
app.command()(presence)
app.command("send-test")(send_test)
app.command()(stats)
app.command()(doctor)
app.command()(delete)
app.command()(erase)
app.command()(prune)
app.add_typer(db_app, name="db")
