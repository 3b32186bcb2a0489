"""Connection churn (docs/reliability.md, item 13): connect/disconnect cycles, every other one without a close
frame (raw sockets: the Python client always closes properly); afterwards open files, the hub, threads
and asyncio tasks are back to baseline and RSS grew < 10 MB. Imports ``raw`` and ``target``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .raw import close_frame, raw_handshake, read_frame
from .target import Target, figure, log, workdir


async def churn(root: Path | None = None, *, cycles: int = 50000, concurrency: int = 50, warmup: int = 2000,
                users: int = 500) -> dict[str, Any]:
    """Connect/disconnect cycles, every other one without a close frame; afterwards fds, hub size and
    stats are back to baseline and RSS grew < 10 MB after warm-up."""
    target = Target(workdir(root, "churn")).start()
    try:
        tokens = [target.token(f"c{i}") for i in range(users)]
        outcomes: Counter = Counter()

        async def cycle(i: int) -> None:
            user = i % users
            try:
                reader, writer, status, _first = await raw_handshake(target.port, target.ws_path(f"c{user}"),
                                                                     tokens[user])
                outcomes[status] += 1
                if i % 2:  # abrupt: the TCP socket goes, no close frame
                    writer.transport.abort()
                    outcomes["abrupt"] += 1
                    return
                writer.write(close_frame(1000))
                while True:  # wait for the server's close frame
                    opcode, _ = await asyncio.wait_for(read_frame(reader), 10)
                    if opcode == 8:
                        break
                writer.close()
                outcomes["clean"] += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                outcomes[type(exc).__name__] += 1

        async def run(first: int, count: int) -> float:
            gate = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with gate:
                    await cycle(i)

            started = time.monotonic()
            for chunk in range(first, first + count, 5000):
                await asyncio.gather(*(one(i) for i in range(chunk, min(first + count, chunk + 5000))))
            return time.monotonic() - started

        async def settle(fds: int | None = None) -> dict[str, Any]:
            await target.wait_connections(lambda n: n == 0, 60)
            await asyncio.sleep(2)
            deadline = time.monotonic() + 15  # sockets still closing on a busy machine
            while fds is not None and target.fds() > fds and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            stats = await target.stats()
            return {"rss_kib": target.rss_kib(), "fds": target.fds(), "threads": target.threads(),
                    "total_connections": stats["total_connections"], "connected_users": stats["connected_users"],
                    "tasks": stats["asyncio_tasks"]}

        cold = await settle()
        await run(0, warmup)
        base = await settle()
        log(f"churn: after {warmup} warm-up cycles {base}; running {cycles}")
        took = await run(warmup, cycles)
        after = await settle(base["fds"])
        stats = await target.stats()
        growth_mb = (after["rss_kib"] - base["rss_kib"]) / 1024
        numbers = {"cycles": cycles, "warmup": warmup, "seconds": round(took, 1), "cycles_per_s": round(cycles / took),
                   "cold": cold, "baseline": base, "after": after, "rss_growth_mb": round(growth_mb, 2),
                   "outcomes": dict(outcomes), "connections_opened": stats["connections_opened"]}
        return figure("13", f"{cycles} cycles ({outcomes['abrupt']} abrupt) in {took:.0f} s: fds {base['fds']} → "
                      f"{after['fds']}, hub {base['total_connections']} → {after['total_connections']} connections / "
                      f"{after['connected_users']} users, threads {base['threads']} → {after['threads']}, RSS "
                      f"{base['rss_kib'] / 1024:.1f} → {after['rss_kib'] / 1024:.1f} MiB ({growth_mb:+.1f} MB, "
                      f"criterion < 10 MB); asyncio tasks {base['tasks']} → {after['tasks']}", numbers)
    finally:
        target.stop()
