"""Rate and connection limits (docs/reliability.md, item 7): a frame flood is closed 1008, the per-user
connection cap holds, and a burst of handshakes from one address leaves other users' delivery p99 within 2×.

``burst_main`` is the burst's own process (``python -m loadtest.soak handshake-burst``). Imports ``clients``,
``raw`` and ``target``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from namaskah_notify.auth import mint_token
from namaskah_notify.config import Settings

from ..localserver import ROOT, quantile
from .clients import Publisher, Tab, close_tabs, open_tabs, round_robin
from .raw import close_frame, raw_handshake
from .target import Target, figure, pinned, workdir


@pinned
async def flood(root: Path | None = None, *, users: int = 100, seconds: float = 20, rate: float = 100,
                burst_rate: float = 2000, cap: int = 20, frames_per_s: float = 1000,
                handshake_limit: float = 50, handshake_limit_burst: int = 20) -> dict[str, Any]:
    """A frame flood closes 1008; the per-user cap holds; a handshake burst leaves others' p99 ≤ 2× quiet.
    The server runs with ``NOTIFY_HANDSHAKE_RATE_PER_IP=handshake_limit`` (0: none), the protection a
    deployment turns on (or leaves to its proxy) against one address opening connections flat out."""
    env: dict[str, Any] = {"NOTIFY_MAX_CONNECTIONS_PER_USER": cap}
    if handshake_limit:
        env["NOTIFY_HANDSHAKE_RATE_PER_IP"] = handshake_limit
        env["NOTIFY_HANDSHAKE_BURST_PER_IP"] = handshake_limit_burst
    target = Target(workdir(root, "flood"), env=env).start()
    try:
        # 1. one connection sending frames_per_s frames per second until it is closed. A bare websockets
        # connection: the Python client paces its frames under the very limit this breaks on purpose.
        flooder = await connect(target.ws_url, additional_headers={
            "Authorization": f"Bearer {target.token('flooder')}"}, ping_interval=None)
        await flooder.recv()
        sent, code, started = 0, None, time.monotonic()

        async def drain() -> int | None:
            with contextlib.suppress(ConnectionClosed):
                async for _ in flooder:
                    pass
            return flooder.protocol.close_rcvd.code if flooder.protocol.close_rcvd else 1006

        reader = asyncio.create_task(drain())
        with contextlib.suppress(ConnectionClosed):
            while not reader.done() and time.monotonic() - started < 30:
                await flooder.send('{"type":"ping"}')
                sent += 1
                await asyncio.sleep(max(0.0, started + sent / frames_per_s - time.monotonic()))
        code = await asyncio.wait_for(reader, 10)
        flood_s = time.monotonic() - started

        # 2. the per-user cap: cap + 10 connections of one user at once.
        results = await asyncio.gather(*(raw_handshake(target.port, target.ws_path("capped"), target.token("capped"))
                                         for _ in range(cap + 10)))
        codes = []
        for _reader, _writer, _status, (opcode, payload) in results:
            if opcode == 8:
                codes.append(struct.unpack("!H", payload[:2])[0])
            else:
                codes.append(0)
        stats = await target.stats()
        capped_open = int(stats["total_connections"])
        for _r, writer, _s, _f in results:
            writer.close()
        await target.wait_connections(lambda n: n == 0, 20)

        # 3. delivery p99 of other users, quiet and during a handshake burst from one client.
        names = [f"u{i}" for i in range(users)]
        tabs = [Tab(target, u) for u in names]
        await open_tabs(tabs)
        pick = round_robin(names, 1)
        quiet = Publisher(target)
        await quiet.run(lambda i: [(pick(i), {})], rate, seconds)
        await asyncio.sleep(1)
        quiet_lat = [x for t in tabs for x in t.latencies]
        for tab in tabs:
            tab.latencies.clear()
        burst = await handshake_burst(target, burst_rate, seconds, Publisher(target), pick, rate)
        await asyncio.sleep(1)
        busy_lat = [x for t in tabs for x in t.latencies]
        await close_tabs(tabs)
        quiet_p99, busy_p99 = quantile(quiet_lat, 0.99), quantile(busy_lat, 0.99)
        numbers = {
            "flood_frames_sent": sent, "flood_close_code": code, "flood_closed_after_s": round(flood_s, 3),
            "cap": cap, "cap_accepted": codes.count(0), "cap_refused_4429": codes.count(4429),
            "cap_open_on_server": capped_open, "quiet_p99_ms": round(quiet_p99, 1),
            "burst_p99_ms": round(busy_p99, 1), "p99_ratio": round(busy_p99 / quiet_p99, 2),
            "quiet_samples": len(quiet_lat), "burst_samples": len(busy_lat), **burst,
        }
        return figure("7", f"flood of {frames_per_s:g} frames/s closed {code} after {sent} frames "
                      f"({flood_s:.2f} s); cap {cap}: {codes.count(0)} accepted, {codes.count(4429)} × 4429; "
                      f"handshake burst {burst_rate:g}/s ({burst['handshakes_per_s']:.0f}/s accepted, "
                      f"{burst['handshake_outcomes'].get('429', 0)} refused 429 at {handshake_limit:g}/s per address): "
                      f"others' p99 "
                      f"{quiet_p99:.1f} → {busy_p99:.1f} ms ({busy_p99 / quiet_p99:.2f}×, criterion ≤ 2×)", numbers)
    finally:
        target.stop()


BURST_ADDRESS = "127.0.0.2"


async def handshake_burst(target: Target, burst_rate: float, seconds: float, publisher: Publisher,
                          pick: Callable[[int], list[str]], rate: float) -> dict[str, Any]:
    """Handshakes at ``burst_rate``/s from one other client process (``burst_main``; each reads
    ``connected`` then hangs up) while ``publisher`` keeps publishing to the measured users."""
    # nice 19: the burst shares the client core with the measuring clients, which must see the server's
    # delays, not their own wait for that core (on the internet the attacker has its own machine).
    child = await asyncio.create_subprocess_exec(
        "nice", "-n", "19", sys.executable, "-m", "loadtest.soak", "handshake-burst", "--port", str(target.port),
        "--secret", target.secret, "--burst-rate", str(burst_rate), "--seconds", str(seconds),
        stdout=subprocess.PIPE, cwd=ROOT)
    out, _ = await asyncio.gather(child.communicate(), publisher.run(lambda i: [(pick(i), {})], rate, seconds))
    return json.loads(out[0].decode().strip().splitlines()[-1])


async def burst_main(port: int, secret: str, burst_rate: float, seconds: float) -> None:
    """The burst client: its own process, so its work does not slow the measuring one, and its own
    address (127.0.0.2), as one client on the internet would be; the measured users are on 127.0.0.1."""
    settings = Settings(jwt_secret=secret)
    tokens = [mint_token(settings, f"burst{i}", ttl_s=3600) for i in range(200)]
    gate = asyncio.Semaphore(500)
    done: Counter = Counter()

    async def one(i: int) -> None:
        async with gate:
            try:
                _reader, writer, status, _first = await raw_handshake(port, "/ws/notifications", tokens[i % 200],
                                                                      source=BURST_ADDRESS)
                done[status] += 1
                writer.write(close_frame())
                writer.close()
            except Exception as exc:  # counted by kind; the burst goes on
                done[type(exc).__name__] += 1

    started = time.monotonic()
    tasks = []
    for i in range(int(burst_rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / burst_rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    took = time.monotonic() - started
    accepted = done.get(101, 0)
    print(json.dumps({"handshakes": accepted, "handshakes_per_s": accepted / took,
                      "handshake_outcomes": {str(k): v for k, v in done.items()}, "burst_s": round(took, 2)}))
