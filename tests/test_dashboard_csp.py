"""The demo dashboard under its Content-Security-Policy, in headless Debian Chromium against the real server.

The page is used as a person would (sign in by link, a notification arrives as a toast, the bell opens the
list) while every ``securitypolicyviolation`` event and every console message is
recorded: the test passes only when the dashboard works and the policy refused nothing. An inline script
injected at the end must be refused, which shows the recording sees violations at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from .browser_helpers import launch
from .conftest import ServerProcess, new_user

VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__csp.push({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample }));
"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium through Playwright (missing either fails with what to install)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: python3 dev.py test installs the test extra")
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


def test_dashboard_works_under_its_policy_with_no_violation(server: ServerProcess, chromium: Any) -> None:
    """Signed in by link, the dashboard goes live over the WebSocket, shows a published notification as a
    toast and in the bell's list with its badge, with its stylesheet applied and safeLink refusing
    off-site paths, and records no CSP violation and no console error; an injected inline script is refused."""
    user = new_user("csp")
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(VIOLATIONS)
    context.set_default_timeout(5000)
    console: list[str] = []
    errors: list[str] = []
    page = context.new_page()
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        response = page.goto(f"{server.url}/#token={server.token(user)}")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_selector('#connection-status[data-status="live"]', state="attached")

        assert server.publish(user, "Under a strict policy", link="/inbox").status_code == 201
        page.wait_for_selector(".ns-toasts >> text=Under a strict policy")
        page.click("#bell")
        page.wait_for_selector("#notification-panel:not([hidden])")
        title = page.locator("#notification-list .ns-item .ns-item-title")
        assert title.all_inner_texts() == ["Under a strict policy"]
        assert page.locator("#bell-badge").inner_text() == "1"
        # The stylesheet from /static applies (the top bar is laid out by dashboard.css, not the defaults).
        assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).display") == "flex"
        # A module import from this origin is allowed; safeLink keeps paths on this site.
        links = page.evaluate("""async () => {
            const { safeLink } = await import("/static/js/notification-system.js");
            return ["/inbox", "/\\\\evil.example", "//evil.example", "/\\t/evil.example", "https://example.com/x"]
              .map((link) => safeLink(link));
        }""")
        assert links == [f"{server.url}/inbox", None, None, None, "https://example.com/x"]

        assert page.evaluate("window.__csp") == []
        assert [line for line in console if line.startswith("error") or "Content Security Policy" in line] == []
        assert errors == []

        # The control: an inline script is refused, and the refusal is seen. (Polled from here: Playwright's
        # wait_for_function would eval its predicate in the page, which the policy refuses too.)
        with pytest.raises(Exception):  # noqa: B017 - Playwright reports the blocked script as an error
            page.add_script_tag(content="window.__inline = true;")
        deadline = time.monotonic() + 5
        while not page.evaluate("window.__csp.length") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert page.evaluate("window.__inline === undefined")
        assert [v["directive"] for v in page.evaluate("window.__csp")] == ["script-src-elem"]
    finally:
        context.close()
