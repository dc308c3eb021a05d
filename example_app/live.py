"""The example's browser signals: what the front page's JavaScript may call, and what Python
sends to it.

* ``ping`` (anyone may call it; runs during the call): answers ``pong`` to the window, the
  session, the user or everyone, as the page asks, so each kind of target can be seen.
* ``wave`` (signed-in users only): tells everyone, with ``waved``.
* ``audit`` is an ordinary signal, not declared for the browser: the page's button for it is
  refused, and the page says so.
* ``guestbook.published`` and ``notice`` come from the other handlers (``signals.py`` and
  ``handlers.py``): a greeting for every window, a notice for one user's windows.

The bridge is mounted at ``/signals`` in ``main.py``, beside the middleware rather than inside
it: a long-poll is never a delivery request.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import webapp2

import gaesignals
from gaesignals import send_to_browser
from gaesignals.browser import Bridge, BrowserCall
from gaesignals.browser.frameworks.webapp2 import identify_by

PING = "ping"
PONG = "pong"
WAVE = "wave"
WAVED = "waved"
PUBLISHED = "guestbook.published"
NOTICE = "notice"
TARGETS = ("window", "session", "user", "everyone")

SESSION_COOKIE = "sid"
SIGNED_IN_COOKIE = "signed_in"
PREFIX = "/signals"
#: The front page's script, served at ``/live.js``.
SCRIPT = Path(__file__).with_name("live.js")

_USER_ID = re.compile(r"\d{1,9}\Z")
#: What the pages make a session id look like (and the bridge checks).
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")


def _user(request: webapp2.Request) -> str | None:
    """The user, once signed in with the "switch to user" form (``signed_in``): a guest has
    a session but no user."""
    user = request.cookies.get("uid", "")
    signed_in = request.cookies.get(SIGNED_IN_COOKIE) == "1" and _USER_ID.match(user)
    return str(user) if signed_in else None


def _session(request: webapp2.Request) -> str | None:
    """The browser's session, from the ``sid`` cookie the pages set."""
    session = request.cookies.get(SESSION_COOKIE, "")
    return str(session) if SESSION_ID.match(session) else None


#: Who sends a request, from the example's cookies, for the bridge and the pages alike.
identify = identify_by(user=_user, session=_session)


def ping(call: BrowserCall) -> None:
    """Answer ``pong`` to the target the page asked for (a guest has no user to answer)."""
    to = call["data"]["to"]
    pong = {"to": to, "user": call["user"], "pid": os.getpid()}
    if to == "window" and call["window"]:
        send_to_browser(PONG, pong, window=call["window"])
    elif to == "session" and call["session"]:
        send_to_browser(PONG, pong, session=call["session"])
    elif to == "user" and call["user"]:
        send_to_browser(PONG, pong, user=call["user"])
    elif to == "everyone":
        send_to_browser(PONG, pong, broadcast=True)


def wave(call: BrowserCall) -> None:
    """Tell every window that this (signed-in) user waves."""
    send_to_browser(WAVED, {"user": call["user"]}, broadcast=True)


def ping_data_is_valid(data: Any) -> None:
    """The schema of ``ping``: a target the handler knows, and nothing else."""
    if not (isinstance(data, dict) and set(data) == {"to"} and data["to"] in TARGETS):
        raise ValueError("ping takes {'to': 'window' | 'session' | 'user' | 'everyone'}")


def declare_browser_signals() -> None:
    """Declare what the browser may call, and connect the handlers those calls run."""
    gaesignals.declare(PING, from_browser=True, delayed=False, schema=ping_data_is_valid)
    gaesignals.declare(WAVE, from_browser="authenticated", delayed=False)
    gaesignals.connect(PING, ping)
    gaesignals.connect(WAVE, wave)


def bridge(*, poll_seconds: float = 20) -> Bridge:
    """The bridge the page talks to, under ``/signals``."""
    return Bridge(prefix=PREFIX, identify=identify, poll_seconds=poll_seconds)
