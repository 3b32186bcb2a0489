"""A bare WebSocket client on asyncio streams, for what the Python client must not do: a reader that never
reads (a slow consumer), handshakes as fast as one process can open them (a burst, the per-user cap), and a
peer that vanishes without a close frame (churn). Imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
import struct


def handshake_request(port: int, path: str, token: str | None = None) -> bytes:
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n").encode()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return head[0] & 0x0F, await reader.readexactly(length)


def close_frame(code: int = 1000) -> bytes:
    mask = secrets.token_bytes(4)
    payload = struct.pack("!H", code)
    return bytes([0x88, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_handshake(port: int, path: str, token: str | None, *, rcvbuf: int | None = None,
                        read_connected: bool = True, timeout: float = 20, source: str | None = None,
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, tuple[int, bytes] | None]:
    """Open a socket (from address ``source``, e.g. 127.0.0.2, to be another client than the rest) to
    127.0.0.1:``port`` and upgrade it; returns the streams, the HTTP status (101 when accepted) and, with
    ``read_connected``, the first frame (``connected``, or a close frame when refused)."""
    sock = socket.socket()
    sock.setblocking(False)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        if source is not None:
            sock.bind((source, 0))
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), timeout)
        reader, writer = await asyncio.open_connection(sock=sock, limit=2 ** 20)
    except BaseException:
        sock.close()
        raise
    writer.write(handshake_request(port, path, token))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status = int(head.split(b" ", 2)[1])
    first = None
    if status == 101 and read_connected:
        first = await asyncio.wait_for(read_frame(reader), timeout)
    return reader, writer, status, first
