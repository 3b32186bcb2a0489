"""docs/asyncapi.yaml describes the WebSocket as it is: the frames of live sessions, both ways, validate against
its message payloads, a frame of a kind it does not describe fails, every server frame it describes is seen,
and every close code met is one it lists."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .conftest import ServerProcess, new_user

DOC = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"
TIMEOUT = 5
FORMATS = jsonschema.FormatChecker()
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})")


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_RFC3339.fullmatch(value) and datetime.fromisoformat(value))


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


class Description:
    """The document's messages by direction, each with a validator for its payload."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        channel_messages = spec["channels"]["notifications"]["messages"]
        self.server: set[str] = set()
        self.client: set[str] = set()
        for operation in spec["operations"].values():
            names = {_name(m["$ref"]) for m in operation["messages"]}
            (self.server if operation["action"] == "send" else self.client).update(names)
            self.server.update(_name(m["$ref"]) for m in operation.get("reply", {}).get("messages", []))
        registry = Registry().with_resource("urn:asyncapi", Resource.from_contents(spec, default_specification=DRAFT7))
        self.validators: dict[str, jsonschema.Draft7Validator] = {}
        self.by_key: dict[Any, str] = {}  # ("json", type) or ("text", literal) -> message name
        for name, ref in channel_messages.items():
            message = spec["components"]["messages"][_name(ref["$ref"])]
            payload = message["payload"]
            jsonschema.Draft7Validator.check_schema(payload)
            self.validators[name] = jsonschema.Draft7Validator(
                {"$ref": f"urn:asyncapi#/components/messages/{_name(ref['$ref'])}/payload"},
                registry=registry, format_checker=FORMATS)
            if message.get("contentType") == "text/plain":
                self.by_key[("text", payload["const"])] = name
            else:
                self.by_key[("json", payload["properties"]["type"]["const"])] = name
        self.close_codes = {entry["code"] for entry in spec["channels"]["notifications"]["x-close-codes"]}

    def check(self, raw: str | bytes, direction: set[str]) -> str:
        """The name of the message ``raw`` is, after validating it; fails on a frame the document lacks."""
        assert isinstance(raw, str), f"binary frame {raw!r}: the document describes text frames only"
        try:
            body = json.loads(raw)
        except ValueError:
            key: tuple[str, Any] = ("text", raw)
            body = raw
        else:
            key = ("json", body.get("type") if isinstance(body, dict) else None)
        name = self.by_key.get(key)
        assert name is not None and name in direction, f"a frame the document does not describe: {raw[:200]}"
        errors = [e.message for e in self.validators[name].iter_errors(body)]
        assert not errors, f"{name} frame {raw[:200]} does not match its payload schema: {errors}"
        return name


@pytest.fixture(scope="module")
def description() -> Description:
    return Description(yaml.safe_load(DOC.read_text()))


@dataclass
class Recorder:
    """Every frame of the test's sessions, received and sent, for checking against the document."""

    received: list[str | bytes] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)

    async def send(self, ws: ClientConnection, frame: str | dict[str, Any], *, valid: bool = True) -> None:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        if valid:
            self.sent.append(text)
        await ws.send(text)

    async def next(self, ws: ClientConnection) -> str | bytes:
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        self.received.append(raw)
        return raw

    async def until(self, ws: ClientConnection, kind: str) -> Any:
        """Frames until one of ``kind`` (a JSON ``type``, or the text ``pong``); returns it parsed."""
        while True:
            raw = await self.next(ws)
            if raw == kind:
                return raw
            if isinstance(raw, str) and raw.startswith("{"):
                body = json.loads(raw)
                if body.get("type") == kind:
                    return body

    async def closed(self, ws: ClientConnection) -> int:
        """Frames until the server closes; returns its close code."""
        try:
            while True:
                await self.next(ws)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            self.close_codes.append(code)
            return code


async def test_live_frames_match_the_description(make_server, description: Description) -> None:
    """Query, header and first-frame auth; replay, resume and resync; live push, read, unread and deleted,
    ping both ways, ack, token refresh and expiry warning; every error frame a client can cause; refusals
    with close codes."""
    server: ServerProcess = make_server(NOTIFY_REPLAY_LIMIT="3", NOTIFY_TOKEN_EXPIRY_WARNING_S="3600")
    user = new_user("asyncapi")
    token = server.token(user, ttl=7200)
    record = Recorder()
    for title in ("one", "two"):
        assert server.publish(user, title).status_code == 201

    # ?token=, resuming from 0: connected, the two stored, resumed; then live frames and every answer.
    async with server.ws(token, query="since_seq=0") as ws:
        connected = await record.until(ws, "connected")
        assert connected["last_seq"] == 2
        await record.until(ws, "resumed")
        await record.send(ws, "ping")
        await record.until(ws, "pong")
        await record.send(ws, {"type": "ping"})
        await record.until(ws, "pong")
        live = server.publish(user, "three").json()
        assert (await record.until(ws, "notification"))["data"]["seq"] == live["seq"] == 3
        await record.send(ws, {"type": "ack", "seq": 3})
        await record.send(ws, {"type": "mark_read", "notification_id": live["id"]})
        assert (await record.until(ws, "read"))["notification_ids"] == [live["id"]]
        await record.send(ws, {"type": "mark_all_read"})
        assert (await record.until(ws, "read"))["all"] is True
        headers = server.user_headers(user)
        assert httpx.post(f"{server.url}/api/notifications/{live['id']}/unread", headers=headers).status_code == 200
        assert (await record.until(ws, "unread"))["notification_ids"] == [live["id"]]
        assert httpx.delete(f"{server.url}/api/notifications/{live['id']}", headers=headers).status_code == 204
        assert (await record.until(ws, "deleted"))["notification_ids"] == [live["id"]]
        await record.send(ws, {"type": "refresh_token", "token": server.token(user, ttl=7200)})
        await record.until(ws, "token_refreshed")
        for bad in ("not json", json.dumps({"type": "subscribe"}), json.dumps({"type": "mark_read"}),
                    json.dumps({"type": "mark_read", "notification_id": "notif_not_there"}),
                    json.dumps({"type": "refresh_token", "token": "junk"}),
                    json.dumps({"type": "refresh_token", "token": server.token(new_user(), ttl=7200)}),
                    json.dumps({"type": "auth", "token": token})):
            await record.send(ws, bad, valid=False)
            await record.until(ws, "error")
        await ws.send(b"\x00binary")
        assert (await record.until(ws, "error"))["code"] == "unsupported_data"

    # Authorization header, resuming from too far back: resync_required.
    for title in ("four", "five"):
        assert server.publish(user, title).status_code == 201
    async with server.ws(query="since_seq=0", additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await record.until(ws, "connected")
        assert (await record.until(ws, "resync_required"))["last_seq"] == 5

    # The auth frame, with a token close to expiry: connected, then token_expiring at once.
    async with server.ws() as ws:
        await record.send(ws, {"type": "auth", "token": server.token(user, ttl=600)})
        await record.until(ws, "connected")
        await record.until(ws, "token_expiring")

    # Client frames over the rate limit: some are answered rate_limited.
    async with server.ws(token) as ws:
        await record.until(ws, "connected")
        for _ in range(45):
            await record.send(ws, {"type": "ping"})
        assert (await record.until(ws, "error"))["code"] == "rate_limited"

    # Refusals: a bad token, a bad since_seq, no auth frame but another frame.
    for url_token, query, first in (("junk", "", None), (token, "since_seq=abc", None), (None, "", "ping")):
        async with server.ws(url_token, query=query) as ws:
            if first:
                await record.send(ws, first, valid=False)
            await record.closed(ws)

    seen_server = {description.check(raw, description.server) for raw in record.received}
    seen_client = {description.check(raw, description.client) for raw in record.sent}
    assert seen_server == description.server, f"described but never seen: {description.server - seen_server}"
    assert seen_client == description.client, f"described but never sent: {description.client - seen_client}"
    assert record.close_codes == [4401, 1008, 4401]
    assert set(record.close_codes) <= description.close_codes



def test_document_examples_match_their_payloads(description: Description) -> None:
    """An AsyncAPI 3.0 document whose every message example validates against the message's own payload."""
    assert description.spec["asyncapi"].startswith("3.0.")
    examples = 0
    for name, ref in description.spec["channels"]["notifications"]["messages"].items():
        for example in description.spec["components"]["messages"][_name(ref["$ref"])].get("examples", []):
            assert not list(description.validators[name].iter_errors(example["payload"])), (name, example)
            examples += 1
    assert examples >= len(description.server) - 1  # every JSON server frame shows one
