"""The HTTP API description holds: an outside fuzzer (schemathesis, every check) finds nothing against a live
server, and the parts it cannot reach on the test server's settings say what those settings would do."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from namaskah_notify.app import create_app
from namaskah_notify.config import Settings

from .conftest import ServerProcess, new_user

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# The stateful phase follows the links the description declares. The links schemathesis would infer pair an
# admin's publish with the same admin marking the notification read, a 404 by design (a notification is its
# recipient's alone) that its "created resource not found" check would report.
CONFIG = "[phases.stateful.inference]\nalgorithms = []\n"
# A push subscription's p256dh must be a point on the P-256 curve, which no JSON Schema can say: a generated key
# of the right form is almost never one, and is refused 422 (a request the description calls valid).
CONFIG += ('[[operations]]\ninclude-operation-id = "subscribe_push"\n'
           '[operations.checks.positive_data_acceptance]\nexpected-statuses = ["2xx", "401", "409", "422", "429"]\n')
# The one operation that can lock the fuzzer out (it revokes the token it is called with) runs on its own,
# after the rest.
REVOKER = "disconnect_user"


def fuzz(server: ServerProcess, tmp_path: Path, *selection: str) -> None:
    """Run schemathesis with every check, a fixed seed and a bounded number of cases; fail with its report."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(SCHEMATHESIS), "--config-file", str(config), "run", f"{server.url}/openapi.json", "--checks", "all",
        "--header", f"Authorization: Bearer {server.token('ops', admin=True)}",
        "--seed", "20250101", "--max-examples", "40", "--workers", "1",
        "--generation-database", "none", "--no-color", "--report", "junit", "--report-dir", str(tmp_path),
        *selection,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    summary = re.search(r"(\d+) generated, (\d+) passed", report)
    assert summary and summary.group(1) == summary.group(2) and int(summary.group(1)) > 0, report


def test_schemathesis_finds_no_failure(make_server, tmp_path: Path) -> None:
    """Every generated request, valid or not, gets an answer the description documents: status, content
    type, headers and body schema; valid ones are accepted, invalid ones refused; auth is enforced."""
    # The SMS operations need a provider; NOTIFY_HANDSHAKE_RATE_PER_IP stays off (its default), so no answer is
    # a 429 (documented on every route all the same).
    # An Idempotency-Key reused with another body is refused (422), which no description can say of one
    # request alone: here keys expire at once, so every generated request stands on its own.
    server = make_server(NOTIFY_SMS_FAKE_PROVIDER="true", NOTIFY_IDEMPOTENCY_TTL_S="0.001")
    fuzz(server, tmp_path, "--exclude-operation-id", REVOKER)
    fuzz(server, tmp_path, "--include-operation-id", REVOKER, "--phases", "examples,coverage,fuzzing")


def _description(**settings: object) -> dict:
    return create_app(Settings(data_dir=Path(tempfile.mkdtemp()), **settings)).openapi()


def _validator(spec: dict, name: str) -> jsonschema.Draft202012Validator:
    registry = Registry().with_resource("urn:api", Resource.from_contents(spec, default_specification=DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": f"urn:api#/components/schemas/{name}"}, registry=registry)


def test_providers_offered_follow_the_settings() -> None:
    """A verification may name only a provider this server enables; one that polls by phone number needs it."""
    body = {"user_id": "alice", "service": "Google"}
    none = _validator(_description(), "StartVerificationBody")
    assert none.is_valid(body) and not none.is_valid({**body, "provider": "fake"})
    fake = _validator(_description(sms_fake_provider=True), "StartVerificationBody")
    assert fake.is_valid({**body, "provider": "fake"}) and not fake.is_valid({**body, "provider": "http"})
    http = _validator(_description(sms_http_base_url="http://127.0.0.1:9/", sms_http_path="/m/{phone_number}"),
                      "StartVerificationBody")
    assert not http.is_valid(body) and not http.is_valid({**body, "provider": "http"})
    assert http.is_valid({**body, "phone_number": "+1 555 0100"})


@pytest.mark.parametrize(("body", "valid"), [
    ({"user_id": "alice", "title": "t"}, True),
    ({"user_ids": ["a", "b"], "title": "t"}, True),
    ({"broadcast": True, "title": "t"}, True),
    ({"user_id": "alice", "user_ids": None, "broadcast": False, "title": "t"}, True),
    ({"title": "t"}, False),
    ({"broadcast": False, "title": "t"}, False),
    ({"user_id": "alice", "broadcast": True, "title": "t"}, False),
    ({"user_id": "alice", "user_ids": ["b"], "title": "t"}, False),
    ({"user_id": " \u3000", "title": "t"}, False),
    ({"user_id": "alice", "title": " \t\n"}, False),
    ({"user_id": " alice ", "title": " " + "x" * 200 + " "}, True),
    ({"user_id": "alice", "title": "x" * 201}, False),
    ({"user_id": "alice", "title": "t", "type": " sms_received\n"}, True),
    ({"user_id": "alice", "title": "t", "type": "sms received"}, False),
    ({"user_id": "alice", "title": "t", "link": "//evil.example"}, False),
    ({"user_id": "alice", "title": "t", "link": " /verify?id=1 "}, True),
])
def test_publish_body_schema_agrees_with_the_server(server: ServerProcess, body: dict, valid: bool) -> None:
    """The one-of audience and the stripped-text rules: the description accepts exactly what the server does."""
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    assert _validator(spec, "PublishBody").is_valid(body) is valid
    user = new_user()  # the same shapes, with ids of this test's own
    body = {**body, **{k: body[k].replace("alice", user) for k in ("user_id",) if isinstance(body.get(k), str)}}
    if body.get("user_ids"):
        body["user_ids"] = [f"{user}_{i}" for i in body["user_ids"]]
    answer = httpx.post(f"{server.url}/api/notifications", json=body, headers=server.admin_headers(), timeout=10)
    assert (answer.status_code == 201) is valid, answer.text
