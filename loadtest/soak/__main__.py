"""``python -m loadtest.soak SCENARIO [options]``: one subcommand per scenario, each with only its own
options, whose defaults are the full sizes; ``all`` runs every scenario in turn at those sizes.

    python -m loadtest.soak flood       [--users 100 --seconds 20 --burst-rate 2000]     # item 7
    python -m loadtest.soak slow        [--clients 500 --rate 100 --seconds 60 --target both] # item 9
    python -m loadtest.soak slow-memory [--nonreaders 200 --queue 64 --pad 5500]          # item 9, RSS
    python -m loadtest.soak restart     [--clients 1000 --rate 100]                      # item 10
    python -m loadtest.soak crash       [--clients 200 --rate 500]                       # item 11
    python -m loadtest.soak frozen      [--ping-interval 2 --ping-timeout 2]             # item 11
    python -m loadtest.soak storm       [--clients 5000 --rate 50 --backoff jitter|fixed|both] # item 12
    python -m loadtest.soak churn       [--cycles 50000 --concurrency 50]                # item 13
    python -m loadtest.soak expiry      [--clients 200 --ttl 75]                         # item 4
    python -m loadtest.soak all                                                           # each, in turn
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from ..localserver import raise_fd_limit
from .churn import churn
from .crash import crash
from .expiry import expiry
from .flood import burst_main, flood
from .frozen import frozen_client
from .restart import graceful_restart
from .slow import slow_both
from .slow_memory import slow_memory
from .storm import storm


def _storm(root: Path | None, *, backoff: str, **options: Any) -> Awaitable[Any]:
    return storm(root, kinds=("jitter", "fixed") if backoff == "both" else (backoff,), **options)


# name: (scenario, help, options as (flag, keyword, type, default, help))
Option = tuple[str, str, Callable[[str], Any], Any, str]
_RESTART: list[Option] = [
    ("--before", "before_s", float, 5.0, "seconds of publishing before the signal"),
    ("--after", "after_s", float, 10.0, "seconds of publishing after it"),
]
SCENARIOS: dict[str, tuple[Callable[..., Awaitable[Any]], str, list[Option]]] = {
    "flood": (flood, "item 7: frame flood, per-user cap, handshake burst", [
        ("--users", "users", int, 100, "users receiving during the burst"),
        ("--seconds", "seconds", float, 20.0, "length of each measured phase"),
        ("--rate", "rate", float, 100.0, "notifications per second to the measured users"),
        ("--burst-rate", "burst_rate", float, 2000.0, "handshakes per second"),
        ("--handshake-limit", "handshake_limit", float, 50.0,
         "the server's NOTIFY_HANDSHAKE_RATE_PER_IP (0: no limit, the unprotected case)"),
        ("--handshake-burst", "handshake_limit_burst", int, 20, "the server's NOTIFY_HANDSHAKE_BURST_PER_IP"),
    ]),
    "slow": (slow_both, "item 9: other clients' p99 with a client that never reads", [
        ("--target", "target", str, "both", "ours, naive or both"),
        ("--clients", "clients", int, 500, "normal clients"),
        ("--rate", "rate", float, 100.0, "publish ticks per second"),
        ("--seconds", "seconds", float, 60.0, "length of each measured phase"),
        ("--fanout", "fanout", int, 50, "normal users per notification"),
        ("--slow", "slow", int, 1, "non-reading clients"),
        ("--slow-pad", "slow_pad", int, 5500, "bytes of each slow-only notification"),
        ("--queue", "queue", int, 1024, "NOTIFY_SEND_QUEUE_SIZE"),
        ("--prefill", "prefill", int, 0, "notifications to the slow ones first"),
    ]),
    "slow-memory": (slow_memory, "item 9: peak RSS under clients that never read", [
        ("--nonreaders", "nonreaders", int, 200, "clients that never read"),
        ("--queue", "queue", int, 64, "NOTIFY_SEND_QUEUE_SIZE"),
        ("--pad", "pad", int, 5500, "message bytes"),
    ]),
    "restart": (graceful_restart, "item 10: SIGTERM while publishing, every client resumes", [
        ("--clients", "clients", int, 1000, "connections"),
        ("--rate", "rate", float, 100.0, "notifications per second"), *_RESTART,
    ]),
    "crash": (crash, "item 11: SIGKILL while publishing, nothing acknowledged is lost", [
        ("--clients", "clients", int, 200, "connections"),
        ("--rate", "rate", float, 500.0, "notifications per second"), *_RESTART,
    ]),
    "frozen": (frozen_client, "item 11: a client frozen with SIGSTOP is dropped by the server's pings", [
        ("--ping-interval", "ping_interval", float, 2.0, "NOTIFY_WS_PING_INTERVAL_S"),
        ("--ping-timeout", "ping_timeout", float, 2.0, "NOTIFY_WS_PING_TIMEOUT_S"),
    ]),
    "storm": (_storm, "item 12: a restart under many clients, full jitter against a fixed delay", [
        ("--clients", "clients", int, 5000, "connections"),
        ("--rate", "rate", float, 50.0, "notifications per second"),
        ("--backoff", "backoff", str, "both", "jitter, fixed or both"), *_RESTART,
    ]),
    "churn": (churn, "item 13: connect/disconnect cycles leave nothing behind", [
        ("--cycles", "cycles", int, 50000, "measured cycles"),
        ("--concurrency", "concurrency", int, 50, "cycles in flight"),
        ("--warmup", "warmup", int, 2000, "cycles before the baseline"),
    ]),
    "expiry": (expiry, "item 4: expiring tokens on live connections", [
        ("--clients", "clients", int, 200, "connections"),
        ("--ttl", "ttl", float, 75.0, "token lifetime in seconds"),
    ]),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--workdir", type=Path, help="where data folders and server logs go (default: a temp dir)")
    commands = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for name, (_run, help_text, options) in SCENARIOS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        for flag, keyword, kind, default, option_help in options:
            sub.add_argument(flag, dest=keyword, type=kind, default=default, help=f"{option_help} (default {default})")
    commands.add_parser("all", help="every scenario in turn, at full size")
    burst = commands.add_parser("handshake-burst")  # the flood's child process
    burst.add_argument("--port", type=int, required=True)
    burst.add_argument("--secret", required=True)
    burst.add_argument("--burst-rate", type=float, required=True)
    burst.add_argument("--seconds", type=float, default=10.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_fd_limit()
    try:
        import uvloop  # the load generator is the first thing to run out of CPU here: the faster loop

        run: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.scenario == "handshake-burst":
        run(burst_main(args.port, args.secret, args.burst_rate, args.seconds))
        return
    root = args.workdir
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    chosen = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    for name in chosen:
        scenario, _help, options = SCENARIOS[name]
        values = {keyword: getattr(args, keyword, default) for _flag, keyword, _kind, default, _help in options}

        async def one(scenario: Callable[..., Awaitable[Any]] = scenario, values: dict[str, Any] = values) -> Any:
            return await scenario(root, **values)

        run(one())


if __name__ == "__main__":
    main()
