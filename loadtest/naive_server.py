"""The negative control of the slow-consumer run (issue 7, item 9): a notification server written the naive
way, so that ``soak.py slow --target naive`` can show that the measurement fails when it should.

It speaks just enough of the service's protocol for the soak clients: ``/ws/notifications?user=ID``
(no authentication; any token is ignored) answers ``connected``, and ``POST /api/notifications`` with
``user_ids`` pushes to every open socket of those users by awaiting each send in turn::

    for ws in conns:
        if ws.user in user_ids:
            await ws.send_text(frame)

One client that stops reading fills its socket buffers; its ``send`` then waits for ever, the publish
request that made it waits with it, and every notification behind it waits too. Nothing is stored.

    python loadtest/naive_server.py --port 8100
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


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def notifications_socket(ws: WebSocket) -> None:
    """Accept anyone, remember the socket, wait for the peer to go."""
    user = ws.query_params.get("user", "anonymous")
    await ws.accept()
    ws.state.user = user
    await ws.send_text(orjson.dumps({"type": "connected", "user_id": user, "last_seq": 0}).decode())
    conns.append(ws)
    try:
        while True:
            await ws.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        conns.remove(ws)


async def publish(request: Request) -> JSONResponse:
    """The naive fan-out: one awaited send per open socket, in connection order."""
    body = await request.json()
    targets = set(body.get("user_ids") or [body.get("user_id")])
    items = []
    for user in targets:
        seq = next(seqs.setdefault(user, count(1)))
        items.append({"id": f"notif_{user}_{seq}", "seq": seq, "user_id": user, "title": body.get("title", ""),
                      "message": body.get("message", ""), "type": body.get("type", "info"), "link": None,
                      "created_at": _now_iso(), "is_read": False, "meta": body.get("meta")})
    by_user = {item["user_id"]: orjson.dumps({"type": "notification", "data": item}).decode() for item in items}
    for ws in list(conns):
        frame = by_user.get(ws.state.user)
        if frame is not None:
            with contextlib.suppress(Exception):  # a peer that went away
                await ws.send_text(frame)
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
    args = parser.parse_args()
    # The same uvicorn WebSocket settings as the real service, so only the fan-out differs.
    uvicorn.run(app, host=args.host, port=args.port, ws="websockets-sansio", ws_per_message_deflate=False,
                ws_ping_interval=float(os.environ.get("NOTIFY_WS_PING_INTERVAL_S", 20)),
                ws_ping_timeout=float(os.environ.get("NOTIFY_WS_PING_TIMEOUT_S", 20)),
                log_level="warning", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
