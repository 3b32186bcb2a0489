"""The Locust scenarios and the benchmark still run against the real server (numbers come from the
benchmark itself, not from here)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from loadtest.fanout import DUPLICATE, GAP, OUT_OF_ORDER, Ledger, TabState

from .conftest import ROOT, ServerProcess
from .leakcheck import keep_files

LOADTEST = ROOT / "loadtest"


def _env(**extra: str) -> dict[str, str]:
    """The caller's environment without LOCUST_ and NOTIFY_ settings, with this checkout importable (the
    tools run from a scratch folder here, not from the checkout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "NOTIFY_"))}
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])), **extra}


def test_fanout_books_name_each_kind_of_problem() -> None:
    """A tab's books call a jump a gap, a repeat a duplicate, a late skipped seq out of order, and count misses."""
    tab = TabState("u", 0)
    tab.begin(3)
    assert tab.receive(4) is None
    assert tab.receive(7) == (GAP, 2)
    assert tab.receive(5) == (OUT_OF_ORDER, 1)
    assert tab.receive(7) == (DUPLICATE, 1)
    ledger = Ledger()
    for seq, at in ((8, 1.0), (9, 2.0), (10, 9.0)):
        ledger.record("u", seq, at)
    assert tab.missing(ledger.last_seq("u", before=5.0)) == 2
    assert tab.missing(ledger.last_seq("u", before=5.0)) == 0  # reported once


def test_headless_locust_run_delivers_to_every_tab(server: ServerProcess, tmp_path: Path) -> None:
    """A short headless Locust run with two-tab users and a publisher exits 0 with deliveries and no failures."""
    prefix = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOADTEST / "locustfile.py"), "--headless",
         "--shape", "steady", "-u", "3", "-t", "8s", "--host", server.url, "--notify-data-dir", str(server.data_dir),
         "--publish-rate", "20", "--csv", str(prefix), "--only-summary"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(prefix.with_name("run_stats.csv").open())}
    assert int(rows[("NOTIFY", "delivery")]["Request Count"]) > 20
    assert int(rows[("WS", "connect")]["Request Count"]) == 6
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0
    assert not any(kind == "FANOUT" for kind, _ in rows)


def test_bench_toy_run_prints_its_table(tmp_path: Path) -> None:
    """The benchmark at toy size starts our server and the naive one for each turn, runs every scenario
    against both, exits 0, prints the table with a ratio per row, and writes both servers' numbers."""
    scratch = tmp_path / "tmp"  # bench.py deletes its folder on exit: its server's log is kept for the leak check
    scratch.mkdir()
    with keep_files(scratch, "notify-bench-*/server.log", into=tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "loadtest.bench", "--users", "20", "--repeat", "1", "--step-seconds", "1",
             "--measure-seconds", "1", "--latency-rate", "100", "--cpu-rate", "100", "--search-start", "200",
             "--search-max", "400", "--batched-start", "200", "--connections", "100", "--broadcast", "50",
             "--broadcast-repeats", "1", "--settle", "0.2", "--pause", "0.2", "--http-connections", "4",
             "--json", str(tmp_path / "bench.json")],
            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_env(TMPDIR=str(scratch)),
        )
    assert result.returncode == 0, result.stdout + result.stderr
    for row in ("single-event saturation (headline)", "p99 delivery at 100 single events/s",
                "server CPU per event", "broadcast to 50 connections", "open 100 connections",
                "idle memory per connection", "batched (20 users per request) — not the headline",
                "ratio", "target", "every measured step"):
        assert row in result.stdout, row
    report = json.loads((tmp_path / "bench.json").read_text())
    for server in ("ours", "naive"):
        numbers = report["results"][server]
        assert numbers["saturation"][0]["highest_clean"] > 0 and numbers["saturation"][0]["steps"]
        assert numbers["latency"][0]["p99"] > 0 and numbers["cpu"][0]["server_ms_per_event"] > 0
        assert numbers["broadcast"]["missing"] == [0] and numbers["connect"]["refused"] == 0
        assert numbers["connect"]["kib_per_connection"] > 0 and numbers["batched"]["highest_clean"] > 0
    steps = report["steps"]
    assert {step["server"] for step in steps} == {"ours", "naive"}
    assert all(step["lost"] == 0 and step["deliveries"] == step["expected"] for step in steps)
    assert all(step["client_cpu_pct"] >= 0 for step in steps)
