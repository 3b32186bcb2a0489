"""The dashboard in Debian's Chromium with the notification lifecycle: collapse keys, expiry, priority."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .conftest import ServerProcess, new_user
from .test_browser import browser, browsing, driver, items  # noqa: F401  (fixtures)


def badge(page) -> str:
    return page.locator("#bell-badge").text_content() or ""


def test_a_newer_notification_with_the_same_collapse_key_replaces_the_older_in_every_tab(
        server: ServerProcess, browsing) -> None:  # noqa: F811
    user = new_user("collapse")
    profile = browsing().configure()
    page = profile.open(server, server.token(user))
    server.publish(user, "1 new message", collapse_key="inbox")
    page.wait_for_function("document.querySelector('#bell-badge').textContent === '1'", timeout=2000)
    server.publish(user, "2 new messages", collapse_key="inbox", priority="high")
    page.wait_for_function("[...document.querySelectorAll('#notification-list .ns-item-title')]"
                           ".map(e => e.textContent).join() === '2 new messages'", timeout=2000)
    assert badge(page) == "1"
    assert page.locator(".ns-toast.ns-high").count() == 1
    page.wait_for_function("document.querySelectorAll('.ns-toast').length === 1")  # the older toast went
    later = profile.open(server, server.token(user))  # a tab opened afterwards lists what the server keeps
    later.wait_for_function("document.querySelector('#bell-badge').textContent === '1'", timeout=2000)
    assert items(later) == ["2 new messages"]


def test_an_expiring_notification_leaves_the_list_and_a_low_one_makes_no_toast(
        server: ServerProcess, browsing) -> None:  # noqa: F811
    user = new_user("expiry")
    page = browsing().configure().open(server, server.token(user))
    expires = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    server.publish(user, "Code valid for 2 s", expires_at=expires)
    server.publish(user, "Weekly digest", priority="low")
    page.wait_for_function("document.querySelectorAll('#notification-list .ns-item').length === 2", timeout=2000)
    assert page.locator(".ns-toast").count() == 1  # the low-priority one went to the list and badge only
    assert badge(page) == "2"
    page.wait_for_function("document.querySelectorAll('#notification-list .ns-item').length === 1", timeout=5000)
    assert items(page) == ["Weekly digest"] and badge(page) == "1"


def test_a_muted_type_makes_no_toast_until_another_tab_unmutes_it(server: ServerProcess, browsing) -> None:  # noqa: F811
    user = new_user("prefs")
    profile = browsing().configure({"toastDurationMs": 400})
    first, second = profile.open(server, server.token(user)), profile.open(server, server.token(user))
    server.publish(user, "Sale 1", type="marketing")
    for page in (first, second):  # the type is seen: the preferences card offers to mute it
        page.locator('#pref-types input[data-type="marketing"]').wait_for(timeout=2000)
    second.check('#pref-types input[data-type="marketing"]')
    first.wait_for_function(
        "document.querySelector('#pref-types input[data-type=\"marketing\"]').checked", timeout=2000)
    first.wait_for_function("document.querySelectorAll('.ns-toast').length === 0", timeout=3000)
    server.publish(user, "Sale 2", type="marketing")
    first.wait_for_function("document.querySelectorAll('#notification-list .ns-item').length === 2", timeout=2000)
    assert first.locator(".ns-toast").count() == 0  # listed and counted, but silent
    assert badge(first) == "2"
    second.uncheck('#pref-types input[data-type="marketing"]')
    first.wait_for_function(
        "!document.querySelector('#pref-types input[data-type=\"marketing\"]').checked", timeout=2000)
    server.publish(user, "Sale 3", type="marketing")
    first.locator(".ns-toast").first.wait_for(state="visible", timeout=2000)
