"""The whole-suite leak check (issue 7, item 8): after the last test, no server output holds a token or an
SMS code.

While tests run, :data:`RECORD` collects what they see: each server's output file and data folder, each
token they mint or are printed, each SMS code and SMS text they send. At the end of the session the codes
the servers stored (``verifications.code``) and the texts of their fake inboxes are read back from their
SQLite files, then every server output file is searched for each token, its signature and the signature's
first and last 12 characters (what an elided log line keeps), anything shaped like a JWT, each code as a
whole number, each SMS text, and any number of 5 to 8 digits right after the word "code" (a code nobody
recorded). One summary line is always printed; each hit is listed by file, line, kind and the first few
characters of what was found, and fails the session. A subset of tests checks the servers it started.

Imports nothing of ours; ``conftest.py`` registers this module as a plugin.
"""

from __future__ import annotations

import bisect
import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SEPARATOR = r"(?:\.|%2[Ee])"  # a query string may carry a token's dots percent-encoded
JWT_SHAPE = re.compile(rf"eyJ[A-Za-z0-9_-]{{5,}}{SEPARATOR}[A-Za-z0-9_-]{{5,}}{SEPARATOR}[A-Za-z0-9_-]{{5,}}")
BASE64URL_RUN = re.compile(r"[A-Za-z0-9_-]{12,}")
NUMBER = re.compile(r"\b\d{4,}\b")
# Four digits after "code" are WebSocket close codes (``code=1000``); recorded four-digit codes are still
# found as whole numbers.
CODE_AFTER_WORD = re.compile(r"\bcode\b\W{0,4}(\d{5,8})\b", re.IGNORECASE)
PART = 12  # a signature's first and last characters, searched on their own
MIN_TEXT = 10  # a shorter SMS text ("code 1234") would match ordinary log words: not searched
SOAK_LOGS = ("*/soak-*/server.log", "*/soak-*/naive.log")  # loadtest.soak's servers, in a test's tmp_path


@dataclass
class Record:
    """What the tests saw, for the scan at the end of the session."""

    files: set[Path] = field(default_factory=set)
    data_dirs: set[Path] = field(default_factory=set)
    tokens: set[str] = field(default_factory=set)
    codes: set[str] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)
    basetemp: Path | None = None

    def server(self, log_path: Path, data_dir: Path) -> None:
        self.files.add(log_path)
        self.data_dirs.add(data_dir)

    def token(self, token: str) -> str:
        self.tokens.add(token)
        return token

    def code(self, code: str) -> str:
        self.codes.add(code)
        return code

    def sms_text(self, text: str) -> str:
        self.texts.add(text)
        return text


RECORD = Record()


@contextlib.contextmanager
def keep_files(folder: Path, pattern: str, into: Path) -> Iterator[None]:
    """Hard-link each file matching ``pattern`` under ``folder`` into ``into`` as soon as it appears, and
    record the links: a program that deletes its scratch folder on exit (``python -m loadtest.bench``) leaves its
    server's whole output behind to scan."""
    stop = threading.Event()

    def link_new() -> None:
        for path in folder.glob(pattern):
            kept = into / "-".join(path.relative_to(folder).parts)
            with contextlib.suppress(FileNotFoundError, FileExistsError):
                kept.hardlink_to(path)
                RECORD.files.add(kept)

    def watch() -> None:
        while not stop.wait(0.02):
            link_new()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        link_new()


# -- the scan ---------------------------------------------------------------------------------------------
@dataclass
class Hit:
    path: Path
    line: int
    kind: str
    shown: str  # the first few characters of what was found (of a token: of its signature)


@dataclass
class Result:
    files: int = 0
    missing: int = 0
    size: int = 0
    tokens: int = 0
    codes: int = 0
    texts: int = 0
    strings: int = 0
    skipped: int = 0
    unreadable: int = 0
    hits: list[Hit] = field(default_factory=list)


@dataclass
class Secrets:
    """What to search for, built once from :data:`RECORD`."""

    parts: dict[str, str]  # a signature's first or last 12 characters -> its token
    numbers: set[str]  # digit codes, matched as whole numbers
    literals: dict[str, str]  # other codes and SMS texts, matched anywhere -> their kind


def read_back(data_dir: Path, result: Result) -> None:
    """Record the codes a server stored on its verifications and the texts of its fake inbox (SQLite only)."""
    database = data_dir / "notify.db"
    if not database.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(database)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "verifications" in tables:
                RECORD.codes.update(code for (code,) in db.execute("SELECT code FROM verifications") if code)
            if "sms_fake_inbox" in tables:
                RECORD.texts.update(text for (text,) in db.execute("SELECT text FROM sms_fake_inbox"))
    except sqlite3.DatabaseError:
        result.unreadable += 1


def signature_of(token: str) -> str:
    return token.rsplit(".", 1)[-1]


def secrets_to_search(result: Result) -> Secrets:
    parts: dict[str, str] = {}
    for token in RECORD.tokens:
        signature = signature_of(token)
        if len(signature) < PART:
            result.skipped += 1
            continue
        parts[signature[:PART]] = parts[signature[-PART:]] = token
    numbers = {code for code in RECORD.codes if code.isdigit() and len(code) >= 4}
    literals = {code: "SMS code" for code in RECORD.codes if not code.isdigit() and len(code.strip()) >= 6}
    literals |= {text: "SMS text" for text in RECORD.texts if len(text.strip()) >= MIN_TEXT}
    result.skipped += len(RECORD.codes) + len(RECORD.texts) - len(numbers) - len(literals)
    result.tokens, result.codes, result.texts = len(RECORD.tokens), len(RECORD.codes), len(RECORD.texts)
    result.strings = 2 * len(parts) + len(numbers) + len(literals)  # a token: whole, signature, 2 parts
    return Secrets(parts, numbers, literals)


def token_kind(token: str, run: str, line: str, part: str) -> str:
    """What of ``token`` a line shows, given the base64url ``run`` holding one of its 12-character parts."""
    signature = signature_of(token)
    if token in line:
        return "token"
    if signature in run:
        return "token signature"
    return f"{'first' if part == signature[:PART] else 'last'} {PART} characters of a token signature"


def scan_text(path: Path, text: str, secrets: Secrets) -> list[Hit]:
    """Every line of ``text`` that holds a recorded secret or matches a pattern."""
    found: dict[tuple[int, str], str] = {}
    newlines: list[int] = []  # built at the first hit

    def line_at(position: int) -> tuple[int, str]:
        if not newlines:
            newlines.extend(m.start() for m in re.finditer("\n", text))
            newlines.append(len(text))
        number = bisect.bisect_left(newlines, position)
        return number + 1, text[newlines[number - 1] + 1 if number else 0 : newlines[number]]

    def hit(position: int, kind: str, secret: str) -> None:
        found.setdefault((line_at(position)[0], secret[: min(6, len(secret) // 2)] + "…"), kind)

    # Every 12-character window of every base64url run: finds a token, its signature or either end of it.
    for run in BASE64URL_RUN.finditer(text):
        value = run.group()
        for i in range(len(value) - PART + 1):
            token = secrets.parts.get(value[i : i + PART])
            if token is not None:
                kind = token_kind(token, value, line_at(run.start())[1], value[i : i + PART])
                hit(run.start() + i, kind, signature_of(token))
    for match in JWT_SHAPE.finditer(text):
        hit(match.start(), "JWT-shaped string", re.split(SEPARATOR, match.group())[-1])
    for match in NUMBER.finditer(text):
        if match.group() in secrets.numbers:
            hit(match.start(), "SMS code", match.group())
    for match in CODE_AFTER_WORD.finditer(text):
        hit(match.start(1), "number after 'code' (an SMS code nobody recorded?)", match.group(1))
    for literal, kind in secrets.literals.items():
        position = text.find(literal)
        while position != -1:
            hit(position, kind, literal)
            position = text.find(literal, position + 1)
    return [Hit(path, line, kind, shown) for (line, shown), kind in sorted(found.items())]


def server_logs() -> list[Path]:
    """The recorded files and loadtest.soak's servers' logs, resolved: pytest links ``<test>current`` to each
    test's latest folder, so a glob finds some files twice."""
    files = set(RECORD.files)
    if RECORD.basetemp is not None:
        for pattern in SOAK_LOGS:
            files.update(RECORD.basetemp.glob(pattern))
    return sorted({path.resolve() for path in files})


def scan(result: Result) -> None:
    for data_dir in sorted(RECORD.data_dirs):
        read_back(data_dir, result)
    secrets = secrets_to_search(result)
    for path in server_logs():
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            result.missing += 1
            continue
        result.files += 1
        result.size += len(raw)
        result.hits += scan_text(path, raw.decode("utf-8", errors="replace"), secrets)


RESULT: Result | None = None


@pytest.hookimpl(tryfirst=True)  # before the tmp_path plugin may delete the session's folder
def pytest_sessionfinish(session: pytest.Session) -> None:
    global RESULT
    RESULT = Result()
    scan(RESULT)
    if RESULT.hits and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULT is None:
        return
    r = RESULT
    notes = [(r.missing, "recorded files gone"), (r.skipped, "too short to search"), (r.unreadable, "unreadable DBs")]
    terminalreporter.write_line(
        f"leak check: {r.files} server log files ({r.size / 1e6:.1f} MB), {r.tokens} tokens, {r.codes} SMS codes, "
        f"{r.texts} SMS texts: {r.strings} strings and 2 patterns searched, found {len(r.hits)}"
        + "".join(f"; {n} {what}" for n, what in notes if n),
        red=bool(r.hits),
        bold=bool(r.hits),
    )
    base = RECORD.basetemp.resolve() if RECORD.basetemp is not None else None
    for h in r.hits:
        shown = h.path.relative_to(base) if base is not None and h.path.is_relative_to(base) else h.path
        terminalreporter.write_line(f"  {shown}:{h.line}: {h.kind} {h.shown}", red=True)
