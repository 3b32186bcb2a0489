"""The Locust scenarios and the benchmark still run against the real server (numbers come from the
benchmark itself, not from here)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, ServerProcess
from .leakcheck import keep_files

LOADTEST = ROOT / "loadtest"
sys.path.insert(0, str(LOADTEST))

from fanout import DUPLICATE, GAP, OUT_OF_ORDER, Ledger, TabState  # noqa: E402


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
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "NOTIFY_"))},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(prefix.with_name("run_stats.csv").open())}
    assert int(rows[("NOTIFY", "delivery")]["Request Count"]) > 20
    assert int(rows[("WS", "connect")]["Request Count"]) == 6
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0
    assert not any(kind == "FANOUT" for kind, _ in rows)


def test_bench_toy_run_prints_its_table(tmp_path: Path) -> None:
    """The benchmark at toy size starts its own server, runs every scenario, exits 0 and prints the table."""
    scratch = tmp_path / "tmp"  # bench.py deletes its folder on exit: its server's log is kept for the leak check
    scratch.mkdir()
    with keep_files(scratch, "notify-bench-*/server.log", into=tmp_path):
        result = subprocess.run(
            [sys.executable, str(LOADTEST / "bench.py"), "--idle", "50", "--broadcast", "50", "--broadcast-repeats",
             "1", "--users", "20", "--rates", "100", "--repeat", "1", "--step-seconds", "1.5", "--search-start", "200",
             "--search-max", "200", "--settle", "0.2", "--json", str(tmp_path / "bench.json")],
            capture_output=True, text=True, timeout=90, cwd=tmp_path, env={**os.environ, "TMPDIR": str(scratch)},
        )
    assert result.returncode == 0, result.stdout + result.stderr
    for row in ("idle memory", "broadcast", "unicast 100/s", "highest clean rate", "KiB/connection"):
        assert row in result.stdout
    assert "lost 0/" in result.stdout
    assert (tmp_path / "bench.json").exists()
