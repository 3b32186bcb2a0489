"""What the server writes to its output: one line per connect, disconnect and publish, and never a
token (query string, header, auth frame, refresh) nor an SMS code, at the default level and at debug."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from namaskah_notify.logs import redact

from .conftest import ServerProcess, new_user, recv_json, recv_until

SMS_CODE = "QX7-493871"


def _secrets_of(token: str) -> list[str]:
    """The token, its signature, and the signature's first and last 12 characters (an elided token)."""
    signature = token.rsplit(".", 1)[1]
    return [token, signature, signature[:12], signature[-12:]]


async def _wait_for_output(server: ServerProcess, text: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.output():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{server.output()[-3000:]}"
        await asyncio.sleep(0.05)


async def _exercise(server: ServerProcess) -> tuple[str, list[str]]:
    """Connect every way, publish, refresh, send an SMS, and fail auth once; returns the user and its tokens."""
    user = new_user("logged")
    query_token = server.token(user)
    header_token = server.token(user, ttl=1800)
    frame_token = server.token(user, ttl=1700)
    refresh_token = server.token(user, ttl=7200)
    expired_token = server.token(user, ttl=-600)
    admin_token = server.token("ops", admin=True)
    admin = {"Authorization": f"Bearer {admin_token}"}

    async with server.ws(query_token) as by_query, \
            server.ws(additional_headers={"Authorization": f"Bearer {header_token}"}) as by_header, \
            server.ws() as by_frame:
        await by_frame.send(json.dumps({"type": "auth", "token": frame_token}))
        for ws in (by_query, by_header, by_frame):
            assert (await recv_json(ws))["type"] == "connected"
        await by_query.send(json.dumps({"type": "refresh_token", "token": refresh_token}))
        assert (await recv_until(by_query, "token_refreshed"))["expires_at"]

        published = await asyncio.to_thread(
            httpx.post, f"{server.url}/api/notifications", json={"user_id": user, "title": "Log me"},
            headers=admin, timeout=10,
        )
        assert published.status_code == 201
        sms = await asyncio.to_thread(
            httpx.post, f"{server.url}/api/sms/inbound",
            json={"user_id": user, "verification_id": "ver_log", "service": "Google", "code": SMS_CODE,
                  "message_id": new_user("msg")},
            headers=admin, timeout=10,
        )
        assert sms.status_code == 201
        for ws in (by_query, by_header, by_frame):
            assert (await recv_until(ws, "notification"))["data"]["title"] == "Log me"
            assert (await recv_until(ws, "notification"))["data"]["type"] == "sms_received"

    with pytest.raises(ConnectionClosed) as refused:
        async with server.ws(expired_token) as ws:
            await recv_json(ws)
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 4401

    await _wait_for_output(server, "websocket refused")
    deadline = time.monotonic() + 5
    while server.output().count(f"WebSocket disconnected: user={user}") < 3:
        assert time.monotonic() < deadline, server.output()[-3000:]
        await asyncio.sleep(0.05)
    tokens = [query_token, header_token, frame_token, refresh_token, expired_token, admin_token]
    return user, tokens


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_tokens_and_sms_codes_never_logged(make_server, level):
    """Connecting three ways, refreshing, publishing and an SMS log no token material and no SMS code."""
    server = make_server(NOTIFY_LOG_LEVEL=level)
    _user, tokens = await _exercise(server)
    server.stop()
    output = server.output()
    for token in tokens:
        for secret in _secrets_of(token):
            assert secret not in output, f"token material {secret!r} logged at {level}"
    assert SMS_CODE not in output
    assert "493871" not in output


async def test_connect_disconnect_and_publish_are_logged(make_server):
    """One line per connect, per disconnect and per publish, naming the user."""
    server = make_server()
    user, _tokens = await _exercise(server)
    server.stop()
    output = server.output()
    assert output.count(f"WebSocket connected: user={user}") == 3
    assert output.count(f"WebSocket disconnected: user={user}") == 3
    assert f"published: user={user} seq=1" in output
    assert f"published: user={user} seq=2 type=sms_received" in output
    assert "/ws/notifications" in output  # uvicorn's handshake line is kept, only the token is cut


def test_redaction_covers_percent_encoded_dots_and_any_parameter_name() -> None:
    """uvicorn logs a query string as it was sent: a token under another name, its dots sent as ``%2E``,
    must be redacted as well as the plain forms."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXBhcnQtb2YtdGhlLXRva2Vu"
    lines = [
        f'"GET /ws/notifications?jwt={token.replace(".", "%2E")} HTTP/1.1" 403',
        f'"GET /api/notifications?x={token.replace(".", "%2e")}&limit=5 HTTP/1.1" 401',
        f'"GET /ws/notifications?token={token} HTTP/1.1" 101',
        f"Authorization: Bearer {token}",
    ]
    for line in lines:
        redacted = redact(line)
        assert "c2lnbmF0dXJl" not in redacted and "eyJzdWIi" not in redacted, redacted
