"""``notify token``: mint a test token with the server's own secret.

Imports ``common``.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from namaskah_notify.auth import SCOPES, mint_token

from .common import DataDir, fail, parse_ttl, settings_from


def token(
    user: Annotated[str, typer.Argument(help="User id (the sub claim)")],
    admin: Annotated[bool, typer.Option("--admin", help="Add role admin (every endpoint)")] = False,
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help=f"Add a scope (repeatable): {', '.join(SCOPES)}")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: seconds, or 30m / 1h / 2d")] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="Print the token with its claims")] = False,
    data_dir: DataDir = None,
) -> None:
    """Mint a test token with the server's own secret; prints only the token (pipeable).

    Examples:

      TOKEN=$(notify token alice)

      notify token ops --admin --ttl 30m --json

      notify token sms-provider --scope notify:webhook --ttl 30d
    """
    settings = settings_from(data_dir=data_dir)
    seconds = parse_ttl(ttl)
    unknown = [name for name in scope or () if name not in SCOPES]
    if unknown:
        raise fail(f"unknown scope {unknown[0]!r}: use {', '.join(SCOPES)}")
    try:
        minted = mint_token(settings, user, admin=admin, ttl_s=seconds, scopes=scope or ())
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        import jwt

        claims = jwt.decode(minted, options={"verify_signature": False})
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))
        print(json.dumps({"token": minted, "claims": claims, "expires_at": expires}))
    else:
        print(minted)
