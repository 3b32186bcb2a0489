"""The wire protocol without sockets: every client frame of contract 2.2 parsed, every malformed one
refused with the right error code, and every server frame of 2.1 built with exactly its field names."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from namaskah_notify import protocol
from namaskah_notify.errors import NotifyError, ProtocolError
from namaskah_notify.protocol import (
    Ack,
    Auth,
    MarkAllRead,
    MarkRead,
    Ping,
    RefreshToken,
    parse_client_frame,
)
from namaskah_notify.schemas import Content, Notification


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _code(text: str) -> str:
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(text)
    return info.value.code


# ---- client frames (2.2) -------------------------------------------------------------------------


def test_text_ping_is_the_origin_keepalive():
    """The bare text frame ``ping`` parses as a text ping (answered with bare ``pong``)."""
    assert parse_client_frame("ping") == Ping(text=True)


def test_text_ping_tolerates_surrounding_whitespace():
    """``ping`` with a trailing newline is still the text keepalive."""
    assert parse_client_frame("ping\n") == Ping(text=True)


def test_json_ping():
    """``{"type":"ping"}`` parses as a JSON ping (answered with a JSON pong)."""
    assert parse_client_frame('{"type":"ping"}') == Ping(text=False)


def test_mark_read():
    """``mark_read`` carries the notification id."""
    assert parse_client_frame('{"type":"mark_read","notification_id":"notif_123"}') == MarkRead("notif_123")


def test_mark_all_read():
    """``mark_all_read`` needs no other field."""
    assert parse_client_frame('{"type":"mark_all_read"}') == MarkAllRead()


def test_refresh_token():
    """``refresh_token`` carries the new token."""
    assert parse_client_frame('{"type":"refresh_token","token":"a.b.c"}') == RefreshToken("a.b.c")


def test_ack():
    """``ack`` carries the positive integer seq the client has shown."""
    assert parse_client_frame('{"type":"ack","seq":42}') == Ack(42)


def test_auth():
    """The browser's first frame ``{"type":"auth","token":...}`` carries the token."""
    assert parse_client_frame('{"type":"auth","token":"x.y.z"}') == Auth("x.y.z")


def test_extra_fields_are_ignored():
    """Unknown extra fields in a known frame do not make it invalid (forward compatibility)."""
    assert parse_client_frame('{"type":"ping","client":"v2"}') == Ping(text=False)


# ---- malformed client frames --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "pong", "hello", "{", '{"type":', "PING!", "\x00", "{'type':'ping'}"])
def test_non_json_is_bad_json(text):
    """Text that is neither JSON nor ``ping`` is refused with code ``bad_json``."""
    assert _code(text) == "bad_json"


@pytest.mark.parametrize("text", ["[]", '["ping"]', '"ping"', "42", "null", "true", "1.5"])
def test_json_that_is_not_an_object_is_bad_frame(text):
    """JSON that is not an object is refused with code ``bad_frame``."""
    assert _code(text) == "bad_frame"


@pytest.mark.parametrize("text", ["{}", '{"kind":"ping"}', '{"type":null}', '{"type":1}', '{"type":["ping"]}',
                                  '{"type":{"a":1}}', '{"type":true}'])
def test_missing_or_non_string_type_is_bad_frame(text):
    """An object without a string ``type`` is refused with code ``bad_frame``."""
    assert _code(text) == "bad_frame"


@pytest.mark.parametrize("text", ['{"type":"subscribe"}', '{"type":""}', '{"type":"PING"}', '{"type":"pong"}',
                                  '{"type":"' + "x" * 5000 + '"}'])
def test_unknown_type_is_unknown_type(text):
    """A string ``type`` that is not a client frame is refused with code ``unknown_type``."""
    assert _code(text) == "unknown_type"


def test_unknown_type_message_is_bounded():
    """The error message for an unknown type does not echo a huge type string back."""
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(json.dumps({"type": "x" * 5000}))
    assert len(info.value.message) < 200


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "mark_read"},
        {"type": "mark_read", "notification_id": None},
        {"type": "mark_read", "notification_id": 123},
        {"type": "mark_read", "notification_id": ""},
        {"type": "mark_read", "notification_id": ["notif_1"]},
        {"type": "mark_read", "notification_id": "n" * 129},
        {"type": "refresh_token"},
        {"type": "refresh_token", "token": 5},
        {"type": "refresh_token", "token": ""},
        {"type": "refresh_token", "token": "t" * 8193},
        {"type": "auth"},
        {"type": "auth", "token": None},
        {"type": "auth", "token": {"jwt": "x"}},
        {"type": "auth", "token": ""},
        {"type": "auth", "token": "t" * 8193},
        {"type": "ack"},
        {"type": "ack", "seq": "42"},
        {"type": "ack", "seq": 4.2},
        {"type": "ack", "seq": True},
        {"type": "ack", "seq": False},
        {"type": "ack", "seq": 0},
        {"type": "ack", "seq": -1},
        {"type": "ack", "seq": 2**63},
        {"type": "ack", "seq": None},
    ],
    ids=lambda f: json.dumps(f)[:60],
)
def test_wrong_field_types_are_bad_frame(frame):
    """Missing, mistyped, empty, boolean, non-positive or over-long fields are refused with ``bad_frame``."""
    assert _code(json.dumps(frame)) == "bad_frame"


def test_longest_allowed_id_and_token_are_accepted():
    """An id of exactly 128 characters and a token of exactly 8192 are still accepted."""
    assert parse_client_frame(json.dumps({"type": "mark_read", "notification_id": "n" * 128})) == MarkRead("n" * 128)
    assert parse_client_frame(json.dumps({"type": "auth", "token": "t" * 8192})) == Auth("t" * 8192)


def test_protocol_error_keeps_the_connection():
    """A protocol error is a ``NotifyError`` answered with an error frame, not an auth failure."""
    with pytest.raises(ProtocolError) as info:
        parse_client_frame("nope")
    assert isinstance(info.value, NotifyError)
    assert info.value.status == 400


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "mark_read", "mark_all_read", "refresh_token", "ack", "auth", "x"])},
    optional={"notification_id": _json_values, "token": _json_values, "seq": _json_values},
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=200),
    st.text(st.characters(categories=["Cs", "Cc", "Ll", "Nd", "Po", "Ps", "Pe", "Zs"]), max_size=50),
    _json_values.map(json.dumps),
    _frames.map(json.dumps),
    _frames.map(lambda frame: json.dumps(frame, ensure_ascii=False)),
))
def test_parse_never_raises_anything_but_protocol_error(text):
    """For any text, parse_client_frame returns a client frame or raises ProtocolError, nothing else."""
    try:
        frame = parse_client_frame(text)
    except ProtocolError as exc:
        assert exc.code in {"bad_json", "bad_frame", "unknown_type"}
    else:
        assert isinstance(frame, Ping | Auth | MarkRead | MarkAllRead | RefreshToken | Ack)


# ---- server frames (2.1) ------------------------------------------------------------------------


def test_connected_frame_fields():
    """``connected`` has exactly the origin document's fields plus connection id, unread count and last seq."""
    frame = json.loads(protocol.connected_frame("user_123", "c1", 3, 7))
    assert set(frame) == {"type", "message", "user_id", "timestamp", "connection_id", "unread_count", "last_seq"}
    assert frame["type"] == "connected"
    assert frame["message"] == "WebSocket connected successfully"
    assert (frame["user_id"], frame["connection_id"], frame["unread_count"], frame["last_seq"]) == (
        "user_123", "c1", 3, 7)
    assert _iso(frame["timestamp"]).tzinfo is not None


def test_notification_frame_fields():
    """``notification`` wraps the stored record in ``data`` with every field the contract names."""
    created = datetime(2024, 5, 1, 12, 30, 0, 123000, tzinfo=UTC)
    content = Content(title="📱 SMS Code Received", message="Verification code received for Google",
                      type="sms_received", link="/verify?id=v1")
    record = Notification(id="notif_123", user_id="user_1", seq=42, content=content, created_at=created)
    frame = json.loads(protocol.notification_frame(record))
    assert set(frame) == {"type", "data"}
    assert frame["type"] == "notification"
    data = frame["data"]
    assert {"id", "seq", "title", "message", "type", "link", "created_at", "is_read"} <= set(data)
    assert data["id"] == "notif_123" and data["seq"] == 42
    assert data["title"] == "📱 SMS Code Received"
    assert data["type"] == "sms_received" and data["link"] == "/verify?id=v1"
    assert data["is_read"] is False
    assert _iso(data["created_at"]) == created


def test_notification_frame_null_link():
    """A notification without a link carries ``link: null``."""
    record = Notification(id="n", user_id="u", seq=1, content=Content(title="t", message="", type="info", link=None),
                          created_at=datetime.now(UTC))
    assert json.loads(protocol.notification_frame(record))["data"]["link"] is None


def test_pong_frame_fields():
    """JSON ``pong`` has exactly ``type`` and ``timestamp``."""
    frame = json.loads(protocol.pong_frame())
    assert set(frame) == {"type", "timestamp"} and frame["type"] == "pong"
    assert _iso(frame["timestamp"]).tzinfo is not None


def test_read_frame_fields():
    """``read`` has exactly ``notification_ids``, ``all`` and ``unread_count``."""
    frame = json.loads(protocol.read_frame(["n1", "n2"], False, 4))
    assert frame == {"type": "read", "notification_ids": ["n1", "n2"], "all": False, "unread_count": 4}
    assert json.loads(protocol.read_frame([], True, 0)) == {
        "type": "read", "notification_ids": [], "all": True, "unread_count": 0}


def test_resumed_frame_fields():
    """``resumed`` has exactly ``replayed`` and ``last_seq``."""
    assert json.loads(protocol.resumed_frame(5, 12)) == {"type": "resumed", "replayed": 5, "last_seq": 12}


def test_resync_required_frame_fields():
    """``resync_required`` has exactly ``last_seq``."""
    assert json.loads(protocol.resync_required_frame(3000)) == {"type": "resync_required", "last_seq": 3000}


def test_token_expiring_frame_fields():
    """``token_expiring`` has exactly ``expires_in`` in whole non-negative seconds."""
    assert json.loads(protocol.token_expiring_frame(59.6)) == {"type": "token_expiring", "expires_in": 60}
    assert json.loads(protocol.token_expiring_frame(-3)) == {"type": "token_expiring", "expires_in": 0}


def test_token_refreshed_frame_fields():
    """``token_refreshed`` has exactly ``expires_at`` as an ISO-8601 time equal to the token's exp."""
    frame = json.loads(protocol.token_refreshed_frame(1_700_000_000))
    assert set(frame) == {"type", "expires_at"} and frame["type"] == "token_refreshed"
    assert _iso(frame["expires_at"]) == datetime.fromtimestamp(1_700_000_000, UTC)


def test_error_frame_fields():
    """``error`` has exactly ``code`` and ``message``."""
    assert json.loads(protocol.error_frame("bad_json", "frame is not JSON")) == {
        "type": "error", "code": "bad_json", "message": "frame is not JSON"}


def test_error_frame_for_each_parse_failure():
    """Each parse failure's code and message build a well-formed error frame."""
    for text, code in (("x", "bad_json"), ("[]", "bad_frame"), ('{"type":"nope"}', "unknown_type")):
        with pytest.raises(ProtocolError) as info:
            parse_client_frame(text)
        frame = json.loads(protocol.error_frame(info.value.code, info.value.message))
        assert frame["code"] == code and frame["message"]
