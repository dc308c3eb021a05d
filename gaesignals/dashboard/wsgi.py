"""The WSGI plumbing under the dashboard: what it reads of a request, the answers it builds,
and :class:`Mount`, which serves it under a prefix of any WSGI app.

Stopping a request early with a 4xx answer is :class:`Refused` (raised inside the app, turned
into its answer there), so the checks read top to bottom.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote

from . import pages
from .auth import CSRF_COOKIE, new_nonce
from .auth import cookies as read_cookies

HTML = "text/html; charset=utf-8"
#: The largest form body read.
MAX_FORM_BYTES = 16 * 1024


class Response(NamedTuple):
    status: str
    body: bytes
    headers: list[tuple[str, str]]


class Refused(Exception):
    """Stops handling a request with ``response`` (a 4xx answer)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class Request:
    """What the dashboard reads of a WSGI request."""

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        self.path = str(environ.get("PATH_INFO", "")) or "/"
        self.base = url_prefix(str(environ.get("SCRIPT_NAME", "")))
        self.args = parse_fields(str(environ.get("QUERY_STRING", "")))
        self.jar = read_cookies(environ)
        self.fresh_nonce = CSRF_COOKIE not in self.jar
        self.nonce = self.jar.get(CSRF_COOKIE) or new_nonce()
        #: What binds its CSRF tokens, once the request is let in (see auth.Guard.admit).
        self.binding = ""
        self._form: dict[str, str] | None = None

    @property
    def cookie_path(self) -> str:
        """The ``Path`` of the dashboard's cookies: its mount point."""
        return self.base or "/"

    def arg(self, name: str) -> str:
        return self.args.get(name, [""])[0]

    def form(self) -> dict[str, str]:
        """The urlencoded body's fields (first value each); a body too large or of another
        type is refused. Read once: a second call returns the same fields."""
        if self._form is None:
            self._form = self._read_form()
        return self._form

    def _read_form(self) -> dict[str, str]:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise Refused(page(self, "400 Bad Request", "Bad request", "Bad length.")) from None
        if length > MAX_FORM_BYTES:
            raise Refused(page(self, "413 Content Too Large", "Too large", "Form too large."))
        kind = str(self.environ.get("CONTENT_TYPE", "")).partition(";")[0].strip().lower()
        if length and kind != "application/x-www-form-urlencoded":
            raise Refused(page(self, "415 Unsupported Media Type", "Bad form", "Not a form."))
        body = self.environ["wsgi.input"].read(length) if length > 0 else b""
        fields = parse_fields(body.decode("latin-1"))
        return {key: values[0] for key, values in fields.items()}


def url_prefix(script_name: str) -> str:
    """``SCRIPT_NAME`` as the URL path the dashboard's links, redirects and cookies start with:
    "" or one ``/`` then a character other than ``/``, so ``//host`` can never become a link
    to another site.

    PEP 3333 hands the path's bytes over as latin-1 text; a host that hands over decoded text
    instead (Django's ``request.path``) gives characters latin-1 cannot hold, or bytes that are
    not UTF-8: either way the path is percent-encoded from its UTF-8 bytes.
    """
    try:
        raw = script_name.encode("latin-1")
        raw.decode("utf-8")
    except UnicodeError:
        raw = script_name.encode("utf-8", "replace")
    path = quote(raw, safe="/").rstrip("/")
    return "/" + path.lstrip("/") if path else ""


def parse_fields(text: str) -> dict[str, list[str]]:
    """A query string's or a form's fields. Values are percent-decoded as UTF-8 that may hold
    lone surrogates (the links to a signal whose name holds one carry it so), else with
    replacement characters: never an error."""
    raw = parse_qs(text, keep_blank_values=True, encoding="latin-1")
    return {_text(key): [_text(value) for value in values] for key, values in raw.items()}


def _text(latin: str) -> str:
    try:
        raw = latin.encode("latin-1")
    except UnicodeEncodeError:  # already decoded text, from a host that decodes its query
        return latin
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def page(
    req: Request,
    status: str,
    title: str,
    text: str = "",
    *,
    body: str | None = None,
    nav: bool = True,
    csrf: str = "",
) -> Response:
    html = pages.layout(req.base, title, body or pages.message(title, text), nav=nav, csrf=csrf)
    return Response(status, pages.encode(html), [("Content-Type", HTML)])


def json_answer(status: str, data: object) -> Response:
    body = json.dumps(data).encode("utf-8") + b"\n"
    return Response(status, body, [("Content-Type", "application/json")])


def redirect(
    req: Request, path: str, extra: list[tuple[str, str]] | None = None, **query: str | int
) -> Response:
    """A 303 to ``path`` under the mount point: a path, never another site (see
    :func:`url_prefix`)."""
    location = pages.url(req.base, path, **query)
    return Response("303 See Other", b"", [("Location", location), *(extra or [])])


class Mount:
    """Serves ``dashboard`` at ``prefix`` in front of any WSGI ``app`` (webapp2, Flask, ...);
    every other request goes to ``app`` untouched."""

    def __init__(self, app: Callable[..., Iterable[bytes]], prefix: str, dashboard: Any) -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"prefix must start with / and not end with one, got {prefix!r}")
        self.app = app
        self.prefix = prefix
        self.dashboard = dashboard

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            return self.app(environ, start_response)
        inner = dict(environ)
        inner["SCRIPT_NAME"] = str(environ.get("SCRIPT_NAME", "")) + self.prefix
        inner["PATH_INFO"] = path[len(self.prefix) :] or "/"
        result: Iterable[bytes] = self.dashboard(inner, start_response)
        return result
