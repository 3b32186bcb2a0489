"""Web Push in Debian's headless Chromium: the dashboard's "Enable push" button, ``enablePush()`` and
``disablePush()``, and ``static/sw.js`` showing what the server pushed.

Chromium's own push service is a vendor's server that this machine cannot reach, so one browser call is
stood in for: ``PushManager.subscribe`` answers a subscription to the test's loopback push service (with a key
pair the test holds) instead of asking the vendor. Everything else is real: the permission, the service worker
registered under the dashboard's Content-Security-Policy, the subscription posted to the server, the server's
encrypted push to the loopback service, and its decrypted payload delivered to the service worker through the
DevTools protocol (``ServiceWorker.deliverPushMessage``), which shows it with ``showNotification``.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from .browser_helpers import launch
from .conftest import ServerProcess, new_user
from .push_helpers import Browser, PushService

# Stands in for the vendor's push service: subscribe() answers the test's subscription and records the
# applicationServerKey it was asked for; getSubscription() and unsubscribe() follow it.
SUBSCRIBE = """
(() => {
  const subscription = %s;
  let current = null;
  window.__serverKeys = [];
  PushManager.prototype.subscribe = async function (options) {
    const key = new Uint8Array(options.applicationServerKey);
    window.__serverKeys.push(Array.from(key));
    current = { endpoint: subscription.endpoint, options: { applicationServerKey: key.buffer },
                toJSON: () => subscription, unsubscribe: async () => { current = null; return true; } };
    return current;
  };
  PushManager.prototype.getSubscription = async function () { return current; };
})();
"""
VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
"""
NOTIFICATIONS = """async () => {
  const registration = await navigator.serviceWorker.getRegistration("/");
  if (!registration) return null;
  return (await registration.getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag,
                                                               link: n.data && n.data.link }));
}"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing (python3 dev.py test installs the test extra)")
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def service() -> Iterator[PushService]:
    started = PushService().start()
    yield started
    started.stop()


def until(check: Callable[[], Any], timeout: float = 10, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"not within {timeout}s: {value!r}"
            return value
        time.sleep(interval)


def subscriptions(server: ServerProcess, user: str) -> int:
    with sqlite3.connect(server.data_dir / "notify.db") as db:
        return db.execute("SELECT count(*) FROM push_subscriptions WHERE user_id = ?", (user,)).fetchone()[0]


def online(server: ServerProcess, user: str) -> bool:
    answer = httpx.get(f"{server.url}/api/presence", params={"user_id": user}, headers=server.user_headers(user))
    return answer.json()["users"][user]["online"]


class Worker:
    """The DevTools protocol's view of the page's service workers: the registration of scope ``/`` and a
    way to push to it."""

    def __init__(self, context: Any, page: Any, origin: str) -> None:
        self.origin = origin
        self.session = context.new_cdp_session(page)
        self.registrations: dict[str, str] = {}
        self.session.on("ServiceWorker.workerRegistrationUpdated", self._updated)
        self.session.send("ServiceWorker.enable")

    def _updated(self, event: dict[str, Any]) -> None:
        for registration in event["registrations"]:
            if not registration.get("isDeleted"):
                self.registrations[registration["scopeURL"]] = registration["registrationId"]

    def push(self, message: dict[str, Any]) -> None:
        registration = until(lambda: self.registrations.get(self.origin + "/"))
        self.session.send("ServiceWorker.deliverPushMessage",
                          {"origin": self.origin, "registrationId": registration, "data": json.dumps(message)})

    def show(self, page: Any, message: dict[str, Any], expected: Callable[[list[str]], bool], tries: int = 3) -> None:
        """Push ``message`` until the titles shown satisfy ``expected``. Headless Chromium now and then loses a
        notification that a worker showed (``showNotification`` resolves, ``getNotifications`` never lists
        it; about one in five with a minimal worker too), so a push is delivered again, at most ``tries``
        times; showing it again with the same tag replaces it."""
        for _ in range(tries):
            self.push(message)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                if expected(titles(page)):
                    return
                time.sleep(0.05)
        raise AssertionError(f"shown: {titles(page)}")


def titles(page: Any) -> list[str]:
    return [n["title"] for n in page.evaluate(NOTIFICATIONS) or []]


def test_enable_push_then_the_service_worker_shows_what_the_server_pushed(
        make_server, service: PushService, chromium: Any) -> None:
    """The dashboard's "Enable push" asks for permission, registers sw.js for the whole site, subscribes with
    the server's VAPID key and posts the subscription; "Disable push" deletes it. With the tab closed, a
    notification is pushed to the loopback service; its decrypted payload, delivered to the service worker,
    becomes a system notification (title, message, tag = id); a silent payload shows nothing; a newer one with
    the same collapse key replaces the older. The dashboard's CSP refuses nothing of it."""
    server = make_server(NOTIFY_PUSH_INSECURE_HOSTS="127.0.0.1")
    user, browser = new_user("sw"), Browser(service)
    context = chromium.new_context()
    context.grant_permissions(["notifications"], origin=server.url)
    context.add_init_script(SUBSCRIBE % json.dumps(browser.subscription()))
    context.add_init_script(VIOLATIONS)
    context.set_default_timeout(10000)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/#token={server.token(user)}")
        until(lambda: page.evaluate("document.getElementById('connection-status').dataset.status") == "live")
        page.click("#bell")
        toggle = page.locator("#push-toggle")
        until(lambda: toggle.inner_text() == "Enable push")
        toggle.click()
        until(lambda: toggle.inner_text() == "Disable push" and subscriptions(server, user) == 1)
        key = httpx.get(f"{server.url}/api/push/vapid-public-key").json()["key"]
        asked = bytes(page.evaluate("window.__serverKeys[0]"))
        assert asked == base64.urlsafe_b64decode(key + "=")
        scope = page.evaluate("navigator.serviceWorker.getRegistration('/').then((r) => r && r.scope)")
        assert scope == server.url + "/"
        toggle.click()
        until(lambda: toggle.inner_text() == "Enable push" and subscriptions(server, user) == 0)
        toggle.click()
        until(lambda: toggle.inner_text() == "Disable push" and subscriptions(server, user) == 1)
        assert page.evaluate("window.__violations") == [] and errors == []

        # The tab closes; a page of the same site that opens no socket stays, to read the notifications.
        page.close()
        page = context.new_page()
        page.goto(f"{server.url}/healthz")
        until(lambda: not online(server, user))
        worker = Worker(context, page, server.url)
        until(lambda: page.evaluate(NOTIFICATIONS) == [])

        published = server.publish(user, "Parcel at the door", message="Signed for by a neighbour", link="/parcels/9")
        pushed = until(lambda: service.at(browser.path))[0]
        plain = browser.decrypt(pushed.body)
        assert plain["data"]["title"] == "Parcel at the door"
        worker.show(page, plain, lambda shown: shown == ["Parcel at the door"])
        shown = page.evaluate(NOTIFICATIONS)
        assert shown == [{"title": "Parcel at the door", "body": "Signed for by a neighbour",
                          "tag": published.json()["id"], "link": "/parcels/9"}]

        quiet = {"type": "notification", "data": {**plain["data"], "id": "notif_quiet", "title": "Quiet",
                                                  "silent": True}}
        for _ in range(3):  # were it shown, all three would hardly be lost
            worker.push(quiet)
        newer = {"type": "notification", "data": {**plain["data"], "id": "notif_b", "title": "Two parcels",
                                                  "collapse_key": "parcels"}}
        older = {"type": "notification", "data": {**newer["data"], "id": "notif_a", "title": "One parcel"}}
        worker.show(page, older, lambda shown: "One parcel" in shown)
        worker.show(page, newer, lambda shown: sorted(shown) == ["Parcel at the door", "Two parcels"])
        time.sleep(0.3)
        assert sorted(titles(page)) == ["Parcel at the door", "Two parcels"]

        # A click with a tab of the app open: the worker hands it to the tab, which marks it read and follows
        # its link. (Headless Chromium has no notification to click: the handler's step is run in the worker.)
        page.close()  # the app's tab is then the only window of the site
        tab = context.new_page()
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(f"{server.url}/")
        until(lambda: tab.evaluate("document.getElementById('connection-status').dataset.status") == "live")
        clicked = published.json()
        worker_scope = until(lambda: [w for w in context.service_workers if w.url.endswith("/static/sw.js")])[0]
        worker_scope.evaluate("(n) => openApp({ id: n.id, link: n.link, notification: n })", clicked)
        tab.wait_for_url(f"{server.url}/parcels/9")
        mine = httpx.get(f"{server.url}/api/notifications", headers=server.user_headers(user)).json()["items"]
        assert [n["is_read"] for n in mine if n["id"] == clicked["id"]] == [True]
        assert errors == []
    finally:
        context.close()
