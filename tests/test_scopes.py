"""Least privilege: every route of the API against every kind of token (no scope, ``notify:publish``,
``notify:webhook``, ``notify:admin``, ``role: "admin"``), on the lean publish path and the framework's route
alike; signed webhooks (valid, tampered, wrong secret, stale, malformed, chunked); the audience rule.

Each route's needed scope is stated in :data:`NEEDS`; the route list is read from the live server's
``/openapi.json``, so a new route that nobody classified fails here. Real server, real HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from namaskah_notify.client import NotifyClient, WebhookSigner, sign

from .conftest import ROOT, ServerProcess, free_port, new_user, recv_json
from .test_auth import _rsa_pair

SECRET = "whsec_" + "k" * 40
PUBLISH, WEBHOOK, ADMIN = "notify:publish", "notify:webhook", "notify:admin"
# What each route needs: "public" (nothing), "user" (any valid token, acting for its sub) or a scope.
NEEDS = {
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/ws/stats"): ADMIN,  # with NOTIFY_STATS_PUBLIC=false, as the matrix server runs
    ("GET", "/metrics"): ADMIN,  # with NOTIFY_METRICS_REQUIRE_ADMIN=true
    ("GET", "/api/notifications"): "user",
    ("DELETE", "/api/notifications"): "user",
    ("GET", "/api/notifications/unread-count"): "user",
    ("POST", "/api/notifications/read"): "user",
    ("POST", "/api/notifications/read-all"): "user",
    ("POST", "/api/notifications/{notification_id}/read"): "user",
    ("POST", "/api/notifications/{notification_id}/unread"): "user",
    ("DELETE", "/api/notifications/{notification_id}"): "user",
    ("GET", "/api/verifications/{verification_id}"): "user",
    ("POST", "/api/verifications/{verification_id}/cancel"): "user",
    ("POST", "/api/notifications"): PUBLISH,
    ("POST", "/api/sms/inbound"): WEBHOOK,
    ("POST", "/api/admin/users/{user_id}/disconnect"): ADMIN,
    ("DELETE", "/api/admin/users/{user_id}"): ADMIN,
    ("POST", "/api/verifications"): ADMIN,
    ("POST", "/api/fake-provider/messages"): ADMIN,
    # Routes the contract adds (preferences, presence, Web Push): classified before they are served.
    ("GET", "/api/preferences"): "user",
    ("PUT", "/api/preferences"): "user",
    ("GET", "/api/presence"): "user",  # an admin for anyone, a user for itself
    ("GET", "/api/push/vapid-public-key"): "public",
    ("POST", "/api/push/subscriptions"): "user",
    ("DELETE", "/api/push/subscriptions"): "user",
}
UPCOMING = {("GET", "/api/preferences"), ("PUT", "/api/preferences"), ("GET", "/api/presence")}
# The kinds of token, and the scopes each may use.
TOKENS: dict[str, tuple[dict[str, Any], set[str]]] = {
    "no scope": ({}, set()),
    "publish": ({"scope": PUBLISH}, {PUBLISH}),
    "webhook": ({"scope": WEBHOOK}, {WEBHOOK}),
    "publish+webhook": ({"scope": f"{PUBLISH} {WEBHOOK}"}, {PUBLISH, WEBHOOK}),
    "admin scope": ({"scope": ADMIN}, {PUBLISH, WEBHOOK, ADMIN}),
    "role admin": ({"role": "admin"}, {PUBLISH, WEBHOOK, ADMIN}),
    "unknown scope": ({"scope": "notify:everything read:all"}, set()),
}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with stats and metrics behind notify:admin, the fake provider on and a webhook secret."""
    process = ServerProcess(tmp_path_factory.mktemp("scopes") / "data", {
        "NOTIFY_STATS_PUBLIC": "false", "NOTIFY_METRICS_REQUIRE_ADMIN": "true", "NOTIFY_SMS_FAKE_PROVIDER": "true",
        "NOTIFY_WEBHOOK_SECRET": SECRET}).start()
    yield process
    process.stop()


def _sms_body(user: str) -> dict[str, Any]:
    return {"user_id": user, "verification_id": f"ver_{uuid.uuid4().hex[:8]}", "service": "Google",
            "code": "123456", "message_id": f"m_{uuid.uuid4().hex}"}


def _request(server: ServerProcess, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    """One call of the route with a plausible body, so that an allowed caller gets past validation."""
    user = new_user("matrix")
    concrete = (path.replace("{user_id}", new_user("victim")).replace("{notification_id}", "notif_nope")
                .replace("{verification_id}", "ver_nope"))
    body: Any = None
    if path == "/api/notifications" and method == "POST":
        body = {"user_id": user, "title": "matrix"}
    elif path == "/api/sms/inbound":
        body = _sms_body(user)
    elif path == "/api/verifications":
        body = {"user_id": user, "service": "Google", "provider": "fake"}
    elif path == "/api/fake-provider/messages":
        body = {"verification_id": "ver_nope", "text": "code 123456"}
    elif path == "/api/notifications/read":
        body = {"ids": ["notif_nope"]}
    return httpx.request(method, f"{server.url}{concrete}", json=body, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def served(strict: ServerProcess) -> dict[tuple[str, str], str]:
    """The operations the server describes, each with its stated need ("unclassified" when there is none)."""
    paths = httpx.get(f"{strict.url}/openapi.json").json()["paths"]
    return {(method.upper(), path): NEEDS.get((method.upper(), path), "unclassified")
            for path, item in paths.items() for method in item}


def _refusal(scope: str) -> dict[str, str]:
    extra = " (or role admin)" if scope == ADMIN else ""
    return {"detail": f"this endpoint needs a token with the {scope} scope{extra}", "code": "insufficient_scope"}


def test_every_route_is_classified(served: dict[tuple[str, str], str]) -> None:
    """Every operation the server describes has a stated need in NEEDS, and every stated one but the
    contract's upcoming routes is served."""
    unclassified = {route for route, need in served.items() if need == "unclassified"}
    assert (unclassified, set(NEEDS) - UPCOMING - set(served)) == (set(), set())


@pytest.mark.parametrize("kind", list(TOKENS))
def test_scope_matrix(strict: ServerProcess, served: dict[tuple[str, str], str], kind: str) -> None:
    """Each kind of token on every route: allowed where its scopes (or any token, for the user's own routes)
    reach, else 403 insufficient_scope naming the scope the route needs; never a 5xx."""
    claims, scopes = TOKENS[kind]
    token = strict.token(new_user("caller"), **claims)
    outcomes = {}
    for (method, path), need in served.items():
        response = _request(strict, method, path, {"Authorization": f"Bearer {token}"})
        assert response.status_code < 500, (method, path, response.text)
        if need in ("public", "user") or need in scopes:
            outcomes[method, path] = response.status_code not in (401, 403) or response.text
        else:
            outcomes[method, path] = (response.status_code, response.json()) == (403, _refusal(need)) or response.text
    assert {route: outcome for route, outcome in outcomes.items() if outcome is not True} == {}


def test_no_token_is_401_on_every_route_but_the_public_ones(strict: ServerProcess,
                                                          served: dict[tuple[str, str], str]) -> None:
    """Without a token every route but the public ones (/healthz, /readyz) is 401 (the signed webhook's 401
    is bad_signature)."""
    for (method, path), need in served.items():
        response = _request(strict, method, path, {})
        if need == "public":
            assert response.status_code not in (401, 403), (path, response.text)
        else:
            expected = "bad_signature" if path == "/api/sms/inbound" else "unauthorized"
            assert (response.status_code, response.json()["code"]) == (401, expected), (method, path, response.text)


@pytest.mark.parametrize("kind", list(TOKENS))
def test_lean_path_and_framework_answer_alike(strict: ServerProcess, kind: str) -> None:
    """On both publishing routes each kind of token gets the same status (and the same error body) from the
    lean way in (a backend's call) as from the framework's route (a call with an Origin)."""
    claims, _ = TOKENS[kind]
    token = strict.token(new_user("caller"), **claims)
    for path in ("/api/notifications", "/api/sms/inbound"):
        answers = []
        for browser in (False, True):
            headers = {"Authorization": f"Bearer {token}"}
            if browser:
                headers["Origin"] = "http://elsewhere.example"
            response = _request(strict, "POST", path, headers)
            answers.append((response.status_code, response.json() if response.status_code >= 400 else None))
        assert answers[0] == answers[1], (path, answers)


def test_webhook_scope_cannot_publish_and_publish_scope_cannot_administer(strict: ServerProcess) -> None:
    """notify:webhook posts SMS webhooks only; notify:publish publishes and broadcasts but cannot disconnect,
    erase, start verifications or read stats."""
    user = new_user()
    webhook = {"Authorization": f"Bearer {strict.token('provider', scope=WEBHOOK)}"}
    publisher = {"Authorization": f"Bearer {strict.token('backend', scope=PUBLISH)}"}
    assert httpx.post(f"{strict.url}/api/sms/inbound", json=_sms_body(user), headers=webhook).status_code == 201
    refused = httpx.post(f"{strict.url}/api/notifications", json={"user_id": user, "title": "x"}, headers=webhook)
    assert (refused.status_code, refused.json()) == (403, _refusal(PUBLISH))
    one = httpx.post(f"{strict.url}/api/notifications", json={"user_id": user, "title": "hi"}, headers=publisher)
    assert one.status_code == 201, one.text
    everyone = httpx.post(f"{strict.url}/api/notifications", json={"broadcast": True, "title": "all"},
                          headers=publisher)
    assert everyone.status_code == 201, everyone.text
    for method, path in (("POST", f"/api/admin/users/{user}/disconnect"), ("DELETE", f"/api/admin/users/{user}"),
                         ("GET", "/ws/stats"), ("GET", "/metrics")):
        response = httpx.request(method, f"{strict.url}{path}", headers=publisher)
        assert (response.status_code, response.json()) == (403, _refusal(ADMIN)), (path, response.text)
    sms = httpx.post(f"{strict.url}/api/sms/inbound", json=_sms_body(user), headers=publisher)
    assert (sms.status_code, sms.json()) == (403, _refusal(WEBHOOK))
    listed = httpx.get(f"{strict.url}/api/notifications", headers=strict.user_headers(user)).json()
    assert sorted(item["title"] for item in listed["items"]) == ["all", "hi", "📱 SMS Code Received"]


async def test_scopes_do_not_widen_a_users_socket(strict: ServerProcess) -> None:
    """A token with every scope still connects as its own user and cannot mark another user's notification."""
    owner, caller = new_user(), new_user()
    stored = strict.publish(owner, "private").json()
    async with strict.ws(strict.token(caller, scope=f"{ADMIN} {PUBLISH}")) as ws:
        hello = await recv_json(ws)
        assert hello["user_id"] == caller and hello["unread_count"] == 0
        await ws.send(json.dumps({"type": "mark_read", "notification_id": stored["id"]}))
        error = await recv_json(ws)
        assert (error["type"], error["code"]) == ("error", "not_found")


def test_malformed_scope_claim_is_401(strict: ServerProcess) -> None:
    """A scope claim that is neither a string nor a list of strings makes the token invalid (401)."""
    for bad in (42, {"notify:admin": True}, ["notify:admin", 7]):
        token = strict.token(new_user(), scope=bad)
        response = httpx.get(f"{strict.url}/api/notifications", headers={"Authorization": f"Bearer {token}"})
        assert (response.status_code, response.json()["detail"]) == (401, "token scope invalid")


def test_token_command_mints_scoped_tokens(strict: ServerProcess) -> None:
    """`notify token NAME --scope notify:webhook` mints a token the webhook accepts and publishing refuses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    result = subprocess.run([sys.executable, "-m", "cli", "token", "provider", "--scope", WEBHOOK, "--data-dir",
                             str(strict.data_dir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    headers = {"Authorization": f"Bearer {result.stdout.strip()}"}
    user = new_user()
    assert httpx.post(f"{strict.url}/api/sms/inbound", json=_sms_body(user), headers=headers).status_code == 201
    assert httpx.post(f"{strict.url}/api/notifications", json={"user_id": user, "title": "x"},
                      headers=headers).status_code == 403
    wrong = subprocess.run([sys.executable, "-m", "cli", "token", "x", "--scope", "notify:root", "--data-dir",
                            str(strict.data_dir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 1 and "unknown scope 'notify:root'" in wrong.stderr


# ---- signed webhooks ------------------------------------------------------------------------------------


def _signed_post(server: ServerProcess, raw: bytes, signature: str | None, *, browser: bool = False,
                 chunked: bool = False) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Notify-Signature"] = signature
    if browser:
        headers["Origin"] = "http://elsewhere.example"
    content: Any = iter([raw[:10], raw[10:]]) if chunked else raw
    return httpx.post(f"{server.url}/api/sms/inbound", content=content, headers=headers, timeout=10)


@pytest.mark.parametrize("way", ["lean", "framework", "chunked"])
def test_a_valid_signature_is_accepted_without_a_token(strict: ServerProcess, way: str) -> None:
    """A body signed with the webhook secret is stored (201) with no token, on the lean path, the framework's
    route and a chunked body alike; the same message_id again answers 200 with the first notification."""
    raw = json.dumps(_sms_body(new_user())).encode()
    first = _signed_post(strict, raw, sign(SECRET, raw), browser=way == "framework", chunked=way == "chunked")
    assert first.status_code == 201, first.text
    again = _signed_post(strict, raw, sign(SECRET, raw), browser=way != "framework")
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])


def _refusals(server: ServerProcess) -> dict[str, httpx.Response]:
    raw = json.dumps(_sms_body(new_user())).encode()
    now = int(time.time())
    good = sign(SECRET, raw)
    digest = good.split("v1=")[1]
    cases = {
        "tampered body": (raw.replace(b"123456", b"654321"), good),
        "wrong secret": (raw, sign("whsec_" + "x" * 40, raw)),
        "301 s old": (raw, lambda: sign(SECRET, raw, int(time.time()) - 301)),  # signed as it is sent
        "301 s ahead": (raw, lambda: sign(SECRET, raw, int(time.time()) + 301)),
        "no header": (raw, None),
        "empty header": (raw, ""),
        "no t": (raw, f"v1={digest}"),
        "no v1": (raw, f"t={now}"),
        "t not a number": (raw, f"t=now,v1={digest}"),
        "short v1": (raw, f"t={now},v1={digest[:32]}"),
        "v1 not hex": (raw, f"t={now},v1={'z' * 64}"),
        "two t": (raw, f"t={now},t={now},v1={digest}"),
        "garbage": (raw, "sha256=" + digest),
    }
    return {name: _signed_post(server, body, header() if callable(header) else header, browser=browser)
            for name, (body, header) in cases.items() for browser in (False, True)}


def test_bad_signatures_are_401_bad_signature(strict: ServerProcess) -> None:
    """A tampered body, a wrong secret, a timestamp 301 s off either way, a missing or malformed header are
    each 401 bad_signature on both ways in, and store nothing."""
    answers = {name: (r.status_code, r.json().get("code")) for name, r in _refusals(strict).items()}
    assert {name: answer for name, answer in answers.items() if answer != (401, "bad_signature")} == {}


def test_a_signature_inside_the_window_is_accepted(strict: ServerProcess) -> None:
    """299 s of skew either way is inside the 300 s window; an upper-case hex digest is the same digest."""
    for skew in (-299, 299):
        raw = json.dumps(_sms_body(new_user())).encode()
        header = sign(SECRET, raw, int(time.time()) + skew)
        assert _signed_post(strict, raw, header).status_code == 201
    raw = json.dumps(_sms_body(new_user())).encode()
    t, v1 = sign(SECRET, raw).split(",")
    assert _signed_post(strict, raw, f"{t},v1={v1[3:].upper()},v0=ignored").status_code == 201


def test_a_signature_never_publishes(strict: ServerProcess) -> None:
    """A signed request to POST /api/notifications is still 401: signatures open the webhook only."""
    raw = json.dumps({"user_id": new_user(), "title": "forged"}).encode()
    response = httpx.post(f"{strict.url}/api/notifications", content=raw, timeout=10,
                          headers={"Content-Type": "application/json", "X-Notify-Signature": sign(SECRET, raw)})
    assert (response.status_code, response.json()["code"]) == (401, "unauthorized")


def test_a_token_still_works_beside_the_secret_and_a_bad_signature_beats_it(strict: ServerProcess) -> None:
    """With a webhook secret, a notify:webhook token without a signature is accepted; a request that carries
    a signature is judged by the signature alone."""
    headers = {"Authorization": f"Bearer {strict.token('provider', scope=WEBHOOK)}"}
    assert httpx.post(f"{strict.url}/api/sms/inbound", json=_sms_body(new_user()), headers=headers).status_code == 201
    raw = json.dumps(_sms_body(new_user())).encode()
    response = httpx.post(f"{strict.url}/api/sms/inbound", content=raw, headers={
        **headers, "Content-Type": "application/json", "X-Notify-Signature": sign("whsec_" + "y" * 40, raw)})
    assert (response.status_code, response.json()["code"]) == (401, "bad_signature")


def test_without_a_secret_signatures_are_not_accepted(server: ServerProcess) -> None:
    """A server with no NOTIFY_WEBHOOK_SECRET ignores X-Notify-Signature and asks for a token."""
    raw = json.dumps(_sms_body(new_user())).encode()
    response = _signed_post(server, raw, sign(SECRET, raw))
    assert (response.status_code, response.json()["code"]) == (401, "unauthorized")


def test_the_python_client_signs_with_webhook_signer(strict: ServerProcess) -> None:
    """NotifyClient(auth=WebhookSigner(secret)).sms_inbound needs no token."""
    user = new_user()
    with NotifyClient(strict.url, auth=WebhookSigner(SECRET)) as client:
        stored = client.sms_inbound(**_sms_body(user))
    assert stored["user_id"] == user and stored["type"] == "sms_received"


def test_send_test_sign(strict: ServerProcess) -> None:
    """`notify send-test USER --sign` signs with NOTIFY_WEBHOOK_SECRET and mints no token; a wrong secret
    is one red line that says what to do."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    user = new_user()
    command = [sys.executable, "-m", "cli", "send-test", user, "--sign", "--url", strict.url,
               "--data-dir", str(strict.data_dir.parent / "nowhere")]
    ok = subprocess.run(command, cwd=ROOT, env={**env, "NOTIFY_WEBHOOK_SECRET": SECRET}, capture_output=True,
                        text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    listed = httpx.get(f"{strict.url}/api/notifications", headers=strict.user_headers(user)).json()
    assert [item["type"] for item in listed["items"]] == ["sms_received"]
    bad = subprocess.run(command, cwd=ROOT, env={**env, "NOTIFY_WEBHOOK_SECRET": "w" * 40}, capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 1 and "bad signature" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "NOTIFY_WEBHOOK_SECRET" in missing.stderr


# ---- audience -------------------------------------------------------------------------------------------


def test_audience_refuses_tokens_without_it(make_server) -> None:  # type: ignore[no-untyped-def]
    """With NOTIFY_JWT_AUDIENCE set, a token without aud, or for another audience, is 401; with it, 200."""
    dedicated = make_server(NOTIFY_JWT_AUDIENCE="notify")
    secret = (dedicated.data_dir / "jwt_secret").read_text().strip()
    now = int(time.time())
    url = f"{dedicated.url}/api/notifications/unread-count"
    cases = (({}, 401), ({"aud": "other"}, 401), ({"aud": "notify"}, 200), ({"aud": ["x", "notify"]}, 200))
    for claims, status in cases:
        token = jwt.encode({"sub": "u", "iat": now, "exp": now + 600, **claims}, secret, algorithm="HS256")
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == status, claims


def test_public_key_algorithms_without_an_audience_refuse_to_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`notify serve` with RS256 and a public key but no NOTIFY_JWT_AUDIENCE exits 1 with one line that
    names the variable, and never listens."""
    _, public = _rsa_pair()
    pem = tmp_path / "public.pem"
    pem.write_text(public)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    env.update(NOTIFY_JWT_ALGORITHMS="RS256", NOTIFY_JWT_PUBLIC_KEY=str(pem))
    result = subprocess.run([sys.executable, "-m", "cli", "serve", "--port", str(port), "--data-dir",
                             str(tmp_path / "data")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "NOTIFY_JWT_AUDIENCE is required" in output and "Traceback" not in output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
