"""Contract section 1 (identity): token verification without sockets, then every way a WebSocket or an
HTTP request is let in or refused by the real server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.exceptions import ConnectionClosed, InvalidStatus

from namaskah_notify.auth import (
    SECRET_FILE,
    TokenVerifier,
    load_or_create_secret,
    mint_token,
    signing_secret,
)
from namaskah_notify.config import Settings
from namaskah_notify.errors import AuthError

from .conftest import ROOT, ServerProcess, free_port, new_user, recv_json

SECRET = "s" * 64


def _settings(tmp_path: Path, **values) -> Settings:
    values.setdefault("jwt_secret", SECRET)
    return Settings(data_dir=tmp_path / "data", **values)


def _claims(user: str = "user_1", **extra) -> dict:
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + 600, **extra}


def _reason(verifier: TokenVerifier, token: str | None) -> str:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    assert info.value.close_code == 4401 and info.value.status == 401
    return info.value.message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict, alg: str = "none") -> str:
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}."


def _hs256_with_key(claims: dict, key: bytes) -> str:
    """HS256 signed with arbitrary bytes (PyJWT refuses PEM keys as HMAC secrets, an attacker does not)."""
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _rsa_pair() -> tuple[rsa.RSAPrivateKey, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


def _ec_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


# ---- the secret ---------------------------------------------------------------------------------


def test_secret_file_is_created_with_mode_0600(tmp_path):
    """With no secret configured, one is generated in the data folder, readable by the owner only."""
    secret = load_or_create_secret(tmp_path / "data")
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret.encode()) >= 32
    assert path.read_text().strip() == secret


def test_secret_file_is_reused(tmp_path):
    """A second start on the same data folder reuses the stored secret."""
    first = load_or_create_secret(tmp_path / "data")
    assert load_or_create_secret(tmp_path / "data") == first
    assert signing_secret(Settings(data_dir=tmp_path / "data")) == first


def test_secrets_differ_between_data_folders(tmp_path):
    """Each data folder gets its own random secret; nothing is hard-coded."""
    assert load_or_create_secret(tmp_path / "a") != load_or_create_secret(tmp_path / "b")


def test_configured_secret_wins_over_the_file(tmp_path):
    """NOTIFY_JWT_SECRET is used as is and no file is written."""
    settings = _settings(tmp_path)
    assert signing_secret(settings) == SECRET
    TokenVerifier(settings)
    assert not (tmp_path / "data" / SECRET_FILE).exists()


def test_short_secret_is_refused(tmp_path):
    """A configured HMAC secret shorter than 32 bytes refuses to build a verifier."""
    with pytest.raises(ValueError, match="32"):
        TokenVerifier(_settings(tmp_path, jwt_secret="x" * 31))


def test_mixing_hmac_and_public_key_algorithms_is_refused(tmp_path):
    """HS and RS algorithms together (the algorithm-confusion hole) refuse to build a verifier."""
    _, public = _rsa_pair()
    with pytest.raises(ValueError, match="mix"):
        TokenVerifier(_settings(tmp_path, jwt_algorithms=["HS256", "RS256"], jwt_public_key=public))


@pytest.mark.parametrize("algorithms", [["none"], [], ["HS1"]])
def test_unknown_or_empty_algorithms_are_refused(tmp_path, algorithms):
    """``none``, an empty list or an unknown name refuse to build a verifier."""
    with pytest.raises(ValueError):
        TokenVerifier(_settings(tmp_path, jwt_algorithms=algorithms))


def test_public_key_algorithm_without_key_is_refused(tmp_path):
    """RS256 without NOTIFY_JWT_PUBLIC_KEY refuses to build a verifier."""
    with pytest.raises(ValueError, match="PUBLIC_KEY"):
        TokenVerifier(_settings(tmp_path, jwt_algorithms=["RS256"]))


def test_unusable_public_key_is_refused(tmp_path):
    """A garbage PEM, a key of the wrong family or an unreadable path refuses to build a verifier."""
    _, ec_public = _ec_pair()
    garbage = "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"
    for algorithm, key in (("RS256", garbage), ("RS256", ec_public), ("ES256", str(tmp_path / "missing.pem"))):
        with pytest.raises(ValueError, match="PUBLIC_KEY"):
            TokenVerifier(_settings(tmp_path, jwt_algorithms=[algorithm], jwt_public_key=key))


def test_algorithms_from_environment_comma_list(monkeypatch, tmp_path):
    """NOTIFY_JWT_ALGORITHMS is read as a comma list."""
    monkeypatch.setenv("NOTIFY_JWT_ALGORITHMS", "HS256, HS384")
    assert Settings(data_dir=tmp_path).jwt_algorithms == ["HS256", "HS384"]


# ---- verification without sockets ---------------------------------------------------------------


def test_minted_token_verifies(tmp_path):
    """A token minted by the service verifies to its user, not admin, with its exp."""
    settings = _settings(tmp_path)
    token = mint_token(settings, "user_9", ttl_s=120)
    identity = TokenVerifier(settings).verify(token)
    assert identity.user_id == "user_9" and not identity.is_admin
    assert abs(identity.expires_at - (time.time() + 120)) < 5


def test_admin_role(tmp_path):
    """``role: admin`` makes an admin identity; any other role does not."""
    settings = _settings(tmp_path)
    verifier = TokenVerifier(settings)
    assert verifier.verify(mint_token(settings, "ops", admin=True)).is_admin
    assert not verifier.verify(jwt.encode(_claims(role="Admin"), SECRET, algorithm="HS256")).is_admin
    assert not verifier.verify(jwt.encode(_claims(role=["admin"]), SECRET, algorithm="HS256")).is_admin


def test_minting_refuses_public_key_algorithms(tmp_path):
    """The service only verifies public-key tokens; minting them is refused."""
    _, public = _rsa_pair()
    with pytest.raises(ValueError):
        mint_token(_settings(tmp_path, jwt_algorithms=["RS256"], jwt_public_key=public), "u")


def test_legacy_user_id_claim(tmp_path):
    """A token with no ``sub`` but a ``user_id`` claim (the origin document's) is accepted."""
    verifier = TokenVerifier(_settings(tmp_path))
    claims = _claims()
    del claims["sub"]
    legacy = jwt.encode({**claims, "user_id": "legacy_7"}, SECRET, algorithm="HS256")
    assert verifier.verify(legacy).user_id == "legacy_7"
    assert verifier.verify(jwt.encode({**claims, "user_id": 42}, SECRET, algorithm="HS256")).user_id == "42"


def test_sub_wins_over_user_id(tmp_path):
    """When both are present, ``sub`` is the user."""
    verifier = TokenVerifier(_settings(tmp_path))
    token = jwt.encode(_claims("from_sub", user_id="from_legacy"), SECRET, algorithm="HS256")
    assert verifier.verify(token).user_id == "from_sub"


def test_no_user_at_all_is_refused(tmp_path):
    """A token with neither ``sub`` nor ``user_id`` is refused."""
    verifier = TokenVerifier(_settings(tmp_path))
    claims = _claims()
    del claims["sub"]
    assert "sub" in _reason(verifier, jwt.encode(claims, SECRET, algorithm="HS256"))
    assert "sub" in _reason(verifier, jwt.encode({**claims, "user_id": ""}, SECRET, algorithm="HS256"))
    assert "sub" in _reason(verifier, jwt.encode({**claims, "user_id": True}, SECRET, algorithm="HS256"))


def test_each_failure_has_its_reason(tmp_path):
    """Missing, garbage, bad signature, expired, no exp, alg none, wrong alg and nbf each say why."""
    verifier = TokenVerifier(_settings(tmp_path))
    now = int(time.time())
    no_exp = {"sub": "u", "iat": now}
    assert "missing" in _reason(verifier, None)
    assert "missing" in _reason(verifier, "")
    assert "invalid" in _reason(verifier, "not-a-jwt")
    assert "signature" in _reason(verifier, jwt.encode(_claims(), "t" * 40, algorithm="HS256"))
    assert "expired" in _reason(verifier, jwt.encode(_claims(exp=now - 60), SECRET, algorithm="HS256"))
    assert "exp" in _reason(verifier, jwt.encode(no_exp, SECRET, algorithm="HS256"))
    assert "algorithm" in _reason(verifier, _unsigned(_claims()))
    assert "algorithm" in _reason(verifier, jwt.encode(_claims(), SECRET, algorithm="HS512"))
    assert "not yet valid" in _reason(verifier, jwt.encode(_claims(nbf=now + 300), SECRET, algorithm="HS256"))
    assert "too long" in _reason(verifier, "eyJ" + "a" * 16384)


def test_leeway(tmp_path):
    """A token expired by less than the leeway is accepted; beyond it, refused."""
    verifier = TokenVerifier(_settings(tmp_path, jwt_leeway_s=10))
    now = int(time.time())
    assert verifier.verify(jwt.encode(_claims(exp=now - 3), SECRET, algorithm="HS256")).user_id == "user_1"
    assert "expired" in _reason(verifier, jwt.encode(_claims(exp=now - 30), SECRET, algorithm="HS256"))
    strict = TokenVerifier(_settings(tmp_path, jwt_leeway_s=0))
    assert "expired" in _reason(strict, jwt.encode(_claims(exp=now - 3), SECRET, algorithm="HS256"))


def test_audience_and_issuer_checked_when_configured(tmp_path):
    """With aud/iss configured, tokens must carry them; without, any aud is accepted."""
    settings = _settings(tmp_path, jwt_audience="notify", jwt_issuer="https://app.example")
    verifier = TokenVerifier(settings)
    good = _claims(aud="notify", iss="https://app.example")
    assert verifier.verify(jwt.encode(good, SECRET, algorithm="HS256")).user_id == "user_1"
    assert verifier.verify(mint_token(settings, "m")).user_id == "m"
    assert "audience" in _reason(verifier, jwt.encode({**good, "aud": "other"}, SECRET, algorithm="HS256"))
    assert "issuer" in _reason(verifier, jwt.encode({**good, "iss": "https://evil"}, SECRET, algorithm="HS256"))
    assert "aud" in _reason(verifier, jwt.encode(_claims(iss="https://app.example"), SECRET, algorithm="HS256"))
    assert "iss" in _reason(verifier, jwt.encode(_claims(aud="notify"), SECRET, algorithm="HS256"))
    plain = TokenVerifier(_settings(tmp_path))
    assert plain.verify(jwt.encode(_claims(aud="anything"), SECRET, algorithm="HS256")).user_id == "user_1"


def test_rs256_public_key(tmp_path):
    """With RS256 pinned and a public key, tokens the web app signs verify; other keys do not."""
    private, public = _rsa_pair()
    verifier = TokenVerifier(_settings(tmp_path, jwt_algorithms=["RS256"], jwt_public_key=public))
    token = jwt.encode(_claims("rs_user", role="admin"), private, algorithm="RS256")
    identity = verifier.verify(token)
    assert identity.user_id == "rs_user" and identity.is_admin
    other, _ = _rsa_pair()
    assert "signature" in _reason(verifier, jwt.encode(_claims(), other, algorithm="RS256"))


def test_rs256_public_key_from_a_file(tmp_path):
    """NOTIFY_JWT_PUBLIC_KEY may be a path to a PEM file."""
    private, public = _rsa_pair()
    pem = tmp_path / "public.pem"
    pem.write_text(public)
    verifier = TokenVerifier(_settings(tmp_path, jwt_algorithms=["RS256"], jwt_public_key=str(pem)))
    assert verifier.verify(jwt.encode(_claims("file_user"), private, algorithm="RS256")).user_id == "file_user"


def test_es256_public_key(tmp_path):
    """With ES256 pinned and a public key, ES256 tokens verify; RS256 ones are refused."""
    private, public = _ec_pair()
    verifier = TokenVerifier(_settings(tmp_path, jwt_algorithms=["ES256"], jwt_public_key=public))
    assert verifier.verify(jwt.encode(_claims("es_user"), private, algorithm="ES256")).user_id == "es_user"
    rsa_private, _ = _rsa_pair()
    assert "algorithm" in _reason(verifier, jwt.encode(_claims(), rsa_private, algorithm="RS256"))


def test_algorithm_confusion_is_refused(tmp_path):
    """With RS256 pinned, an HS256 token signed with the public key as HMAC secret is refused."""
    _, public = _rsa_pair()
    verifier = TokenVerifier(_settings(tmp_path, jwt_algorithms=["RS256"], jwt_public_key=public))
    forged = _hs256_with_key(_claims("attacker", role="admin"), public.encode())
    assert "algorithm" in _reason(verifier, forged)
    assert "algorithm" in _reason(verifier, _unsigned(_claims("attacker")))


# ---- the WebSocket against the real server ------------------------------------------------------


def _secret(server: ServerProcess) -> str:
    return signing_secret(server.settings())


def _forge(server: ServerProcess, claims: dict, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, _secret(server), algorithm=algorithm)


async def _refused(server: ServerProcess, token: str | None = None, *, frame: str | None = None, **kwargs) -> str:
    """Connect, optionally send a first frame, and return the reason of the 4401 close."""
    async with server.ws(token, **kwargs) as ws:
        if frame is not None:
            await ws.send(frame)
        with pytest.raises(ConnectionClosed) as info:
            await recv_json(ws, timeout=10)
    assert info.value.rcvd is not None, "the server closed without a close frame"
    assert info.value.rcvd.code == 4401, info.value.rcvd
    assert info.value.rcvd.reason
    return info.value.rcvd.reason


async def _connected(server: ServerProcess, token: str | None = None, *, frame: str | None = None, **kw) -> dict:
    async with server.ws(token, **kw) as ws:
        if frame is not None:
            await ws.send(frame)
        hello = await recv_json(ws)
        assert hello["type"] == "connected", hello
        await ws.send("ping")
        while (reply := await asyncio.wait_for(ws.recv(), 5)) != "pong":
            assert json.loads(reply)["type"] != "error", reply
        return hello


async def test_query_token_connects(server):
    """``?token=JWT`` (the origin document's way) authenticates the socket."""
    user = new_user()
    assert (await _connected(server, server.token(user)))["user_id"] == user


async def test_bearer_header_connects(server):
    """``Authorization: Bearer JWT`` authenticates the socket."""
    user = new_user()
    hello = await _connected(server, additional_headers={"Authorization": f"Bearer {server.token(user)}"})
    assert hello["user_id"] == user


async def test_auth_frame_connects(server):
    """No token in the URL and a first frame ``{"type":"auth","token":...}`` authenticates the socket."""
    user = new_user()
    hello = await _connected(server, frame=json.dumps({"type": "auth", "token": server.token(user)}))
    assert hello["user_id"] == user


async def test_missing_token_with_other_first_frame(server):
    """Without a token, a first frame that is not ``auth`` closes 4401 and serves nothing."""
    reason = await _refused(server, frame="ping")
    assert "auth" in reason.lower()


async def test_auth_frame_with_empty_token(server):
    """An ``auth`` frame with an empty token closes 4401."""
    await _refused(server, frame=json.dumps({"type": "auth", "token": ""}))


async def test_no_token_and_no_frame_times_out(make_server):
    """No token and no auth frame closes 4401 after NOTIFY_AUTH_TIMEOUT_S."""
    dedicated = make_server(NOTIFY_AUTH_TIMEOUT_S=1)
    started = time.monotonic()
    reason = await _refused(dedicated)
    assert "timeout" in reason.lower()
    assert time.monotonic() - started < 8


@pytest.mark.parametrize("how", ["query", "header", "frame"])
async def test_garbage_token_each_way(server, how):
    """A garbage token is refused with 4401 whichever way it is sent."""
    garbage = "this.is.garbage"
    if how == "query":
        reason = await _refused(server, garbage)
    elif how == "header":
        reason = await _refused(server, additional_headers={"Authorization": f"Bearer {garbage}"})
    else:
        reason = await _refused(server, frame=json.dumps({"type": "auth", "token": garbage}))
    assert "invalid" in reason


@pytest.mark.parametrize("how", ["query", "header", "frame"])
async def test_expired_token_each_way(server, how):
    """An expired token is refused with 4401 "token expired" whichever way it is sent."""
    token = server.token(new_user(), ttl=-120)
    if how == "query":
        reason = await _refused(server, token)
    elif how == "header":
        reason = await _refused(server, additional_headers={"Authorization": f"Bearer {token}"})
    else:
        reason = await _refused(server, frame=json.dumps({"type": "auth", "token": token}))
    assert "expired" in reason


async def test_bad_signature(server):
    """A token signed with another secret closes 4401 with a signature reason."""
    token = jwt.encode(_claims(new_user()), "another-secret-that-is-long-enough-to-use", algorithm="HS256")
    assert "signature" in await _refused(server, token)


async def test_expired_within_leeway_is_accepted(server):
    """A token that expired a few seconds ago (within the default 10 s leeway) still connects."""
    user = new_user()
    now = int(time.time())
    token = _forge(server, {"sub": user, "iat": now - 100, "exp": now - 3})
    async with server.ws(token) as ws:
        assert (await recv_json(ws))["user_id"] == user
        assert (await recv_json(ws)) == {"type": "token_expiring", "expires_in": 0}


async def test_missing_exp(server):
    """A token without ``exp`` closes 4401 saying so."""
    token = _forge(server, {"sub": new_user(), "iat": int(time.time())})
    assert "exp" in await _refused(server, token)


async def test_alg_none(server):
    """An unsigned ``alg: none`` token closes 4401."""
    assert "algorithm" in await _refused(server, _unsigned(_claims(new_user(), role="admin")))


async def test_hs512_when_hs256_pinned(server):
    """A token signed with the right secret but HS512, when HS256 is pinned, closes 4401."""
    token = _forge(server, _claims(new_user()), algorithm="HS512")
    assert "algorithm" in await _refused(server, token)


async def test_nbf_in_the_future(server):
    """A token not valid before a future time closes 4401."""
    token = _forge(server, _claims(new_user(), nbf=int(time.time()) + 600))
    assert "not yet valid" in await _refused(server, token)


async def test_16kb_token_in_auth_frame(server):
    """A 16 KB token sent in the auth frame closes 4401 (not 1009, not a crash)."""
    huge = _forge(server, _claims(new_user(), pad="x" * 16384))
    await _refused(server, frame=json.dumps({"type": "auth", "token": huge}))


@pytest.mark.parametrize("how", ["query", "header"])
async def test_16kb_token_in_handshake_is_refused_promptly(server, how):
    """A 16 KB token in the URL or header is refused at once (HTTP 414/431 or 4401), not left hanging."""
    huge = _forge(server, _claims(new_user(), pad="x" * 16384))
    kwargs = {"additional_headers": {"Authorization": f"Bearer {huge}"}} if how == "header" else {}
    started = time.monotonic()
    with pytest.raises((InvalidStatus, ConnectionClosed)) as info:
        async with server.ws(huge if how == "query" else None, open_timeout=5, **kwargs) as ws:
            await recv_json(ws)
    if isinstance(info.value, InvalidStatus):
        assert info.value.response.status_code in (400, 414, 431)
    else:
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401
    assert time.monotonic() - started < 4


async def test_legacy_user_id_token_connects(server):
    """A token with no ``sub`` but a legacy ``user_id`` connects as that user."""
    user = new_user("legacy")
    now = int(time.time())
    token = _forge(server, {"user_id": user, "iat": now, "exp": now + 600})
    hello = await _connected(server, token)
    assert hello["user_id"] == user


async def test_token_for_no_user(server):
    """A valid signature over claims naming no user closes 4401."""
    now = int(time.time())
    assert "sub" in await _refused(server, _forge(server, {"iat": now, "exp": now + 600}))


async def test_query_token_is_preferred_over_frames(server):
    """With a valid ``?token=``, the first frame is served normally, not taken as auth."""
    async with server.ws(server.token(new_user())) as ws:
        assert (await recv_json(ws))["type"] == "connected"
        await ws.send(json.dumps({"type": "auth", "token": "whatever"}))
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "bad_frame"


async def test_audience_and_issuer_on_the_server(make_server):
    """With NOTIFY_JWT_AUDIENCE / NOTIFY_JWT_ISSUER set, wrong or missing aud/iss close 4401; right ones connect."""
    dedicated = make_server(NOTIFY_JWT_AUDIENCE="notify", NOTIFY_JWT_ISSUER="https://app.example")
    user = new_user()
    good = _claims(user, aud="notify", iss="https://app.example")
    assert (await _connected(dedicated, _forge(dedicated, good)))["user_id"] == user
    assert (await _connected(dedicated, dedicated.token(user)))["user_id"] == user
    assert "audience" in await _refused(dedicated, _forge(dedicated, {**good, "aud": "other-service"}))
    assert "issuer" in await _refused(dedicated, _forge(dedicated, {**good, "iss": "https://evil.example"}))
    assert "aud" in await _refused(dedicated, _forge(dedicated, _claims(user, iss="https://app.example")))


async def test_rs256_server(make_server, tmp_path):
    """A server configured with RS256 and a public key accepts the web app's tokens and refuses HS256 ones."""
    private, public = _rsa_pair()
    pem = tmp_path / "app-public.pem"
    pem.write_text(public)
    dedicated = make_server(NOTIFY_JWT_ALGORITHMS="RS256", NOTIFY_JWT_PUBLIC_KEY=str(pem), NOTIFY_JWT_AUDIENCE="notify")
    user = new_user()
    hello = await _connected(dedicated, jwt.encode(_claims(user, aud="notify"), private, algorithm="RS256"))
    assert hello["user_id"] == user
    forged = _hs256_with_key(_claims(user), public.encode())
    assert "algorithm" in await _refused(dedicated, forged)


# ---- HTTP -------------------------------------------------------------------------------------


def test_admin_role_grants_publishing(server):
    """A token with ``role: admin`` may POST /api/notifications; a user token gets 403 JSON."""
    user = new_user()
    url = f"{server.url}/api/notifications"
    body = {"user_id": user, "title": "Hi"}
    assert httpx.post(url, json=body, headers=server.admin_headers()).status_code == 201
    refused = httpx.post(url, json=body, headers=server.user_headers(user))
    assert refused.status_code == 403
    assert refused.json()["detail"]


def test_http_auth_failures_are_401_json(server):
    """Expired, alg-none and garbage tokens over HTTP are 401 with a JSON detail and WWW-Authenticate."""
    url = f"{server.url}/api/notifications/unread-count"
    user = new_user()
    for token, word in ((server.token(user, ttl=-120), "expired"), (_unsigned(_claims(user)), "algorithm"),
                        ("garbage", "invalid")):
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert word in response.json()["detail"]
        assert response.headers["www-authenticate"].lower().startswith("bearer")


def test_legacy_token_over_http(server):
    """A legacy ``user_id`` token reads that user's notifications over HTTP."""
    user = new_user("legacy")
    server.publish(user, "for legacy")
    now = int(time.time())
    token = _forge(server, {"user_id": user, "iat": now, "exp": now + 600})
    response = httpx.get(f"{server.url}/api/notifications", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert [item["title"] for item in response.json()["items"]] == ["for legacy"]


def test_server_secret_is_in_the_data_folder(server):
    """The shared server generated its secret in its data folder with mode 0600, where tokens are minted from."""
    path = server.data_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == _secret(server)


# ---- issue 7 item 3: the rest of the matrix ------------------------------------------------------


async def test_expired_just_past_the_leeway_is_refused(server):
    """A token expired 2 s beyond the 10 s default leeway closes 4401 and is 401 over HTTP."""
    user = new_user()
    now = int(time.time())
    token = _forge(server, {"sub": user, "iat": now - 100, "exp": now - 12})
    assert "expired" in await _refused(server, token)
    response = httpx.get(f"{server.url}/api/notifications", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and "expired" in response.json()["detail"]


async def test_missing_issuer_and_audience_on_the_server(make_server):
    """With aud and iss configured, a token lacking either is refused: 4401 on the socket, 401 over HTTP."""
    dedicated = make_server(NOTIFY_JWT_AUDIENCE="notify", NOTIFY_JWT_ISSUER="https://app.example")
    user = new_user()
    no_iss = _forge(dedicated, _claims(user, aud="notify"))
    no_aud = _forge(dedicated, _claims(user, iss="https://app.example"))
    assert "iss" in await _refused(dedicated, no_iss)
    for token, word in ((no_iss, "iss"), (no_aud, "aud")):
        response = httpx.get(f"{dedicated.url}/api/notifications", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401 and word in response.json()["detail"]


def test_every_bad_token_over_http_is_401_never_500(server):
    """alg none, another HMAC algorithm, bad signature, truncated, garbage, no exp, nbf ahead, a 16 KB token
    and odd header forms are each refused over HTTP with 401 (431 for a header too large), never a 500."""
    user = new_user()
    good = server.token(user)
    now = int(time.time())
    cases = {
        "alg none": _unsigned(_claims(user, role="admin")),
        "alg None": _unsigned(_claims(user), alg="None"),
        "HS512": _forge(server, _claims(user), algorithm="HS512"),
        "HS384": _forge(server, _claims(user), algorithm="HS384"),
        "bad signature": jwt.encode(_claims(user), "x" * 48, algorithm="HS256"),
        "truncated": good[:-10],
        "signature dropped": good.rsplit(".", 1)[0] + ".",
        "two parts": good.rsplit(".", 1)[0],
        "garbage": "not-a-jwt",
        "non-ascii": "eyJ\u00e9.\u00e9.\u00e9",
        "no exp": _forge(server, {"sub": user, "iat": now}),
        "exp a string": _forge(server, {"sub": user, "exp": "tomorrow"}),
        "nbf ahead": _forge(server, _claims(user, nbf=now + 600)),
        "16 KB": _forge(server, _claims(user, pad="x" * 16384)),
    }
    statuses = {}
    for name, token in cases.items():
        response = httpx.get(f"{server.url}/api/notifications/unread-count",
                             headers={"Authorization": f"Bearer {token}".encode()}, timeout=10)
        statuses[name] = response.status_code
    for header in ("Bearer", f"Basic {good}", f"bearer{good}", f"Token {good}"):
        statuses[repr(header[:12])] = httpx.get(f"{server.url}/api/notifications/unread-count",
                                                headers={"Authorization": header}).status_code
    assert {name: status for name, status in statuses.items() if status != 401} in ({}, {"16 KB": 431})


async def test_public_key_as_hmac_secret_over_http(make_server, tmp_path):
    """With RS256 pinned, an HS256 token signed with the public key (algorithm confusion) is 401 over HTTP."""
    private, public = _rsa_pair()
    pem = tmp_path / "app-public.pem"
    pem.write_text(public)
    dedicated = make_server(NOTIFY_JWT_ALGORITHMS="RS256", NOTIFY_JWT_PUBLIC_KEY=str(pem), NOTIFY_JWT_AUDIENCE="notify")
    user = new_user()
    url = f"{dedicated.url}/api/notifications"
    forged = _hs256_with_key(_claims(user, role="admin"), public.encode())
    for token in (forged, _hs256_with_key(_claims(user), public.strip().encode())):
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401 and "algorithm" in response.json()["detail"]
        spoof = httpx.post(url, json={"user_id": user, "title": "x"}, headers={"Authorization": f"Bearer {token}"})
        assert spoof.status_code == 401
    real = jwt.encode(_claims(user, aud="notify"), private, algorithm="RS256")
    assert httpx.get(url, headers={"Authorization": f"Bearer {real}"}).status_code == 200


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"NOTIFY_JWT_SECRET": "s" * 31}, "at least 32 bytes"),
        ({"NOTIFY_JWT_SECRET": "s" * 40, "NOTIFY_JWT_ALGORITHMS": "HS256,RS256"}, "may not mix"),
        ({"NOTIFY_JWT_ALGORITHMS": "none"}, "NOTIFY_JWT_ALGORITHMS"),
    ],
)
def test_cli_refuses_to_start_with_an_unsafe_jwt_setup(tmp_path, env, says):
    """`notify serve` with a secret under 32 bytes, mixed algorithm families or `none` exits 1 with one
    line saying why, no traceback, and never listens."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    result = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=30,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert says in output and "Traceback" not in output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_secret_of_exactly_32_bytes_starts(make_server):
    """A 32-byte NOTIFY_JWT_SECRET is enough: the server starts and accepts its tokens."""
    dedicated = make_server(NOTIFY_JWT_SECRET="k" * 32)
    user = new_user()
    response = httpx.get(f"{dedicated.url}/api/notifications/unread-count", headers=dedicated.user_headers(user))
    assert response.status_code == 200
