"""Per-address connection rate and the send buffer, against the real server.

The other client is 127.0.0.2: Linux routes all of 127.0.0.0/8 to loopback, so a test can be a second
address without a second machine. 127.0.0.1 is a proxy uvicorn trusts by default (``--forwarded-allow-ips``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .conftest import ServerProcess, new_user, recv_json

OTHER = "127.0.0.2"
LIMITED = {"NOTIFY_HANDSHAKE_RATE_PER_IP": 2, "NOTIFY_HANDSHAKE_BURST_PER_IP": 3}


async def _handshake(server: ServerProcess, user: str, *, source: str | None = None,
                     forwarded_for: str | None = None) -> int:
    """101 when the socket opened (after reading ``connected``), else the HTTP status it was refused with."""
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    try:
        async with connect(server.ws_url, additional_headers=headers, open_timeout=5,
                           local_addr=(source, 0) if source else None) as ws:
            assert (await recv_json(ws))["type"] == "connected"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def _raw_refusal(server: ServerProcess, source: str) -> bytes:
    """What a plain socket from ``source`` reads after sending a handshake request."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=(source, 0)) as sock:
        sock.sendall(f"GET /ws/notifications HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


async def test_an_address_past_its_connection_rate_is_refused_at_accept_and_others_are_not(make_server) -> None:
    server = make_server(**LIMITED)
    user = new_user()
    codes = await asyncio.gather(*(_handshake(server, user, source=OTHER) for _ in range(8)))
    # The burst of 3 goes through (a 4th if a token came back meanwhile); the rest are refused before any parsing.
    assert codes.count(101) in (3, 4) and codes.count(429) == 8 - codes.count(101), codes
    refusal = _raw_refusal(server, OTHER)
    head, _, body = refusal.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 ") and b"retry-after: 1" in head.lower(), refusal
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"detail": "too many connections from this address; retry later", "code": "rate_limited"}
    # Plain HTTP from that address is a new connection too; 127.0.0.1 (the trusted proxy) is never limited.
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=OTHER), timeout=5) as client:
        assert (await client.get(f"{server.url}/healthz")).status_code == 429
    assert [await _handshake(server, user) for _ in range(6)] == [101] * 6
    # A refusal costs the address nothing: after one token's worth of time it is let in again.
    await asyncio.sleep(0.6)
    assert await _handshake(server, user, source=OTHER) == 101

    stats = httpx.get(f"{server.url}/ws/stats", timeout=5).json()
    refused = stats["connections_refused"]
    assert refused >= 6
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert f"notify_connections_refused_total {float(refused)}" in metrics
    assert "Traceback" not in server.output()


async def test_behind_a_trusted_proxy_the_forwarded_address_is_limited(make_server) -> None:
    server = make_server(**LIMITED)
    user = new_user()
    codes = await asyncio.gather(*(_handshake(server, user, forwarded_for="203.0.113.7") for _ in range(8)))
    assert codes.count(101) in (3, 4) and codes.count(429) == 8 - codes.count(101), codes
    async with httpx.AsyncClient(timeout=5) as client:  # the endpoint's refusal has the API's error body too
        refused = await client.get(server.ws_url.replace("ws://", "http://"), headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "X-Forwarded-For": "203.0.113.7"})
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited", refused.text
    # Another client behind the same proxy is not held back by the first one.
    assert [await _handshake(server, user, forwarded_for="203.0.113.8") for _ in range(3)] == [101] * 3


def test_a_client_that_stops_reading_is_closed_after_a_bounded_amount(make_server) -> None:
    """The send buffer cap (NOTIFY_WS_SEND_BUFFER_BYTES, 256 KiB, which Linux doubles) plus the transport's
    64 KiB and a queue of 64 frames bound what a client that never reads can hold: it overflows (1008) after
    at most about 1.1 MB of notifications, not after the ~5 MB the kernel's autotuning would buffer."""
    queue = 64
    server = make_server(NOTIFY_SEND_QUEUE_SIZE=queue)
    user = new_user("stuck")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting, so the window is small
    sock.settimeout(5)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall((f"GET /ws/notifications HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {server.token(user)}\r\n\r\n").encode())
    assert sock.recv(12) == b"HTTP/1.1 101"  # and never read again
    body = {"user_id": user, "title": "padding", "message": "x" * 2000, "meta": {"pad": "y" * 3500}}
    frame = len(json.dumps(body)) + 300  # the notification frame around these fields
    sent, overflowed = 0, False
    started = time.monotonic()
    with httpx.Client(timeout=10, headers=server.admin_headers()) as client:
        while not overflowed and time.monotonic() - started < 60:
            for _ in range(10):
                assert client.post(f"{server.url}/api/notifications", json=body).status_code == 201
            sent += 10
            overflowed = client.get(f"{server.url}/ws/stats").json()["send_queue_overflows"] == 1
    sock.close()
    held = sent * frame
    print(f"\nnon-reading client closed for a full queue after {sent} notifications ({held / 1e6:.2f} MB)")
    assert overflowed
    # kernel send buffer (doubled) + transport high-water mark + queue + the client's receive buffer
    # (doubled), and the last batch of 10 published before the check
    assert held <= 2 * 262144 + 65536 + queue * frame + 2 * 4096 + 10 * frame, held
