"""Web Push against a push service of the test's own: a small HTTP server on loopback (allowed plain http: by
``NOTIFY_PUSH_INSECURE_HOSTS=127.0.0.1``) that checks each push's VAPID JWT against the server's public key,
decrypts the body with the subscription's private key, and answers what the test asks (201, 410, 503…).
The subscriptions are made here as a browser makes them: a P-256 key pair and a 16-byte auth secret.
Also: which endpoints are refused and why (without sockets), malformed subscriptions, the limit of 10,
and erasure. The service worker in Chromium: tests/test_push_browser.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from namaskah_notify.errors import BadEndpoint
from namaskah_notify.push import EndpointPolicy
from namaskah_notify.push.message import MAX_PAYLOAD, payload
from namaskah_notify.push.sender import RefusedAddress, _GuardedBackend

from .conftest import ServerProcess, eventually, new_user, recv_until
from .leakcheck import RECORD
from .push_helpers import Browser, PushService, Received, b64

SUBJECT = "mailto:ops@example.com"


@pytest.fixture
def service() -> Iterator[PushService]:
    started = PushService().start()
    yield started
    started.stop()


@pytest.fixture
def pushing(make_server, service: PushService) -> ServerProcess:
    return make_server(NOTIFY_PUSH_INSECURE_HOSTS="127.0.0.1", NOTIFY_VAPID_SUBJECT=SUBJECT)


def subscribe(server: ServerProcess, user: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/api/push/subscriptions", json=body, headers=server.user_headers(user), timeout=10)


def verify_vapid(server: ServerProcess, service: PushService, push: Received) -> dict[str, Any]:
    """The push's Authorization is ``vapid t=<JWT>, k=<key>``: k is the server's public key, and the JWT is
    ES256-signed by it, for this push service's origin, not yet expired. Its claims."""
    key = httpx.get(f"{server.url}/api/push/vapid-public-key", timeout=10).json()["key"]
    scheme, _, params = push.headers["Authorization"].partition(" ")
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert scheme == "vapid" and fields["k"] == key
    RECORD.token(fields["t"])  # the leak check searches the server's output for it
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), base64.urlsafe_b64decode(key + "=="))
    assert jwt.get_unverified_header(fields["t"])["alg"] == "ES256"
    claims = jwt.decode(fields["t"], public, algorithms=["ES256"], audience=service.origin,
                        options={"require": ["aud", "exp"]})
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    return claims


def gauge(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def stored_subscriptions(server: ServerProcess, user: str) -> int:
    with sqlite3.connect(server.data_dir / "notify.db") as db:
        return db.execute("SELECT count(*) FROM push_subscriptions WHERE user_id = ?", (user,)).fetchone()[0]


# -- delivery -----------------------------------------------------------------------------------------
async def test_push_reaches_a_user_with_no_tab_then_410_deletes_the_subscription(
        pushing: ServerProcess, service: PushService) -> None:
    """A notification for a subscribed user with no connection is pushed: aes128gcm, decrypted with the
    subscription's own key it is the tab's frame with the title; VAPID signed by the server's key for the
    push service's origin, with the subject; TTL and Urgency from the priority. A 410 on the next push
    deletes the subscription, and nothing is pushed there again."""
    user, browser = new_user("push"), Browser(service)
    answer = subscribe(pushing, user, browser.subscription())
    assert answer.status_code == 201 and answer.json() == {"endpoint": browser.endpoint, "subscriptions": 1}
    published = pushing.publish(user, "Your parcel is here", message="Door 3", priority="high", link="/parcels/7")
    assert published.status_code == 201, published.text

    push = (await eventually(lambda: service.at(browser.path), timeout=10))[0]
    assert push.headers["Content-Encoding"] == "aes128gcm"
    assert push.headers["Urgency"] == "high" and int(push.headers["TTL"]) == 86400
    assert verify_vapid(pushing, service, push)["sub"] == SUBJECT
    message = browser.decrypt(push.body)
    assert message["type"] == "notification"
    assert message["data"]["title"] == "Your parcel is here" and message["data"]["id"] == published.json()["id"]
    assert message["data"]["link"] == "/parcels/7" and "silent" not in message["data"]

    service.answers[browser.path] = [(410, None)]
    assert pushing.publish(user, "Another one").status_code == 201
    await eventually(lambda: len(service.at(browser.path)) == 2 and stored_subscriptions(pushing, user) == 0)
    assert gauge(pushing, "notify_webpush_gone_total") == 1 and gauge(pushing, "notify_webpush_sent_total") == 1
    pushing.publish(user, "Nobody to push to")
    await asyncio.sleep(0.5)
    assert len(service.at(browser.path)) == 2


async def test_no_push_to_a_user_with_a_tab_open_or_for_a_silenced_notification(
        pushing: ServerProcess, service: PushService) -> None:
    """While the user has a connection, their notifications go to the tab and are not pushed; a muted type is
    not pushed either (the tab gets it with silent: true). Each check ends with a push that does go out
    (another type, once the tab is closed), so the absence is not a matter of waiting too little."""
    user, browser = new_user("tab"), Browser(service)
    assert subscribe(pushing, user, browser.subscription()).status_code == 201
    put = httpx.put(f"{pushing.url}/api/preferences", json={"muted_types": ["marketing"]},
                    headers=pushing.user_headers(user), timeout=10)
    assert put.status_code == 200, put.text

    async with pushing.ws(pushing.token(user)) as tab:
        await recv_until(tab, "connected")
        pushing.publish(user, "Seen in the tab")
        assert (await recv_until(tab, "notification"))["data"]["title"] == "Seen in the tab"
    await asyncio.sleep(0.3)  # the tab's close reaches the hub
    pushing.publish(user, "Sale!", type="marketing")
    pushing.publish(user, "Marker")
    first = (await eventually(lambda: service.at(browser.path), timeout=10))[0]
    await asyncio.sleep(0.5)
    titles = [browser.decrypt(push.body)["data"]["title"] for push in service.at(browser.path)]
    assert titles == ["Marker"], titles
    assert first.headers["Urgency"] == "normal"


async def test_429_and_5xx_are_retried_after_retry_after(pushing: ServerProcess, service: PushService) -> None:
    """A 503 with Retry-After: 1, then a 429 with Retry-After: 1: the push is sent a third time, each try at
    least a second after the one before, and counted once as sent, twice as retried."""
    user, browser = new_user("retry"), Browser(service)
    assert subscribe(pushing, user, browser.subscription()).status_code == 201
    service.answers[browser.path] = [(503, "1"), (429, "1")]
    pushing.publish(user, "Third time lucky")
    tries = await eventually(lambda: len(service.at(browser.path)) == 3 and service.at(browser.path), timeout=15)
    assert tries[1].at - tries[0].at >= 1.0 and tries[2].at - tries[1].at >= 1.0
    assert {browser.decrypt(t.body)["data"]["title"] for t in tries} == {"Third time lucky"}
    await eventually(lambda: gauge(pushing, "notify_webpush_sent_total") == 1)
    assert gauge(pushing, "notify_webpush_retries_total") == 2 and stored_subscriptions(pushing, user) == 1


async def test_a_push_that_keeps_failing_gives_up(make_server, service: PushService) -> None:
    """With NOTIFY_PUSH_MAX_ATTEMPTS=2, two 500s end the push: counted as failed, noted on the subscription,
    which stays; a 400 is not retried at all. The log names the push service's origin, never the path."""
    server = make_server(NOTIFY_PUSH_INSECURE_HOSTS="127.0.0.1", NOTIFY_PUSH_MAX_ATTEMPTS="2")
    user, browser = new_user("fail"), Browser(service)
    assert subscribe(server, user, browser.subscription()).status_code == 201
    service.answers[browser.path] = [(500, "0"), (500, "0"), (400, None)]
    server.publish(user, "Doomed")
    await eventually(lambda: gauge(server, "notify_webpush_failed_total") == 1)
    server.publish(user, "Refused")
    await eventually(lambda: gauge(server, "notify_webpush_failed_total") == 2)
    assert len(service.at(browser.path)) == 3 and gauge(server, "notify_webpush_retries_total") == 1
    with sqlite3.connect(server.data_dir / "notify.db") as db:
        assert db.execute("SELECT failures, last_error FROM push_subscriptions").fetchall() == [
            (2, "rejected: HTTP 400")]
    output = server.output()
    assert f"origin={service.origin} reason=retries_exhausted" in output and browser.path not in output


async def test_a_full_queue_drops_and_counts(make_server, service: PushService) -> None:
    """NOTIFY_PUSH_QUEUE_SIZE=1 and a push service that holds each push for a while: a burst of publishes is
    stored and answered at once; what does not fit in the queue is dropped and counted."""
    server = make_server(NOTIFY_PUSH_INSECURE_HOSTS="127.0.0.1", NOTIFY_PUSH_QUEUE_SIZE="1",
                         NOTIFY_PUSH_CONCURRENCY="1")
    users = [new_user("burst") for _ in range(20)]
    for user in users:
        assert subscribe(server, user, Browser(service).subscription()).status_code == 201
    started = time.monotonic()
    answer = server.publish(users, "Everyone")
    assert answer.status_code == 201 and time.monotonic() - started < 2
    await eventually(lambda: gauge(server, "notify_webpush_dropped_total") > 0)
    await eventually(lambda: gauge(server, "notify_webpush_sent_total") + gauge(server, "notify_webpush_dropped_total")
                     == 20)


# -- subscriptions ----------------------------------------------------------------------------------------
def test_malformed_subscriptions_are_refused(pushing: ServerProcess, service: PushService) -> None:
    """A missing key, keys of the wrong length or not on the curve: 422 naming the field; an endpoint that is
    no URL, not https:, or names a local or private address: 422 bad_endpoint; no token: 401."""
    user = new_user("bad")
    good = Browser(service).subscription()
    keys = good["keys"]
    not_on_curve = b64(b"\x04" + b"\x01" * 64)
    for body, field_name in [
        ({"endpoint": good["endpoint"], "keys": {"p256dh": keys["p256dh"]}}, "auth"),
        ({"endpoint": good["endpoint"]}, "keys"),
        ({"endpoint": good["endpoint"], "keys": {**keys, "p256dh": keys["p256dh"][:-2]}}, "p256dh"),
        ({"endpoint": good["endpoint"], "keys": {**keys, "p256dh": not_on_curve}}, "p256dh"),
        ({"endpoint": good["endpoint"], "keys": {**keys, "auth": b64(os.urandom(12))}}, "auth"),
        ({"keys": keys}, "endpoint"),
    ]:
        answer = subscribe(pushing, user, body)
        assert answer.status_code == 422, (body, answer.text)
        assert field_name in json.dumps(answer.json()["detail"]), answer.text
    for endpoint in ["not a url", "push.example.net/x", "ftp://push.example.net/x", "http://push.example.net/x",
                     "https://localhost/x", "https://push.localhost/x", "https://printer.local/x",
                     "https://intranet/x", "https://10.1.2.3/x", "https://192.168.0.1/x", "https://169.254.169.254/x",
                     "https://[::1]/x", "https://[fe80::1]/x", "https://[::ffff:127.0.0.1]/x", "https://2130706433/x",
                     "https://127.1/x", "https://0x7f.0.0.1/x", "https://user:pw@push.example.net/x",
                     "https://push.example.net/x#frag", "https://push.example.net:0/x", "https://push.example.net/ x",
                     "https://push.exa mple.net/x", "https://" + "a" * 2040 + ".net/"]:
        answer = subscribe(pushing, user, {**good, "endpoint": endpoint})
        assert answer.status_code == 422, (endpoint, answer.text)
        assert answer.json().get("code") in ("bad_endpoint", None), answer.text
    assert stored_subscriptions(pushing, user) == 0
    assert httpx.post(f"{pushing.url}/api/push/subscriptions", json=good, timeout=10).status_code == 401


def test_at_most_ten_subscriptions_per_user(pushing: ServerProcess, service: PushService) -> None:
    """Ten subscriptions are stored; the eleventh is 409 too_many_subscriptions; posting one of the ten again
    renews it (201); after a DELETE (204, and 204 again for one that is gone) the eleventh fits."""
    user = new_user("ten")
    browsers = [Browser(service) for _ in range(11)]
    for count, browser in enumerate(browsers[:10], 1):
        assert subscribe(pushing, user, browser.subscription()).json()["subscriptions"] == count
    refused = subscribe(pushing, user, browsers[10].subscription())
    assert refused.status_code == 409 and refused.json()["code"] == "too_many_subscriptions", refused.text
    again = subscribe(pushing, user, browsers[3].subscription())
    assert again.status_code == 201 and again.json()["subscriptions"] == 10
    for _ in range(2):
        gone = httpx.request("DELETE", f"{pushing.url}/api/push/subscriptions", json={"endpoint": browsers[0].endpoint},
                             headers=pushing.user_headers(user), timeout=10)
        assert gone.status_code == 204 and gone.content == b""
    assert subscribe(pushing, user, browsers[10].subscription()).status_code == 201
    assert stored_subscriptions(pushing, user) == 10


def test_an_endpoint_belongs_to_the_last_user_who_posted_it(pushing: ServerProcess, service: PushService) -> None:
    """A browser shared by two people: the second one's subscription with the same endpoint moves it to them;
    the first one's DELETE of it then removes nothing of the second's."""
    first, second, browser = new_user("first"), new_user("second"), Browser(service)
    assert subscribe(pushing, first, browser.subscription()).status_code == 201
    assert subscribe(pushing, second, browser.subscription()).status_code == 201
    assert (stored_subscriptions(pushing, first), stored_subscriptions(pushing, second)) == (0, 1)
    httpx.request("DELETE", f"{pushing.url}/api/push/subscriptions", json={"endpoint": browser.endpoint},
                  headers=pushing.user_headers(first), timeout=10)
    assert stored_subscriptions(pushing, second) == 1


def test_erasing_a_user_deletes_their_subscriptions(pushing: ServerProcess, service: PushService) -> None:
    """DELETE /api/admin/users/{id} removes the user's push subscriptions and counts them."""
    user = new_user("erase")
    for _ in range(2):
        assert subscribe(pushing, user, Browser(service).subscription()).status_code == 201
    answer = httpx.delete(f"{pushing.url}/api/admin/users/{user}", headers=pushing.admin_headers(), timeout=10)
    assert answer.status_code == 200 and answer.json()["deleted"]["push_subscriptions"] == 2
    assert stored_subscriptions(pushing, user) == 0


# -- the VAPID key ------------------------------------------------------------------------------------
def test_the_generated_key_is_private_and_kept(make_server, tmp_path) -> None:
    """Without NOTIFY_VAPID_PRIVATE_KEY the key is generated into the data folder with mode 0600 and the same
    key is served after a restart; a key file others may read stops the server; NOTIFY_VAPID_PRIVATE_KEY
    (PEM) is used as given, and a key not on P-256 stops the server."""
    data = tmp_path / "keyed"
    server = make_server(data_dir=data)
    key = httpx.get(f"{server.url}/api/push/vapid-public-key", timeout=10).json()["key"]
    path = data / "vapid_private_key.pem"
    assert path.stat().st_mode & 0o777 == 0o600 and len(base64.urlsafe_b64decode(key + "=")) == 65
    server.stop()
    assert httpx.get(f"{make_server(data_dir=data).url}/api/push/vapid-public-key").json()["key"] == key

    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    given = make_server(NOTIFY_VAPID_PRIVATE_KEY=pem)
    point = private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert httpx.get(f"{given.url}/api/push/vapid-public-key").json() == {"key": b64(point)}

    path.chmod(0o644)
    with pytest.raises(RuntimeError, match="may be read by group or others"):
        make_server(data_dir=data)
    wrong = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(RuntimeError, match="P-256"):
        make_server(NOTIFY_VAPID_PRIVATE_KEY=wrong)


# -- the parts without sockets ----------------------------------------------------------------------------
@pytest.mark.parametrize(("endpoint", "origin"), [
    ("https://fcm.googleapis.com/fcm/send/abc:def", "https://fcm.googleapis.com"),
    ("https://updates.push.services.mozilla.com/wpush/v2/gAAAA", "https://updates.push.services.mozilla.com"),
    ("https://web.push.apple.com:443/QGuQyavXutnMH", "https://web.push.apple.com"),
    ("https://push.example.net:8443/x", "https://push.example.net:8443"),
    ("https://PUSH.Example.NET./x", "https://push.example.net"),
    ("https://8.8.8.8/x", "https://8.8.8.8"),
    ("https://[2001:4860:4860::8888]/x", "https://[2001:4860:4860::8888]"),
    ("http://127.0.0.1:9000/x", "http://127.0.0.1:9000"),
    ("https://127.0.0.1/x", "https://127.0.0.1"),
])
def test_endpoint_policy_accepts(endpoint: str, origin: str) -> None:
    """Public https: endpoints, and any endpoint of a listed host, are accepted; the VAPID audience is the
    origin, without a default port."""
    assert EndpointPolicy(["127.0.0.1"]).check(endpoint) == origin


@pytest.mark.parametrize("endpoint", [
    "https://127.0.0.2/x", "https://0.0.0.0/x", "https://100.64.0.1/x", "https://172.16.5.4/x", "https://224.0.0.1/x",
    "https://[fd00::1]/x", "https://[2002:7f00:1::]/x", "https://017700000001/x", "https://home.arpa/x",
    "https://nas.internal/x", "https://router.lan/x", "https://-bad-.example/x", "https://a..b/x",
    "javascript:alert(1)", "https:/push.example.net/x", "https://push.example.net:99999/x", "HTTPS://push.example.net/",
])
def test_endpoint_policy_refuses(endpoint: str) -> None:
    """Local, private, shared, multicast and unspecified addresses in any spelling, local names, malformed
    hosts and anything but an https: URL are refused, listed hosts aside."""
    with pytest.raises(BadEndpoint):
        EndpointPolicy(["127.0.0.1"]).check(endpoint)


def test_resolved_addresses_must_all_be_public() -> None:
    """At send time a host's addresses are used only if every one is public (or the host is listed)."""
    policy = EndpointPolicy(["push.test"])
    assert policy.addresses("push.example.net", ["8.8.8.8", "2001:4860:4860::8888"]) == ["8.8.8.8",
                                                                                     "2001:4860:4860::8888"]
    assert policy.addresses("push.example.net", ["8.8.8.8", "10.0.0.1"]) == []
    assert policy.addresses("push.example.net", ["::ffff:127.0.0.1"]) == []
    assert policy.addresses("push.test", ["127.0.0.1"]) == ["127.0.0.1"]


async def test_a_name_resolving_to_loopback_is_never_connected_to(service: PushService) -> None:
    """The sender's connections resolve the host themselves: ``localhost`` (127.0.0.1 by /etc/hosts) is
    refused before any connection unless listed, and reached when listed."""
    with pytest.raises(RefusedAddress):
        await _GuardedBackend(EndpointPolicy()).connect_tcp("localhost", service.port, timeout=5)
    stream = await _GuardedBackend(EndpointPolicy(["localhost"])).connect_tcp("localhost", service.port, timeout=5)
    await stream.aclose()


def test_a_payload_too_large_for_push_services_is_trimmed() -> None:
    """Push services take 4 KiB: a notification over it loses its meta, then the end of its message."""
    data = json.dumps({"id": "notif_1", "seq": 1, "title": "Big", "message": "é" * 5000, "meta": {"k": "v" * 100},
                       "link": "/x"}, ensure_ascii=False)
    body, notification = payload(data)
    trimmed = json.loads(body)["data"]
    assert len(body) <= MAX_PAYLOAD and notification["title"] == "Big"
    assert trimmed["truncated"] is True and "meta" not in trimmed and trimmed["message"].endswith("…")
    small = json.dumps({"id": "notif_2", "title": "Small"})
    assert payload(small)[0] == b'{"type":"notification","data":' + small.encode() + b"}"


async def test_a_cluster_pushes_from_any_node_to_users_offline_everywhere(
        make_server, postgres, redis_server, service: PushService) -> None:
    """Two nodes on PostgreSQL and Redis sharing NOTIFY_VAPID_PRIVATE_KEY serve one public key. A subscription
    made through node B is pushed from node A, which learns of it within its reconcile interval; while the user
    has a tab open on node B, what node A publishes is not pushed; once the tab is closed it is again."""
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    env = {"NOTIFY_DATABASE_URL": postgres.url, "NOTIFY_BROKER_URL": redis_server.url,
           "NOTIFY_JWT_SECRET": "cluster-" + "s" * 40, "NOTIFY_VAPID_PRIVATE_KEY": pem,
           "NOTIFY_PUSH_INSECURE_HOSTS": "127.0.0.1", "NOTIFY_RECONCILE_INTERVAL_S": "0.5"}
    a, b = make_server(**env), make_server(**env)
    keys = {httpx.get(f"{node.url}/api/push/vapid-public-key").json()["key"] for node in (a, b)}
    assert len(keys) == 1
    user, browser = new_user("cluster"), Browser(service)
    assert subscribe(b, user, browser.subscription()).status_code == 201
    await asyncio.sleep(1.5)  # three of node A's rounds
    assert a.publish(user, "From node A").status_code == 201
    await eventually(lambda: service.at(browser.path), timeout=10)

    def online() -> bool:
        answer = httpx.get(f"{a.url}/api/presence", params={"user_id": user}, headers=a.user_headers(user))
        return answer.json()["users"][user]["online"]

    async with b.ws(b.token(user)) as tab:
        await recv_until(tab, "connected")
        await eventually(online)
        a.publish(user, "Read on node B")
        assert (await recv_until(tab, "notification"))["data"]["title"] == "Read on node B"
    await eventually(lambda: not online())
    a.publish(user, "Tab closed")
    await eventually(lambda: len(service.at(browser.path)) == 2, timeout=10)
    await asyncio.sleep(0.3)
    titles = [browser.decrypt(push.body)["data"]["title"] for push in service.at(browser.path)]
    assert titles == ["From node A", "Tab closed"], titles
    verify_vapid(a, service, service.at(browser.path)[0])
