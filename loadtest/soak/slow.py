"""Slow consumers (docs/reliability.md, item 9): other clients' p99 with and without a client that never
reads, on our server and on the naive ``for ws in conns: await send`` control. The non-reading clients are
raw sockets (``raw``): the Python client always reads. Imports ``clients``, ``raw`` and ``target``.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from pathlib import Path
from typing import Any

from ..localserver import quantile
from .clients import Publisher, Tab, close_tabs, open_tabs, padding, round_robin
from .raw import raw_handshake
from .target import Target, figure, log, pinned, workdir

# A client that never reads never answers a ping either, so with the default pings (20 s + 20 s) both servers
# would drop it after 40 s, before the measured phase: the ping timeout would stand in for the queue bound,
# and the naive loop would pass. Pings every hour leave the send path alone to deal with it.
NO_PING_DROP = {"NOTIFY_WS_PING_INTERVAL_S": 3600}


async def slow_phase(target: Target, tabs: list[Tab], names: list[str], *, rate: float, seconds: float,
                     fanout: int, slow_users: list[str], slow_pad: int, timeout: float = 30) -> dict[str, Any]:
    """Publish ``rate``/s, each to ``fanout`` normal users (and every slow user), plus one padded notification
    per tick to the slow users only; returns the normal clients' latency figures."""
    for tab in tabs:
        tab.latencies.clear()
    pick = round_robin(names, fanout)
    pad = padding(slow_pad)

    # Without slow clients, their share goes to users who are not connected: both runs make the server
    # store and publish the same, and only the presence of a client that does not read differs.
    receivers = slow_users or [f"absent{i}" for i in range(max(1, len(slow_users)))]

    def batches(i: int) -> list[tuple[list[str], dict[str, Any]]]:
        return [(pick(i) + receivers, {}), (receivers, pad)]

    publisher = Publisher(target, timeout=timeout)
    started = time.monotonic()
    await publisher.run(batches, rate, seconds)
    await asyncio.sleep(1)  # late frames still count, as latency
    # Every scheduled (tab, notification) pair is expected, whether or not its publish was answered 201.
    expected = int(rate * seconds) * fanout * len(tabs) // len(names)
    latencies = [x for t in tabs for x in t.latencies]
    undelivered = max(0, expected - len(latencies))
    # An undelivered notification is an infinitely late one.
    padded = latencies + [math.inf] * undelivered
    return {"p50_ms": quantile(padded, 0.5), "p99_ms": quantile(padded, 0.99), "delivered": len(latencies),
            "expected": expected, "undelivered": undelivered, "statuses": dict(publisher.statuses),
            "publisher_late_s": round(publisher.late_s, 2), "took_s": round(time.monotonic() - started, 1)}


@pinned
async def slow_consumer(root: Path | None = None, *, naive: bool = False, clients: int = 500, rate: float = 100,
                        seconds: float = 60, fanout: int = 50, slow: int = 1, slow_pad: int = 5500,
                        queue: int = 1024, timeout: float = 30, prefill: int = 0) -> dict[str, Any]:
    """Normal clients' p99 without and with ``slow`` clients that never read; the slow ones' fate.
    ``timeout`` bounds each publish request (the naive server holds them for ever); ``prefill`` padded
    notifications are sent to the slow clients, as fast as the server takes them, before the measured run
    (a short run would otherwise end before the kernel's socket buffers, about 5 MB, are full)."""
    target = Target(workdir(root, "naive" if naive else "slow"), naive=naive,
                    env={"NOTIFY_SEND_QUEUE_SIZE": queue, **NO_PING_DROP}).start()
    try:
        # The slow clients connect first: in the naive loop they then come before everyone else, as an
        # early tab does. Until the second run nothing is published to them, so the first run is the
        # run without a slow consumer.
        slow_users = [f"slow{i}" for i in range(slow)]
        sockets = [await raw_handshake(target.port, target.ws_path(u), target.token(u), rcvbuf=4096,
                                       read_connected=False) for u in slow_users]
        names = [f"n{i}" for i in range(clients)]
        tabs = [Tab(target, u) for u in names]
        await open_tabs(tabs)
        log(f"slow ({'naive' if naive else 'ours'}): {clients} clients, quiet run {seconds:g} s")
        await slow_phase(target, tabs, names, rate=rate, seconds=min(1.0, seconds), fanout=fanout, slow_users=[],
                         slow_pad=slow_pad, timeout=timeout)  # warm-up, not measured
        quiet = await slow_phase(target, tabs, names, rate=rate, seconds=seconds, fanout=fanout, slow_users=[],
                                 slow_pad=slow_pad, timeout=timeout)
        rss_before = target.rss_kib()
        if prefill:
            # Our server answers every one (it only queues); the naive one answers until the slow socket is
            # full (~5 MB), then holds the rest for ever: 10 s is enough to get there, then give up.
            filler = Publisher(target, concurrency=8, timeout=10 if naive else 120)
            await filler.run(lambda i: [(slow_users, padding(slow_pad))], 2000, prefill / 2000)
            await asyncio.sleep(2)  # let the store's write-ahead log checkpoint the prefill before measuring
        log(f"slow ({'naive' if naive else 'ours'}): {slow} non-reading client(s) added, run {seconds:g} s")
        loaded = await slow_phase(target, tabs, names, rate=rate, seconds=seconds, fanout=fanout,
                                  slow_users=slow_users, slow_pad=slow_pad, timeout=timeout)
        stats = await target.stats()
        rss_after, peak = target.rss_kib(), target.peak_rss_kib()
        for _r, writer, _s, _f in sockets:
            writer.transport.abort()
        await close_tabs(tabs)
        ratio = loaded["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else math.inf
        numbers = {
            "server": "naive" if naive else "ours", "clients": clients, "rate": rate, "seconds": seconds,
            "fanout": fanout, "slow": slow, "queue": queue, "quiet": quiet, "with_slow": loaded,
            "p99_ratio": ratio, "send_queue_overflows": stats.get("send_queue_overflows"),
            "rss_kib_before_slow": rss_before, "rss_kib_after": rss_after, "peak_rss_kib": peak,
            "passes": ratio <= 1.5,
        }
        return figure("9", f"{'naive loop' if naive else 'namaskah-notify'}: {clients} clients at {rate:g}/s "
                      f"× {seconds:g} s: p99 {quiet['p99_ms']:.1f} ms quiet → {loaded['p99_ms']:.1f} ms with "
                      f"{slow} non-reading ({ratio:.2f}×, criterion ≤ 1.5×: {'pass' if ratio <= 1.5 else 'FAIL'}); "
                      f"undelivered {loaded['undelivered']}/{loaded['expected']}; overflows "
                      f"{stats.get('send_queue_overflows', 'n/a')}; RSS {rss_before / 1024:.0f} → "
                      f"{rss_after / 1024:.0f} MiB", numbers)
    finally:
        target.stop(signal.SIGKILL if naive else signal.SIGTERM)


async def slow_both(root: Path | None = None, *, target: str = "both", **options: Any) -> None:
    """``slow_consumer`` against ours, the naive control, or both in turn."""
    for naive in {"ours": (False,), "naive": (True,), "both": (False, True)}[target]:
        await slow_consumer(root, naive=naive, **options)
