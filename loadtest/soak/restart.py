"""Restarts under load (docs/reliability.md, item 10): clients receiving while publishing runs; the server
gets a signal and is started again on the same port and data; clients reconnect and resume with
``since_seq``. ``restart_run`` is shared by ``crash`` and ``storm``. Imports ``clients`` and ``target``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from namaskah_notify.client import Backoff

from ..localserver import quantile
from .clients import FixedDelay, Publisher, Tab, close_tabs, open_tabs, round_robin
from .target import Target, figure, log, pinned, workdir


@pinned
async def restart_run(root: Path | None = None, *, clients: int = 1000, tabs_per_user: int = 1, rate: float = 100,
                      before_s: float = 5, after_s: float = 10, sig: int = signal.SIGTERM,
                      backoff: Backoff | None = None, batch: int = 1, grace_s: float = 60,
                      name: str = "restart") -> dict[str, Any]:
    """Clients receiving while publishing runs; the server gets ``sig`` and is started again on the same
    port and data; clients reconnect with ``since_seq``. Returns close codes, reconnect times and losses."""
    target = Target(workdir(root, name)).start()
    backoff = backoff or Backoff(0.5, 8)
    users = [f"u{i}" for i in range(max(1, clients // tabs_per_user))]
    tabs = [Tab(target, u, backoff=backoff) for u in users for _ in range(tabs_per_user)]
    try:
        opened = await open_tabs(tabs, concurrency=200)
        log(f"{name}: {opened}/{len(tabs)} connected; publishing {rate:g}/s")
        pick = round_robin(users, batch)
        publisher = Publisher(target, concurrency=16)
        publishing = asyncio.create_task(
            publisher.run(lambda i: [(pick(i), {})], rate / batch, before_s + after_s + 30))
        await asyncio.sleep(before_s)
        signalled = time.time()
        target.kill_with(sig)
        exit_code = await target.wait_exit(60)
        down_s = time.time() - signalled
        await asyncio.to_thread(target.start)
        restarted = time.time() - signalled
        log(f"{name}: exit {exit_code} after {down_s:.1f} s, listening again after {restarted:.1f} s")
        await asyncio.sleep(after_s)
        publishing.cancel()
        with contextlib.suppress(BaseException):
            await publishing
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not all(t.connected.is_set() for t in tabs):
            await asyncio.sleep(0.2)
        last = await target.stored_last_seq(users)
        # Let every tab catch up to what is stored.
        while time.monotonic() < deadline and any(t.missing(last[t.user]) for t in tabs):
            await asyncio.sleep(0.2)
        missing = sum(t.missing(last[t.user]) for t in tabs)
        stored = sum(last[t.user] - (t.base_seq or 0) for t in tabs)
        codes = Counter(c for t in tabs for c in t.close_codes[:1])
        # From the first close to the last connection (a tab let in by the stopping server and closed again
        # counts until it is on the new one).
        reconnect = sorted(t.opened_at[-1] - t.closed_at[0] for t in tabs if t.closed_at and len(t.opened_at) > 1)
        statuses: Counter = Counter()
        for tab in tabs:
            statuses.update(tab.handshake_status)
        numbers = {
            "clients": len(tabs), "connected_before": opened, "signal": signal.Signals(sig).name,
            "exit_code": exit_code, "down_s": round(down_s, 2), "listening_again_s": round(restarted, 2),
            "close_codes": dict(codes), "reconnected": len(reconnect),
            "reconnect_p50_s": round(quantile(reconnect, 0.5), 2),
            "reconnect_p95_s": round(quantile(reconnect, 0.95), 2),
            "reconnect_max_s": round(reconnect[-1], 2) if reconnect else None,
            "within_15s": sum(r <= 15 for r in reconnect), "within_30s": sum(r <= 30 for r in reconnect),
            "stored_after_connect": stored, "lost_stored": missing, "lost_acked": publisher.lost(tabs),
            "acked": sum(len(v) for v in publisher.acked.values()), "publish_statuses": dict(publisher.statuses),
            "handshake_statuses": dict(statuses), "handshake_5xx": sum(v for k, v in statuses.items() if k >= 500),
            "duplicates": sum(t.duplicates for t in tabs), "gaps": sum(t.gaps for t in tabs),
            "resyncs": sum(t.resyncs for t in tabs),
            "backoff": "fixed" if isinstance(backoff, FixedDelay) else "jitter",
        }
        return numbers
    finally:
        await close_tabs(tabs)
        target.stop()


async def graceful_restart(root: Path | None = None, **options: Any) -> dict[str, Any]:
    """SIGTERM while publishing; every client sees 1001/1012, reconnects, loses nothing stored."""
    n = await restart_run(root, name="restart", **options)
    clean = n["close_codes"].get(1001, 0) + n["close_codes"].get(1012, 0)
    return figure("10", f"{n['clients']} clients, SIGTERM while publishing: {clean}/{n['clients']} saw 1001/1012 "
                  f"(codes {n['close_codes']}); {n['reconnected']}/{n['clients']} reconnected (p95 "
                  f"{n['reconnect_p95_s']} s, max {n['reconnect_max_s']} s); lost {n['lost_stored']} of "
                  f"{n['stored_after_connect']} stored, {n['lost_acked']} of {n['acked']} acknowledged", n)
