"""A notification server written the naive way: the negative control of the slow-consumer run
(docs/reliability.md, item 9), so that ``python -m loadtest.soak slow --target naive`` can show that the
measurement fails when it should.

It is also the baseline ``bench.py`` measures our server against, in the same run.

It speaks just enough of the service's protocol for the soak and bench clients: ``/ws/notifications?user=ID``
(no authentication; any token is ignored) answers ``connected``, and ``POST /api/notifications`` with
``user_id`` (answered with the notification, as the real service does), ``user_ids`` (answered with
``{"count", "items"}``) or ``"broadcast": true`` (every user with an open socket; answered with
``{"count"}``) pushes to every open socket of those users by awaiting each send in turn::

    for ws in conns:
        if ws.user in user_ids:
            await ws.send_text(frame)

One client that stops reading fills its socket buffers; its ``send`` then waits for ever, the publish
request that made it waits with it, and every notification behind it waits too. Nothing is stored: each
user's ``seq`` is a counter in memory, and nothing is replayed.

Finding a user's sockets is a pass over every open socket, so a publish costs time in proportion to all
open connections. ``--by-user`` keeps the sockets in a dict by user instead (the same awaited sends, in the
order each user's sockets connected): the stronger baseline of the two.

    python loadtest/naive_server.py --port 8100 [--by-user]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from datetime import UTC, datetime
from itertools import count

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

conns: list[WebSocket] = []
seqs: dict[str, count] = {}
by_user: dict[str, list[WebSocket]] | None = None  # with --by-user: each user's open sockets


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def notifications_socket(ws: WebSocket) -> None:
    """Accept anyone, remember the socket, wait for the peer to go."""
    user = ws.query_params.get("user", "anonymous")
    await ws.accept()
    ws.state.user = user
    await ws.send_text(orjson.dumps({"type": "connected", "user_id": user, "last_seq": 0}).decode())
    conns.append(ws)
    if by_user is not None:
        by_user.setdefault(user, []).append(ws)
    try:
        while True:
            await ws.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        conns.remove(ws)
        if by_user is not None:
            by_user[user].remove(ws)


async def publish(request: Request) -> JSONResponse:
    """The naive fan-out: one awaited send per open socket, in connection order; a broadcast the same way,
    to every user with an open socket."""
    body = await request.json()
    if body.get("broadcast"):
        targets = {ws.state.user for ws in conns}
    else:
        targets = set(body.get("user_ids") or [body.get("user_id")])
    items = []
    for user in targets:
        seq = next(seqs.setdefault(user, count(1)))
        items.append({"id": f"notif_{user}_{seq}", "seq": seq, "user_id": user, "title": body.get("title", ""),
                      "message": body.get("message", ""), "type": body.get("type", "info"), "link": None,
                      "created_at": _now_iso(), "is_read": False, "meta": body.get("meta")})
    frames = {item["user_id"]: orjson.dumps({"type": "notification", "data": item}).decode() for item in items}
    if by_user is not None:
        for user, frame in frames.items():
            for ws in list(by_user.get(user, ())):
                with contextlib.suppress(Exception):  # a peer that went away
                    await ws.send_text(frame)
    else:
        for ws in list(conns):
            frame = frames.get(ws.state.user)
            if frame is not None:
                with contextlib.suppress(Exception):  # a peer that went away
                    await ws.send_text(frame)
    if body.get("broadcast"):
        return JSONResponse({"count": len(items)}, status_code=201)
    if body.get("user_ids") is None and len(items) == 1:
        return JSONResponse(items[0], status_code=201)
    return JSONResponse({"count": len(items), "items": items}, status_code=201)


async def stats(_request: Request) -> JSONResponse:
    return JSONResponse({"total_connections": len(conns), "status": "operational", "uptime_s": time.time()})


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[
    WebSocketRoute("/ws/notifications", notifications_socket),
    Route("/api/notifications", publish, methods=["POST"]),
    Route("/ws/stats", stats),
    Route("/healthz", healthz),
])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--by-user", action="store_true", help="Find a user's sockets in a dict, not by a scan")
    args = parser.parse_args()
    if args.by_user:
        global by_user
        by_user = {}
    # The same uvicorn WebSocket settings as the real service, so only the fan-out differs.
    uvicorn.run(app, host=args.host, port=args.port, ws="websockets-sansio", ws_per_message_deflate=False,
                ws_ping_interval=float(os.environ.get("NOTIFY_WS_PING_INTERVAL_S", 20)),
                ws_ping_timeout=float(os.environ.get("NOTIFY_WS_PING_TIMEOUT_S", 20)),
                log_level="warning", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
