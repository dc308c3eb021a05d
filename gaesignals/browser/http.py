"""What the bridge reads of a request and the answers it gives, whichever server protocol
(WSGI or ASGI) brought it: :class:`Incoming` in, :class:`Answer` out.

Every refusal is one of a few fixed answers that say nothing of the server's internals: a
browser learns that it may not (403), that it sent something wrong (400), or that it must slow
down (429), and never why in more detail; the log says why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

JSON = "application/json"
#: Headers on every answer: never cached, never sniffed into another type.
COMMON_HEADERS = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]


class Answer(NamedTuple):
    """A whole answer: its status line, headers and body."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes


def json_answer(status: str, value: object, headers: Sequence[tuple[str, str]] = ()) -> Answer:
    body = json.dumps(value, separators=(",", ":")).encode("utf-8")
    return Answer(status, [("Content-Type", JSON), *COMMON_HEADERS, *headers], body)


OK = json_answer("200 OK", {"ok": True})
FORBIDDEN = json_answer("403 Forbidden", {"ok": False, "error": "forbidden"})
BAD_REQUEST = json_answer("400 Bad Request", {"ok": False, "error": "bad-request"})
NOT_FOUND = json_answer("404 Not Found", {"ok": False, "error": "not-found"})
METHOD_NOT_ALLOWED = json_answer(
    "405 Method Not Allowed", {"ok": False, "error": "method-not-allowed"}
)
FAILED = json_answer("500 Internal Server Error", {"ok": False, "error": "failed"})


def rate_limited(seconds: int) -> Answer:
    return json_answer(
        "429 Too Many Requests",
        {"ok": False, "error": "rate-limited"},
        [("Retry-After", str(seconds))],
    )


class Refusal(Exception):
    """Stops handling a request with ``answer`` (one of the fixed refusals)."""

    def __init__(self, answer: Answer, why: str) -> None:
        super().__init__(why)
        self.answer = answer


@dataclass(frozen=True)
class Incoming:
    """A request to the bridge: ``route`` is its path below the bridge's prefix, ``headers``
    are named in lower case, ``host`` is its Host header, ``native`` the WSGI environ or
    ASGI scope (what ``identify`` is given), ``body`` None when larger than the bridge reads."""

    method: str
    route: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    host: str
    remote: str
    native: Mapping[str, Any]
    body: bytes | None = b""


def origin_allowed(incoming: Incoming, allowed: frozenset[str]) -> bool:
    """Whether the request's Origin is the bridge's own host or one of ``allowed``. A request
    without one is refused: browsers send it on every POST."""
    origin = incoming.headers.get("origin", "")
    if not origin or origin == "null":
        return False
    if origin in allowed:
        return True
    return bool(incoming.host) and urlsplit(origin).netloc.lower() == incoming.host.lower()


def route_below(path: str, prefix: str) -> str | None:
    """``path`` below ``prefix`` ("/poll" of "/signals/poll"), None outside it."""
    if not path.startswith(prefix + "/"):
        return None
    return path[len(prefix) :]
