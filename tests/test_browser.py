"""The browser client and the demo dashboard in headless Debian Chromium, against the real server.

Each test opens the dashboard at ``/`` with a token in the URL fragment (the documented demo sign-in),
shortens the client's timings through ``window.notifyOptions``, and drives the server over HTTP. The page
is only observed (WebSocket attempts and frames, ``play()`` calls); nothing of the server is mocked.
Set ``NOTIFY_SCREENSHOT_DIR`` to keep screenshots of the dashboard.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .browser_helpers import AUTOPLAY_POLICY, DESKTOP, RECORDER, VISIBILITY, Relay, launch, options_script
from .conftest import ServerProcess, new_user

FAST = {"toastDurationMs": 15000, "backoffBaseMs": 50, "backoffMaxMs": 400}


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """Playwright's sync driver for this module (missing Playwright fails, it never skips)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install 'playwright>=1.45' "
                    "(python3 dev.py test installs the test extra)")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(driver: Any) -> Iterator[Any]:
    """Debian's headless Chromium (a missing /usr/bin/chromium fails with what to install)."""
    try:
        chromium = launch(driver)
    except Exception as exc:
        pytest.fail(f"cannot start Chromium: {exc}")
    yield chromium
    chromium.close()


class Browsing:
    """One browser context (one user's browser profile) and the dashboard pages opened in it."""

    def __init__(self, browser: Any, *before: str, **context_options: Any) -> None:
        # Playwright's wait_for_function builds its predicate with eval, which the dashboard's CSP refuses:
        # these tests drive behaviour; tests/test_dashboard_csp.py runs the dashboard under its policy.
        self.context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True,
                                           **context_options)
        for script in before:  # wrapped by the recorder, so what they do is recorded too
            self.context.add_init_script(script)
        self.context.add_init_script(RECORDER)
        self.context.set_default_timeout(5000)
        self.errors: list[str] = []

    def configure(self, options: dict[str, Any] | None = None, extra_js: str = "", *scripts: str) -> Browsing:
        self.context.add_init_script(options_script({**FAST, **(options or {})}, extra_js))
        for script in scripts:
            self.context.add_init_script(script)
        return self

    def open(self, server: ServerProcess, token: str, *, live: bool = True) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.goto(f"{server.url}/#token={token}")
        if live:
            wait_status(page, "live")
        return page


@pytest.fixture
def browsing(browser: Any) -> Iterator[Callable[..., Browsing]]:
    """New browser contexts for a test; at the end, no page may have thrown."""
    made: list[Browsing] = []

    def factory(*before: str, **context_options: Any) -> Browsing:
        made.append(Browsing(browser, *before, **context_options))
        return made[-1]

    yield factory
    for each in made:
        each.context.close()
    assert [e for each in made for e in each.errors] == []


def wait_status(page: Any, status: str, timeout: float = 5000) -> None:
    page.wait_for_selector(f'#connection-status[data-status="{status}"]', state="attached", timeout=timeout)


def recorded(page: Any, name: str) -> Any:
    return page.evaluate(f"JSON.parse(JSON.stringify(window.{name}))")


def frames(page: Any, kind: str) -> list[dict[str, Any]]:
    out = []
    for raw in recorded(page, "__ws.received"):
        if raw.startswith("{") and json.loads(raw).get("type") == kind:
            out.append(json.loads(raw))
    return out


def items(page: Any) -> list[str]:
    return page.locator("#notification-list .ns-item .ns-item-title").all_inner_texts()


def sms(server: ServerProcess, user: str, verification: str = "ver_1", **fields: Any) -> httpx.Response:
    body = {"user_id": user, "verification_id": verification, "service": "Google", "code": "123456", **fields}
    response = httpx.post(f"{server.url}/api/sms/inbound", json=body, headers=server.admin_headers(), timeout=10)
    assert response.status_code == 201, response.text
    return response


def unread_on_server(server: ServerProcess, user: str) -> int:
    response = httpx.get(f"{server.url}/api/notifications/unread-count", headers=server.user_headers(user))
    return response.json()["unread_count"]


def eventually(check: Callable[[], Any], timeout: float = 5, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("NOTIFY_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


def test_sms_shows_toast_badge_list_sound_and_ack_within_one_second(server, browsing):
    """An inbound SMS gives a toast, badge 1, the first list item, a play() and an ack within 1 s."""
    user = new_user("sms")
    page = browsing().configure().open(server, server.token(user))
    assert "token=" not in page.url  # the fragment is taken out of the address bar
    acked_before = httpx.get(f"{server.url}/ws/stats").json()["notifications_acked"]

    started = time.monotonic()
    sms(server, user, "ver_fast")
    toast = page.locator(".ns-toast").first
    toast.wait_for(state="visible", timeout=1000)
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '1'", timeout=1000)
    page.wait_for_function("window.__sound.length > 0", timeout=1000)
    page.wait_for_function("window.__ws.sent.some((f) => f.includes('\"ack\"'))", timeout=1000)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"took {elapsed:.3f} s"

    assert "SMS Code Received" in toast.inner_text()
    assert "Verification code received for Google" in toast.inner_text()
    assert items(page)[0].endswith("SMS Code Received")
    assert page.get_attribute("#bell", "aria-label") == "Notifications, 1 unread"
    assert recorded(page, "__sound")[0]["src"].endswith("/static/sounds/notification.wav")
    seq = frames(page, "notification")[0]["data"]["seq"]
    assert json.dumps({"type": "ack", "seq": seq}, separators=(",", ":")) in recorded(page, "__ws.sent")
    assert eventually(lambda: httpx.get(f"{server.url}/ws/stats").json()["notifications_acked"] > acked_before)


def test_two_tabs_both_update_and_reading_in_one_clears_the_other(server, browsing):
    """Two tabs of one user both get a notification; marking it read in one zeroes the other's badge."""
    user = new_user("tabs")
    profile = browsing().configure()
    first, second = profile.open(server, server.token(user)), profile.open(server, server.token(user))

    server.publish(user, "Payment received", message="₹499 from Asha")
    for page in (first, second):
        page.locator(".ns-toast").first.wait_for(state="visible", timeout=1000)
        page.wait_for_function("document.querySelector('#bell-badge').textContent === '1'", timeout=1000)
        assert items(page) == ["Payment received"]

    first.click("#bell")
    first.click("#notification-list .ns-item-body")
    second.wait_for_function("document.querySelector('#bell-badge').hidden", timeout=2000)
    assert second.get_attribute("#bell", "aria-label") == "Notifications, no unread"
    assert second.locator("#notification-list .ns-unread").count() == 0
    second.wait_for_function("document.querySelectorAll('.ns-toast').length === 0")  # read elsewhere: gone
    assert unread_on_server(server, user) == 0
    assert any('"mark_read"' in frame for frame in recorded(first, "__ws.sent"))


def test_toast_click_marks_read_and_follows_the_link(server, browsing):
    """Clicking a toast marks the notification read over the WebSocket, then opens its link."""
    user = new_user("link")
    page = browsing().configure().open(server, server.token(user))
    sms(server, user, "ver_link")
    page.locator(".ns-toast .ns-toast-body").first.click(timeout=1000)
    page.wait_for_url("**/verify?id=ver_link")
    assert eventually(lambda: unread_on_server(server, user) == 0)


def test_bell_panel_and_toasts_are_accessible_and_keyboard_usable(server, browsing):
    """Bell label carries the count, toasts sit in an aria-live region, the panel works by keyboard."""
    user = new_user("a11y")
    page = browsing().configure().open(server, server.token(user))
    for title in ("First", "Second"):
        server.publish(user, title)
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '2'", timeout=2000)

    assert page.get_attribute("#toasts", "aria-live") == "polite"
    assert page.locator("#bell").evaluate("el => el.tagName") == "BUTTON"
    assert page.get_attribute("#bell", "aria-label") == "Notifications, 2 unread"
    assert page.get_attribute("#bell-badge", "aria-hidden") == "true"
    assert page.get_attribute(".ns-toast-close", "aria-label") == "Dismiss notification"
    assert page.locator("#connection-status").get_attribute("role") == "status"

    page.focus("#bell")
    page.keyboard.press("Enter")
    assert page.get_attribute("#bell", "aria-expanded") == "true"
    focused = page.evaluate("document.activeElement.textContent")
    assert focused.startswith("Unread: ") and "Second" in focused
    page.keyboard.press("ArrowDown")
    assert "First" in page.evaluate("document.activeElement.textContent")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '1'", timeout=2000)
    assert page.get_attribute("#bell", "aria-label") == "Notifications, 1 unread"
    page.keyboard.press("Escape")
    assert page.locator("#notification-panel").is_hidden()
    assert page.evaluate("document.activeElement.id") == "bell"


def test_duplicates_from_a_replay_are_shown_once(server, browsing):
    """When a resume replays what the page already has, nothing is shown or counted twice."""
    user = new_user("dupe")
    page = browsing().configure().open(server, server.token(user))
    server.publish(user, "One")
    server.publish(user, "Two")
    page.wait_for_function("document.querySelectorAll('#notification-list .ns-item').length === 2")
    sounds = len(recorded(page, "__sound"))

    # Forget how far we got and drop the socket: the server replays both from since_seq=0.
    page.evaluate("window.notificationSystem.lastSeq = 0; window.notificationSystem.dropSocket('test')")
    page.wait_for_function("window.__ws.received.filter((f) => f.includes('\"resumed\"')).length === 1")
    assert frames(page, "resumed")[0]["replayed"] == 2
    assert "since_seq=0" in recorded(page, "__ws.attempts")[-1]["url"]
    assert items(page) == ["Two", "One"]
    assert page.inner_text("#bell-badge") == "2"
    assert page.locator(".ns-toast").count() == 2
    assert len(recorded(page, "__sound")) == sounds


def test_reconnects_after_server_restart_and_shows_missed_once_each(make_server, browsing, tmp_path):
    """Server stopped and restarted: the page reconnects by itself, resumes, shows each missed one once."""
    server = make_server(data_dir=tmp_path / "restart")
    relay = Relay(server.port).open()
    user = new_user("restart")
    page = browsing().configure({"url": f"ws://127.0.0.1:{relay.port}/ws/notifications", "apiBase": server.url,
                                 "backoffBaseMs": 100, "backoffMaxMs": 300, "maxReconnectAttempts": 1000}
                                ).open(server, server.token(user))
    server.publish(user, "Before")
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '1'")

    server.stop()
    assert 1001 in [c["code"] for c in eventually(lambda: recorded(page, "__ws.closes"))]
    relay.close()  # keep the page away until the missed ones are published
    wait_status(page, "reconnecting")
    server.start()
    for n in range(1, 4):
        server.publish(user, f"Missed {n}")
    relay.open()

    wait_status(page, "live", timeout=5000)
    page.wait_for_function("document.querySelectorAll('#notification-list .ns-item').length === 4")
    assert items(page) == ["Missed 3", "Missed 2", "Missed 1", "Before"]
    assert page.inner_text("#bell-badge") == "4"
    assert "since_seq=1" in recorded(page, "__ws.attempts")[-1]["url"]
    assert frames(page, "resumed")[-1]["replayed"] == 3
    server.publish(user, "After")
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '5'", timeout=1000)
    assert items(page) == ["After", "Missed 3", "Missed 2", "Missed 1", "Before"]
    relay.close()


def test_unreachable_websocket_backs_off_then_polls_then_goes_live_again(server, browsing):
    """No WebSocket: 5 jittered, growing retries, then HTTP polling delivers; live again once it is back."""
    user = new_user("poll")
    relay = Relay(server.port)  # not listening yet: the WebSocket endpoint is unreachable
    jitter = ("return { random: (() => { const r = [0.9, 0.6, 0.95, 0.7, 0.8]; let i = 0; "
              "return () => r[i++ % 5]; })() };")
    page = browsing().configure({"url": f"ws://127.0.0.1:{relay.port}/ws/notifications", "apiBase": server.url,
                                 "backoffBaseMs": 100, "backoffMaxMs": 1600, "pollIntervalMs": 500,
                                 "wsRetryWhilePollingMs": 1500}, jitter).open(server, server.token(user), live=False)
    wait_status(page, "polling", timeout=6000)

    attempts = [a["t"] for a in recorded(page, "__ws.attempts")]
    assert len(attempts) == 6  # the first try and 5 retries
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    expected = [90, 120, 380, 560, 1280]  # random() x cap, caps 100, 200, 400, 800, 1600 ms
    for gap, want in zip(gaps, expected, strict=True):
        assert want - 5 <= gap <= want + 250, (gaps, expected)

    started = time.monotonic()
    server.publish(user, "Via polling")
    page.locator(".ns-toast").first.wait_for(state="visible", timeout=1500)
    assert time.monotonic() - started < 1.5
    assert items(page) == ["Via polling"]
    assert page.inner_text("#bell-badge") == "1"

    page.click("#bell")  # offline from the WebSocket: mark read goes over HTTP
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/read")):
        page.click("#notification-list .ns-item-body")
    assert eventually(lambda: unread_on_server(server, user) == 0)

    relay.open()
    wait_status(page, "live", timeout=3000)
    server.publish(user, "Live again")
    page.wait_for_function("window.__ws.sent.some((f) => f.includes('\"ack\"'))", timeout=1000)
    assert items(page)[0] == "Live again"
    relay.close()


def test_expired_token_shows_session_expired_and_stops_trying(server, browsing):
    """A refused token (4401) that getToken() cannot replace: "session expired" after one attempt."""
    user = new_user("expired")
    page = browsing().configure().open(server, server.token(user, ttl=-3600), live=False)
    wait_status(page, "expired")
    assert page.inner_text("#connection-status") == "Session expired"
    assert page.locator("#signin").is_visible()
    assert "expired" in page.inner_text("#signin-message")
    page.wait_for_timeout(1500)
    assert len(recorded(page, "__ws.attempts")) == 1
    assert [c["code"] for c in recorded(page, "__ws.closes")] == [4401]


def test_refused_token_is_replaced_once_by_get_token(server, browsing):
    """On 4401 the client asks getToken() once; a new token connects without further attempts."""
    user = new_user("renew")
    fresh = server.token(user)
    get_token = ("return { getToken: (ctx) => ctx && ctx.reason === 'unauthorized' ? "
                 f"{json.dumps(fresh)} : localStorage.getItem('access_token') }};")
    page = browsing().configure({}, get_token).open(server, server.token(user, ttl=-3600), live=False)
    wait_status(page, "live")
    assert len(recorded(page, "__ws.attempts")) == 2
    server.publish(user, "Still here")
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '1'", timeout=1000)


def test_origin_refused_with_4403_polls_without_a_tight_loop(make_server, browsing):
    """An Origin the server refuses (4403): polling delivers, the WebSocket is retried only slowly."""
    server = make_server(NOTIFY_ALLOWED_ORIGINS="https://app.example.com")
    user = new_user("origin")
    page = browsing().configure({"pollIntervalMs": 400, "wsRetryWhilePollingMs": 1000}
                                ).open(server, server.token(user), live=False)
    wait_status(page, "polling")
    assert recorded(page, "__ws.closes")[0]["code"] == 4403
    server.publish(user, "Polled")
    page.locator(".ns-toast").first.wait_for(state="visible", timeout=1200)
    page.wait_for_timeout(1000)
    attempts = recorded(page, "__ws.attempts")
    assert 2 <= len(attempts) <= 3, attempts  # the first one, then about one per wsRetryWhilePollingMs


def test_resync_required_reloads_the_list_over_http(make_server, browsing):
    """Too much missed to replay: on resync_required the page reloads its list and badge over HTTP."""
    server = make_server(NOTIFY_REPLAY_LIMIT=2)
    relay = Relay(server.port).open()
    user = new_user("resync")
    page = browsing().configure({"url": f"ws://127.0.0.1:{relay.port}/ws/notifications", "apiBase": server.url,
                                 "maxReconnectAttempts": 1000}).open(server, server.token(user))
    server.publish(user, "Seen")
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '1'")
    relay.close()
    wait_status(page, "reconnecting")
    for n in range(1, 5):
        server.publish(user, f"Missed {n}")
    with page.expect_request(lambda r: "/api/notifications?limit=" in r.url, timeout=5000):
        relay.open()
    page.wait_for_function("document.querySelectorAll('#notification-list .ns-item').length === 5")
    assert page.inner_text("#bell-badge") == "5"
    assert frames(page, "resync_required")
    assert items(page) == ["Missed 4", "Missed 3", "Missed 2", "Missed 1", "Seen"]
    relay.close()


def test_keepalive_pings_and_a_silent_connection_is_replaced(server, browsing):
    """Text pings get pongs; when the path goes silent, the pong timeout reconnects by itself."""
    user = new_user("ping")
    relay = Relay(server.port).open()
    page = browsing().configure({"url": f"ws://127.0.0.1:{relay.port}/ws/notifications", "apiBase": server.url,
                                 "pingIntervalMs": 250, "pongTimeoutMs": 400}).open(server, server.token(user))
    page.wait_for_timeout(800)
    assert recorded(page, "__ws.sent").count("ping") >= 2
    assert "pong" in recorded(page, "__ws.received")
    assert len(recorded(page, "__ws.attempts")) == 1  # answered pings keep the same connection

    relay.blackhole()
    page.wait_for_function("window.__ws.attempts.length === 2", timeout=3000)
    wait_status(page, "live")
    server.publish(user, "After the silence")
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '1'", timeout=1000)
    relay.close()


def test_online_event_and_visible_tab_reconnect_at_once(server, browsing):
    """While a long backoff is pending, the browser's online event or the tab becoming visible reconnects now."""
    user = new_user("wake")
    relay = Relay(server.port).open()
    profile = browsing().configure({"url": f"ws://127.0.0.1:{relay.port}/ws/notifications", "apiBase": server.url,
                                    "backoffBaseMs": 20000, "backoffMaxMs": 20000},
                                   "return { random: () => 0.99 };", VISIBILITY)
    page = profile.open(server, server.token(user))

    relay.close()
    wait_status(page, "reconnecting")
    relay.open()
    profile.context.set_offline(True)
    profile.context.set_offline(False)  # fires the real `online` event
    wait_status(page, "live", timeout=1500)

    relay.close()
    page.wait_for_function("document.querySelector('#connection-status').dataset.status === 'reconnecting'")
    relay.open()
    page.evaluate("window.__setVisibility('hidden'); window.__setVisibility('visible')")
    wait_status(page, "live", timeout=1500)
    assert len(recorded(page, "__ws.attempts")) == 3
    relay.close()


def test_blocked_autoplay_plays_after_the_first_gesture(server, browsing):
    """With autoplay refused, the sound does not throw and plays on the first click instead."""
    user = new_user("autoplay")
    page = browsing(AUTOPLAY_POLICY).configure().open(server, server.token(user))
    server.publish(user, "Ding")
    page.wait_for_function("window.__sound.length === 1 && window.__sound[0].result !== 'pending'")
    assert recorded(page, "__sound")[0]["result"] == "NotAllowedError"
    assert page.locator(".ns-toast").count() == 1  # the refusal broke nothing else
    page.click("#conn-title")
    page.wait_for_function("window.__sound.length === 2 && window.__sound[1].result === 'played'")


def test_desktop_notification_only_when_hidden_and_permitted(server, browsing):
    """A hidden tab with permission shows a desktop Notification; a visible one does not."""
    user = new_user("desktop")
    profile = browsing(permissions=["notifications"]).configure({}, "", VISIBILITY, DESKTOP)
    page = profile.open(server, server.token(user))
    server.publish(user, "Seen in the tab")
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '1'")
    page.evaluate("window.__setVisibility('hidden')")
    server.publish(user, "While away", message="Your report is ready")
    page.wait_for_function("window.__desktop.length === 1", timeout=1000)
    shown = recorded(page, "__desktop")[0]
    assert shown["title"] == "While away" and shown["body"] == "Your report is ready"


def test_sign_in_form_stores_the_token_and_connects(server, browsing):
    """Without a token the dashboard asks for one, keeps it in localStorage.access_token and connects."""
    user = new_user("signin")
    profile = browsing().configure()
    page = profile.context.new_page()
    page.goto(server.url + "/")
    assert page.locator("#signin").is_visible()
    assert page.get_attribute("#connection-status", "data-status") == "idle"
    token = server.token(user)
    page.fill("#token-input", token)
    page.click("#signin-form button[type=submit]")
    wait_status(page, "live")
    assert page.evaluate("localStorage.getItem('access_token')") == token
    assert page.inner_text("#fact-user") == user


def test_dev_button_sends_a_test_sms_with_the_admin_token_from_the_link(server, browsing):
    """On localhost, "Send test SMS" posts to /api/sms/inbound with #admin_token= and the toast arrives."""
    user = new_user("dev")
    page = browsing().configure().open(server, f"{server.token(user)}&admin_token={server.token('ops', admin=True)}")
    assert "admin_token" not in page.url
    page.click("#send-test")
    page.locator(".ns-toast").first.wait_for(state="visible", timeout=2000)
    assert "SMS Code Received" in page.inner_text(".ns-toast")
    assert page.inner_text("#dev-result").startswith("Sent:")


def test_dashboard_fits_desktop_and_phone_widths(server, browsing):
    """With a few notifications, the dashboard fits a desktop and a phone screen (screenshots on request)."""
    user = new_user("demo")
    profile = browsing().configure({"toastDurationMs": 60000})
    page = profile.open(server, server.token(user))
    sms(server, user, "ver_a")
    server.publish(user, "Invoice #1042 paid", message="₹1,499 received from Priya Sharma", type="payment")
    server.publish(user, "Weekly report ready", message="Open rates are up 12% this week", link="/reports/7")
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '3'")
    page.click("#bell")
    page.wait_for_timeout(300)
    screenshot(page, "dashboard-desktop.png")
    for selector in ("#bell", "#notification-panel", ".ns-toast"):
        box = page.locator(selector).first.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 1280, selector

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(200)
    screenshot(page, "dashboard-phone.png")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for selector in ("#bell", "#notification-panel", ".ns-toast"):
        box = page.locator(selector).first.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector


def test_deleting_in_one_tab_removes_it_in_the_other_and_unread_goes_both_ways(server, browsing):
    """Each list item has Mark read / Mark unread and Delete: marking it read, then unread, in one tab
    changes the other tab's item and badge; deleting it in one tab removes it from both lists (the other
    through the ``deleted`` frame) and from the server; Delete read clears the read ones everywhere."""
    from playwright.sync_api import expect

    user = new_user("delete")
    profile = browsing().configure()
    first, second = profile.open(server, server.token(user)), profile.open(server, server.token(user))
    for title in ("Keep me", "Delete me", "Read and clear"):
        server.publish(user, title)
    for page in (first, second):
        expect(page.locator("#bell-badge")).to_have_text("3", timeout=2000)
    first.click("#bell")

    def item(page: Any, title: str) -> Any:
        return page.locator("#notification-list .ns-item", has_text=title)

    item(first, "Delete me").locator(".ns-item-toggle").click()  # Mark read
    expect(second.locator("#bell-badge")).to_have_text("2", timeout=2000)
    expect(item(second, "Delete me")).not_to_have_class(re.compile("ns-unread"))
    expect(item(first, "Delete me").locator(".ns-item-toggle")).to_have_text("Mark unread")
    item(first, "Delete me").locator(".ns-item-toggle").click()
    expect(second.locator("#bell-badge")).to_have_text("3", timeout=2000)
    expect(item(second, "Delete me")).to_have_class(re.compile("ns-unread"))
    assert [f["notification_ids"] for f in frames(second, "unread")] == [[item(second, "Delete me")
                                                                          .get_attribute("data-id")]]

    item(first, "Delete me").locator(".ns-item-delete").click()
    assert items(first) == ["Read and clear", "Keep me"]  # at once in the tab that deleted it
    expect(item(second, "Delete me")).to_have_count(0, timeout=2000)
    assert items(second) == ["Read and clear", "Keep me"]
    expect(second.locator("#bell-badge")).to_have_text("2", timeout=2000)
    assert len(frames(second, "deleted")) == 1
    listed = httpx.get(f"{server.url}/api/notifications", headers=server.user_headers(user)).json()
    assert [n["title"] for n in listed["items"]] == ["Read and clear", "Keep me"] and listed["unread_count"] == 2

    item(first, "Read and clear").locator(".ns-item-toggle").click()
    expect(second.locator("#bell-badge")).to_have_text("1", timeout=2000)
    first.click("#delete-read")
    expect(second.locator("#notification-list .ns-item")).to_have_count(1, timeout=2000)
    assert items(first) == items(second) == ["Keep me"]
    assert unread_on_server(server, user) == 1
