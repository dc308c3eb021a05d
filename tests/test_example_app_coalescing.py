"""The example app coalesces notices per sender: of the unread notices one user sent another,
the inbox delivers only the newest; notices from different users stay apart. Through WSGI,
on each store."""

from __future__ import annotations

import pytest
import webtest

from example_app import records
from example_app.main import create_app
from example_app.signals import notice_signal
from gaesignals import stats
from gaesignals.stores import Store

from .example_app_support import _not_on_app_engine  # noqa: F401 (an autouse fixture)

pytestmark = pytest.mark.gaesignals_stores()


@pytest.fixture
def app(gaesignals_store: Store) -> webtest.TestApp:
    return webtest.TestApp(create_app(cron_token="t" * 40))


def test_an_unread_notice_is_replaced_by_the_senders_newer_one(app: webtest.TestApp) -> None:
    """Two notices from one user and one from another, then the inbox: two are delivered,
    the first user's newer one and the other's; the older one is counted coalesced."""
    for sender, text in (("1", "draft"), ("1", "final"), ("2", "hello")):
        app.set_cookie("uid", sender)
        app.post("/notify", {"to": "9", "text": text}, status=303)
    app.set_cookie("uid", "9")
    inbox = app.get("/inbox")
    assert "2 new notice(s) delivered; 0 still pending" in inbox.text
    assert sorted(entry["text"] for entry in records.read("inbox:9")) == ["final", "hello"]
    assert stats(notice_signal("9"))[notice_signal("9")]["coalesced"] == 1
