"""Issue 7, part A, against the real server: generated garbage on the WebSocket and the HTTP API, the frame
size limit, authorization isolation between users, exact Origin matching, token and code leakage across
a whole workload, and the boundaries of resume.

Sizes of the generated runs come from the environment so CI stays fast and a full run is one command away
(docs/reliability.md): ``NOTIFY_FUZZ_EXAMPLES`` (WebSocket frames, default 1,500; full run 10,000),
``NOTIFY_HTTP_FUZZ_EXAMPLES`` (HTTP requests, default 800; full run 10,000) and ``NOTIFY_ISOLATION_PAIRS``
(user pairs, default 200; full run 1,000). ``pytest -s`` prints the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import time
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from namaskah_notify.auth import signing_secret

from .conftest import ServerProcess, new_user, recv_json, recv_until
from .test_websocket import expect_close

FUZZ_EXAMPLES = int(os.environ.get("NOTIFY_FUZZ_EXAMPLES", "1500"))
HTTP_FUZZ_EXAMPLES = int(os.environ.get("NOTIFY_HTTP_FUZZ_EXAMPLES", "800"))
ISOLATION_PAIRS = int(os.environ.get("NOTIFY_ISOLATION_PAIRS", "200"))
DELIBERATE_CLOSES = {1003, 1007, 1008, 1009}
UNLIMITED_RATE = {"NOTIFY_CLIENT_RATE_PER_S": 1_000_000, "NOTIFY_CLIENT_RATE_BURST": 1_000_000}
FAKE_SMS = {"NOTIFY_SMS_FAKE_PROVIDER": "true", "NOTIFY_SMS_POLL_INTERVAL_S": 0.2, "NOTIFY_SMS_LEASE_S": 2,
            "NOTIFY_SMS_HTTP_TIMEOUT_S": 0.5}
UVICORN_UTF8 = "Invalid UTF-8 sequence received from client."
KNOWN_TYPES = ["ping", "mark_read", "mark_all_read", "refresh_token", "ack", "auth"]


def _fuzz_settings(examples: int) -> settings:
    # Every example talks to a real server; shrinking still works because each example is one exchange.
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def _report(title: str, counts: Counter[str]) -> None:
    print(f"\n{title}: {sum(counts.values())} in all")
    for outcome, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {count:>7}  {outcome}")


def _tracebacks(output: str) -> list[str]:
    """Each traceback in the server output with the log line before it."""
    lines = output.splitlines()
    return [" | ".join(lines[max(0, i - 1):i + 8]) for i, line in enumerate(lines) if line.startswith("Traceback")]


# ---- item 1: generated client frames ------------------------------------------------------------

def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _not_json_object(text: str) -> bool:
    if text.strip() == "ping":
        return False
    try:
        return not isinstance(json.loads(text), dict)
    except ValueError:
        return True


_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
_json_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_bad_utf8 = st.builds(
    lambda head, bad, tail: head.encode() + bad + tail,
    st.text(max_size=30), st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80",
                                           b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xf0\x9f"]),
    st.binary(max_size=30),
).filter(lambda data: not _is_utf8(data))
_controls = st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co"]), min_size=1, max_size=40)


def _nested(depth: int, opener: str, wrap: bool) -> str:
    closer = {"[": "]", '{"a":': "}"}[opener]
    inner = opener * depth + "0" + closer * depth
    return f'{{"type":"ack","seq":{inner}}}' if wrap else inner


def _dump(value: Any, ascii_only: bool = True) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


# (kind, how it is sent, payload): "text" is a str in a text frame, "binary" bytes in a binary frame,
# "raw" bytes in a text frame (so the bytes need not be UTF-8).
FRAMES = st.one_of(
    st.tuples(st.just("invalid_utf8_text"), st.just("raw"), _bad_utf8),
    st.tuples(st.just("invalid_utf8_binary"), st.just("binary"), _bad_utf8),
    st.tuples(st.just("binary"), st.just("binary"), st.binary(max_size=300)),
    st.tuples(st.just("not_json"), st.just("text"), st.text(max_size=200).filter(_not_json_object)),
    st.tuples(st.just("wrong_shape"), st.just("text"),
              _json_values.filter(lambda v: not isinstance(v, dict)).map(_dump)),
    st.tuples(st.just("type_not_string"), st.just("text"),
              st.builds(lambda t, rest: _dump({**rest, "type": t}),
                        _json_values.filter(lambda v: not isinstance(v, str)),
                        st.dictionaries(st.text(max_size=8), _scalars, max_size=3))),
    st.tuples(st.just("wrong_fields"), st.just("text"), st.fixed_dictionaries(
        {"type": st.sampled_from(KNOWN_TYPES)},
        optional={"notification_id": _json_values, "seq": _json_values, "token": _json_values},
    ).map(_dump)),
    st.tuples(st.just("huge_numbers"), st.just("text"), st.one_of(
        st.integers(min_value=2**63 - 2, max_value=10**300).map(lambda n: f'{{"type":"ack","seq":{n}}}'),
        st.integers(min_value=-(10**300), max_value=0).map(lambda n: f'{{"type":"ack","seq":{n}}}'),
        st.sampled_from(["1e999999", "-1e999999", '{"type":"ack","seq":1e400}', '{"type":"ack","seq":-0.0}',
                         '{"type":"ack","seq":NaN}', '{"type":"ack","seq":Infinity}', "9" * 5000]),
        st.floats(allow_nan=False).map(lambda f: _dump({"type": "ack", "seq": f})),
    )),
    st.tuples(st.just("deep_nesting"), st.just("text"),
              st.builds(_nested, st.integers(min_value=1, max_value=40_000), st.sampled_from(["[", '{"a":']),
                        st.booleans())),
    st.tuples(st.just("unknown_type"), st.just("text"),
              st.builds(lambda t, rest: _dump({**rest, "type": t}),
                        st.text(max_size=60).filter(lambda t: t not in KNOWN_TYPES),
                        st.dictionaries(st.text(max_size=8), _scalars, max_size=3))),
    st.tuples(st.just("control_chars"), st.just("text"), st.one_of(
        _controls,
        _controls.map(lambda c: _dump({"type": "mark_read", "notification_id": c}, ascii_only=False)),
        _controls.map(lambda c: _dump({"type": c}, ascii_only=False)),
        _controls.map(lambda c: '{"type":"ping"' + c + "}"),
    ).filter(lambda s: s.strip() != "ping")),
)


class FrameFuzzer:
    """One user's connection that each generated frame is sent on, reopened after a deliberate close,
    and a bystander on the same server whose notifications are checked as the run goes on."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.user = new_user("fuzz")
        self.bystander_user = new_user("bystander")
        self.ws: SyncConnection | None = None
        self.stack = contextlib.ExitStack()
        self.bystander = self._open(self.bystander_user)
        self.http = httpx.Client(base_url=server.url, headers=server.admin_headers(), timeout=10)
        self.counts: Counter[str] = Counter()
        self.by_kind: dict[str, Counter[str]] = {}
        self.sent = 0
        self.bystander_received = 0

    def _open(self, user: str) -> SyncConnection:
        ws = self.stack.enter_context(
            sync_connect(f"{self.server.ws_url}?token={self.server.token(user)}", open_timeout=10))
        assert json.loads(ws.recv(timeout=5))["type"] == "connected"
        return ws

    def exchange(self, kind: str, how: str, payload: str | bytes) -> str:
        """Send one frame, then a text ping; the outcome is the error code, `served`, or the close code."""
        if self.ws is None:
            self.ws = self._open(self.user)
        ws = self.ws
        replies: list[dict[str, Any]] = []
        try:
            if how == "raw":
                ws.send(payload, text=True)
            else:
                ws.send(payload)
            ws.send("ping")
            while (reply := ws.recv(timeout=10)) != "pong":
                replies.append(json.loads(reply))
        except ConnectionClosed as exc:
            self.ws = None
            code = exc.rcvd.code if exc.rcvd else None
            assert code in DELIBERATE_CLOSES, f"{kind} {payload[:200]!r} ended the connection with {code}"
            outcome = f"close {code}"
        else:
            errors = [r for r in replies if r.get("type") == "error"]
            for error in errors:
                assert error["code"] != "internal", f"{kind} {payload[:200]!r} failed inside the server: {error}"
                assert error["message"]
            outcome = f"error {errors[0]['code']}" if errors else "served " + ",".join(
                sorted({r.get("type", "?") for r in replies}) or ["(no reply)"])
        self.counts[outcome] += 1
        self.by_kind.setdefault(kind, Counter())[outcome] += 1
        self.sent += 1
        if self.sent % 50 == 0:
            self.check_bystander()
        return outcome

    def check_bystander(self) -> None:
        title = f"still here {self.sent}"
        assert self.http.post("/api/notifications", json={"user_id": self.bystander_user, "title": title}
                              ).status_code == 201
        frame = json.loads(self.bystander.recv(timeout=5))
        assert frame["type"] == "notification" and frame["data"]["title"] == title
        self.bystander_received += 1

    def close(self) -> None:
        self.stack.close()
        self.http.close()


# The sync client's keepalive thread draws its ping payloads from the global `random`; Hypothesis sees the
# state move while it draws and takes it for a strategy using `random`.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_generated_frames_get_an_error_or_a_deliberate_close(make_server) -> None:
    """Generated bad frames each get an `error` (connection still answering ping) or a 1003/1007/1008/1009
    close, never 1006/1011 nor `internal`, while a bystander keeps receiving; no traceback in the output."""
    srv = make_server(**UNLIMITED_RATE)
    fuzzer = FrameFuzzer(srv)
    try:
        @_fuzz_settings(FUZZ_EXAMPLES)
        @given(FRAMES)
        def one_frame(frame: tuple[str, str, str | bytes]) -> None:
            fuzzer.exchange(*frame)

        one_frame()
        fuzzer.check_bystander()
    finally:
        fuzzer.close()
    _report("WebSocket frames by outcome", fuzzer.counts)
    for kind, counts in sorted(fuzzer.by_kind.items()):
        print(f"  {kind}: " + ", ".join(f"{outcome} {n}" for outcome, n in counts.most_common()))
    print(f"  bystander notifications received: {fuzzer.bystander_received}")
    assert fuzzer.sent >= FUZZ_EXAMPLES
    assert not any(o.startswith("close 10") and int(o[6:]) not in DELIBERATE_CLOSES for o in fuzzer.counts)
    # uvicorn's own traceback for a text frame that is not UTF-8 is the subject of the next test.
    others = [t for t in _tracebacks(srv.output()) if UVICORN_UTF8 not in t]
    assert others == []
    assert [line for line in srv.output().splitlines() if " ERROR " in line and UVICORN_UTF8 not in line] == []


def test_invalid_utf8_text_frame_closes_1007_without_a_traceback(make_server) -> None:
    """Bytes that are not UTF-8 in a text frame close the connection 1007 and log no error or traceback."""
    srv = make_server()
    with sync_connect(f"{srv.ws_url}?token={srv.token(new_user())}", open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "connected"
        ws.send(b'{"type":"ping","x":"\xff"}', text=True)
        try:
            while True:
                ws.recv(timeout=5)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1007
    time.sleep(0.3)
    assert _tracebacks(srv.output()) == []
    assert " ERROR " not in srv.output()


# ---- item 1: generated HTTP requests --------------------------------------------------------------

_user_ids = st.one_of(st.text(max_size=140), st.sampled_from(["alice", " ", "", "a" * 129]), _json_values)
_publish_bodies = st.one_of(
    _json_values,
    st.fixed_dictionaries({}, optional={
        "user_id": _user_ids, "user_ids": st.lists(_user_ids, max_size=5) | _json_values,
        "broadcast": st.booleans() | _json_values, "title": st.text(max_size=250) | _json_values,
        "message": st.text(max_size=50) | _json_values, "type": st.text(max_size=70) | _json_values,
        "link": st.text(max_size=60) | _json_values, "meta": _json_values, "extra": _scalars,
    }),
)
_sms_bodies = st.one_of(
    _json_values,
    st.fixed_dictionaries({}, optional={
        "user_id": _user_ids, "verification_id": st.text(max_size=140) | _json_values,
        "service": st.text(max_size=70) | _json_values, "code": st.text(max_size=20) | _json_values,
        "message_id": st.text(max_size=10) | _json_values, "extra": _scalars,
    }),
)
_verification_bodies = st.one_of(
    _json_values,
    st.fixed_dictionaries({}, optional={
        "user_id": _user_ids, "service": st.text(max_size=70) | _json_values,
        "phone_number": st.text(max_size=30) | _json_values, "provider": st.text(max_size=10) | _json_values,
        "ttl_s": st.integers(min_value=-(2**70), max_value=2**70) | _json_values,
    }),
)


def _near(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with one field replaced by a generated value, or dropped: reaches past validation."""
    return st.builds(
        lambda key, value, drop: ({k: v for k, v in valid.items() if k != key} if drop else {**valid, key: value}),
        st.sampled_from(sorted(valid)), _json_values | st.text(max_size=300), st.booleans(),
    ) | st.just(valid)


_near_publish = st.just({"user_id": "fuzz_target", "title": "Hello", "message": "m",
                                         "type": "info", "link": "/x", "meta": {"k": 1}}).flatmap(_near)
_near_sms = st.builds(lambda n: {"user_id": "fuzz_target", "verification_id": f"ver_{n}", "service": "Google",
                                 "code": "123456", "message_id": f"m{n}"}, st.integers(0, 10**9)).flatmap(_near)
_near_verification = st.just({"user_id": "fuzz_target", "service": "Google", "phone_number": "+15550100",
                              "provider": "fake", "ttl_s": 60}).flatmap(_near)
_query_values = st.one_of(st.text(max_size=30), st.integers(min_value=-(2**70), max_value=2**70).map(str),
                          st.sampled_from(["", "1e3", "0x10", "+1", " 1", "１", "²", "9" * 30, "NaN"]))
_queries = st.lists(st.tuples(st.sampled_from(["limit", "before_seq", "since_seq", "x", "limit[]"]), _query_values),
                    max_size=4)


def _content(body: Any) -> bytes:
    return json.dumps(body).encode()


REQUESTS = st.one_of(
    st.tuples(st.just("POST /api/notifications"), (_publish_bodies | _near_publish).map(_content)),
    st.tuples(st.just("POST /api/sms/inbound"), (_sms_bodies | _near_sms).map(_content)),
    st.tuples(st.just("POST /api/verifications"), (_verification_bodies | _near_verification).map(_content)),
    st.tuples(st.sampled_from(["POST /api/notifications", "POST /api/sms/inbound", "POST /api/verifications"]),
              st.binary(max_size=300) | _bad_utf8),
    st.tuples(st.just("GET /api/notifications"), _queries),
)


def test_generated_http_requests_are_never_a_500(make_server) -> None:
    """Generated JSON and byte bodies on the admin endpoints, and query strings on the list, are answered
    2xx or 4xx with a JSON body, never 5xx, and leave no traceback in the server output."""
    srv = make_server(**FAKE_SMS)
    counts: Counter[str] = Counter()
    user = new_user("httpfuzz")
    with httpx.Client(base_url=srv.url, timeout=10) as http:
        admin, mine = srv.admin_headers(), srv.user_headers(user)

        @_fuzz_settings(HTTP_FUZZ_EXAMPLES)
        @given(REQUESTS)
        def one_request(request: tuple[str, Any]) -> None:
            route, payload = request
            method, path = route.split(" ")
            if method == "GET":
                response = http.get(path, params=payload, headers=mine)
            else:
                response = http.post(path, content=payload, headers={**admin, "content-type": "application/json"})
            assert response.status_code < 500, f"{route} {payload!r}: {response.status_code} {response.text[:300]}"
            assert response.headers["content-type"].startswith("application/json"), response.text[:300]
            assert "detail" in response.json() or response.status_code < 300
            counts[f"{route} {response.status_code}"] += 1

        one_request()
    _report("HTTP requests by route and status", counts)
    assert sum(counts.values()) >= HTTP_FUZZ_EXAMPLES
    assert _tracebacks(srv.output()) == []


# ---- item 2: the frame size limit -----------------------------------------------------------------

def _ping_of(size: int) -> str:
    """A `{"type":"ping"}` frame of exactly ``size`` bytes (ASCII, so bytes and characters agree)."""
    frame = '{"type":"ping","pad":""}'
    return frame[:-2] + "x" * (size - len(frame)) + '"}'


def _fragments(text: str, count: int) -> list[str]:
    step = -(-len(text) // count)
    return [text[i:i + step] for i in range(0, len(text), step)]


async def _send_sized(srv: ServerProcess, size: int, fragments: int) -> str:
    """One connection sends a ping of ``size`` bytes (in ``fragments`` frames): `pong` or `close <code>`."""
    async with srv.ws(srv.token(new_user()), ping_interval=None) as ws:
        await recv_json(ws)
        text = _ping_of(size)
        try:
            await ws.send(text if fragments == 1 else _fragments(text, fragments))
            reply = await recv_json(ws)
            return reply["type"]
        except ConnectionClosed as exc:
            return f"close {exc.rcvd.code if exc.rcvd else None}"


async def test_size_limit_boundaries_plain_and_in_1000_fragments(make_server) -> None:
    """max−1 and max bytes are served and max+1 closes 1009, whether sent in one frame or in 1,000 fragments."""
    srv = make_server()
    limit = srv.settings().max_message_bytes
    results = {}
    for fragments in (1, 1000):
        for size in (limit - 1, limit, limit + 1):
            results[(size, fragments)] = await _send_sized(srv, size, fragments)
    print(f"\nsize limit {limit} B: " + ", ".join(f"{s} B × {f} frames → {r}" for (s, f), r in results.items()))
    for fragments in (1, 1000):
        assert results[(limit - 1, fragments)] == "pong"
        assert results[(limit, fragments)] == "pong"
        assert results[(limit + 1, fragments)] == "close 1009"


async def test_per_message_deflate_is_not_negotiated(server: ServerProcess) -> None:
    """A client offering permessage-deflate gets no extension in the handshake answer: frames stay uncompressed."""
    async with server.ws(server.token(new_user()), compression="deflate") as ws:
        assert ws.request is not None and "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
        assert ws.response is not None and "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []
        assert (await recv_json(ws))["type"] == "connected"


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))


async def _oversized(srv: ServerProcess, size: int, fragments: int) -> str:
    """Like ``_send_sized`` but for messages far past the limit: the server may cut the socket mid-send."""
    try:
        return await _send_sized(srv, size, fragments)
    except (ConnectionClosed, OSError) as exc:
        return f"cut {type(exc).__name__}"
    except AttributeError as exc:
        # Python 3.11's selector transport, closed while its write buffer was still draining into a server
        # that lingers after 1009 (reading on, so the buffer does drain), forgets that it is closed; the
        # client's later abort() then fails on the loop it has let go. The client side of the same cut.
        if "call_soon" not in str(exc):
            raise
        return f"cut {type(exc).__name__}"


async def test_oversized_messages_keep_peak_rss_bounded(make_server) -> None:
    """Messages of max+1 up to 16 × max, plain and fragmented, close 1009 while the server's peak RSS
    grows by less than 2 × the limit over its peak after serving max-size messages."""
    limit = 1 << 20
    srv = make_server(NOTIFY_MAX_MESSAGE_BYTES=limit)
    pid = srv.process.pid
    start = _peak_rss_kib(pid)
    for fragments in (1, 1000, 1, 1000):  # warm up: what an accepted max-size message costs
        assert await _send_sized(srv, limit, fragments) == "pong"
    baseline = _peak_rss_kib(pid)
    outcomes: Counter[str] = Counter()
    for size in (limit + 1, 2 * limit, 16 * limit):
        for fragments in (1, 1000):
            for _ in range(3):
                outcome = await _oversized(srv, size, fragments)
                outcomes[outcome] += 1
                if size == limit + 1:
                    assert outcome == "close 1009", (size, fragments, outcome)
                else:  # the client may still be writing when the server closes: it sees the socket cut
                    assert outcome in ("close 1009", "close None") or outcome.startswith("cut"), outcome
    peak = _peak_rss_kib(pid)
    deadline = time.monotonic() + 5
    while srv.output().count("code=1009 ") < 18:  # what the server itself closed each one with
        assert time.monotonic() < deadline, srv.output()[-3000:]
        await asyncio.sleep(0.05)
    print(f"\nlimit {limit // 1024} KiB: VmHWM at start {start} KiB, after max-size messages {baseline} KiB, "
          f"after 18 oversized messages {peak} KiB (+{peak - baseline} KiB); outcomes {dict(outcomes)}")
    assert peak < baseline + 2 * limit // 1024
    async with srv.ws(srv.token(new_user())) as ws:  # and the server still serves
        assert (await recv_json(ws))["type"] == "connected"


# ---- item 5: authorization isolation ----------------------------------------------------------------

async def _listing(http: httpx.AsyncClient, srv: ServerProcess, user: str) -> dict[str, Any]:
    response = await http.get("/api/notifications", headers=srv.user_headers(user))
    assert response.status_code == 200
    return response.json()


async def test_users_cannot_read_resume_into_or_mark_each_others_notifications(make_server) -> None:
    """Random user pairs: the intruder's list, count, resume and mark-read (HTTP and WebSocket) and the
    admin endpoints with a user token show or change nothing of the owner's: 0 leaks, 0 mutations."""
    srv = make_server(**FAKE_SMS)
    rng = random.Random(int(os.environ.get("NOTIFY_ISOLATION_SEED", "7")))
    users = [new_user("iso") for _ in range(max(10, ISOLATION_PAIRS // 5))]
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
        admin = srv.admin_headers()
        for round_ in range(3):
            body = {"user_ids": users, "title": f"private {round_}", "meta": {"round": round_}}
            assert (await http.post("/api/notifications", json=body, headers=admin)).status_code == 201
        verification = {}
        for user in users:
            started = await http.post("/api/verifications", json={"user_id": user, "service": "Google"},
                                      headers=admin)
            verification[user] = started.json()["id"]
        before = {user: await _listing(http, srv, user) for user in users}
        owned = {user: {n["id"] for n in before[user]["items"]} for user in users}
        owner_of = {nid: user for user, ids in owned.items() for nid in ids}
        leaks: Counter[str] = Counter()
        refusals: Counter[str] = Counter()
        limit = asyncio.Semaphore(16)

        def seen(intruder: str, where: str, ids: list[str]) -> None:
            for nid in ids:
                if owner_of.get(nid, intruder) != intruder:
                    leaks[where] += 1

        async def attempt(owner: str, intruder: str) -> None:
            theirs = rng.choice(sorted(owned[owner]))
            mine = srv.user_headers(intruder)
            async with limit:
                for query in ("", "?since_seq=0", "?before_seq=4"):
                    listing = (await http.get(f"/api/notifications{query}", headers=mine)).json()
                    seen(intruder, "GET list", [n["id"] for n in listing["items"]])
                    assert {n["user_id"] for n in listing["items"]} == {intruder}
                count = (await http.get("/api/notifications/unread-count", headers=mine)).json()
                assert count == {"unread_count": 3}
                calls = [
                    ("POST", f"/api/notifications/{theirs}/read", None, 404),
                    ("GET", f"/api/verifications/{verification[owner]}", None, 404),
                    ("POST", f"/api/verifications/{verification[owner]}/cancel", None, 404),
                    ("POST", "/api/notifications", {"user_id": owner, "title": "spoof"}, 403),
                    ("POST", "/api/notifications", {"broadcast": True, "title": "spoof"}, 403),
                    ("POST", "/api/sms/inbound", {"user_id": owner, "verification_id": verification[owner],
                                                  "service": "Google", "code": "123456"}, 403),
                    ("POST", "/api/verifications", {"user_id": owner, "service": "Google"}, 403),
                    ("POST", "/api/fake-provider/messages", {"verification_id": verification[owner],
                                                             "text": "code 123456"}, 403),
                ]
                for method, path, body, status in calls:
                    response = await http.request(method, path, json=body, headers=mine)
                    assert response.status_code == status, (method, path, response.status_code, response.text)
                    assert theirs not in response.text and owner not in response.text
                    refusals[f"{method} {path.split('/')[2]} {status}"] += 1
                async with srv.ws(srv.token(intruder), query="since_seq=0") as ws:
                    hello = await recv_json(ws)
                    assert hello["user_id"] == intruder and hello["unread_count"] == 3
                    replayed = [(await recv_json(ws))["data"] for _ in range(3)]
                    seen(intruder, "WS resume", [n["id"] for n in replayed])
                    assert {n["user_id"] for n in replayed} == {intruder}
                    assert await recv_json(ws) == {"type": "resumed", "replayed": 3, "last_seq": 3}
                    await ws.send(json.dumps({"type": "mark_read", "notification_id": theirs}))
                    error = await recv_json(ws)
                    assert error["type"] == "error" and error["code"] == "not_found"
                    refusals["WS mark_read not_found"] += 1
                    await ws.send("ping")
                    assert await asyncio.wait_for(ws.recv(), 5) == "pong"

        pairs = [tuple(rng.sample(users, 2)) for _ in range(ISOLATION_PAIRS)]
        await asyncio.gather(*(attempt(owner, intruder) for owner, intruder in pairs))
        after = {user: await _listing(http, srv, user) for user in users}
        mutated = [user for user in users if after[user] != before[user]]
        statuses = Counter()
        for user in users:
            check = await http.get(f"/api/verifications/{verification[user]}", headers=srv.user_headers(user))
            statuses[check.json()["status"]] += 1
    _report(f"isolation: {len(pairs)} pairs among {len(users)} users, refusals", refusals)
    print(f"  leaks {sum(leaks.values())}, users whose notifications changed {len(mutated)}, "
          f"verifications {dict(statuses)}")
    assert not leaks
    assert mutated == []
    assert statuses == Counter({"pending": len(users)})
    assert all(listing["unread_count"] == 3 for listing in after.values())


# ---- item 6: Origin ----------------------------------------------------------------------------------

async def test_origin_matching_is_exact_on_scheme_host_and_port(make_server) -> None:
    """Origins differing from an allowed entry in scheme, port, subdomain, trailing dot or by extra text
    are refused 4403; case and a trailing slash are the only differences let through."""
    srv = make_server(NOTIFY_ALLOWED_ORIGINS="https://app.example,http://localhost:3000")
    cases = {
        "https://app.example": True,
        "HTTPS://APP.EXAMPLE": True,
        "https://app.example/": True,
        "http://localhost:3000": True,
        "http://app.example": False,            # scheme
        "https://app.example:8443": False,      # port
        "https://app.example:443": False,       # browsers never send the default port
        "http://localhost": False,
        "http://localhost:30000": False,
        "https://localhost:3000": False,
        "https://app.example.": False,          # trailing dot
        "https://sub.app.example": False,
        "https://evilapp.example": False,
        "https://app.example.evil.com": False,
        "https://app.example@evil.com": False,
        "https://app.example https://evil.example": False,
        "https://app.example,https://evil.example": False,
        "https://evil.example/https://app.example": False,
        "null": False,
        "": False,
        "*": False,
    }
    results = {}
    for origin, allowed in cases.items():
        async with srv.ws(srv.token(new_user()), origin=origin) as ws:
            if allowed:
                results[origin] = (await recv_json(ws))["type"]
            else:
                code, reason = await expect_close(ws)
                results[origin] = f"{code} {reason}"
    print("\norigins: " + "; ".join(f"{o!r} → {r}" for o, r in results.items()))
    for origin, allowed in cases.items():
        assert results[origin] == ("connected" if allowed else "4403 origin not allowed"), origin


# ---- item 8: no token and no SMS code in the output of a whole workload -------------------------------

def _token_material(token: str) -> list[str]:
    signature = token.rsplit(".", 1)[1]
    return [token, signature, signature[:12], signature[-12:]]


async def _workload(srv: ServerProcess) -> tuple[list[str], list[str]]:
    """Every way in and every refusal, refresh, publish, SMS by webhook and by the fake provider; returns
    the tokens used and the SMS codes and texts sent."""
    user = new_user("leak")
    now = int(time.time())
    secret = signing_secret(srv.settings())
    stranger = "a-different-secret-that-is-long-enough-for-hs256"
    good = {name: srv.token(user, ttl=ttl) for name, ttl in
            (("query", 3600), ("header", 3500), ("frame", 3400), ("refresh", 7200), ("http", 3300))}
    good["legacy"] = jwt.encode({"user_id": user, "iat": now, "exp": now + 600}, secret, algorithm="HS256")
    good["admin"] = srv.token("ops", admin=True)
    bad = {
        "expired": srv.token(user, ttl=-600),
        "forged": jwt.encode({"sub": user, "exp": now + 600}, stranger, algorithm="HS256"),
        "forged_frame": jwt.encode({"sub": user, "exp": now + 600, "n": 1}, stranger, algorithm="HS256"),
        "forged_refresh": jwt.encode({"sub": user, "exp": now + 600, "n": 2}, stranger, algorithm="HS256"),
        "other_user_refresh": srv.token(new_user("other")),
        "forged_http": jwt.encode({"sub": user, "exp": now + 600, "n": 3}, stranger, algorithm="HS256"),
        "expired_access_token": srv.token(user, ttl=-900),
    }
    webhook_code = str(random.randint(10_000_000, 99_999_999))
    provider_code = str(random.randint(10_000_000, 99_999_999))
    provider_text = f"Your Google verification code is {provider_code}. Do not share it."
    admin = {"Authorization": f"Bearer {good['admin']}"}

    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http, \
            srv.ws(good["query"]) as by_query, \
            srv.ws(additional_headers={"Authorization": f"Bearer {good['header']}"}) as by_header, \
            srv.ws() as by_frame, srv.ws(good["legacy"]) as by_legacy:
        await by_frame.send(json.dumps({"type": "auth", "token": good["frame"]}))
        tabs = (by_query, by_header, by_frame, by_legacy)
        for ws in tabs:
            assert (await recv_json(ws))["type"] == "connected"
        await by_query.send(json.dumps({"type": "refresh_token", "token": good["refresh"]}))
        assert (await recv_until(by_query, "token_refreshed"))["expires_at"]
        for name in ("forged_refresh", "other_user_refresh"):
            await by_header.send(json.dumps({"type": "refresh_token", "token": bad[name]}))
            assert (await recv_until(by_header, "error"))["code"] == "invalid_token"
        await by_header.send(json.dumps({"type": "auth", "token": good["http"]}))  # auth twice: refused
        assert (await recv_until(by_header, "error"))["code"] == "bad_frame"

        published = await http.post("/api/notifications", json={"user_id": user, "title": "Log me"}, headers=admin)
        assert published.status_code == 201
        webhook = await http.post("/api/sms/inbound", headers=admin, json={
            "user_id": user, "verification_id": "ver_leak", "service": "Google", "code": webhook_code,
            "message_id": new_user("msg")})
        assert webhook.status_code == 201
        started = await http.post("/api/verifications", json={"user_id": user, "service": "Google"}, headers=admin)
        assert started.status_code == 201
        ver = started.json()["id"]
        fed = await http.post("/api/fake-provider/messages", json={"verification_id": ver, "text": provider_text},
                              headers=admin)
        assert fed.status_code == 201
        for ws in tabs:
            assert (await recv_until(ws, "notification"))["data"]["title"] == "Log me"
            assert (await recv_until(ws, "notification"))["data"]["type"] == "sms_received"
            assert (await recv_until(ws, "notification", timeout=10))["data"]["meta"]["verification_id"] == ver
        mine = {"Authorization": f"Bearer {good['http']}"}
        shown = await http.get(f"/api/verifications/{ver}", headers=mine)
        assert shown.json()["code"] == provider_code
        assert (await http.get("/api/notifications", headers=mine)).status_code == 200
        assert (await http.get("/api/notifications", headers={"Authorization": f"Bearer {bad['forged_http']}"}
                               )).status_code == 401
        assert (await http.get(f"/api/notifications?access_token={bad['expired_access_token']}")).status_code == 401
        assert (await http.get("/ws/stats")).status_code == 200

    forged_header = {"additional_headers": {"Authorization": f"Bearer {bad['forged']}"}}
    for token, kwargs in ((bad["expired"], {}), (None, forged_header)):
        async with srv.ws(token, **kwargs) as ws:
            code, _ = await expect_close(ws)
            assert code == 4401
    async with srv.ws() as ws:
        await ws.send(json.dumps({"type": "auth", "token": bad["forged_frame"]}))
        assert (await expect_close(ws))[0] == 4401
    deadline = time.monotonic() + 5
    while srv.output().count(f"WebSocket disconnected: user={user}") < 4:
        assert time.monotonic() < deadline, srv.output()[-3000:]
        await asyncio.sleep(0.05)
    return [*good.values(), *bad.values()], [webhook_code, provider_code, provider_text]


async def test_no_token_or_sms_code_in_the_output_of_a_whole_workload(make_server) -> None:
    """At log levels info and debug, a workload using every auth path, refresh, bad tokens and both SMS
    paths leaves 0 occurrences of any token, token signature or SMS code in the server's output."""
    found: dict[str, list[str]] = {}
    for level in ("info", "debug"):
        srv = make_server(NOTIFY_LOG_LEVEL=level, **FAKE_SMS)
        tokens, codes = await _workload(srv)
        srv.stop()
        output = srv.output()
        material = [m for token in tokens for m in _token_material(token)] + codes
        found[level] = [m for m in material if m in output]
        print(f"\nlog level {level}: {len(output.splitlines())} lines, {len(tokens)} tokens and "
              f"{len(codes)} SMS codes/texts searched ({len(material)} strings), {len(found[level])} found")
        assert "[redacted" in output  # the workload did put tokens where logs would show them
    assert found == {"info": [], "debug": []}


# ---- item 14: the boundaries of resume ----------------------------------------------------------------

async def _resume(srv: ServerProcess, token: str, query: str) -> tuple[str, Any]:
    """Connect with ``query`` and classify what comes before the answer to a ping: ("replay", seqs),
    ("resync", last_seq), ("live", []) when there is no resume at all, or ("closed", code)."""
    async with srv.ws(token, query=query) as ws:
        try:
            hello = await recv_json(ws)
        except ConnectionClosed as exc:
            return "closed", exc.rcvd.code if exc.rcvd else None
        assert hello["type"] == "connected"
        await ws.send("ping")
        frames = []
        while (raw := await asyncio.wait_for(ws.recv(), 5)) != "pong":
            frames.append(json.loads(raw))
    kinds = [f["type"] for f in frames]
    if not frames:
        return "live", []
    if kinds == ["resync_required"]:
        assert frames[0]["last_seq"] == hello["last_seq"]
        return "resync", frames[0]["last_seq"]
    assert kinds == ["notification"] * (len(frames) - 1) + ["resumed"], kinds
    notes = [f["data"] for f in frames[:-1]]
    assert {n["user_id"] for n in notes} <= {hello["user_id"]}
    assert frames[-1] == {"type": "resumed", "replayed": len(notes), "last_seq": hello["last_seq"]}
    return "replay", [n["seq"] for n in notes]


async def test_resume_boundaries_are_a_full_replay_or_resync_never_partial(make_server) -> None:
    """since_seq 0, current, at and past the replay bound, in the future, garbage, repeated, and with
    another user's seq: exactly a full replay, `resync_required`, or a 1008 refusal for garbage."""
    srv = make_server(NOTIFY_REPLAY_LIMIT=10)
    big, small = new_user("big"), new_user("small")
    for i in range(15):
        assert srv.publish(big, f"big {i}").status_code == 201
    for i in range(4):
        assert srv.publish(small, f"small {i}").status_code == 201
    big_token, small_token = srv.token(big), srv.token(small)
    expected: dict[str, tuple[str, Any]] = {
        "since_seq=0": ("resync", 15),                    # 15 missed > bound 10
        "since_seq=15": ("replay", []),                   # current: nothing missed
        "since_seq=14": ("replay", [15]),
        "since_seq=5": ("replay", list(range(6, 16))),    # exactly the bound
        "since_seq=4": ("resync", 15),                    # one past the bound
        "since_seq=16": ("resync", 15),                   # in the future
        "since_seq=99999999999999999": ("resync", 15),
        "since_seq=": ("live", []),                       # empty: an ordinary connection
    }
    garbage = ["abc", "-1", "%2D1", "1e3", "0x10", "%2B3", "%203", "3.0", "3%00", "9" * 19, "9" * 400,
               "%C2%B2", "%EF%BC%93", "%D9%A3", "NaN"]
    for value in garbage:
        expected[f"since_seq={value}"] = ("closed", 1008)
    results = {query: await _resume(srv, big_token, query) for query in expected}
    repeated = await _resume(srv, big_token, "since_seq=14&since_seq=0")
    small_results = {
        "since_seq=0": await _resume(srv, small_token, "since_seq=0"),   # small's own four, none of big's
        "since_seq=15": await _resume(srv, small_token, "since_seq=15"),  # big's current seq: future for small
    }
    print("\nresume boundaries (15 stored, bound 10): " + "; ".join(f"{q[:40]} → {r[0]} {r[1]}"
                                                                   for q, r in results.items()))
    print(f"  repeated since_seq=14&since_seq=0 → {repeated}; other user's seq: {small_results}")
    assert results == expected
    assert repeated in (("replay", [15]), ("resync", 15), ("closed", 1008))
    assert small_results == {"since_seq=0": ("replay", [1, 2, 3, 4]), "since_seq=15": ("resync", 4)}
    assert _tracebacks(srv.output()) == []


def test_polling_since_seq_boundaries(server: ServerProcess) -> None:
    """GET /api/notifications?since_seq= answers all newer ones in order, nothing for current or future
    values, and 422 for garbage — never everything for a value it could not read."""
    user = new_user()
    for i in range(5):
        server.publish(user, f"n{i}")
    headers = server.user_headers(user)

    def seqs(value: str) -> list[int] | int:
        response = httpx.get(f"{server.url}/api/notifications?since_seq={value}", headers=headers)
        if response.status_code != 200:
            return response.status_code
        return [n["seq"] for n in response.json()["items"]]

    assert seqs("0") == [1, 2, 3, 4, 5]
    assert seqs("3") == [4, 5]
    assert seqs("5") == []
    assert seqs("6") == []
    assert seqs(str(2**63 - 1)) == []
    for garbage in ("abc", "-1", "1e3", "0x10", str(2**63), "9" * 400, quote("²"), quote("３"), "NaN"):
        assert seqs(garbage) == 422, garbage


async def test_socket_survives_a_refused_resume_of_another_connection(server: ServerProcess) -> None:
    """A garbage since_seq on one connection leaves the user's other connections working."""
    user = new_user()
    async with server.ws(server.token(user)) as tab:
        await recv_json(tab)
        async with server.ws(server.token(user), query="since_seq=x") as bad:
            assert (await expect_close(bad))[0] == 1008
        server.publish(user, "still delivered")
        assert (await recv_until(tab, "notification"))["data"]["title"] == "still delivered"
