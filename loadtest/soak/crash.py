"""A crash under load (docs/reliability.md, item 11): SIGKILL while publishing; every publish answered 201 is
delivered after the restart and the resume. Imports ``restart`` and ``target``.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from .restart import restart_run
from .target import figure


async def crash(root: Path | None = None, **options: Any) -> dict[str, Any]:
    """SIGKILL while publishing; every publish answered 201 is delivered after restart + resume."""
    options.setdefault("batch", 5)
    n = await restart_run(root, name="crash", sig=signal.SIGKILL, **options)
    return figure("11", f"SIGKILL at {options.get('rate', 100):g} notifications/s to {n['clients']} clients: "
                  f"{n['acked']} acknowledged, lost {n['lost_acked']}; stored {n['stored_after_connect']}, lost "
                  f"{n['lost_stored']}; {n['reconnected']}/{n['clients']} resumed (max {n['reconnect_max_s']} s); "
                  f"publishes {n['publish_statuses']}", n)
