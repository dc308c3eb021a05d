"""The example's front page, live, in a real headless chromium on the in-process store: two
visitors with two windows each (and a second browser of the first visitor's user), a greeting
in every window without a reload, every kind of target, a notice for one user's windows, and
the calls the page may not make refused, politely, with nothing run.

Skipped only where chromium is missing and CI is not set; under CI a missing chromium fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from example_app import records
from example_app.live import PREFIX
from example_app.main import create_app
from gaesignals.stores import Store

from .example_app_support import _not_on_app_engine  # noqa: F401 (an autouse fixture)
from .live_support import (
    EXPECTED_REFUSAL,
    POLL_SECONDS,
    Visitor,
    Window,
    chromium_browser,
    serving,
    unexpected,
    visitor,
)

pytestmark = pytest.mark.gaesignals_stores("memory")

#: A call made from a page's own script, answering its status (the client is not used, so
#: the test chooses the headers).
RAW_CALL = """async ([url, headers]) => {
  const body = JSON.stringify({data: {to: "window"}});
  const answer = await fetch(url, {method: "POST", headers, body});
  return [answer.status, await answer.text()];
}"""


@pytest.fixture
def browser(gaesignals_store: Store) -> Iterator[Any]:
    with chromium_browser() as found:
        yield found


@pytest.fixture
def base(gaesignals_store: Store) -> Iterator[str]:
    with serving(create_app(poll_seconds=POLL_SECONDS)) as served:
        yield served.base


@pytest.fixture
def ann(browser: Any, base: str) -> Visitor:
    """A signed-in visitor (user 11111) with two windows."""
    found = visitor(browser, base)
    found.sign_in("11111")
    found.open(), found.open()
    return found


@pytest.fixture
def bob(browser: Any, base: str) -> Visitor:
    """A guest with two windows."""
    found = visitor(browser, base)
    found.open(), found.open()
    return found


def all_windows(*visitors: Visitor) -> list[Window]:
    return [window for each in visitors for window in each.windows]


def test_a_greeting_appears_in_every_open_window(ann: Visitor, bob: Visitor) -> None:
    """Signing the guestbook in one window shows the greeting in the three others at once,
    without a reload, whoever they belong to; markup in it is shown as text."""
    signer, *others = all_windows(bob, ann)
    signer.page.fill("form[action='/send'] input[name=text]", "<b>hello</b> from bob")
    signer.page.click("form[action='/send'] button")
    signer.page.wait_for_selector("text=<b>hello</b> from bob")  # after its own redirect
    for window in others:
        window.wait_for_line("signed the guestbook: <b>hello</b> from bob")
        row = window.page.locator("#guestbook tr.live td").nth(2)
        assert row.inner_text() == "<b>hello</b> from bob"
        assert window.page.locator("#guestbook b").count() == 0
    assert records.read("guestbook")[0]["text"] == "<b>hello</b> from bob"
    for window in all_windows(ann, bob):
        assert window.errors == []


def test_each_target_reaches_its_windows_only(
    browser: Any, base: str, ann: Visitor, bob: Visitor
) -> None:
    """A pong to one window, a session, a user and everyone: each reaches exactly the windows
    it names, across two visitors, two windows each, and a second browser of ann's user."""
    ann_elsewhere = visitor(browser, base)  # another browser (another session), same user
    ann_elsewhere.sign_in("11111")
    ann_elsewhere.open()
    asker = ann.windows[0]
    for to, heard in (("window", "this window"), ("session", "this session")):
        asker.ping(to)
        asker.wait_for_line(f"pong for {heard}")
    asker.ping("user")
    asker.wait_for_line("pong for this user")
    asker.ping("everyone")  # the last: once a window has it, it had all the earlier ones
    windows = all_windows(ann, ann_elsewhere, bob)
    for window in windows:
        window.wait_for_line("pong for everyone")
    heard = [
        [to for to in ("window", "session", "user") if window.lines_with(f"pong for this {to}")]
        for window in windows
    ]
    assert heard == [
        ["window", "session", "user"],  # the window that asked
        ["session", "user"],  # ann's other window, same session
        ["user"],  # ann's other browser
        [],  # bob's windows
        [],
    ]
    for window in windows:
        assert len(window.lines_with("pong for everyone")) == 1
        assert window.errors == []


def test_a_notice_reaches_one_users_windows_only(ann: Visitor, bob: Visitor) -> None:
    """Notifying user 11111 from bob's window shows the notice in ann's two windows; bob's
    windows, a greeting later, have not heard of it."""
    sender = bob.windows[0]
    sender.page.fill("form[action='/notify'] input[name=to]", "11111")
    sender.page.fill("form[action='/notify'] input[name=text]", "your parcel is here")
    sender.page.click("form[action='/notify'] button")
    sender.page.wait_for_selector("text=It waits until that user opens")
    for window in ann.windows:
        window.wait_for_line("your parcel is here")
    ann.windows[0].ping("everyone")
    for window in bob.windows:
        window.wait_for_line("pong for everyone")
        assert window.lines_with("your parcel is here") == []


def test_a_signed_in_user_waves_to_everyone(ann: Visitor, bob: Visitor) -> None:
    """The wave button calls a Python signal from JavaScript; its handler tells every window."""
    ann.windows[1].page.click("button[data-call=wave]")
    for window in all_windows(ann, bob):
        window.wait_for_line("user 11111 waves at everyone")
        assert window.errors == []


def test_calls_the_page_may_not_make_are_refused_politely(ann: Visitor, bob: Visitor) -> None:
    """A guest's wave (authenticated users only) and anyone's ``audit`` (not declared for the
    browser) are refused with a 403; the page says so in a sentence, and nothing ran."""
    guest = bob.windows[0]
    guest.page.click("button[data-call=wave]")
    guest.wait_for_line("Wave to everyone: not done (the server does not let this page")
    ann.windows[0].page.click("button[data-call=audit]")
    ann.windows[0].wait_for_line("Send audit from the page: not done")
    ann.windows[0].ping("everyone")  # after the refusals: a wave would have come first
    for window in all_windows(ann, bob):
        window.wait_for_line("pong for everyone")
        assert window.lines_with("waves at everyone") == []
    assert records.read("audit") == []
    assert unexpected(guest.errors, EXPECTED_REFUSAL) == []
    assert unexpected(ann.windows[0].errors, EXPECTED_REFUSAL) == []


def test_a_forged_token_or_another_origin_is_refused(browser: Any, base: str, ann: Visitor) -> None:
    """A call with a CSRF token not of its session, one with none, and one whose Origin is
    another site, each with the visitor's cookies, are refused with the one 403 answer."""
    window = ann.windows[0]
    page = window.page
    token = page.get_attribute("meta[name=gaesignals-csrf]", "content")
    assert token
    url = f"{base}{PREFIX}/call/ping"
    json = {"Content-Type": "application/json"}
    own = {**json, "X-GaeSignals-Window": page.evaluate("crypto.randomUUID()")}
    good = {**own, "X-GaeSignals-CSRF": token}
    assert page.evaluate(RAW_CALL, [url, good]) == [200, '{"ok":true}']  # the token works
    forged = {**good, "X-GaeSignals-CSRF": token[:-2] + ("aa" if token[-2:] != "aa" else "bb")}
    for headers in (forged, own):
        status, body = page.evaluate(RAW_CALL, [url, headers])
        assert (status, body.replace(" ", "")) == (403, '{"ok":false,"error":"forbidden"}')
    answer = ann.context.request.post(
        url,
        data='{"data": {"to": "everyone"}}',
        headers={**good, "Origin": "http://127.0.0.2:9"},
    )
    assert answer.status == 403 and answer.json() == {"ok": False, "error": "forbidden"}
    assert unexpected(window.errors, EXPECTED_REFUSAL) == []
    ann.windows[1].page.click("button[data-call=wave]")  # a wave, after the refused ping
    window.wait_for_line("waves at everyone")
    assert window.lines_with("pong for everyone") == []


def test_the_live_card_fits_400_pixels(ann: Visitor) -> None:
    """With the live card and its log filled, the front page still fits 400 px."""
    window = ann.windows[0]
    window.page.set_viewport_size({"width": 400, "height": 800})
    for to in ("window", "everyone"):
        window.ping(to)
    window.wait_for_line("pong for everyone")
    width = window.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400
    assert window.errors == []
