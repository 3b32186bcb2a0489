"""Token expiry on live connections (docs/reliability.md, item 4): connections whose tokens expire together,
under publishing; those that refresh stay, the others get ``token_expiring`` and are closed 4401 within 30 s
after ``exp``. Imports ``clients`` and ``target``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .clients import Publisher, Tab, close_tabs, open_tabs, round_robin
from .target import Target, figure, workdir


async def expiry(root: Path | None = None, *, clients: int = 200, ttl: float = 75, warning: float | None = None,
                 leeway: float | None = None, refresh_share: float = 0.5, rate: float = 20) -> dict[str, Any]:
    """Connections whose tokens expire at once, under publishing: those that refresh stay; the others get
    ``token_expiring`` and are closed 4401 within 30 s after ``exp``."""
    env = {}
    if warning is not None:
        env["NOTIFY_TOKEN_EXPIRY_WARNING_S"] = warning
    if leeway is not None:
        env["NOTIFY_JWT_LEEWAY_S"] = leeway
    target = Target(workdir(root, "expiry"), env=env).start()
    settings = target.settings().model_copy(update={"token_expiry_warning_s": warning or 60.0})
    try:
        users = [f"e{i}" for i in range(clients)]
        expires_at = time.time() + ttl
        tabs = [Tab(target, u, token=target.token(u, ttl=ttl)) for u in users]
        await open_tabs(tabs)
        refreshers = tabs[: int(clients * refresh_share)]
        for tab in refreshers:
            assert tab.subscriber is not None
            await tab.subscriber.refresh_token(target.token(tab.user, ttl=3600))
        publisher = Publisher(target)
        pick = round_robin(users, 1)
        grace = leeway if leeway is not None else settings.jwt_leeway_s
        expired = tabs[len(refreshers):]
        stop = asyncio.Event()

        async def watch() -> None:
            # Publish until every expiring connection is closed and the refreshed ones have lived a few
            # seconds past the first token's exp plus leeway; at most 30 s after that.
            while time.time() < expires_at + grace + 30:
                if time.time() > expires_at + grace + 3 and all(t.closed_at for t in expired):
                    break
                await asyncio.sleep(0.2)
            stop.set()

        await asyncio.gather(watch(), publisher.run(lambda i: [(pick(i), {})], rate, ttl + grace + 40, stop))
        await asyncio.sleep(1)
        close_after = [t.closed_at[0] - expires_at for t in expired if t.closed_at]
        after_warning = [t.closed_at[0] - t.token_expiring_at for t in expired if t.closed_at and t.token_expiring_at]
        codes = Counter(t.close_codes[0] for t in expired if t.close_codes)
        still_open = sum(t.connected.is_set() for t in refreshers)
        warned = sum(t.token_expiring_at is not None for t in expired)
        numbers = {"clients": clients, "ttl_s": ttl, "refreshed": len(refreshers), "refreshed_still_open": still_open,
                   "expired": len(expired), "warned": warned, "close_codes": dict(codes),
                   "close_after_exp_max_s": round(max(close_after), 2) if close_after else None,
                   "close_after_exp_min_s": round(min(close_after), 2) if close_after else None,
                   "close_after_warning_max_s": round(max(after_warning), 2) if after_warning else None,
                   "lost_acked_refreshed": publisher.lost(refreshers)}
        return figure("4", f"{len(expired)} expiring connections: {warned} warned, codes {dict(codes)}, closed "
                      f"{numbers['close_after_exp_min_s']}–{numbers['close_after_exp_max_s']} s after exp "
                      f"(≤ {numbers['close_after_warning_max_s']} s after token_expiring; criterion ≤ 30 s after "
                      f"exp); {still_open}/{len(refreshers)} refreshed ones still open, lost "
                      f"{numbers['lost_acked_refreshed']}", numbers)
    finally:
        await close_tabs(tabs)
        target.stop()
