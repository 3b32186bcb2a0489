"""Safe defaults and what guards them: the dashboard's headers, NOTIFY_DOCS, /readyz naming no exception,
secret files at rest, redaction of exception text, hidden SQL parameters, links that would leave the site,
``notify doctor`` on the defaults and on a hardened configuration, and lock files that match pyproject.toml.

Real servers and real subprocesses where the behaviour is the server's or the CLI's; the rest calls the
module that holds it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from namaskah_notify.auth import SECRET_FILE, load_or_create_secret
from namaskah_notify.config import Settings
from namaskah_notify.db import create_engine
from namaskah_notify.logs import RedactTokens
from namaskah_notify.secretfile import UnsafeSecretFile, read_or_create

from .conftest import ROOT, ServerProcess, free_port, new_user

HARDENED = {
    "NOTIFY_JWT_SECRET": "h" * 48,
    "NOTIFY_JWT_AUDIENCE": "notify",
    "NOTIFY_ALLOWED_ORIGINS": "https://app.example.com",
    "NOTIFY_STATS_PUBLIC": "false",
    "NOTIFY_METRICS_REQUIRE_ADMIN": "true",
    "NOTIFY_DOCS": "false",
    "NOTIFY_HANDSHAKE_RATE_PER_IP": "50",
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_") and k != "WEB_CONCURRENCY"}
    return {**env, "COLUMNS": "200", **extra}


def notify(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=_env(**env), capture_output=True,
                          text=True, timeout=60)


# ---- headers and exposure -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/static/js/dashboard.js", "/static/css/dashboard.css", "/static/nothing.js"])
def test_dashboard_and_static_files_send_a_strict_policy(server: ServerProcess, path: str) -> None:
    """/ and everything under /static (a 404 included) carry a CSP with scripts from self only, no inline,
    frame-ancestors 'none'; nosniff; and a Referrer-Policy."""
    response = httpx.get(f"{server.url}{path}")
    policy = {part.split()[0]: part.split()[1:] for part in response.headers["content-security-policy"].split("; ")}
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["default-src"] == ["'none'"]
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_dashboard_has_no_inline_script_style_or_handler() -> None:
    """static/index.html loads its script and style from files: no inline script, style or on* handler."""
    html = (ROOT / "static" / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert re.findall(r"<style|\sstyle=|\son[a-z]+=|javascript:", html, re.IGNORECASE) == []


def test_docs_can_be_turned_off(server: ServerProcess, make_server) -> None:  # type: ignore[no-untyped-def]
    """NOTIFY_DOCS=false: /docs, /redoc and /openapi.json are 404; by default they answer 200."""
    paths = ("/docs", "/redoc", "/openapi.json")
    assert [httpx.get(f"{server.url}{p}").status_code for p in paths] == [200, 200, 200]
    hidden = make_server(NOTIFY_DOCS="false")
    assert [httpx.get(f"{hidden.url}{p}").status_code for p in paths] == [404, 404, 404]
    assert httpx.get(f"{hidden.url}/").status_code == 200


def test_readyz_names_no_exception(make_server, postgres) -> None:  # type: ignore[no-untyped-def]
    """With its PostgreSQL refusing connections, /readyz is 503 with database "down" and no exception or
    library name in the answer."""
    dedicated = make_server(NOTIFY_DATABASE_URL=postgres.url)
    postgres.cut()
    try:
        response = httpx.get(f"{dedicated.url}/readyz", timeout=30)
    finally:
        postgres.restore()
    assert response.status_code == 503
    assert response.json()["database"] == "down"
    assert not re.search(r"Error|Exception|asyncpg|sqlalchemy|psycopg", response.text, re.IGNORECASE)


# ---- secrets at rest ------------------------------------------------------------------------------------


def test_a_new_secret_file_is_private(tmp_path: Path) -> None:
    """The generated secret is created 0600 in a data folder created 0700, with no scratch file left."""
    data = tmp_path / "data"
    secret = load_or_create_secret(data)
    assert len(secret) >= 48 and load_or_create_secret(data) == secret
    assert stat.S_IMODE((data / SECRET_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert sorted(p.name for p in data.iterdir()) == [SECRET_FILE]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_a_secret_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    """A secret file readable or writable by group or others is refused with what to do; 0600 and 0400 pass."""
    path = tmp_path / SECRET_FILE
    path.write_text("s" * 48)
    path.chmod(mode)
    with pytest.raises(UnsafeSecretFile, match=r"may be read by group or others \(mode 0\d+\).*chmod 600"):
        load_or_create_secret(tmp_path)
    for private in (0o600, 0o400):
        path.chmod(private)
        assert load_or_create_secret(tmp_path) == "s" * 48


def test_a_symlinked_secret_file_is_refused(tmp_path: Path) -> None:
    """A symbolic link at the secret's name is never followed, even to a private file."""
    target = tmp_path / "elsewhere"
    target.write_text("s" * 48)
    target.chmod(0o600)
    (tmp_path / SECRET_FILE).symlink_to(target)
    with pytest.raises(UnsafeSecretFile, match="symbolic link"):
        load_or_create_secret(tmp_path)


def test_the_helper_keeps_any_generated_key(tmp_path: Path) -> None:
    """read_or_create makes a key once (bytes of any kind, e.g. a PEM) and returns the same one after."""
    path = tmp_path / "keys" / "vapid_private.pem"
    made = read_or_create(path, lambda: b"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    assert read_or_create(path, lambda: b"other") == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_serve_refuses_a_secret_file_others_may_read(tmp_path: Path) -> None:
    """`notify serve` on a data folder whose secret is mode 0644 exits 1 with one line and never listens."""
    data = tmp_path / "data"
    load_or_create_secret(data)
    (data / SECRET_FILE).chmod(0o644)
    port = free_port()
    result = notify("serve", "--port", str(port), "--data-dir", str(data))
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "may be read by group or others" in output and "Traceback" not in output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


# ---- logs -----------------------------------------------------------------------------------------------


def _captured(emit: Any) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactTokens())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(f"namaskah_notify.test.{new_user()}")
    log.propagate = False
    log.addHandler(handler)
    emit(log)
    return stream.getvalue()


def test_a_crafted_exception_text_is_redacted() -> None:
    """An exception quoting tokens every way a URL, a header or a dict may carry them — its message, its
    cause, and the stack information — is logged with every one of them redacted."""
    secrets_ = [f"opaque{n}Secret{n}" for n in range(8)]
    text = (f"GET /ws?%74oken={secrets_[0]}&x=1 ToKeN%3d{secrets_[1]} next=%2Fws%3Ftoken%253D{secrets_[2]} "
            f"access%5Ftoken={secrets_[3]} Authorization: Bearer {secrets_[4]} {{'token': '{secrets_[5]}'}} "
            f'{{"access_token": "{secrets_[6]}"}} %54%4F%4B%45%4E%3D{secrets_[7]}')

    def emit(log: logging.Logger) -> None:
        try:
            try:
                raise KeyError(f"inner token={secrets_[0]}")
            except KeyError as inner:
                raise ValueError(text) from inner
        except ValueError:
            log.exception("request failed: %s", text, stack_info=True)

    output = _captured(emit)
    assert "ValueError" in output and "KeyError" in output and "Stack (most recent call last)" in output
    assert [s for s in secrets_ if s in output] == []
    assert output.count("[redacted]") >= 16


async def test_a_percent_encoded_query_token_never_reaches_the_log(make_server) -> None:  # type: ignore[no-untyped-def]
    """A handshake with ``?%74oken=...`` (which the server reads as token=) is refused, and uvicorn's line
    for it, which prints the query string as sent, shows no trace of the value."""
    dedicated = make_server()
    value = f"opaque-{new_user()}-value"
    for query in (f"%74oken={value}", f"TOKEN%3D{value}&a=1", f"t%6Fken={value}"):
        with pytest.raises(Exception):  # noqa: B017 - refused: closed 4401 or rejected, depending on the form
            async with dedicated.ws(query=query) as ws:
                await ws.recv()
    dedicated.stop()
    log = dedicated.output()
    assert "%74oken=[redacted]" in log and value not in log


def test_sql_errors_hide_their_parameters(tmp_path: Path) -> None:
    """Both engines are made with hide_parameters, so a failed statement never shows the values it carried."""
    for url in (None, "postgresql+asyncpg://nobody@127.0.0.1:1/nothing"):
        engine = create_engine(Settings(data_dir=tmp_path, database_url=url))
        assert engine.sync_engine.hide_parameters is True


# ---- links ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("browser", [False, True])
def test_links_a_browser_would_resolve_off_site_are_refused(server: ServerProcess, browser: bool) -> None:
    """Links with a backslash ("/\\host", "/\\/host", a backslash anywhere) or starting "//" are 422 on the
    lean path and the framework's route; ordinary paths and http(s) URLs are stored."""
    headers = server.admin_headers()
    if browser:
        headers["Origin"] = "http://elsewhere.example"
    user = new_user()
    statuses = {}
    for link in ("/\\evil.example", "/\\/evil.example", "/\\\\evil.example", "//evil.example", "/a\\b",
                 "https://good.example\\@evil.example", "/inbox", "/verify?id=1", "https://example.com/x"):
        response = httpx.post(f"{server.url}/api/notifications", json={"user_id": user, "title": "t", "link": link},
                              headers=headers)
        statuses[link] = response.status_code
    assert statuses == {"/\\evil.example": 422, "/\\/evil.example": 422, "/\\\\evil.example": 422,
                        "//evil.example": 422, "/a\\b": 422, "https://good.example\\@evil.example": 422,
                        "/inbox": 201, "/verify?id=1": 201, "https://example.com/x": 201}


# ---- notify doctor --------------------------------------------------------------------------------------


def _doctor(*args: str, **env: str) -> tuple[int, list[dict[str, str]]]:
    result = notify("doctor", "--json", *args, **env)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_doctor_finds_critical_issues_on_the_defaults(tmp_path: Path) -> None:
    """On the defaults `notify doctor` exits 1 with the missing audience critical and warnings for any
    Origin, public stats, metrics and docs and no handshake limit; each row names a NOTIFY_* variable."""
    code, findings = _doctor("--data-dir", str(tmp_path / "data"))
    assert code == 1
    by_key = {f["key"]: f for f in findings}
    assert by_key["audience"]["severity"] == "critical" and "NOTIFY_JWT_AUDIENCE" in by_key["audience"]["fix"]
    assert {"origins", "stats", "metrics", "docs", "handshake-limit"} <= set(by_key)
    assert all(f["what"] and f["why"] and f["fix"] for f in findings)
    table = notify("doctor", "--data-dir", str(tmp_path / "data"))
    assert table.returncode == 1 and "critical" in table.stdout and "NOTIFY_STATS_PUBLIC=false" in table.stdout
    assert not (tmp_path / "data").exists()  # it reads; it never creates a secret


def test_doctor_on_a_cluster_with_a_generated_secret_and_sqlite(tmp_path: Path) -> None:
    """Several workers on SQLite with a generated secret and the fake provider: each is critical."""
    code, findings = _doctor("--data-dir", str(tmp_path), "--workers", "4", NOTIFY_BROKER_URL="redis://h:6379/0",
                             NOTIFY_SMS_FAKE_PROVIDER="true", NOTIFY_JWT_AUDIENCE="notify")
    critical = {f["key"] for f in findings if f["severity"] == "critical"}
    assert code == 1 and critical == {"generated-secret", "sqlite-cluster", "fake-provider"}


def test_doctor_reports_a_secret_file_others_may_read(tmp_path: Path) -> None:
    """A generated secret whose file is mode 0644 is critical (the server would refuse it)."""
    load_or_create_secret(tmp_path)
    (tmp_path / SECRET_FILE).chmod(0o644)
    generated = {k: v for k, v in HARDENED.items() if k != "NOTIFY_JWT_SECRET"}
    code, findings = _doctor("--data-dir", str(tmp_path), **generated)
    assert code == 1 and [f["key"] for f in findings if f["severity"] == "critical"] == ["secret-file"]


def test_doctor_reads_what_a_running_server_shows(server: ServerProcess, tmp_path: Path) -> None:
    """With --url, what the server answers without a token decides: the shared default server shows its
    docs, stats and metrics even when the doctor's own variables say they are hidden."""
    hidden = {k: v for k, v in HARDENED.items() if k in ("NOTIFY_STATS_PUBLIC", "NOTIFY_METRICS_REQUIRE_ADMIN",
                                                          "NOTIFY_DOCS")}
    code, findings = _doctor("--url", server.url, "--data-dir", str(tmp_path), **hidden)
    what = {f["key"]: f["what"] for f in findings}
    assert code == 1
    assert what["docs"] == "/docs and /openapi.json answer without a token"
    assert what["stats"] == "/ws/stats answers without a token" and what["metrics"].startswith("/metrics answers")


def test_doctor_passes_a_hardened_deployment(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A hardened configuration, checked both in its settings and against its running server: no finding,
    exit 0."""
    hardened = make_server(**HARDENED)
    result = notify("doctor", "--url", hardened.url, "--data-dir", str(hardened.data_dir), **HARDENED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no findings" in result.stdout
    code, findings = _doctor("--url", hardened.url, "--data-dir", str(hardened.data_dir), **HARDENED)
    assert (code, findings) == (0, [])


def test_doctor_says_when_the_server_is_unreachable(tmp_path: Path) -> None:
    """A URL nobody answers at is one critical row, not a traceback."""
    code, findings = _doctor("--url", f"http://127.0.0.1:{free_port()}", "--data-dir", str(tmp_path), **HARDENED)
    assert code == 1 and [f["key"] for f in findings] == ["unreachable"]


# ---- the lock files -------------------------------------------------------------------------------------


def _dev() -> Any:
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_files_match_pyproject() -> None:
    """Each lock file was made from pyproject.toml's current dependencies (else: python3 dev.py lock), pins
    every package to one version with hashes, and keeps uvicorn within the bound server.py needs."""
    dev = _dev()
    for lock in (dev.LOCK, dev.TEST_LOCK, dev.TOOLS_LOCK):
        assert dev.recorded_inputs(lock) == dev.lock_inputs(), f"{lock.name} is stale: run python3 dev.py lock"
        entries = re.findall(r"(?m)^([A-Za-z0-9_.-]+)==(\S+) \\\n(    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+",
                             lock.read_text())
        names = re.findall(r"(?m)^[A-Za-z0-9_.-]+==", lock.read_text())
        assert entries and len(entries) == len(names), f"{lock.name}: a package without its hashes"
    pinned = dict(re.findall(r"(?m)^([a-z0-9_.-]+)==(\S+) ", dev.LOCK.read_text()))
    assert pinned["uvicorn"].startswith("0.54.")
    test_pins = dict(re.findall(r"(?m)^([a-z0-9_.-]+)==(\S+) ", dev.TEST_LOCK.read_text()))
    assert {name: version for name, version in pinned.items() if test_pins.get(name) != version} == {}
