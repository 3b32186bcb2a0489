"""``notify doctor``: what a production deployment of this configuration should change.

Reads the effective settings (the ``NOTIFY_*`` variables, as ``notify serve`` would) and, with ``--url``,
what the running server shows anyone (unauthenticated GETs); prints a table with one row per finding and
exits 1 when any is critical. The checks are the pure functions of ``findings``; :func:`render` builds the
table. Imports ``common`` and ``findings``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import httpx
import typer
from rich.table import Table

from .common import CliError, DataDir, fail, http_base, out, settings_from
from .findings import Answer, Finding, merge, server_findings, settings_findings

PROBED = ("/", "/readyz", "/docs", "/openapi.json", "/ws/stats", "/metrics")
_STYLE = {"critical": "bold red", "warning": "yellow"}


def probe(base: str, timeout_s: float) -> dict[str, Answer | None]:
    """The server's answers to an unauthenticated GET of each of :data:`PROBED` (None: no answer)."""
    answers: dict[str, Answer | None] = {}
    with httpx.Client(base_url=base, timeout=timeout_s, follow_redirects=False) as client:
        for path in PROBED:
            try:
                response = client.get(path)
            except httpx.HTTPError:
                answers[path] = None
            else:
                answers[path] = Answer(response.status_code, {k.lower(): v for k, v in response.headers.items()})
    return answers


def render(findings: list[Finding]) -> Table:
    """One row per finding: severity, what, why, and the variable that fixes it."""
    table = Table(title="notify doctor", title_justify="left", show_lines=True, expand=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("what", ratio=2, overflow="fold")
    table.add_column("why", ratio=3, overflow="fold")
    table.add_column("fix", ratio=3, overflow="fold")
    for finding in findings:
        table.add_row(f"[{_STYLE[finding.severity]}]{finding.severity}[/]", finding.what, finding.why, finding.fix)
    return table


def summary(findings: list[Finding]) -> str:
    critical = sum(finding.severity == "critical" for finding in findings)
    if not findings:
        return "[green]no findings[/]: nothing to change for production"
    return f"{critical} critical, {len(findings) - critical} warning(s)"


def doctor(
    url: Annotated[str | None, typer.Option(envvar="NOTIFY_URL",
                                            help="Also check what the server at this URL shows anyone")] = None,
    workers: Annotated[int, typer.Option(min=1, envvar="WEB_CONCURRENCY",
                                         help="Worker processes per host, as given to notify serve")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for each answer")] = 5.0,
    data_dir: DataDir = None,
) -> None:
    """Check the settings (NOTIFY_* variables) and, with --url, a running server, for what a production
    deployment should change; each row says why and which variable fixes it.

    Exit codes:
      0  no critical finding
      1  a critical finding, or the settings cannot be read

    Examples:

      notify doctor

      notify doctor --url https://notify.example.com --workers 4
    """
    settings = settings_from(data_dir=data_dir)
    from_server = None
    if url is not None:
        try:
            base = http_base(url)
        except CliError as exc:
            raise fail(exc.message) from None
        from_server = server_findings(base, probe(base, timeout))
    findings = merge(settings_findings(settings, workers), from_server)
    if as_json:
        print(json.dumps([asdict(finding) for finding in findings]))
    else:
        if findings:
            out.print(render(findings))
        out.print(summary(findings))
    if any(finding.severity == "critical" for finding in findings):
        raise typer.Exit(1)
