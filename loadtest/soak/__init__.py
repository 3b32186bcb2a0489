"""Long fault and load runs (docs/reliability.md, items 4, 7 and 9–13), a module per scenario, each printing
its figure; ``python -m loadtest.soak SCENARIO [options]`` runs one (``-h`` lists them and their options).

Every scenario starts its own server (``notify serve`` on a fresh data folder, or the naive control in
``naive_server.py``), drives it with clients from this process and prints one ``FIGURE`` line plus its raw
numbers as JSON. Sizes and durations are options; the defaults are the full sizes. ``tests/test_resilience.py``
runs the same functions at small sizes. The load scenarios pin the server to one core and the clients to
the other (``target.cores``), and the burst client uses its own address (127.0.0.2).

Normal clients are the Python client's (``clients.Tab`` on ``Subscriber``, ``clients.Publisher`` on
``AsyncNotifyClient``); raw sockets (``raw``) only where a scenario needs what a proper client never does:
not reading, handshakes flat out, vanishing without a close frame.

Latency is receive time minus the publisher's scheduled send time (``meta.sent_at``; same machine), so a
publisher held up by the server counts against the server. "Lost" compares what each client received with
every ``seq`` the store holds for its user (``last_seq`` over HTTP) and every ``seq`` a publish was answered
201 for.
"""

from ..localserver import raise_fd_limit
from .churn import churn
from .crash import crash
from .expiry import expiry
from .flood import flood
from .frozen import frozen_client
from .restart import graceful_restart, restart_run
from .slow import slow_consumer
from .slow_memory import slow_memory
from .storm import storm

__all__ = ["churn", "crash", "expiry", "flood", "frozen_client", "graceful_restart", "raise_fd_limit",
           "restart_run", "slow_consumer", "slow_memory", "storm"]
