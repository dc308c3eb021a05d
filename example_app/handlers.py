"""The example's pages, as webapp2 request handlers.

Sending happens in ``post`` (a form submit is the event); delivery of the per-user signal
happens in ``get`` once the user is known. The front page shows what is pending and what the
signal handlers have done, so a payload can be watched from sent to delivered.
"""

from __future__ import annotations

import html
import http.cookies
import json
import os
import random
import re
import secrets
import time
from typing import Any

import webapp2

from gaesignals import GaeSignalsError, Signal, deliver, send_to_browser
from gaesignals.browser import csrf_token
from gaesignals.config import get_settings

from . import records
from .live import NOTICE, SCRIPT, SESSION_COOKIE, SESSION_ID, SIGNED_IN_COOKIE, identify
from .signals import AUDIT, CRON_MAPPING, GUESTBOOK, notice_handler, notice_signal

#: How long the visitor's id cookie lives (30 days); the session cookie lives as long as the
#: browser keeps it (no expiry), which is what a "session" of windows means here.
_COOKIE_SECONDS = 30 * 24 * 3600

CRON_PATH = "/tasks/deliver-signals"
MAX_TEXT = 200
_USER_ID = re.compile(r"\d{1,9}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: The page's icon, inline: without one the browser asks for /favicon.ico, which no route
#: serves, and logs the 404 in its console.
FAVICON = (
    "data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'>"
    "<circle cx='8' cy='8' r='6' fill='%23b35c00'/></svg>"
)
STYLE = """
*, *::before, *::after { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem;
       color: #222; background: #fafafa; overflow-wrap: anywhere; }
h1 { margin: 0 0 .2rem; } h2 { font-size: 1.1rem; margin: 1.4rem 0 .4rem; }
header p, .hint { color: #666; margin: .2rem 0; } code { background: #eee; padding: 0 .2rem; }
.grid { display: grid; gap: .8rem;
        grid-template-columns: repeat(auto-fit, minmax(min(17rem, 100%), 1fr)); }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .8rem;
        min-width: 0; }
.card h2 { margin-top: 0; } input { padding: .3rem; max-width: 100%; }
form { margin: .4rem 0; display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; }
input[name=text] { flex: 1 1 10rem; min-width: 0; }
button { padding: .3rem .8rem; cursor: pointer; }
table { border-collapse: collapse; width: 100%; background: #fff; }
td, th { border-bottom: 1px solid #e5e5e5; padding: .3rem .5rem; text-align: left; }
th { overflow-wrap: normal; }  /* a header's words stay whole; the cells below give way */
@media (max-width: 30rem) { td, th { padding: .3rem .25rem; } }  /* five columns in 320 px */
.pending { font-weight: bold; color: #b35c00; } .zero { color: #2a7d2a; }
.note { background: #eef6ff; border: 1px solid #bcd8f5; border-radius: 6px; padding: .5rem .8rem; }
.error { background: #fff0f0; border-color: #f0b8b8; }
#live-log { list-style: none; margin: .4rem 0 0; padding: 0; max-height: 14rem; overflow-y: auto; }
#live-log li { border-top: 1px solid #eee; padding: .15rem 0; }
#live-log .refused, #live-log .reset { color: #a33; } #live-log .notice { color: #1d5fa8; }
tr.live td { background: #f3fbf3; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _clock(at: object) -> str:
    if not isinstance(at, int | float):
        return "?"
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


def clean_text(value: str | None) -> str:
    """Form text made safe to store and show: no control characters, at most MAX_TEXT long."""
    return _CONTROL.sub(" ", value or "").strip()[:MAX_TEXT]


class Request(webapp2.Request):
    """webapp2 spools every request body to a temporary file (its limit is 0) that nobody
    closes; the example's forms are tiny, so keep bodies in memory as WebOb does by default."""

    request_body_tempfile_limit = 64 * 1024


class Page(webapp2.RequestHandler):
    """Knows the visitor (cookies standing in for a login and a session) and renders the
    common frame. A new visitor gets a user id at once but is a guest until they sign in
    (the "switch to user" form), which is what the browser signals' permissions look at."""

    def user_id(self) -> str:
        """The current user's id, from the cookie, or a new one (and the cookie to keep it)."""
        found = self.request.cookies.get("uid", "")
        if _USER_ID.match(found):
            return str(found)
        user_id = str(random.randint(10000, 99999))
        self.set_user(user_id)
        return user_id

    def session_id(self) -> str:
        """This browser's session: one id shared by its windows, kept until it closes."""
        found = self.request.cookies.get(SESSION_COOKIE, "")
        if SESSION_ID.match(found):
            return str(found)
        session = secrets.token_urlsafe(16)
        self.set_cookie(SESSION_COOKIE, session, max_age=None)
        return session

    def set_user(self, user_id: str, *, signed_in: bool = False) -> None:
        self.set_cookie("uid", user_id)
        if signed_in:
            self.set_cookie(SIGNED_IN_COOKIE, "1")

    def set_cookie(self, name: str, value: str, *, max_age: int | None = _COOKIE_SECONDS) -> None:
        """Set an HttpOnly, SameSite=Lax cookie, for this request (the page reads it back) and
        the browser's next ones."""
        self.request.cookies[name] = value
        # Built with the standard library, not webob's set_cookie, which computes Expires with
        # datetime.utcnow(), deprecated since Python 3.12 (App Engine runs 3.13).
        cookie = http.cookies.SimpleCookie()
        cookie[name] = value
        morsel = cookie[name]
        morsel["path"] = "/"
        if max_age is not None:
            morsel.update({"max-age": str(max_age), "expires": max_age})
        morsel["httponly"] = True
        morsel["samesite"] = "Lax"
        self.response.headers.add("Set-Cookie", morsel.OutputString())

    def redirect_with_note(self, **note: Any) -> None:
        """Redirect to the front page, which tells what this request did. The note goes
        through the shared record under a random id, never in the URL: the page shows only
        what the server did for this visitor, and a hand-made URL shows nothing."""
        note_id = secrets.token_urlsafe(12)
        records.push(f"notes:{self.user_id()}", id=note_id, **note)
        self.redirect(f"/?note={note_id}", code=303)

    def render(self, title: str, body: str, *, live: bool = False) -> None:
        """The page in the common frame; ``live`` adds the browser signals' client, with the
        CSRF token of this visitor's session for its calls."""
        store = get_settings().store
        me = self.user_id()
        visitor = identify(self.request.environ)
        head = ""
        if live:
            head = (
                f'<meta name="gaesignals-csrf" content="{_e(csrf_token(visitor))}">'
                '<script type=module src="/live.js"></script>'
            )
        guest = "" if visitor.user else " (a guest)"
        self.response.content_type = "text/html"
        self.response.write(
            html_page(
                title,
                f"<p>store <code>{_e(store)}</code> · served by pid {os.getpid()} · "
                f"you are user <b>{_e(me)}</b>{guest} · "
                '<a href="/inbox">your inbox</a></p>',
                body,
                head=head,
            )
        )

    def handle_exception(self, exception: Exception, debug: bool) -> None:
        if not isinstance(exception, GaeSignalsError):
            raise exception
        error_page(self.response, 503, f"Signals are unavailable right now: {exception}")


def html_page(title: str, header: str, body: str, *, head: str = "") -> str:
    """A whole page in the example's frame: the title links home, ``header``, ``body`` and
    ``head`` (more of the page's head) are HTML already escaped by the caller."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f'<link rel=icon href="{FAVICON}">'
        f"<title>{_e(title)}</title><style>{STYLE}</style>{head}</head><body><header>"
        f'<h1><a href="/" style="color:inherit;text-decoration:none">{_e(title)}</a></h1>'
        f"{header}</header>{body}</body></html>"
    )


def error_page(response: Any, status: int, message: str) -> None:
    """An error as a page in the example's frame, so a 404 or a 503 looks like the app."""
    response.set_status(status)
    response.content_type = "text/html"
    response.write(
        html_page(
            f"{status} · {response.status_message}",
            "",
            f"<p class='note error'>{_e(message)}</p><p><a href='/'>Back to the front page</a></p>",
        )
    )


def not_found(request: Any, response: Any, exception: Exception) -> None:
    """webapp2's handler for a path no route matches."""
    error_page(response, 404, f"There is no page at {request.path}.")


class Dashboard(Page):
    """The front page: forms that send, what is pending, what the handlers did."""

    def get(self) -> None:
        me = self.user_id()
        self.session_id()
        notice = notice_signal(me)
        flash = _flash(self.request.GET, me)
        self.render("gaesignals example", flash + _forms(me) + _tables(notice), live=True)


class SendHandler(Page):
    """Sign the guestbook: send the text now, publish it when the signal is delivered."""

    def post(self) -> None:
        text = clean_text(self.request.POST.get("text"))
        if not text:
            self.redirect("/?error=empty", code=303)
            return
        me = self.user_id()
        Signal(GUESTBOOK).send({"text": text, "user": me, "sent_at": time.time()})
        Signal(AUDIT).send({"action": "signed the guestbook", "user": me, "sent_at": time.time()})
        records.push("events", kind="sent", signal=GUESTBOOK, detail=text)
        self.redirect_with_note(sent=GUESTBOOK)


class NotifyHandler(Page):
    """Send a notice to one user's own signal, ``user_<id>_notice``."""

    def post(self) -> None:
        to = self.request.POST.get("to", "").strip()
        text = clean_text(self.request.POST.get("text"))
        if not _USER_ID.match(to) or not text:
            self.redirect("/?error=notice", code=303)
            return
        me = self.user_id()
        name = notice_signal(to)
        # An unread notice from this user is replaced by their newer one: coalesced per sender.
        Signal(name).send({"text": text, "from": me, "sent_at": time.time()}, coalesce=f"from_{me}")
        send_to_browser(NOTICE, {"text": text, "from": me}, user=to)  # that user's windows
        Signal(AUDIT).send({"action": f"notified user {to}", "user": me, "sent_at": time.time()})
        records.push("events", kind="sent", signal=name, detail=text)
        self.redirect_with_note(sent=name)


class InboxHandler(Page):
    """A user's notices, delivered here: only this user's requests pay for this signal."""

    def get(self) -> None:
        me = self.user_id()  # the user is known from here on
        name = notice_signal(me)
        delivered = deliver([(name, notice_handler)])
        rows = "".join(
            f"<tr><td>{_clock(n.get('at'))}</td><td>{_e(n.get('sender') or '?')}</td>"
            f"<td>{_e(n.get('text'))}</td><td>pid {_e(n.get('pid'))}</td></tr>"
            for n in records.read(f"inbox:{me}")
        )
        self.render(
            f"Inbox of user {me}",
            f'<p class=note>This visit called <code>deliver([("{_e(name)}", notice_handler)])'
            f"</code> inside <code>get</code>: {delivered} new notice(s) delivered; "
            f"{records.pending(name)} still pending.</p>"
            "<table><tr><th>received</th><th>from user</th><th>text</th><th>by</th></tr>"
            f"{rows or '<tr><td colspan=4>No notices yet.</td></tr>'}</table>"
            '<p><a href="/">Back</a></p>',
        )


class SwitchUserHandler(Page):
    """Become another user, signed in (the example's stand-in for a login)."""

    def post(self) -> None:
        user_id = self.request.POST.get("uid", "").strip()
        if _USER_ID.match(user_id):
            self.set_user(user_id, signed_in=True)
        self.redirect("/", code=303)


class DeliverNowHandler(Page):
    """Do what the cron job does, for a local run where no cron calls."""

    def post(self) -> None:
        delivered = deliver(CRON_MAPPING, reliable=True)
        self.redirect_with_note(delivered=delivered)


class StatusHandler(Page):
    """The front page's numbers as JSON, for scripts and curl."""

    def get(self) -> None:
        me = self.user_id()
        status: dict[str, Any] = {
            "store": repr(get_settings().store),
            "pid": os.getpid(),
            "user": me,
            "pending": {n: records.pending(n) for n in (GUESTBOOK, notice_signal(me), AUDIT)},
            "guestbook": records.read("guestbook"),
            "audit": records.read("audit"),
            "events": records.read("events"),
        }
        self.response.content_type = "application/json"
        self.response.write(json.dumps(status, indent=1) + "\n")


class LiveScript(webapp2.RequestHandler):
    """The front page's script (``live.js``), an ES module beside this file: no build step."""

    def get(self) -> None:
        self.response.content_type = "text/javascript"
        self.response.headers["Cache-Control"] = "no-cache"
        self.response.write(SCRIPT.read_bytes())


ROUTES = [
    ("/", Dashboard),
    ("/send", SendHandler),
    ("/notify", NotifyHandler),
    ("/inbox", InboxHandler),
    ("/user", SwitchUserHandler),
    ("/deliver-now", DeliverNowHandler),
    ("/status.json", StatusHandler),
    ("/live.js", LiveScript),
]


def _flash(query: Any, me: str) -> str:
    if query.get("error") == "empty":
        return "<p class='note error'>Type something to send.</p>"
    if query.get("error") == "notice":
        return "<p class='note error'>A notice needs a numeric user id and some text.</p>"
    note_id = query.get("note", "")
    notes = records.read(f"notes:{me}") if note_id else []
    note = next((entry for entry in notes if entry.get("id") == note_id), {})
    sent = note.get("sent")
    if sent == GUESTBOOK:
        return (
            "<p class=note>Sent <code>guestbook</code> in <code>SendHandler.post</code>, then "
            "redirected here: the <code>SignalsMiddleware</code> delivers it at the start of "
            "the next request, this one included. See the timeline.</p>"
        )
    if isinstance(sent, str):
        return (
            f"<p class=note>Sent <code>{_e(sent)}</code>. It waits until that user opens "
            "their inbox, which calls <code>deliver()</code> for that user's signal only.</p>"
        )
    if isinstance(note.get("delivered"), int):
        return (
            "<p class=note>Reliable delivery of <code>audit</code> ran: "
            f"{note['delivered']} payload(s) delivered.</p>"
        )
    return ""


def _forms(me: str) -> str:
    return f"""
<section class=grid>
 <div class=card><h2>1 · Sign the guestbook</h2>
  <form method=post action=/send><input name=text maxlength={MAX_TEXT} required
   placeholder="Hello from the example"><button>Send</button></form>
  <p class=hint><code>Signal('guestbook').send(...)</code> in <code>post</code>; the
   <code>SignalsMiddleware</code> from <code>appengine_config.py</code> delivers it at the
   start of the next request.</p></div>
 <div class=card><h2>2 · Notify a user</h2>
  <form method=post action=/notify>user <input name=to value="{_e(me)}" size=9
   pattern="[0-9]{{1,9}}" required> <input name=text maxlength={MAX_TEXT} required
   placeholder="Your password was changed"><button>Notify</button></form>
  <p class=hint>Sends <code>user_&lt;id&gt;_notice</code>; it waits until that user opens
   <a href="/inbox">their inbox</a>, whose <code>get</code> calls <code>deliver()</code>.</p>
  <form method=post action=/user>switch to user <input name=uid size=9 pattern="[0-9]{{1,9}}"
   required><button>Switch</button></form></div>
 <div class=card><h2>3 · Audit trail, reliable</h2>
  <p>Every action also sends <code>audit</code>. No page view delivers it: App Engine cron
   calls <code>{CRON_PATH}</code> every minute, which delivers it reliably (at least once).</p>
  <form method=post action=/deliver-now><button>Deliver now, as cron would</button></form>
 </div>
 <div class=card id=live><h2>4 · Live, in every open window</h2>
  <form id=ping>ping <select name=to><option value=window>this window</option>
   <option value=session>this browser's windows</option><option value=user>all my windows
   </option><option value=everyone>everyone</option></select><button>Ping</button></form>
  <form><button type=button data-call=wave>Wave to everyone</button>
   <button type=button data-call=audit>Send audit from the page</button></form>
  <p class=hint>The page's JavaScript calls Python signals (<code>call("ping", ...)</code>)
   and hears what Python sends it (<code>send_to_browser(...)</code>): a greeting signed in
   any window, a notice for your user. Waving needs a signed-in user (switch user above);
   <code>audit</code> is not callable from a browser at all.</p>
  <ul id=live-log aria-live=polite></ul></div>
</section>"""


def _pending_row(name: str, delivered_by: str) -> str:
    count = records.pending(name)
    return (
        f"<tr><td><code>{_e(name)}</code></td>"
        f"<td class={'pending' if count else 'zero'}>{count}</td><td>{delivered_by}</td></tr>"
    )


def _tables(notice: str) -> str:
    pending_rows = "".join(
        _pending_row(name, who)
        for name, who in (
            (GUESTBOOK, "the middleware, at the start of every request"),
            (notice, "your inbox page (<code>deliver()</code> in <code>get</code>)"),
            (AUDIT, f"cron at <code>{CRON_PATH}</code>, reliable mode"),
        )
    )
    guestbook = "".join(
        f"<tr><td>{_clock(g.get('at'))}</td><td>{_e(g.get('user') or '?')}</td>"
        f"<td>{_e(g.get('text'))}</td><td>pid {_e(g.get('pid'))}</td></tr>"
        for g in records.read("guestbook")
    )
    audit = "".join(
        f"<tr><td>{_clock(a.get('at'))}</td><td>{_e(a.get('user') or '?')}</td>"
        f"<td>{_e(a.get('action'))}</td><td>pid {_e(a.get('pid'))}</td></tr>"
        for a in records.read("audit")
    )
    events = "".join(
        f"<tr><td>{_clock(ev.get('at'))}</td><td>pid {_e(ev.get('pid'))}</td>"
        f"<td>{_e(ev.get('kind'))}</td><td><code>{_e(ev.get('signal'))}</code></td>"
        f"<td>{_e(ev.get('detail'))}</td></tr>"
        for ev in records.read("events")
    )
    return (
        "<h2>Pending payloads</h2><table><tr><th>signal</th><th>pending</th>"
        f"<th>delivered by</th></tr>{pending_rows}</table>"
        "<h2>Guestbook, as published by the handler</h2>"
        "<table id=guestbook><tr><th>published</th><th>user</th><th>text</th><th>by</th></tr>"
        f"{guestbook or '<tr><td colspan=4>Nothing published yet.</td></tr>'}</table>"
        "<h2>Audit log, written by the reliable handler</h2>"
        "<table><tr><th>written</th><th>user</th><th>action</th><th>by</th></tr>"
        f"{audit or '<tr><td colspan=4>Nothing delivered yet.</td></tr>'}</table>"
        "<h2>Timeline, newest first</h2>"
        "<table><tr><th>time</th><th>worker</th><th>event</th><th>signal</th><th>detail</th></tr>"
        f"{events or '<tr><td colspan=5>Nothing happened yet.</td></tr>'}</table>"
    )
