"""A reconnect storm (docs/reliability.md, item 12): a restart under many resuming clients, reconnecting with
full jitter and, for comparison, with a fixed delay. Imports ``clients``, ``restart`` and ``target``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .clients import backoff
from .restart import restart_run
from .target import figure


async def storm(root: Path | None = None, *, kinds: tuple[str, ...] = ("jitter", "fixed"), base: float = 1.0,
                cap: float = 16.0, **options: Any) -> dict[str, Any]:
    """A restart under many clients, reconnecting with full jitter, and with a fixed delay."""
    results = {}
    for kind in kinds:
        n = await restart_run(root, name=f"storm-{kind}", backoff=backoff(kind, base, cap), **options)
        share15 = n["within_15s"] / n["clients"]
        share30 = n["within_30s"] / n["clients"]
        results[kind] = n
        figure("12", f"{n['clients']} clients, restart at {options.get('rate', 50):g}/s, {kind} backoff "
               f"(base {base:g} s, cap {cap:g} s): {share15:.1%} reconnected ≤ 15 s, {share30:.1%} ≤ 30 s "
               f"(p50 {n['reconnect_p50_s']} s, p95 {n['reconnect_p95_s']} s, max {n['reconnect_max_s']} s); "
               f"lost {n['lost_stored']}; handshake 5xx {n['handshake_5xx']} (statuses {n['handshake_statuses']})", n)
    return results
