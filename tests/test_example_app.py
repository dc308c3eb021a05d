"""The example app, driven through WSGI on every store (sending, per-user signals, cron, outages,
its App Engine entry points), and its pages' layout in a real browser."""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

import pytest
import webtest

import gaesignals
from example_app import appengine_config, records
from example_app.handlers import CRON_PATH
from example_app.main import create_app
from example_app.signals import AUDIT, GUESTBOOK, guestbook_handler, notice_signal
from gaesignals import Signal, SignalsMiddleware
from gaesignals.stores import Store
from gaesignals.testing import CapturedSignals, DownStore

from .browser_support import CHROMIUM_ARGS, chromium, need_chromium, serving
from .example_app_support import (
    ROOT,
    _not_on_app_engine,  # noqa: F401 (an autouse fixture)
)

TOKEN = "t" * 40

pytestmark = pytest.mark.gaesignals_stores()  # every test using gaesignals_store, on each store


@pytest.fixture
def app(gaesignals_store: Store) -> webtest.TestApp:
    return webtest.TestApp(create_app(cron_token=TOKEN))


def as_user(app: webtest.TestApp, user_id: str) -> None:
    app.set_cookie("uid", user_id)


def test_send_in_one_request_deliver_in_the_next(app: webtest.TestApp) -> None:
    """The form's post only sends; the redirected get finds it published by the middleware."""
    response = app.post("/send", {"text": "hello, signals"}, status=303)
    assert records.pending(GUESTBOOK) == 1
    assert records.read("guestbook") == []

    page = response.follow()
    assert records.pending(GUESTBOOK) == 0
    [entry] = records.read("guestbook")
    assert entry["text"] == "hello, signals"
    assert entry["user"] == app.cookies["uid"]
    assert "hello, signals" in page.text
    assert "SignalsMiddleware</code> delivers it" in page.text
    kinds = [(event["kind"], event["signal"]) for event in records.read("events")]
    assert kinds == [("received", GUESTBOOK), ("sent", GUESTBOOK)]


def test_posted_text_is_captured_and_escaped(
    app: webtest.TestApp, gaesignals_captured: CapturedSignals
) -> None:
    """What the handler sent, seen through the plugin's capture; markup is shown, not run."""
    app.post("/send", {"text": "<script>alert(1)</script>"}, status=303).follow()
    assert gaesignals_captured.names() == [GUESTBOOK, AUDIT]
    [payload] = gaesignals_captured.data(GUESTBOOK)
    assert payload["text"] == "<script>alert(1)</script>"
    page = app.get("/")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>" not in page.text


def test_empty_text_sends_nothing(app: webtest.TestApp) -> None:
    page = app.post("/send", {"text": "  \x00 "}, status=303).follow()
    assert "Type something" in page.text
    assert records.pending(GUESTBOOK) == 0 and records.pending(AUDIT) == 0


def test_per_user_signal_waits_for_that_user(app: webtest.TestApp) -> None:
    """``user_<id>_notice`` is delivered by that user's inbox ``get``, and by nothing else."""
    as_user(app, "11111")
    app.post("/notify", {"to": "22222", "text": "your password changed"}, status=303).follow()
    assert records.pending(notice_signal("22222")) == 1

    inbox = app.get("/inbox")  # another user's inbox delivers only their own signal
    assert "your password changed" not in inbox.text
    assert records.pending(notice_signal("22222")) == 1

    as_user(app, "22222")
    page = app.get("/")  # the front page and its middleware leave it alone too
    assert records.pending(notice_signal("22222")) == 1
    assert "user_22222_notice" in page.text

    inbox = app.get("/inbox")
    assert "1 new notice(s) delivered; 0 still pending" in inbox.text
    assert "your password changed" in inbox.text
    assert records.read("inbox:22222")[0]["sender"] == "11111"
    assert records.read("inbox:11111") == []
    assert "0 new notice(s) delivered" in app.get("/inbox").text


def test_bad_notice_is_refused(app: webtest.TestApp) -> None:
    page = app.post("/notify", {"to": "bob", "text": "hi"}, status=303).follow()
    assert "numeric user id" in page.text


def test_a_new_visitor_gets_a_month_long_http_only_cookie(app: webtest.TestApp) -> None:
    """The visitor id cookie lasts 30 days, is HttpOnly and SameSite=Lax, and is built without
    webob's set_cookie (which calls the deprecated datetime.utcnow on Python 3.12+); the
    session cookie beside it lasts as long as the browser keeps it."""
    response = app.get("/")
    [header, session] = [v for k, v in response.headerlist if k == "Set-Cookie"]
    assert header.startswith("uid=")
    fields = {part.strip().split("=", 1)[0].lower() for part in header.split(";")}
    assert {"max-age", "expires", "path", "httponly", "samesite"} <= fields
    assert "Max-Age=2592000" in header and "SameSite=Lax" in header
    assert session.startswith("sid=") and "HttpOnly" in session and "SameSite=Lax" in session
    assert "max-age" not in session.lower() and "expires" not in session.lower()


def test_switch_user(app: webtest.TestApp) -> None:
    app.post("/user", {"uid": "54274"}, status=303)
    assert app.cookies["uid"] == "54274"
    assert "you are user <b>54274</b>" in app.get("/").text
    app.post("/user", {"uid": "not-a-number"}, status=303)
    assert app.cookies["uid"] == "54274"


def test_middleware_delivers_whatever_the_page(app: webtest.TestApp) -> None:
    """A payload sent by anyone is published at the start of the next request, any page."""
    Signal(GUESTBOOK).send({"text": "sent elsewhere", "user": "7"})
    status = app.get("/status.json").json
    assert status["pending"][GUESTBOOK] == 0
    assert [entry["text"] for entry in status["guestbook"]] == ["sent elsewhere"]


def test_appengine_config_wraps_in_signals_middleware() -> None:
    """The hook is the seed's: it returns a SignalsMiddleware delivering ``guestbook``."""

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return []

    wrapped = appengine_config.webapp_add_wsgi_middleware(inner)
    assert isinstance(wrapped, SignalsMiddleware)
    assert wrapped.app is inner
    assert wrapped.mapping.handlers(GUESTBOOK) == (guestbook_handler,)


def test_audit_is_left_for_cron(app: webtest.TestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """``audit`` waits for the cron endpoint, which refuses strangers and delivers reliably."""
    app.post("/send", {"text": "one"}, status=303).follow()
    app.post("/notify", {"to": "3", "text": "two"}, status=303).follow()
    assert records.pending(AUDIT) == 2

    assert app.get(CRON_PATH, status=403).json == {"error": "forbidden"}
    app.get(CRON_PATH, headers={"X-Appengine-Cron": "true"}, status=403)  # anyone can set it
    app.get(CRON_PATH, headers={"Authorization": "Bearer " + "x" * 40}, status=403)
    assert records.pending(AUDIT) == 2 and records.read("audit") == []

    answer = app.get(CRON_PATH, headers={"Authorization": f"Bearer {TOKEN}"}, status=200)
    assert answer.json == {"delivered": 2}
    assert records.pending(AUDIT) == 0
    actions = [a["action"] for a in records.read("audit")]
    assert actions == ["notified user 3", "signed the guestbook"]
    assert "signed the guestbook" in app.get("/").text

    app.post("/send", {"text": "three"}, status=303)
    monkeypatch.setattr("gaesignals.cron.on_app_engine", lambda: True)  # it strips the header
    answer = app.post(CRON_PATH, headers={"X-Appengine-Cron": "true"}, status=200)
    assert answer.json == {"delivered": 1}


def test_deliver_now_button_does_what_cron_does(app: webtest.TestApp) -> None:
    app.post("/send", {"text": "x"}, status=303)
    page = app.post("/deliver-now", status=303).follow()
    assert "1 payload(s) delivered" in page.text
    assert records.pending(AUDIT) == 0
    assert records.read("audit")[0]["action"] == "signed the guestbook"


def test_the_banners_show_only_what_the_server_did(app: webtest.TestApp) -> None:
    """The banner after a send or "Deliver now" shows what the server recorded for this
    visitor; a count, a signal or an id typed into the URL, or another visitor's id, shows no
    banner."""
    as_user(app, "11111")
    sent = app.post("/send", {"text": "x"}, status=303)
    assert "Sent <code>guestbook</code>" in sent.follow().text
    after = app.post("/deliver-now", status=303)
    assert "delivered=" not in after.location
    assert "1 payload(s) delivered" in after.follow().text
    for forged in ("/?delivered=2", "/?sent=guestbook", "/?sent=user_1_notice", "/?note=x"):
        page = app.get(forged).text
        assert "payload(s) delivered" not in page and "<p class=note>Sent" not in page, forged
    as_user(app, "22222")
    assert "payload(s) delivered" not in app.get(after.location).text
    assert "<p class=note>Sent" not in app.get(sent.location).text


def test_unknown_pages_and_outages_are_pages_of_the_app(app: webtest.TestApp) -> None:
    """A path no route serves is a 404 page in the app's own frame and style."""
    page = app.get("/no-such-page?x=<b>", status=404)
    assert page.content_type == "text/html"
    assert "<style>" in page.text and "404 · Not Found" in page.text
    assert "There is no page at /no-such-page." in page.text
    assert 'href="/"' in page.text


def test_a_refused_cron_request_logs_its_prefix_once(
    app: webtest.TestApp, caplog: pytest.LogCaptureFixture
) -> None:
    """The library's log lines carry no prefix of their own: the logger's name gives it, so
    the example's format (``%(name)s: %(message)s``) shows ``gaesignals:`` once."""
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        app.get(CRON_PATH, status=403)
    [record] = [r for r in caplog.records if "refused a delivery request" in r.getMessage()]
    line = logging.Formatter("%(name)s: %(message)s").format(record)
    assert line.startswith("gaesignals: refused a delivery request from ")
    assert line.count("gaesignals:") == 1


@pytest.mark.gaesignals_stores("memory")
def test_store_outage_is_a_503_not_a_crash(app: webtest.TestApp) -> None:
    gaesignals.configure(store=DownStore())
    response = app.post("/send", {"text": "lost?"}, status=503)
    assert response.content_type == "text/html" and "<style>" in response.text
    assert "503 · Service Unavailable" in response.text
    assert "Signals are unavailable right now" in response.text
    assert app.get(CRON_PATH, headers={"Authorization": f"Bearer {TOKEN}"}, status=503).json == {
        "error": "store unavailable"
    }


def test_main_wraps_for_app_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """On App Engine the app goes through ``wrap_wsgi_app``, outermost, as bundled services need."""
    if importlib.util.find_spec("google.appengine") is None:
        pytest.skip("appengine-python-standard is not installed")
    import google.appengine.api

    wrapped: list[Any] = []

    def fake_wrap(app: Any) -> Any:
        wrapped.append(app)
        return "wrapped"

    monkeypatch.setattr(google.appengine.api, "wrap_wsgi_app", fake_wrap)
    assert create_app() is not None and wrapped == []
    monkeypatch.setenv("GAE_ENV", "standard")
    assert create_app() == "wrapped"
    assert len(wrapped) == 1 and callable(wrapped[0])


@pytest.mark.gaesignals_stores("appengine")
def test_the_testbed_is_not_app_engine_to_main(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The testbed sets ``GAE_APPLICATION`` but is not App Engine, so the app is not wrapped:
    the real ``wrap_wsgi_app`` reloads ``threading`` and ``concurrent.futures.thread``, and the
    pool threads already running (the SDK's, asgiref's) drop out of their bookkeeping; nothing
    stops them at exit, and Python 3.13 then waits for them for ever."""
    import google.appengine.api

    wrapped: list[Any] = []
    monkeypatch.setattr(google.appengine.api, "wrap_wsgi_app", wrapped.append)
    assert "GAE_APPLICATION" in os.environ
    create_app()
    assert wrapped == []


def test_app_engine_files_describe_this_app() -> None:
    """app.yaml and cron.yaml pass the SDK's own validators and point at this app."""
    if importlib.util.find_spec("google.appengine") is None:
        pytest.skip("appengine-python-standard is not installed")
    from google.appengine.api import appinfo, croninfo

    with (ROOT / "app.yaml").open() as handle:
        info = appinfo.LoadSingleAppInfo(handle)
    assert info.runtime == "python313"
    assert info.app_engine_apis is True
    assert "gunicorn" in info.entrypoint and "example_app.main:app" in info.entrypoint
    assert "--bind :$PORT" in info.entrypoint
    with (ROOT / "cron.yaml").open() as handle:
        cron = croninfo.LoadSingleCron(handle)
    assert [job.url for job in cron.cron] == [CRON_PATH]
    requirements = (ROOT / "example_app" / "requirements.txt").read_text()
    for needed in ("webapp2==3.0.0b1", "WebOb", "gunicorn", "appengine-python-standard"):
        assert needed in requirements


# -- the layout, in a real browser ----------------------------------------------------------------

#: For each width: the page's overflow, each input against its card, the pending column, and
#: the table headers with a word the line breaks inside (a word over two lines of one header).
LAYOUT = """() => {
  const doc = document.documentElement;
  const inputs = [...document.querySelectorAll('.card input')].map(input => {
    const card = input.closest('.card').getBoundingClientRect();
    const box = input.getBoundingClientRect();
    return {name: input.name, left: box.left - card.left, right: card.right - box.right};
  });
  const pending = [...document.querySelectorAll('td.pending, td.zero')].map(cell => {
    const box = cell.getBoundingClientRect();
    return {left: box.left, right: box.right, width: box.width};
  });
  const broken = [];
  for (const th of document.querySelectorAll('th')) {
    const text = th.firstChild;
    for (const match of text.textContent.matchAll(/\\S+/g)) {
      const word = document.createRange();
      word.setStart(text, match.index);
      word.setEnd(text, match.index + match[0].length);
      const tops = new Set([...word.getClientRects()].map(rect => Math.round(rect.top)));
      if (tops.size > 1) broken.push(match[0]);
    }
  }
  return {scroll: doc.scrollWidth - doc.clientWidth, width: doc.clientWidth, inputs, pending,
          headers: document.querySelectorAll('th').length, broken};
}"""


@pytest.mark.gaesignals_stores("memory")
@pytest.mark.parametrize("width", [320, 400, 1000])
def test_the_pages_fit_their_screen(app: webtest.TestApp, width: int) -> None:
    """Served over HTTP, on a phone and on a desktop, the front page never scrolls sideways,
    every input stays inside its card, the pending column is in view and no table header
    breaks a word, with long text on the page; the inbox's headers keep their words too, and
    neither page logs a console error (a favicon the app lacks would log a 404)."""
    from playwright.sync_api import sync_playwright

    executable = need_chromium(chromium())
    as_user(app, "123456789")
    app.post("/send", {"text": "x" * 200}, status=303)  # a long word, left pending
    app.post("/notify", {"to": "123456789", "text": "y" * 200}, status=303)
    app.get("/inbox")
    errors: list[str] = []
    live_app = create_app(cron_token=TOKEN, poll_seconds=1)  # a poll ends soon after the page
    with sync_playwright() as p, serving(live_app) as base:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": 800})
            context.add_cookies([{"name": "uid", "value": "123456789", "url": base}])
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{base}/")  # never network-idle: the live card long-polls
            page.wait_for_selector("body[data-live=connected]", state="attached")
            layout = page.evaluate(LAYOUT)
            page.goto(f"{base}/inbox", wait_until="networkidle")
            inbox = page.evaluate(LAYOUT)
        finally:
            browser.close()
    assert layout["scroll"] == 0, layout
    assert len(layout["inputs"]) == 4
    for box in layout["inputs"]:
        assert box["left"] >= 0 and box["right"] >= 0, box
    assert len(layout["pending"]) == 3
    for cell in layout["pending"]:
        assert cell["width"] > 0 and cell["left"] >= 0 and cell["right"] <= layout["width"], cell
    assert layout["headers"] == 16 and layout["broken"] == []
    assert inbox["headers"] == 4 and inbox["broken"] == [] and inbox["scroll"] == 0
    assert errors == []
