"""The dashboard's WSGI app: routing, refusals and the headers every answer carries.

Routes, under wherever the app is mounted: ``/`` the signal list (``?page=``, ``?q=``),
``/signal?name=`` one signal, ``POST /signal/deliver|requeue|purge|purge-pending?name=`` its
actions (the name in the URL, or a form field; ``purge`` drops its dead letters,
``purge-pending`` its pending payloads), ``/api/signals`` and ``/api/signal?name=`` the same numbers
as JSON (what the page's chart samples), ``/metrics`` for Prometheus, ``/login`` and
``/logout``, and ``/static/`` the script and stylesheet.
Nothing it is asked raises: a bad request gets a 4xx page, a store that is down a page that says
so, and anything unforeseen a 500 page with the traceback in the log, not in the answer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from functools import cache
from importlib.resources import files
from typing import Any

from .. import frames
from ..cancelling import purge
from ..config import get_settings
from ..delivery import (
    DeadLetter,
    SignalMapping,
    dead_letter_details,
    deliver,
    purge_dead_letters,
    requeue_dead_letters,
)
from ..exceptions import InvalidSignalName, StoreUnavailable
from ..inspection import Overview, close_session, overview
from ..keys import check_name
from ..registration import registry
from . import pages
from .auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Guard,
    HostAuth,
    login_binding,
    set_cookie,
)
from .metrics import CONTENT_TYPE_LATEST, exposition, metrics_registry
from .wsgi import HTML, Refused, Request, Response, json_answer, page, redirect

logger = logging.getLogger("gaesignals")

#: What every answer says, whatever it is.
SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
]
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
DEFAULT_PAGE_SIZE = 50
NOTICES = {
    "deliver": "Delivered {n} payload(s).",
    "requeue": "Requeued {n} dead letter(s).",
    "purge": "Purged {n} dead letter(s).",
    "purge-pending": "Purged {n} pending payload(s).",
    "unhandled": "No receiver of this signal is known here: nothing was delivered.",
}
_ROUTES = {
    "/": "GET",
    "/signal": "GET",
    "/api/signals": "GET",
    "/api/signal": "GET",
    "/metrics": "GET",
    "/signal/deliver": "POST",
    "/signal/requeue": "POST",
    "/signal/purge": "POST",
    "/signal/purge-pending": "POST",
    "/logout": "POST",
}
_ACTIONS: dict[str, Callable[[str], int]] = {
    "requeue": requeue_dead_letters,
    "purge": purge_dead_letters,
    "purge-pending": purge,
}


class DashboardApp:
    """A WSGI app showing the signals and acting on them (see :mod:`gaesignals.dashboard`).

    :param signals: a :class:`~gaesignals.SignalMapping` (its names are shown, and "deliver
        now" runs its handlers), a list of names, or None: every signal registered or declared
        in :data:`gaesignals.registry` at each request.
    :param token: the bearer token (32+ bytes); None reads ``GAESIGNALS_DASHBOARD_TOKEN``.
    :param auth: the host app's check, ``auth(environ) -> bool``, asked on every request.
    :param trust_host_auth: True when the host app already lets only operators reach it.
    :param secret: the key of the CSRF MACs, and with the token, of the sessions'; by default
        derived from the token, else random per process (give one when several processes
        serve it behind host auth). A new token ends every session, whatever ``secret``.
    :param page_size: signals per page of the list.
    :raises ConfigurationError: with no way to authenticate, or a token that is too short.
    """

    def __init__(
        self,
        signals: SignalMapping | Iterable[str] | None = None,
        *,
        token: str | None = None,
        auth: HostAuth | None = None,
        trust_host_auth: bool = False,
        secret: str | bytes | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        self._guard = Guard(token, auth, trust_host_auth, secret)
        self._mapping = signals if isinstance(signals, SignalMapping) else None
        if isinstance(signals, str):
            raise TypeError("signals must be a SignalMapping, a list of names or None, not a str")
        self._names = None if signals is None else [check_name(name) for name in signals]
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be a positive int, got {page_size!r}")
        self.page_size = page_size
        self._metrics = metrics_registry(self.names)

    def __repr__(self) -> str:
        return f"DashboardApp({self._names!r})"

    def names(self) -> list[str]:
        """The signals listed: those given, else every one registered or declared now."""
        if self._names is not None:
            return list(self._names)
        return sorted(set(registry.names()) | set(registry.declared()))

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        req = Request(environ)
        try:
            response = self._dispatch(req)
        except Refused as refused:
            response = refused.response
        except Exception:
            logger.exception("the dashboard failed on %s %s", req.method, req.path)
            response = page(req, "500 Internal Server Error", "Error", "See the server's log.")
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        if req.fresh_nonce and ("Content-Type", HTML) in response.headers:  # pages with forms
            nonce = set_cookie(environ, req.cookie_path, CSRF_COOKIE, req.nonce, 86400)
            headers.append(("Set-Cookie", nonce))
        start_response(response.status, headers + SECURITY_HEADERS)
        return [b""] if req.method == "HEAD" else [response.body]

    def _dispatch(self, req: Request) -> Response:
        if req.path.startswith("/static/"):
            return self._static(req)
        if req.path == "/login":
            return self._login(req)
        binding = self._guard.admit(req.environ, req.jar, req.nonce)
        if binding is None:
            return self._refuse(req)
        req.binding = binding
        method = _ROUTES.get(req.path)
        if method is None:
            return page(req, "404 Not Found", "Not found", "No such page.", csrf=self._logout(req))
        if req.method != method and not (method == "GET" and req.method == "HEAD"):
            allow = "GET, HEAD" if method == "GET" else method
            answer = page(req, "405 Method Not Allowed", "Not allowed", f"Use {method}.")
            return answer._replace(headers=[*answer.headers, ("Allow", allow)])
        if method == "POST":
            self._check_csrf(req, req.binding)
        return self._handle(req)

    def _handle(self, req: Request) -> Response:
        path = req.path
        if path == "/":
            return self._list(req)
        if path == "/signal":
            return self._detail(req)
        if path == "/api/signals":
            names, _, _, _ = self._select(req)
            return json_answer("200 OK", _report(overview(names), names))
        if path == "/api/signal":
            name = self._name(req, req.arg("name"))
            return json_answer("200 OK", _report(overview([name]), [name]))
        if path == "/metrics":
            body = exposition(self._metrics)
            return Response("200 OK", body, [("Content-Type", CONTENT_TYPE_LATEST)])
        if path == "/logout":
            return self._end_session(req)
        return self._act(req, path.rpartition("/")[2])

    def _csrf(self, req: Request) -> str:
        return self._guard.csrf_token(req.binding)

    def _logout(self, req: Request) -> str:
        """The CSRF token of the logout form, or "" where there is no login session to end."""
        return self._csrf(req) if req.binding.startswith("session|") else ""

    def _end_session(self, req: Request) -> Response:
        """Logging out: the session's record goes, so its cookie, replayed, is refused in
        every process; the browser forgets the cookie."""
        gone = [("Set-Cookie", set_cookie(req.environ, req.cookie_path, SESSION_COOKIE, "", 0))]
        kind, _, session = req.binding.partition("|")
        try:
            if kind == "session":
                close_session(session)
        except StoreUnavailable as error:
            text = f"The store is unavailable ({error}): the session may outlive this logout."
            answer = page(req, "503 Service Unavailable", "Store unavailable", text, nav=False)
            return answer._replace(headers=[*answer.headers, *gone])
        return redirect(req, "/login", gone)

    def _check_csrf(self, req: Request, binding: str) -> dict[str, str]:
        form = req.form()
        if not self._guard.csrf_ok(binding, form.get("csrf", "")):
            logger.warning("refused a dashboard form without a valid CSRF token")
            raise Refused(
                page(
                    req,
                    "403 Forbidden",
                    "Refused",
                    "This form is not the dashboard's own "
                    "(missing or forged CSRF token); nothing was changed. Reload the page.",
                )
            )
        return form

    def _refuse(self, req: Request) -> Response:
        if req.path == "/metrics" or req.path.startswith("/api/"):
            answer = json_answer("401 Unauthorized", {"error": "unauthorized"})
            return answer._replace(headers=[*answer.headers, ("WWW-Authenticate", "Bearer")])
        if self._guard.has_login and req.method in ("GET", "HEAD"):
            return redirect(req, "/login")
        return page(req, "403 Forbidden", "Forbidden", "You may not use this dashboard.", nav=False)

    def _static(self, req: Request) -> Response:
        name = req.path.removeprefix("/static/")
        if name not in STATIC:
            return page(req, "404 Not Found", "Not found", "No such file.", nav=False)
        if req.method not in ("GET", "HEAD"):
            return page(req, "405 Method Not Allowed", "Not allowed", "Use GET.", nav=False)
        return Response("200 OK", _static_file(name), [("Content-Type", STATIC[name])])

    def _login(self, req: Request) -> Response:
        if not self._guard.has_login:
            return page(req, "404 Not Found", "Not found", "No login here.", nav=False)
        binding = login_binding(req.nonce)  # anonymous: its token is good for logging in only
        form_page = pages.login(req.base, self._guard.csrf_token(binding))
        if req.method in ("GET", "HEAD"):
            return page(req, "200 OK", "Log in", body=form_page, nav=False)
        if req.method != "POST":
            return page(req, "405 Method Not Allowed", "Not allowed", "Use GET or POST.", nav=False)
        form = self._check_csrf(req, binding)
        if not self._guard.token_matches(form.get("token", "")):
            logger.warning("a wrong dashboard token from %s", req.environ.get("REMOTE_ADDR", "?"))
            failed = pages.login(req.base, self._guard.csrf_token(binding), failed=True)
            return page(req, "403 Forbidden", "Log in", body=failed, nav=False)
        try:
            session = self._guard.open_session()
        except StoreUnavailable as error:
            text = f"The store is unavailable ({error}), and it keeps the sessions. Try later."
            return page(req, "503 Service Unavailable", "Store unavailable", text, nav=False)
        cookie = set_cookie(req.environ, req.cookie_path, SESSION_COOKIE, session, SESSION_SECONDS)
        return redirect(req, "/", [("Set-Cookie", cookie)])

    def _name(self, req: Request, given: str) -> str:
        try:
            return check_name(given)
        except InvalidSignalName as error:
            raise Refused(page(req, "400 Bad Request", "Bad signal name", str(error))) from None

    def _select(self, req: Request) -> tuple[list[str], int, int, int]:
        """This page's signals (filtered by ``q``, with ``q`` itself when it names none of
        them), the page number, how many pages and how many signals in all."""
        names = self.names()
        query = req.arg("q").strip()
        if query:
            self._name(req, query)
            names = [name for name in names if query.casefold() in name.casefold()]
            if query not in names:
                names.insert(0, query)
        number = _count(req, "page", 1)
        if number < 1:
            raise Refused(page(req, "400 Bad Request", "Bad page", "page must be 1 or more."))
        count = max(1, math.ceil(len(names) / self.page_size))
        number = min(number, count)
        shown = names[(number - 1) * self.page_size : number * self.page_size]
        return shown, number, count, len(names)

    def _list(self, req: Request) -> Response:
        names, number, count, total = self._select(req)
        body = pages.signal_list(
            req.base,
            overview(names),
            _kind(),
            names,
            page=number,
            pages=count,
            total=total,
            query=req.arg("q").strip(),
        )
        return page(req, "200 OK", "Signals", body=body, csrf=self._logout(req))

    def _detail(self, req: Request) -> Response:
        name = self._name(req, req.arg("name"))
        found = overview([name])
        letters: list[DeadLetter] | None = None
        if found.reachable:
            try:
                letters = dead_letter_details(name)
            except StoreUnavailable:
                letters = None
        done, n = req.arg("done"), _count(req, "n", 0)
        if done and done not in NOTICES:
            raise Refused(page(req, "400 Bad Request", "Bad request", "No such action."))
        notice = NOTICES[done].format(n=n) if done else ""
        body = pages.signal_detail(
            req.base,
            name,
            found,
            _kind(),
            letters,
            csrf=self._csrf(req),
            notice=notice,
            known=name in self.names(),
        )
        return page(req, "200 OK", name, body=body, csrf=self._logout(req))

    def _act(self, req: Request, verb: str) -> Response:
        given = req.args["name"][0] if "name" in req.args else req.form().get("name", "")
        name = self._name(req, given)
        try:
            if verb == "deliver":
                mapping = self._mapping or SignalMapping.coerce(None)
                if name not in mapping:
                    verb, count = "unhandled", 0
                else:
                    count = deliver(mapping.subset([name]))
            else:
                count = _ACTIONS[verb](name)
        except StoreUnavailable as error:
            text = f"The store is unavailable ({error}); nothing was done. Try again later."
            return page(req, "503 Service Unavailable", "Store unavailable", text)
        return redirect(req, "/signal", name=name, done=verb, n=count)


def _count(req: Request, field: str, default: int) -> int:
    """The query's ``field`` as a count: ASCII digits only, at most 18 of them (``²``, a
    sign or 5,000 digits are a 400, never an error inside ``int``)."""
    given = req.arg(field)
    if not given:
        return default
    if not (given.isascii() and given.isdigit() and len(given) <= 18):
        raise Refused(page(req, "400 Bad Request", "Bad request", f"{field} must be a count."))
    return int(given)


@cache
def _static_file(name: str) -> bytes:
    return (files(__package__) / "static" / name).read_bytes()


def _kind() -> str:
    return type(get_settings().store).__name__


def _report(found: Overview, names: list[str]) -> dict[str, Any]:
    """The JSON the page's script samples: the store's state and each signal's numbers."""
    rows = []
    for name in names:
        report = found.signals.get(name)
        if report is None:
            continue
        backlog = report.pending
        rows.append(
            {
                "name": name,
                "pending": backlog.count,
                "pending_bytes": backlog.bytes,
                "oldest_age": backlog.oldest_age,
                "waiting": backlog.waiting,
                "next_due": backlog.next_due,
                "lock": report.lock,
                "dead_letters": report.dead_letters,
                "debounced": backlog.debounced,
                **report.counters,
            }
        )
    store = {"reachable": found.reachable, "error": found.error, "latency_ms": found.latency_ms}
    return {"time": frames.clock(), "store": store, "signals": rows}
