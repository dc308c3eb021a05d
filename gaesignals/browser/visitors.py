"""Who is at the other end of a browser request, and the CSRF token that proves a call came
from a page the app served them.

The host framework knows the visitor: an ``identify`` callable, given the WSGI environ or the
ASGI scope, returns a :class:`Visitor` (adapters for Django, Flask, webapp2 and Starlette are
in :mod:`gaesignals.browser.frameworks`). A session is named to the rest of gaesignals by its
tag (:func:`session_tag`), a digest: the host's session key, which may be its cookie, never
reaches the cache or a handler's payload.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from ..config import Settings, get_settings

logger = logging.getLogger("gaesignals")

#: The prefix of a session tag: a host's session key never starts so.
TAG_MARK = "~"
#: The header a browser call carries its CSRF token in, and the page's meta tag naming it.
CSRF_HEADER = "x-gaesignals-csrf"
CSRF_META = "gaesignals-csrf"


@dataclass(frozen=True, slots=True)
class Visitor:
    """The user (an id, as text; None: anonymous) and the session (the host's session key,
    or None) of a browser request."""

    user: str | None = None
    session: str | None = None

    @property
    def authenticated(self) -> bool:
        """Whether the host identified a user."""
        return self.user is not None


class BrowserCall(TypedDict):
    """What the handlers of a signal called from a browser receive: the ``data`` the page
    sent, and who sent it, to answer with :func:`~gaesignals.send_to_browser` (``window``:
    that page; ``session``: the session's tag; ``user``: the user's id)."""

    data: Any
    window: str | None
    session: str | None
    user: str | None


Identify = Callable[[Mapping[str, Any]], Visitor]


def anonymous(native: Mapping[str, Any]) -> Visitor:
    """The default ``identify``: every visitor is anonymous, without a session (each page
    then has its window's mailbox and the broadcast ring)."""
    return Visitor()


def session_tag(session: str) -> str:
    """The tag that names a session in mailboxes and handlers' payloads; a tag is its own."""
    if session.startswith(TAG_MARK):
        return session
    digest = hashlib.sha256(b"gaesignals session\0" + session.encode("utf-8", "surrogatepass"))
    return TAG_MARK + digest.hexdigest()[:40]


_process_key = secrets.token_bytes(32)
_warned = False


def signing_keys(settings: Settings) -> tuple[bytes, ...]:
    """The keys CSRF tokens are made with (the first) and accepted with (any): the secret
    keys, else one random key of this process's (warned about once: a token one process gave
    fails in another)."""
    global _warned
    if settings.secret_keys:
        return settings.secret_keys
    if not _warned:
        _warned = True
        logger.warning(
            "gaesignals.browser: no secret key is set; CSRF tokens hold in this process only"
        )
    return (_process_key,)


def _token(key: bytes, session: str | None) -> str:
    bound = b"" if session is None else session_tag(session).encode("ascii")
    return hmac.new(key, b"gaesignals csrf\0" + bound, hashlib.sha256).hexdigest()[:40]


def csrf_token(visitor: Visitor | str | None) -> str:
    """The token a page embeds (``<meta name="gaesignals-csrf" content="...">``) for its calls:
    a MAC of the visitor's session (a :class:`Visitor`, a session key, or None)."""
    session = visitor.session if isinstance(visitor, Visitor) else visitor
    return _token(signing_keys(get_settings())[0], session)


def csrf_valid(token: str, visitor: Visitor, settings: Settings) -> bool:
    """Whether ``token`` is the visitor's, made with any of the keys."""
    return any(
        hmac.compare_digest(token.encode("ascii", "replace"), _token(key, visitor.session).encode())
        for key in signing_keys(settings)
    )
