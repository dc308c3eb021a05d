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
        self.base = quote(str(environ.get("SCRIPT_NAME", "")).rstrip("/"), encoding="latin-1")
        query = str(environ.get("QUERY_STRING", ""))
        self.args = parse_qs(query, keep_blank_values=True, errors="replace")
        self.jar = read_cookies(environ)
        self.fresh_nonce = CSRF_COOKIE not in self.jar
        self.nonce = self.jar.get(CSRF_COOKIE) or new_nonce()
        self._form: dict[str, str] | None = None

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
        fields = parse_qs(body.decode("latin-1"), keep_blank_values=True, errors="replace")
        return {key: values[0] for key, values in fields.items()}


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
    return Response(status, html.encode("utf-8"), [("Content-Type", HTML)])


def json_answer(status: str, data: object) -> Response:
    body = json.dumps(data).encode("utf-8") + b"\n"
    return Response(status, body, [("Content-Type", "application/json")])


def redirect(location: str, extra: list[tuple[str, str]] | None = None) -> Response:
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
