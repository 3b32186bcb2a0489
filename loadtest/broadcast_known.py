"""A broadcast to every known user: how long storing it takes, and how long until every connected tab has it.

    python -m loadtest.broadcast_known                       # SQLite: 100,000 known users, 1,000 connected
    python -m loadtest.broadcast_known --database postgresql+asyncpg://postgres@127.0.0.1:5432/notify_bench
    python -m loadtest.broadcast_known --known 20000 --connected 500 --repeat 3

The known users are written straight into the ``users`` table (as if each had connected once); the
connected ones open a real WebSocket each. Each round POSTs one ``broadcast: true`` and reports: the time
to the 201 (every row stored: the broadcast is answered after its last chunk commits), the time until the
last connected tab received it, and the server's CPU for the round. Prints one line per round and the
median; exits non-zero if any tab missed it.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection, connect

from .localserver import ServerProcess, proc_cpu_seconds, raise_fd_limit


async def seed(database_url: str, count: int) -> None:
    """``count`` known users, as if each had connected once (the server's schema is in place)."""
    if not database_url.startswith("sqlite"):
        await _seed_postgres(database_url, count)
        return
    connection = sqlite3.connect(make_url(database_url).database)
    with connection:
        connection.execute(
            "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < ?) "
            "INSERT OR IGNORE INTO users (user_id, first_seen, last_seen) "
            "SELECT printf('known%07d', n), '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000' FROM i",
            (count,))
    connection.close()


async def _seed_postgres(database_url: str, count: int) -> None:
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(text(
            "INSERT INTO users (user_id, first_seen, last_seen) "
            "SELECT 'known' || lpad(i::text, 7, '0'), now(), now() FROM generate_series(0, :n - 1) AS i "
            "ON CONFLICT DO NOTHING"), {"n": count})
    await engine.dispose()


async def run(args: argparse.Namespace) -> int:
    raise_fd_limit()
    folder = Path(tempfile.mkdtemp(prefix="notify-broadcast-"))
    env = {"NOTIFY_LOG_LEVEL": "warning"}
    if args.database:
        env["NOTIFY_DATABASE_URL"] = args.database
    server = ServerProcess(folder / "data", env).start()
    try:
        database = args.database or server.settings().resolved_database_url
        await seed(database, args.known)
        tabs: list[ClientConnection] = []
        gate = asyncio.Semaphore(50)

        async def open_tab(index: int) -> None:
            async with gate:
                tab = await connect(f"{server.ws_url}?token={server.token(f'known{index:07d}')}", ping_interval=None,
                                    compression=None, open_timeout=30)
                await tab.recv()
                tabs.append(tab)

        await asyncio.gather(*(open_tab(i) for i in range(args.connected)))
        stored_s, pushed_s, cpu_s = [], [], []
        missed = 0
        async with httpx.AsyncClient(timeout=300) as client:
            for round_ in range(args.repeat):
                title = f"broadcast {round_}"
                cpu = proc_cpu_seconds(server.pid)
                started = time.perf_counter()
                waits = [asyncio.create_task(_until(tab, title)) for tab in tabs]
                response = await client.post(f"{server.url}/api/notifications", headers=server.admin_headers(),
                                             json={"broadcast": True, "title": title})
                stored = time.perf_counter() - started
                count = response.json().get("count")
                done, pending = await asyncio.wait(waits, timeout=120)
                pushed = max((t.result() for t in done if not t.exception()), default=float("nan")) - started
                missed += len(pending) + sum(1 for t in done if t.exception())
                for t in pending:
                    t.cancel()
                cpu_s.append(proc_cpu_seconds(server.pid) - cpu)
                stored_s.append(stored)
                pushed_s.append(pushed)
                print(f"round {round_ + 1}: {response.status_code}, stored for {count} users in {stored:.2f} s; "
                      f"last of {len(tabs)} connected tabs {pushed:.2f} s after the POST; server CPU {cpu_s[-1]:.2f} s",
                      flush=True)
        await asyncio.gather(*(tab.close() for tab in tabs), return_exceptions=True)
    finally:
        server.stop()
    backend = "PostgreSQL" if args.database else "SQLite"
    print(f"{backend}, {args.known:,} known users, {args.connected:,} connected: stored in "
          f"{statistics.median(stored_s):.2f} s (median of {args.repeat}), last tab "
          f"{statistics.median(pushed_s):.2f} s, server CPU {statistics.median(cpu_s):.2f} s; missed {missed}")
    return 1 if missed else 0


async def _until(tab: ClientConnection, title: str) -> float:
    while True:
        frame = orjson.loads(await tab.recv())
        if frame.get("type") == "notification" and frame["data"]["title"] == title:
            return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--known", type=int, default=100_000, help="known users (default 100,000)")
    parser.add_argument("--connected", type=int, default=1_000, help="of them connected (default 1,000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", help="a PostgreSQL URL (an empty database); default the embedded SQLite")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
