"""A lean asyncio benchmark of namaskah-notify: idle memory, unicast latency and loss, the highest clean
rate, and broadcast; prints one table with the machine and the versions.

By default it starts its own server (``notify serve`` on a fresh data folder, pinned with ``taskset`` to
``--server-cpu``) and pins itself to ``--client-cpu``; with ``--url`` it measures a running server
(``--pid`` for its memory, ``--data-dir`` or ``NOTIFY_JWT_SECRET`` for tokens). Latency is receive time
minus the notification's ``created_at`` (the server's clock, milliseconds; same machine). Publishing goes
through ``POST /api/notifications`` with ``user_ids`` batches of distinct users, each stored as its own
notification, from several concurrent HTTP requests.

    python loadtest/bench.py                      # the full run (see docs/performance.md)
    python loadtest/bench.py --idle 50 --broadcast 50 --users 20 --rates 100 --step-seconds 2 \\
        --search-max 400 --repeat 1               # a toy run, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from localserver import free_port, proc_status, quantile, raise_fd_limit, spawn, stop
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import ClientConnection, connect

from namaskah_notify.auth import SECRET_FILE, mint_token, signing_secret
from namaskah_notify.config import Settings

console = Console(highlight=False, width=max(140, shutil.get_terminal_size().columns))
progress = Console(stderr=True, highlight=False)  # one line per step, so a long run shows where it is


# -- the server ------------------------------------------------------------------------------------
class Server:
    """The server under test: one we started (pinned to a core) or one given by ``--url``/``--pid``."""

    def __init__(self, url: str, pid: int | None, settings: Settings, process: subprocess.Popen | None = None):
        self.url = url.rstrip("/")
        self.ws_url = self.url.replace("http", "ws", 1) + "/ws/notifications"
        self.pid = pid
        self.process = process
        secret = signing_secret(settings)
        self.settings = Settings(data_dir=settings.data_dir, jwt_secret=secret)

    @classmethod
    def start(cls, cpu: int | None, data_dir: Path) -> Server:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        try:
            process = spawn(command, url=url, log_path=data_dir.parent / "server.log",
                            env={"NOTIFY_LOG_LEVEL": "warning"}, cpu=cpu, timeout=30)
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        return cls(url, process.pid, Settings(data_dir=data_dir), process)

    def rss_kib(self) -> int | None:
        return None if self.pid is None else proc_status(self.pid, "VmRSS")

    def token(self, user: str, admin: bool = False) -> str:
        return mint_token(self.settings, user, admin=admin, ttl_s=6 * 3600)

    def stop(self) -> None:
        stop(self.process)


# -- clients ---------------------------------------------------------------------------------------
@dataclass
class Step:
    """What one measured step saw: latencies, per-tab seqs, arrival times."""

    latencies: list[float] = field(default_factory=list)
    first_sent: float = 0.0
    last_arrival: float = 0.0
    duplicates: int = 0
    out_of_order: int = 0


class Tab:
    """One WebSocket of one user, read by its own task."""

    def __init__(self, bench: Bench, user: str) -> None:
        self.bench = bench
        self.user = user
        self.ws: ClientConnection | None = None
        self.last_seq = 0
        self.got: set[int] = set()
        self.closed = False
        self.reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.ws = await connect(
            self.bench.server.ws_url, additional_headers={"Authorization": f"Bearer {self.bench.tokens[self.user]}"},
            ping_interval=None, compression=None, open_timeout=60, close_timeout=2,
        )
        first = orjson.loads(await self.ws.recv())
        self.last_seq = int(first["last_seq"])
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                now = time.time()
                frame = orjson.loads(raw)
                if frame.get("type") == "notification":
                    self.on_notification(frame["data"], now)
        except Exception:
            pass
        finally:
            self.closed = True

    def on_notification(self, data: dict[str, Any], now: float) -> None:
        step = self.bench.step
        seq = data["seq"]
        if seq in self.got:
            step.duplicates += 1
            return
        if seq != self.last_seq + 1:
            step.out_of_order += 1
        self.last_seq = max(self.last_seq, seq)
        self.got.add(seq)
        step.latencies.append((now - datetime.fromisoformat(data["created_at"]).timestamp()) * 1000)
        step.last_arrival = max(step.last_arrival, now)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader


class Bench:
    def __init__(self, server: Server, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.tokens: dict[str, str] = {}
        self.step = Step()
        self.idle: list[Tab] = []
        self.refused = 0
        self.rows: list[tuple[str, str, str, str]] = []
        self.results: dict[str, Any] = {}

    def user_token(self, user: str) -> None:
        if user not in self.tokens:
            self.tokens[user] = self.server.token(user)

    async def open_tabs(self, tabs: list[Tab]) -> float:
        """Open tabs with bounded concurrency; returns connections per second. Failures count as refused."""
        gate = asyncio.Semaphore(self.args.connect_concurrency)

        async def one(tab: Tab) -> None:
            async with gate:
                try:
                    await tab.open()
                except Exception:
                    self.refused += 1
                    tab.closed = True

        started = time.perf_counter()
        await asyncio.gather(*(one(t) for t in tabs))
        return len(tabs) / max(1e-9, time.perf_counter() - started)

    async def resize_idle(self, n: int) -> float:
        """Grow or shrink the pool of idle connections (one user each) to ``n``."""
        rate = 0.0
        if n > len(self.idle):
            new = [Tab(self, f"idle_{i}") for i in range(len(self.idle), n)]
            for tab in new:
                self.user_token(tab.user)
            rate = await self.open_tabs(new)
            self.idle.extend(new)
        elif n < len(self.idle):
            extra, self.idle = self.idle[n:], self.idle[:n]
            await asyncio.gather(*(t.close() for t in extra))
        await self.wait_connections(sum(not t.closed for t in self.idle))
        return rate

    async def wait_connections(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                stats = (await client.get(self.server.url + "/ws/stats")).json()
                if stats["total_connections"] == n:
                    return
                await asyncio.sleep(0.1)

    # -- scenarios ---------------------------------------------------------------------------------
    async def memory(self) -> None:
        warm = [Tab(self, f"warm_{i}") for i in range(min(100, self.args.idle[0]))]
        for tab in warm:
            self.user_token(tab.user)
        await self.open_tabs(warm)
        await asyncio.gather(*(t.close() for t in warm))
        await self.wait_connections(0)
        await asyncio.sleep(1)
        base = self.server.rss_kib()
        for n in self.args.idle:
            refused_before = self.refused
            rate = await self.resize_idle(n)
            await asyncio.sleep(self.args.settle)
            rss = self.server.rss_kib()
            refused = self.refused - refused_before
            if rss is None or base is None:
                result = "no --pid: RSS unknown"
            else:
                per = (rss - base) / n
                result = f"{per:.1f} KiB/connection (RSS {base / 1024:.0f} → {rss / 1024:.0f} MiB)"
                self.results[f"memory_{n}"] = {"kib_per_connection": per, "rss_kib": rss, "base_kib": base,
                                               "refused": refused, "connects_per_s": rate}
            progress.log(f"idle {n}: {result}")
            self.rows.append(("idle memory", f"{n:,} connections", f"{result}; {refused} refused; "
                              f"{rate:,.0f} connects/s", "≤ 16 KiB at 10k; none refused"))

    async def broadcast(self) -> None:
        async with httpx.AsyncClient(timeout=60, headers=self.admin_headers()) as client:
            for n in sorted(self.args.broadcast, reverse=True):
                await self.resize_idle(n)
                open_tabs = [t for t in self.idle if not t.closed]
                lasts, spans = [], []
                for i in range(self.args.broadcast_repeats):
                    for tab in open_tabs:
                        tab.got.clear()
                    self.step = Step()
                    sent = time.time()
                    response = await client.post(self.server.url + "/api/notifications",
                                                 json={"broadcast": True, "title": f"bench broadcast {i}"})
                    response.raise_for_status()
                    deadline = time.monotonic() + 30
                    while len(self.step.latencies) < len(open_tabs) and time.monotonic() < deadline:
                        await asyncio.sleep(0.005)
                    lasts.append((self.step.last_arrival - sent) * 1000)
                    spans.append(max(self.step.latencies, default=math.nan))
                    missing = len(open_tabs) - len(self.step.latencies)
                    progress.log(f"broadcast {len(open_tabs)}: last {lasts[-1]:.0f} ms, {missing} missing")
                    await asyncio.sleep(0.5)
                lasts.sort()
                median = lasts[len(lasts) // 2]
                self.results[f"broadcast_{n}"] = {"last_after_post_ms": lasts, "last_after_created_ms": spans,
                                                  "missing": missing, "count": response.json().get("count")}
                self.rows.append((
                    "broadcast", f"{len(open_tabs):,} connections × {len(lasts)}",
                    f"last delivery {median:.0f} ms after POST (runs {', '.join(f'{x:.0f}' for x in lasts)}); "
                    f"{min(spans):.0f}–{max(spans):.0f} ms after created_at; {missing} missing",
                    "≤ 100 ms at 5k",
                ))
        await self.resize_idle(0)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.server.token('bench_admin', admin=True)}"}

    async def unicast_pool(self) -> list[Tab]:
        users = [f"uni_{i}" for i in range(self.args.users)]
        for user in users:
            self.user_token(user)
        tabs = [Tab(self, u) for u in users for _ in range(self.args.tabs)]
        await self.open_tabs(tabs)
        await self.wait_connections(sum(not t.closed for t in tabs))
        return tabs

    async def reopen(self, tabs: list[Tab]) -> int:
        dead = [t for t in tabs if t.closed]
        for tab in dead:
            tab.closed = False
            tab.got.clear()
        await self.open_tabs(dead)
        return len(dead)

    async def unicast(self, tabs: list[Tab], rate: float) -> dict[str, Any]:
        """Publish at ``rate`` for ``--step-seconds`` and measure every tab; returns the step's numbers."""
        args = self.args
        reopened = await self.reopen(tabs)
        users = sorted({t.user for t in tabs})
        batch = args.batch or max(1, min(1000, len(users), math.ceil(rate / args.request_rate)))
        batches = max(1, round(rate * args.step_seconds / batch))
        interval = batch / rate
        for tab in tabs:
            tab.got.clear()
        self.step = Step()
        published: dict[str, list[int]] = {}
        http_ms: list[float] = []
        lag = 0.0
        queue: asyncio.Queue[tuple[list[str], float] | None] = asyncio.Queue()
        errors = 0

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal lag, errors
            while (job := await queue.get()) is not None:
                recipients, due = job
                start = time.perf_counter()
                lag = max(lag, start - due)
                try:
                    response = await client.post("/api/notifications", json={
                        "user_ids": recipients, "title": "bench", "message": "unicast", "type": "bench"})
                    response.raise_for_status()
                except httpx.HTTPError:
                    errors += 1
                    continue
                http_ms.append((time.perf_counter() - start) * 1000)
                for item in orjson.loads(response.content)["items"]:
                    published.setdefault(item["user_id"], []).append(item["seq"])

        limits = httpx.Limits(max_connections=args.http_concurrency, max_keepalive_connections=args.http_concurrency)
        async with httpx.AsyncClient(base_url=self.server.url, headers=self.admin_headers(), limits=limits,
                                     timeout=60) as client:
            workers = [asyncio.create_task(worker(client)) for _ in range(args.http_concurrency)]
            t0 = time.perf_counter()
            cursor = 0
            for i in range(batches):
                due = t0 + i * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                recipients = [users[(cursor + k) % len(users)] for k in range(batch)]
                cursor = (cursor + batch) % len(users)
                queue.put_nowait((recipients, due))
            for _ in workers:
                queue.put_nowait(None)
            await asyncio.gather(*workers)
            elapsed = time.perf_counter() - t0
        sent = sum(len(v) for v in published.values())
        expected = {u: set(v) for u, v in published.items()}
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            if all(expected.get(t.user, set()) <= t.got for t in tabs if not t.closed):
                break
            await asyncio.sleep(0.02)
        lost = sum(len(expected.get(t.user, set()) - t.got) for t in tabs)
        closed = sum(t.closed for t in tabs)
        step = self.step
        progress.log(f"unicast {rate:,.0f}/s: p99 {quantile(step.latencies, 0.99):.1f} ms, lost {lost}, "
                     f"achieved {sent / elapsed:,.0f}/s, closed {closed}")
        return {
            "rate": rate, "batch": batch, "published": sent, "achieved": sent / elapsed,
            "deliveries": len(step.latencies),
            "expected": sum(len(expected.get(t.user, ())) for t in tabs), "lost": lost, "closed": closed,
            "reopened": reopened, "duplicates": step.duplicates, "out_of_order": step.out_of_order,
            "p50": quantile(step.latencies, 0.5), "p99": quantile(step.latencies, 0.99),
            "max": max(step.latencies, default=math.nan), "http_p99": quantile(http_ms, 0.99),
            "lag_s": lag, "errors": errors,
        }

    def clean(self, r: dict[str, Any]) -> bool:
        return (r["p99"] < 100 and not r["lost"] and not r["closed"] and not r["errors"] and not r["duplicates"]
                and r["achieved"] >= 0.95 * r["rate"])

    @staticmethod
    def describe(r: dict[str, Any]) -> str:
        return (f"p50 {r['p50']:.1f} ms · p99 {r['p99']:.1f} ms · max {r['max']:.0f} ms · lost {r['lost']}/"
                f"{r['expected']} · achieved {r['achieved']:,.0f}/s · HTTP p99 {r['http_p99']:.0f} ms · "
                f"batch {r['batch']} · closed {r['closed']} · dup {r['duplicates']}")

    async def unicast_rates(self, tabs: list[Tab]) -> None:
        load = f"{self.args.users:,} users × {self.args.tabs} tabs, {self.args.step_seconds:g} s"
        for rate in self.args.rates:
            runs = []
            for _ in range(self.args.repeat):
                r = await self.unicast(tabs, rate)
                runs.append(r)
                self.rows.append((f"unicast {rate:,.0f}/s", load, self.describe(r),
                                  "p99 ≤ 5 ms at 2,000/s" if rate == 2000 else ""))
                await asyncio.sleep(1)
            self.results[f"unicast_{rate:g}"] = runs

    async def search(self, tabs: list[Tab]) -> None:
        """Double from ``--search-start`` until a step is not clean, then bisect."""
        args = self.args
        tried: list[dict[str, Any]] = []
        good, bad = 0.0, None
        rate = args.search_start
        while rate <= args.search_max:
            r = await self.unicast(tabs, rate)
            tried.append(r)
            await asyncio.sleep(1)
            if not self.clean(r):
                bad = rate
                break
            good = rate
            rate *= 2
        for _ in range(args.search_steps if bad is not None else 0):
            if bad - good <= max(100, 0.05 * bad):
                break
            rate = round((good + bad) / 2 / 100) * 100 or (good + bad) / 2
            r = await self.unicast(tabs, rate)
            tried.append(r)
            await asyncio.sleep(1)
            if self.clean(r):
                good = rate
            else:
                bad = rate
        self.results["search"] = {"highest_clean": good, "first_failing": bad, "steps": tried}
        steps = ", ".join(f"{r['rate']:,.0f}{'✓' if self.clean(r) else '✗'}(p99 {r['p99']:.0f})" for r in tried)
        best = next((r for r in tried if r["rate"] == good), None)
        result = (f"{good:,.0f}/s ({self.describe(best)})" if best
                  else f"none: every rate tried down to {min(r['rate'] for r in tried):,.0f}/s failed")
        ceiling = "" if bad is not None else f" (search capped at {args.search_max:,.0f}/s)"
        self.rows.append(("highest clean rate", f"p99 < 100 ms, no loss; steps: {steps}", result + ceiling,
                          "≥ 7,000/s"))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0)
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}"
                         for name in ("uvicorn", "websockets", "fastapi", "starlette", "sqlalchemy", "httpx"))
    return (f"{os.cpu_count()} CPUs ({model}), {mem / 1024 / 1024:.1f} GiB RAM · Python "
            f"{platform.python_version()} · {versions}")


def render(bench: Bench, note: str) -> Table:
    table = Table(title="namaskah-notify benchmark", caption=note, show_lines=True)
    for column in ("scenario", "load", "result", "target (issue 6)"):
        table.add_column(column, overflow="fold")
    for row in bench.rows:
        table.add_row(*row)
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x.strip()]

    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",") if x.strip()]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="A running server (default: start one)")
    parser.add_argument("--pid", type=int, help="The running server's pid, for its RSS")
    parser.add_argument("--data-dir", type=Path, help="The running server's data folder (its JWT secret)")
    parser.add_argument("--server-cpu", type=int, default=0, help="Core for the server we start")
    parser.add_argument("--client-cpu", type=int, default=1, help="Core for this load generator")
    parser.add_argument("--scenarios", default="memory,broadcast,unicast,search",
                        help="Comma list of memory, broadcast, unicast, search")
    parser.add_argument("--idle", type=ints, default=[1000, 5000, 10000], help="Idle connection counts")
    parser.add_argument("--settle", type=float, default=2.0, help="Seconds to wait before reading RSS")
    parser.add_argument("--broadcast", type=ints, default=[1000, 5000], help="Broadcast audience sizes")
    parser.add_argument("--broadcast-repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=1000, help="Unicast users")
    parser.add_argument("--tabs", type=int, default=2, help="Unicast tabs per user")
    parser.add_argument("--rates", type=floats, default=[500, 2000], help="Unicast rates (notifications/s)")
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each unicast rate")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="Publishing time of a unicast step")
    parser.add_argument("--drain-timeout", type=float, default=5.0, help="Seconds to wait for stragglers")
    parser.add_argument("--batch", type=int, default=0, help="Users per request (0: rate / --request-rate)")
    parser.add_argument("--request-rate", type=float, default=100.0, help="Publish requests per second (auto batch)")
    parser.add_argument("--http-concurrency", type=int, default=4, help="Concurrent publish requests")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="Handshakes in flight")
    parser.add_argument("--search-start", type=float, default=1000.0)
    parser.add_argument("--search-max", type=float, default=32000.0)
    parser.add_argument("--search-steps", type=int, default=4, help="Bisection steps after the first failure")
    parser.add_argument("--json", type=Path, help="Also write the raw numbers here")
    return parser.parse_args(argv)


async def run(server: Server, args: argparse.Namespace) -> Bench:
    bench = Bench(server, args)
    chosen = {s.strip() for s in args.scenarios.split(",")}
    if "memory" in chosen:
        await bench.memory()
    if "broadcast" in chosen:
        await bench.broadcast()
    if chosen & {"unicast", "search"}:
        tabs = await bench.unicast_pool()
        if "unicast" in chosen:
            await bench.unicast_rates(tabs)
        if "search" in chosen:
            await bench.search(tabs)
        await asyncio.gather(*(t.close() for t in tabs))
    return bench


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()  # our sockets, and the server we start inherits it
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    pinned = (os.cpu_count() or 1) >= 2
    scratch = None
    if args.url:
        settings = Settings(data_dir=args.data_dir) if args.data_dir else Settings()
        if settings.jwt_secret is None and not (settings.data_dir / SECRET_FILE).exists():
            raise SystemExit(f"no JWT secret: pass --data-dir with the server's data folder or set NOTIFY_JWT_SECRET "
                             f"({settings.data_dir / SECRET_FILE} does not exist)")
        server = Server(args.url, args.pid, settings)
    else:
        scratch = Path(tempfile.mkdtemp(prefix="notify-bench-"))
        server = Server.start(args.server_cpu if pinned else None, scratch / "data")
    if pinned and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.client_cpu})
    note = (f"{machine()} · fd limit {hard} · server pid {server.pid} "
            + (f"pinned to CPU {args.server_cpu}, load generator to CPU {args.client_cpu}" if pinned else "unpinned"))
    try:
        bench = asyncio.run(run(server, args))
    finally:
        server.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    console.print(render(bench, note))
    if args.json:
        args.json.write_text(orjson.dumps({"machine": note, "results": bench.results},
                                          option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
