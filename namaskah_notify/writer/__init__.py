"""The one writer of notifications, chosen by database URL: ``sqlite.py`` (stdlib ``sqlite3`` in a thread
of its own) or ``postgres.py`` (one ``asyncpg`` connection with prepared statements).

Every publish is a :class:`Write`. Writes that arrive while a commit is in flight are committed together
(group commit): one transaction, one ``user_seqs`` bump for all their users, one insert, one sync to
disk. Right after each commit the writer hands the stored notifications, in ``seq`` order, to its one
``on_commit`` function (the dispatcher's push) and then answers the callers: a push never precedes its
commit, never waits for the next one, and does not depend on the caller still being there.

One bad row never fails its batch: bodies are validated before they get here and a dedupe key always
fits its column; a row the database still refuses (a constraint or trigger of its own) sends the batch
back to be committed one write at a time, so only that write fails, with :class:`Unstorable`.
Imports ``errors``, ``protocol`` and ``schemas``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..errors import IdempotencyMismatch
from ..protocol import NotificationTemplate
from ..schemas import Content, Notification, iso

KNOWN_USERS = 200_000  # users a writer remembers as recorded
MAX_BATCH_ROWS = 5000  # recipients in one group commit; bounds one transaction's size and time
DEDUPE_KEY_CHARS = 300  # the column's size


_random = random.Random(secrets.randbits(128))  # seeded from the OS once: an id costs no system call


def new_id() -> str:
    """``notif_`` + milliseconds + 48 random bits: unique, and sorts roughly by creation time."""
    return f"notif_{int(time.time() * 1000):011x}{_random.getrandbits(48):012x}"


def sms_dedupe_key(user_id: str, message_id: str) -> str:
    """A provider message id, scoped to its user (a message id seen for someone else never answers with
    their notification); hashed when the readable form would not fit the column."""
    key = f"sms:{user_id}:{message_id}"
    if len(key) <= DEDUPE_KEY_CHARS:
        return key
    return "sms#" + hashlib.sha256(f"{user_id}\0{message_id}".encode()).hexdigest()


Answer = tuple[int, str]  # an HTTP status and its JSON body


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A publisher's ``Idempotency-Key``: stored with the write's answer in the same transaction, so a
    repeat is answered the same and stores nothing, however the repeats race."""

    publisher: str
    key: str
    request_hash: str
    answer: Callable[[Stored], Answer]  # the route's answer, computed once the write is stored


@dataclass(slots=True)
class Write:
    """One publish: the same content for each user, one new notification (and id) each."""

    user_ids: list[str]
    content: Content
    dedupe_key: str | None = None
    idempotency: Idempotency | None = None
    ids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = [new_id() for _ in self.user_ids]


@dataclass(slots=True)
class Stored:
    """A write's answer: its notifications in ``seq`` order, each one's JSON ``data`` (serialized once,
    for the frames and the HTTP answer alike), and ``created`` (False: the dedupe key was stored before)."""

    records: list[Notification]
    data: list[str]
    created: bool = True
    replay: Answer | None = None  # the first answer to the same Idempotency-Key: send it again


class Job:
    """A write waiting for its commit, and the caller's future."""

    __slots__ = ("future", "write")

    def __init__(self, write: Write, future: asyncio.Future[Stored]) -> None:
        self.write = write
        self.future = future


OnCommit = Callable[[list[Stored]], None]


def hand_over(jobs: list[Job], results: list[Stored | BaseException], on_commit: OnCommit) -> None:
    """After a commit, on the event loop: push what was stored (in ``seq`` order), then answer each caller.
    A caller that went away is not answered; what it stored is pushed all the same."""
    on_commit([r for r in results if isinstance(r, Stored) and r.created])
    for job, result in zip(jobs, results, strict=True):
        if job.future.done():
            continue
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)
Row = tuple[Notification, str | None]  # a new notification and its dedupe key
KeyRow = tuple[str, str, str, int, str]  # an idempotency key's (publisher, key, request hash, status, answer)


class Writer(ABC):
    def __init__(self) -> None:
        # Users this writer knows are in the ``users`` table: a commit inserts only the others (most
        # publishes go to users already known, and then cost no extra statement).
        self._known: set[str] = set()

    def unknown(self, users: list[str]) -> list[str]:
        """Of ``users``, those this writer has not seen recorded."""
        known = self._known
        return [user for user in users if user not in known]

    def recorded(self, users: list[str]) -> None:
        """``users`` are in the ``users`` table now (their commit went through)."""
        if len(self._known) + len(users) > KNOWN_USERS:
            self._known.clear()  # bounded: the next commits insert (and ignore) a few again
        self._known.update(users)

    def forget(self, user_id: str) -> None:
        """The user was erased: their next notification records them again."""
        self._known.discard(user_id)

    @abstractmethod
    async def start(self) -> None: ...

    def add(self, write: Write) -> Awaitable[Stored]:
        """Store ``write``; the answer comes once it is committed (and handed to ``on_commit``).

        A write to more than ``MAX_BATCH_ROWS`` users (a big broadcast) is committed in chunks of that
        size, queued back to back, so no transaction grows with the audience and each chunk is pushed as
        soon as it is stored. Each user is in one chunk, so every user's pushes stay in ``seq`` order. If
        a chunk fails, the caller hears so; the chunks before it stay stored and pushed."""
        if len(write.user_ids) <= MAX_BATCH_ROWS:
            return self._submit(write)  # the common case: the writer's own future, no coroutine around it
        return self._add_chunked(write)

    async def _add_chunked(self, write: Write) -> Stored:
        users = write.user_ids
        # The first chunk carries the Idempotency-Key: a repeat stops there, before storing the rest.
        first = await self._submit(Write(users[:MAX_BATCH_ROWS], write.content, idempotency=write.idempotency))
        if first.replay is not None:
            return first
        chunks = [self._submit(Write(users[i:i + MAX_BATCH_ROWS], write.content))
                  for i in range(MAX_BATCH_ROWS, len(users), MAX_BATCH_ROWS)]
        parts = [first, *await asyncio.gather(*chunks)]
        return Stored([r for part in parts for r in part.records], [d for part in parts for d in part.data])

    @abstractmethod
    def _submit(self, write: Write) -> asyncio.Future[Stored]:
        """Queue ``write`` behind everything queued before it; the future is its answer."""

    @abstractmethod
    async def close(self) -> None: ...


def stored_answer(record: Notification) -> Stored:
    data = NotificationTemplate(record.content, record.created_at, record.is_read, record.read_at).data(
        record.id, record.seq, record.user_id)
    return Stored([record], [data], created=False)


class Batch:
    """The plan of one group commit, the same for every database: which writes were stored before
    (dedupe), how many new rows each user gets, then each write's notifications once the bump has said
    where each user's sequence stands."""

    def __init__(self, writes: list[Write], stored_before: dict[str, Notification],
                 keys_before: dict[tuple[str, str], tuple[str, int, str]] | None = None) -> None:
        self.writes = writes
        # A Stored, the index of an earlier write, an error, or None: new.
        self.answers: list[Stored | int | BaseException | None] = []
        self.counts: dict[str, int] = {}
        self.idempotent = False  # some new write has an Idempotency-Key: its answer is stored with it
        self.collapsing = False  # some new write has a collapse key
        first_with_key: dict[str, int] = {}
        first_with_idempotency: dict[tuple[str, str], int] = {}
        for index, write in enumerate(writes):
            idem = write.idempotency
            if idem is not None:
                scoped = (idem.publisher, idem.key)
                earlier = (keys_before or {}).get(scoped)
                if earlier is not None:
                    self.answers.append(_replayed(idem, *earlier))
                    continue
                if scoped in first_with_idempotency:
                    first = first_with_idempotency[scoped]
                    same = writes[first].idempotency.request_hash == idem.request_hash  # type: ignore[union-attr]
                    self.answers.append(first if same else _mismatch())
                    continue
                first_with_idempotency[scoped] = index
                self.idempotent = True
            key = write.dedupe_key
            if key is not None and key in stored_before:
                self.answers.append(stored_answer(stored_before[key]))
                continue
            if key is not None and key in first_with_key:
                self.answers.append(first_with_key[key])  # the same webhook twice in one batch
                continue
            if key is not None:
                first_with_key[key] = index
            self.answers.append(None)
            self.collapsing = self.collapsing or write.content.collapse_key is not None
            for user in write.user_ids:
                self.counts[user] = self.counts.get(user, 0) + 1
        # Users in one order everywhere: two nodes bumping overlapping users lock their rows in that order.
        self.users = sorted(self.counts)

    def new_writes(self) -> list[Write]:
        """The writes that store rows (not answered by an earlier one with their dedupe key)."""
        return [write for write, answer in zip(self.writes, self.answers, strict=True) if answer is None]

    def assign(self, last_seqs: dict[str, int], now: datetime) -> tuple[list[Stored | BaseException], list[Row]]:
        """Every write's answer, and its new rows with their dedupe keys, once the bump has said where each
        user's sequence ends: a user's rows take the seqs up to there, in write order."""
        next_seq = {user: last_seqs[user] - n + 1 for user, n in self.counts.items()}
        answers: list[Stored | BaseException] = []
        rows: list[Row] = []
        created = iso(now)  # one moment for the whole batch
        for write, answer in zip(self.writes, self.answers, strict=True):
            if isinstance(answer, Stored | BaseException):
                answers.append(answer)
                continue
            if isinstance(answer, int):
                first = answers[answer]
                assert isinstance(first, Stored)
                idem = write.idempotency
                replay = idem.answer(first) if idem is not None else None
                answers.append(Stored(first.records, first.data, created=False, replay=replay))
                continue
            template = NotificationTemplate(write.content, created)
            records, data = [], []
            for notification_id, user in zip(write.ids, write.user_ids, strict=True):
                seq = next_seq[user]
                next_seq[user] = seq + 1
                record = Notification(notification_id, user, seq, write.content, now)
                records.append(record)
                data.append(template.data(record.id, seq, user))
            key = write.dedupe_key if len(records) == 1 else None
            rows.extend((record, key) for record in records)
            answers.append(Stored(records, data))
        return answers, rows

    def key_rows(self, answers: list[Stored | BaseException]) -> list[KeyRow]:
        """The idempotency keys of the new writes, each with the answer its caller gets."""
        rows = []
        for write, answer, plan in zip(self.writes, answers, self.answers, strict=True):
            idem = write.idempotency
            if idem is not None and plan is None and isinstance(answer, Stored):
                status, text = idem.answer(answer)
                rows.append((idem.publisher, idem.key, idem.request_hash, status, text))
        return rows


def idempotency_keys(writes: list[Write]) -> list[tuple[str, str]]:
    """The (publisher, key) pairs of ``writes``, sorted (two nodes lock them in the same order)."""
    return sorted({(w.idempotency.publisher, w.idempotency.key) for w in writes if w.idempotency})


def _replayed(idem: Idempotency, request_hash: str, status: int, text: str) -> Stored | BaseException:
    if request_hash != idem.request_hash:
        return _mismatch()
    return Stored([], [], created=False, replay=(status, text))


def _mismatch() -> IdempotencyMismatch:
    return IdempotencyMismatch("this Idempotency-Key was used with a different body")


def create_writer(database_url: str, on_commit: OnCommit, *, sqlite_synchronous: str = "FULL",
                  idempotency_ttl_s: float = 86400.0) -> Writer:
    """The writer for ``database_url`` (a SQLAlchemy URL, as in ``NOTIFY_DATABASE_URL``)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    ttl = timedelta(seconds=idempotency_ttl_s)
    if url.get_backend_name() == "sqlite":
        from .sqlite import SqliteWriter

        return SqliteWriter(url.database or ":memory:", on_commit, synchronous=sqlite_synchronous,
                            idempotency_ttl=ttl)
    from .postgres import PostgresWriter

    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return PostgresWriter(dsn, on_commit, idempotency_ttl=ttl)
