"""Memory under clients that never read (docs/reliability.md, item 9): each is closed on a full queue, and
peak RSS stays under baseline + clients × (queue cap + write buffer). Imports ``clients``, ``raw``, ``slow``
and ``target``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from .clients import Publisher, Tab, close_tabs, open_tabs, padding, round_robin
from .raw import raw_handshake
from .slow import NO_PING_DROP
from .target import Target, figure, pinned, workdir

WRITE_BUFFER = 64 * 1024  # uvloop's default high-water mark: a socket's send() waits above it


@pinned
async def slow_memory(root: Path | None = None, *, nonreaders: int = 200, queue: int = 64, pad: int = 5500,
                      per_request: int = 50, rate: float = 200, max_seconds: float = 300) -> dict[str, Any]:
    """``nonreaders`` clients that never read get padded notifications until every one overflowed its queue;
    peak RSS must stay ≤ baseline + nonreaders × (queue × frame + write buffer)."""
    target = Target(workdir(root, "slowmem"), env={"NOTIFY_SEND_QUEUE_SIZE": queue, **NO_PING_DROP}).start()
    try:
        users = [f"stuck{i}" for i in range(nonreaders)]
        sockets = []
        for user in users:
            sockets.append(await raw_handshake(target.port, target.ws_path(user), target.token(user), rcvbuf=4096,
                                               read_connected=False))
        await target.wait_connections(lambda n: n == nonreaders, 30)
        padded = padding(pad)
        # The baseline: the peak RSS while the same traffic goes to as many clients that do read (building,
        # queueing and writing their frames is the publishing path's own working set), less what those
        # readers' connections cost idle; the non-reading clients are connected throughout, so what they add
        # by not reading is all that is left between the baseline and the peak with them.
        before_readers = target.rss_kib()
        readers = [Tab(target, f"reader{i}") for i in range(nonreaders)]
        await open_tabs(readers)
        await asyncio.sleep(1)
        readers_idle = target.rss_kib() - before_readers
        pick_readers = round_robin([tab.user for tab in readers], per_request)
        await Publisher(target).run(lambda i: [(pick_readers(i), padded)], rate, min(10.0, max_seconds / 4))
        await asyncio.sleep(1)
        warmup_overflows = (await target.stats())["send_queue_overflows"]
        await close_tabs(readers)
        idle = target.rss_kib()
        baseline = target.peak_rss_kib() - readers_idle
        stop = asyncio.Event()
        publisher = Publisher(target)
        pick = round_robin(users, per_request)

        async def watch() -> None:
            deadline = time.monotonic() + max_seconds
            while time.monotonic() < deadline:
                if (await target.stats())["send_queue_overflows"] - warmup_overflows >= nonreaders:
                    break
                await asyncio.sleep(0.5)
            stop.set()

        started = time.monotonic()
        await asyncio.gather(watch(), publisher.run(lambda i: [(pick(i), padded)], rate,
                                                    max_seconds, stop))
        took = time.monotonic() - started
        stats = await target.stats()
        peak = target.peak_rss_kib()
        frame = pad + 400  # the notification's JSON around the message
        bound = baseline + nonreaders * (queue * frame + WRITE_BUFFER) / 1024
        for _r, writer, _s, _f in sockets:
            writer.transport.abort()
        numbers = {"nonreaders": nonreaders, "queue": queue, "frame_bytes": frame, "baseline_kib": baseline,
                   "idle_after_warmup_kib": idle, "readers_idle_kib": readers_idle,
                   "warmup_overflows": warmup_overflows,
                   "peak_kib": peak, "bound_kib": round(bound),
                   "overflows": stats["send_queue_overflows"] - warmup_overflows,
                   "published": publisher.requests * per_request, "seconds": round(took, 1)}
        numbers["passes"] = peak <= bound and numbers["overflows"] >= nonreaders
        return figure("9", f"{nonreaders} non-reading clients, queue {queue} × {frame} B: "
                      f"{numbers['overflows']} closed for a full queue after {took:.0f} s; peak RSS "
                      f"{peak / 1024:.0f} MiB vs bound {bound / 1024:.0f} MiB (baseline: peak "
                      f"{baseline / 1024:.0f} MiB of the same traffic to clients that read, "
                      f"+ {nonreaders} × (queue + {WRITE_BUFFER // 1024} KiB write buffer))", numbers)
    finally:
        target.stop()
