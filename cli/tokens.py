"""``notify token``: mint a test token with the server's own secret.

Imports ``common``.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from namaskah_notify.auth import mint_token

from .common import DataDir, fail, parse_ttl, settings_from


def token(
    user: Annotated[str, typer.Argument(help="User id (the sub claim)")],
    admin: Annotated[bool, typer.Option("--admin", help="Add role admin (publishing endpoints)")] = False,
    ttl: Annotated[str, typer.Option(help="Lifetime: seconds, or 30m / 1h / 2d")] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="Print the token with its claims")] = False,
    data_dir: DataDir = None,
) -> None:
    """Mint a test token with the server's own secret; prints only the token (pipeable).

    Examples:

      TOKEN=$(notify token alice)

      notify token ops --admin --ttl 30m --json
    """
    settings = settings_from(data_dir=data_dir)
    seconds = parse_ttl(ttl)
    try:
        minted = mint_token(settings, user, admin=admin, ttl_s=seconds)
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        import jwt

        claims = jwt.decode(minted, options={"verify_signature": False})
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))
        print(json.dumps({"token": minted, "claims": claims, "expires_at": expires}))
    else:
        print(minted)
