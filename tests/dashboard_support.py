"""Helpers of the dashboard tests: a token, logging in, reading a page's CSRF token, and
making dead letters."""

from __future__ import annotations

import re
from typing import Any

import webtest

from gaesignals import Reject, SignalMapping, deliver, send

TOKEN = "dashboard-token-" * 3
#: A name and a payload that would run script if anything were left unescaped.
HOSTILE_NAME = '<script>alert("name")</script>&"\''
HOSTILE_PAYLOAD = {"html": "<img src=x onerror=alert(1)>", "script": "</code><script>x()</script>"}


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csrf_of(page: webtest.TestResponse | str) -> str:
    """The CSRF token of the first form on ``page`` (an answer, or its text)."""
    found = re.search(r'name="csrf" value="([^"]*)"', page if isinstance(page, str) else page.text)
    assert found is not None, "no CSRF field on the page"
    return found[1]


def login(app: webtest.TestApp, token: str = TOKEN) -> webtest.TestResponse:
    """Log in through the form, as a browser does; returns the answer to the POST."""
    form = app.get("/login", status=200)
    return app.post("/login", {"csrf": csrf_of(form), "token": token})


def dead_letter(name: str, data: Any) -> None:
    """Send ``data`` to ``name`` and have its one reliable delivery reject it."""

    def reject(_: Any) -> None:
        raise Reject("refused by the test: <b>bold</b>")

    send(name, data)
    deliver(SignalMapping({name: reject}, max_attempts=1), reliable=True, retry_delay=0)
