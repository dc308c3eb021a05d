"""The dashboard in a real browser: Debian's chromium, headless, driven by playwright against
the app served on a loopback port. Log in, see the signals, requeue a dead letter, no CSP
violation or console error, no horizontal scroll at 400 px, and a screenshot.

Skipped only where chromium is missing and CI is not set; under CI a missing chromium fails.
"""

from __future__ import annotations

import importlib.util
import re
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from html import escape
from pathlib import Path
from typing import Any

import pytest

from gaesignals import dead_letters, pending
from gaesignals.dashboard import TOKEN_ENV, DashboardApp
from gaesignals.pytest_plugin import _missing as missing
from gaesignals.stores import Store
from tests.browser_support import (
    CHROMIUM_ARGS,
    activity,
    chromium,
    need_chromium,
    populate,
    serving,
)
from tests.dashboard_support import TOKEN, dead_letter

#: Records every CSP violation the page reports (injected by the browser, not by the page).
CSP_PROBE = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[str]]]:
    """A chromium page with the CSP probe, and the console errors and page errors it saw."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    executable = need_chromium(chromium())
    if importlib.util.find_spec("playwright") is None:
        missing("playwright is not installed (pip install -e . --group test)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 800})
            page = context.new_page()
            page.add_init_script(CSP_PROBE)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.set_default_timeout(15_000)
            yield page, errors
            context.close()
        finally:
            browser.close()


def test_the_dashboard_in_chromium(
    gaesignals_store: Store, browser_page: tuple[Any, list[str]], tmp_path: Path
) -> None:
    """Logging in shows the signals, a chart and the counters kept current by the page's
    samples; requeue works; the page fits 400 px; no CSP violation, no console error."""
    page, errors = browser_page
    populate()
    with serving(DashboardApp(token=TOKEN)) as base:
        page.goto(f"{base}/")
        assert page.url == f"{base}/login"
        page.fill("input[name=token]", TOKEN)
        page.click("button:has-text('Log in')")
        page.wait_for_url(f"{base}/")
        rows = page.locator("#signals tbody tr[data-signal]")
        names = rows.evaluate_all("rows => rows.map(row => row.dataset.signal)")
        assert names == sorted(names) and "orders.paid" in names and "emails.welcome" in names
        assert page.locator("tr[data-signal='orders.paid'] td").first.inner_text() == "6"
        activity(30)
        page.wait_for_selector("#chart svg polyline.delivered", state="attached")
        sent = "tr[data-signal='audit.trail'] td[data-col='6']"
        page.wait_for_function(f'document.querySelector("{sent}").textContent === "30"')

        page.click("a:has-text('emails.welcome')")
        page.wait_for_selector("#dead-letters")
        assert "<img src=x onerror=alert(1)>" in page.locator("#dead-letters code").inner_text()
        page.click("button:has-text('Requeue dead letters')")
        page.wait_for_selector("text=Requeued 1 dead letter(s).")
        assert dead_letters("emails.welcome") == []
        assert pending("emails.welcome")["emails.welcome"].count == 1

        page.set_viewport_size({"width": 400, "height": 800})
        for path in ("/", "/signal?name=orders.paid"):
            page.goto(f"{base}{path}")
            page.wait_for_selector("#chart svg", state="attached")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 400, f"{path} scrolls sideways at 400 px: {width}"
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes().startswith(b"\x89PNG")
        assert page.evaluate("window.__violations") == []
    assert errors == []


def sibling_attacker(dashboard: str) -> Callable[..., Iterable[bytes]]:
    """A page on another port of the dashboard's host: it takes an anonymous CSRF pair from
    the dashboard's login form, plants its nonce cookie (cookies ignore ports) and offers a
    form posting that token to purge the dead letters of ``victim``."""

    def attacker(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] != "/":  # /favicon.ico: no second pair
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b""]
        with urllib.request.urlopen(f"{dashboard}/login", timeout=10) as answer:
            cookie = answer.headers["Set-Cookie"]
            text = answer.read().decode()
        nonce = re.search(r"gaesignals_csrf=([^;]+)", cookie)
        token = re.search(r'name="csrf" value="([^"]*)"', text)
        assert nonce is not None and token is not None
        body = (
            '<!doctype html><link rel="icon" href="data:,">'
            f'<form method="post" action="{escape(dashboard)}/signal/purge">'
            '<input type="hidden" name="name" value="victim">'
            f'<input type="hidden" name="csrf" value="{escape(token[1])}">'
            '<button type="submit">win a prize</button></form>'
        )
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Set-Cookie", f"gaesignals_csrf={nonce[1]}; Path=/; SameSite=Lax"),
        ]
        start_response("200 OK", headers)
        return [body.encode()]

    return attacker


def test_a_sibling_host_cannot_plant_a_csrf_pair(
    gaesignals_store: Store, browser_page: tuple[Any, list[str]]
) -> None:
    """An operator logged in, lured to a page served from another loopback port that plants
    an anonymous CSRF pair and posts it: the purge is refused and the dead letters stay."""
    page, errors = browser_page
    dead_letter("victim", {"keep": "me"})
    with serving(DashboardApp(token=TOKEN)) as base:
        page.goto(f"{base}/login")
        page.fill("input[name=token]", TOKEN)
        page.click("button:has-text('Log in')")
        page.wait_for_url(f"{base}/")
        with serving(sibling_attacker(base)) as evil:
            assert evil != base
            page.goto(f"{evil}/")
            planted = [c for c in page.context.cookies() if c["name"] == "gaesignals_csrf"]
            assert len(planted) == 1 and not planted[0]["httpOnly"]  # the attacker's own
            with page.expect_navigation() as navigation:
                page.click("button:has-text('win a prize')")
            assert navigation.value.status == 403
        assert "nothing was changed" in page.content()
        assert dead_letters("victim") == [{"keep": "me"}]
    assert [e for e in errors if "status of 403" not in e] == []  # the refusal alone


@pytest.mark.parametrize("ci", ["", "true"], ids=["local", "ci"])
def test_without_chromium_it_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    """A missing chromium skips the browser test only where CI is not set."""
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="chromium is not installed"):
        need_chromium(None)
    assert need_chromium("/usr/bin/chromium") == "/usr/bin/chromium"
