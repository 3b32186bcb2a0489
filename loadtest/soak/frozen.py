"""A frozen client (docs/reliability.md, item 11): a client process stopped with SIGSTOP is dropped by the
server's pings within their interval plus timeout. Imports ``target``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..localserver import ROOT
from .target import Target, figure, workdir

# The client process: the Python client without pings of its own, so that only the server's pings find out.
FROZEN_CLIENT = """
import asyncio, sys
from namaskah_notify.client import Subscriber

async def main():
    async with Subscriber(sys.argv[1], sys.argv[2], ping_interval=None) as sub:
        print("connected", flush=True)
        async for _ in sub:
            pass

asyncio.run(main())
"""


async def frozen_client(root: Path | None = None, *, ping_interval: float = 2, ping_timeout: float = 2
                        ) -> dict[str, Any]:
    """A client process stopped with SIGSTOP is dropped within ping interval + timeout."""
    target = Target(workdir(root, "frozen"), env={"NOTIFY_WS_PING_INTERVAL_S": ping_interval,
                                                  "NOTIFY_WS_PING_TIMEOUT_S": ping_timeout}).start()
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", FROZEN_CLIENT, target.url,
                                                 target.token("frozen"), stdout=subprocess.PIPE,
                                                 stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"connected", line
        await target.wait_connections(lambda n: n == 1, 10)
        await asyncio.sleep(ping_interval * 1.5)  # a few pings answered while it runs
        still = (await target.stats())["total_connections"]
        child.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        left = await target.wait_connections(lambda n: n == 0, (ping_interval + ping_timeout) * 3 + 10)
        dropped_s = time.monotonic() - stopped
        numbers = {"ping_interval_s": ping_interval, "ping_timeout_s": ping_timeout, "open_while_running": still,
                   "open_after": left, "dropped_after_s": round(dropped_s, 2),
                   "bound_s": ping_interval + ping_timeout}
        return figure("11", f"frozen client (SIGSTOP) dropped after {dropped_s:.2f} s (bound: ping interval "
                      f"{ping_interval:g} + timeout {ping_timeout:g} = {ping_interval + ping_timeout:g} s)", numbers)
    finally:
        child.kill()  # SIGKILL ends a stopped process too
        await child.wait()
        target.stop()
