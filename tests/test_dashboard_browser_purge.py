"""The dashboard's "Purge pending payloads" action in a real browser (Debian's chromium,
headless, through playwright), and the page's samples keeping the purged and debounced columns
current; no console error, no CSP violation.

Skipped only where chromium is missing and CI is not set; under CI a missing chromium fails.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

from gaesignals import pending, purge, send
from gaesignals.dashboard import TOKEN_ENV, DashboardApp
from gaesignals.inspection import REPORTED
from gaesignals.pytest_plugin import _missing as missing
from gaesignals.stores import Store
from tests.browser_support import CHROMIUM_ARGS, chromium, need_chromium, serving
from tests.dashboard_support import TOKEN


@pytest.fixture
def page_and_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[str]]]:
    """A chromium page, and the console errors and page errors it saw."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    executable = need_chromium(chromium())
    if importlib.util.find_spec("playwright") is None:
        missing("playwright is not installed (pip install -e . --group test)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.set_default_timeout(15_000)
            yield page, errors
        finally:
            browser.close()


def test_purging_pending_payloads_in_chromium(
    gaesignals_store: Store, page_and_errors: tuple[Any, list[str]]
) -> None:
    """A logged-in operator purges a signal's pending payloads with the button; the notice
    says how many; the page's samples then show a purge made elsewhere in the purged column."""
    from playwright.sync_api import expect

    page, errors = page_and_errors
    for n in range(4):
        send("orders.reindex", n)
    with serving(DashboardApp(["orders.reindex"], token=TOKEN)) as base:
        page.goto(f"{base}/login")
        page.fill("input[name=token]", TOKEN)
        page.click("button:has-text('Log in')")
        page.wait_for_url(f"{base}/")
        page.goto(f"{base}/signal?name=orders.reindex")
        page.click("button:has-text('Purge pending payloads')")
        page.wait_for_selector("text=Purged 4 pending payload(s).")
        assert pending("orders.reindex")["orders.reindex"].count == 0
        column = 6 + REPORTED.index("purged")
        cell = f"tr[data-signal='orders.reindex'] td[data-col='{column}']"
        assert page.locator(cell).inner_text() == "4"
        send("orders.reindex", "late")
        assert purge("orders.reindex") == 1
        expect(page.locator(cell)).to_have_text("5")  # polled by the driver, not by eval
    assert errors == []
