"""The dashboard's "Purge pending payloads" action (behind the same auth and CSRF token as the
other actions) and the issue-29 columns: coalesced, cancelled, purged and debounced."""

from __future__ import annotations

import pytest
import webtest

import gaesignals
from gaesignals import dead_letters, pending, send, stats
from gaesignals.inspection import REPORTED
from tests.dashboard_support import csrf_of, dead_letter


def test_purge_pending_drops_the_pending_payloads_only(browser: webtest.TestApp) -> None:
    """The action drops every pending payload (its dead letters stay), says how many, and
    the purged column counts them."""
    dead_letter("pp", "kept")
    for n in range(3):
        send("pp", n)
    page = browser.get("/signal", {"name": "pp"})
    assert "Purge pending payloads" in page.text
    answer = browser.post(
        "/signal/purge-pending", {"name": "pp", "csrf": csrf_of(page)}, status=303
    )
    assert answer.headers["Location"] == "/signal?name=pp&done=purge-pending&n=3"
    assert "Purged 3 pending payload(s)." in answer.follow().text
    assert pending("pp")["pp"].count == 0 and dead_letters("pp") == ["kept"]
    assert stats("pp")["pp"]["purged"] == 3
    row = browser.get("/", {"q": "pp"}).html.find("tr", attrs={"data-signal": "pp"})
    cells = [td.text for td in row.find_all("td")]
    assert cells[6 + REPORTED.index("purged")] == "3"


@pytest.mark.parametrize("csrf", [None, "", "forged"], ids=["missing", "empty", "forged"])
def test_purge_pending_without_the_csrf_token_changes_nothing(
    browser: webtest.TestApp, csrf: str | None
) -> None:
    """Without the page's own CSRF token the purge is a 403 and every payload stays."""
    send("cs", "pending")
    form = {"name": "cs"} if csrf is None else {"name": "cs", "csrf": csrf}
    assert "nothing was changed" in browser.post("/signal/purge-pending", form, status=403).text
    assert pending("cs")["cs"].count == 1


def test_purge_pending_needs_a_login(app: webtest.TestApp) -> None:
    """Without a login or the bearer token the purge is refused and nothing changes."""
    send("anon", 1)
    app.post("/signal/purge-pending", {"name": "anon"}, status=403)
    assert pending("anon")["anon"].count == 1


def test_the_new_counters_and_debounced_are_columns_and_json(browser: webtest.TestApp) -> None:
    """The list has coalesced, cancelled, purged and debounced columns; the JSON the page
    samples carries them."""
    gaesignals.declare("cols")
    head = [th.text for th in browser.get("/").html.find(id="signals").find_all("th")]
    assert {"coalesced", "cancelled", "purged", "debounced"} <= set(head)
    (row,) = browser.get("/api/signal", {"name": "cols"}).json["signals"]
    assert {row[k] for k in ("coalesced", "cancelled", "purged", "debounced")} == {0}
