"""Who may use the dashboard, and proof that a form posted to it was its own.

Three ways in, chosen when the app is built, so a dashboard is never an open page by mistake:

* a bearer token (``token=`` or ``GAESIGNALS_DASHBOARD_TOKEN``, 32 bytes or more), sent as
  ``Authorization: Bearer <token>`` by scripts and Prometheus, or typed once into the login form
  by a person: the browser then keeps a session cookie holding a random session id, its issue
  time and a MAC of both, never the token (HttpOnly, SameSite=Strict, valid for
  :data:`SESSION_SECONDS`). The session is live while its record is in the store
  (:func:`gaesignals.inspection.open_session`), so logging out ends it in every process, and the
  MAC's key is derived from the token, so a new token ends every session, whatever ``secret``;
* ``auth=callable(environ) -> bool``: the host app's own check, asked on every request;
* ``trust_host_auth=True``: the host app lets only its operators reach the mount point.

Every POST carries a CSRF token: a MAC of what identifies the browser's session to the
dashboard. With a login, that is the session id: a sibling host (another port, another
subdomain) can plant cookies in the operator's browser but cannot read the HttpOnly session,
so no token it can obtain passes. Behind the host's auth there is no session of ours: the token
binds the nonce in the dashboard's own cookie and the host's ``REMOTE_USER``, and only a
request the host let in is ever given one; the anonymous login form gets a token good for
logging in only (Django binds its CSRF secret to the session the same way, and Flask-WTF keeps
it in the signed session). The MACs' key comes from ``secret``, else from the token, else it is
random per process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

from ..exceptions import ConfigurationError
from ..inspection import open_session, session_is_open

logger = logging.getLogger("gaesignals")

TOKEN_ENV = "GAESIGNALS_DASHBOARD_TOKEN"
#: Shorter tokens are refused: they can be guessed.
MIN_TOKEN_BYTES = 32
SESSION_COOKIE = "gaesignals_session"
CSRF_COOKIE = "gaesignals_csrf"
#: How long a login lasts.
SESSION_SECONDS = 8 * 3600

HostAuth = Callable[[Mapping[str, Any]], bool]


def _clock() -> float:
    """Unix seconds, for session ages (a test seam)."""
    return time.time()


def _mac(key: bytes, message: str) -> str:
    # Any text a host hands over (a REMOTE_USER, a cookie) is MACed, never an error.
    return hmac.new(key, message.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def cookies(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's cookies; a header that does not parse counts as none."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(str(environ.get("HTTP_COOKIE", "")))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def set_cookie(environ: Mapping[str, Any], path: str, name: str, value: str, max_age: int) -> str:
    """A ``Set-Cookie`` value scoped to ``path``, the mount point as a URL path: HttpOnly,
    SameSite=Strict, and Secure when the request came over HTTPS."""
    secure = "; Secure" if environ.get("wsgi.url_scheme") == "https" else ""
    return f"{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"


class Guard:
    """The dashboard's credentials, checked once at construction (see the module docstring)."""

    def __init__(
        self,
        token: str | None,
        auth: HostAuth | None,
        trust_host_auth: bool,
        secret: str | bytes | None,
    ) -> None:
        if token is None:
            token = os.environ.get(TOKEN_ENV, "").strip() or None
        if token is not None and len(token.encode("utf-8")) < MIN_TOKEN_BYTES:
            raise ConfigurationError(
                f"a dashboard token must be at least {MIN_TOKEN_BYTES} bytes; "
                'make one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        if auth is not None and not callable(auth):
            raise TypeError(f"auth must be a callable taking the WSGI environ, got {auth!r}")
        if token is None and auth is None and not trust_host_auth:
            raise ConfigurationError(
                "the dashboard needs a way to tell operators from everyone else: give it a "
                f"token (token= or {TOKEN_ENV}), auth=callable(environ), or trust_host_auth=True "
                "when the host app already guards its URL"
            )
        self._token = None if token is None else token.encode("utf-8")
        self._auth = auth
        self._trusted = trust_host_auth
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None:
            self._key = secret
        elif self._token is not None:
            self._key = hmac.new(self._token, b"gaesignals dashboard", hashlib.sha256).digest()
        else:
            self._key = secrets.token_bytes(32)
        # Sessions are signed with a key of the token's own, so a new token ends them all.
        self._session_key = hmac.new(self._key, self._token or b"", hashlib.sha256).digest()

    @property
    def has_login(self) -> bool:
        """Whether a person can log in with the token (else only the host app lets them in)."""
        return self._token is not None

    def admit(self, environ: Mapping[str, Any], jar: Mapping[str, str], nonce: str) -> str | None:
        """What binds this request's CSRF tokens (see the module docstring), or None when it
        does not come from an operator by any of the ways configured."""
        session = self.session_of(jar)
        if session is not None:
            return "session|" + session
        if self._host_allows(environ) or self._bearer(environ):
            return f"host|{nonce}|{environ.get('REMOTE_USER', '')}"
        return None

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the token, compared in constant time."""
        if self._token is None:
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token)

    def open_session(self) -> str:
        """A new live session; its cookie's value: issue time, id and their MAC. Raises
        :class:`~gaesignals.StoreUnavailable` when the store cannot keep it."""
        issued, session = str(int(_clock())), secrets.token_hex(16)
        open_session(session, SESSION_SECONDS)
        return f"{issued}.{session}.{self._session_mac(issued, session)}"

    def session_of(self, jar: Mapping[str, str]) -> str | None:
        """The id of the live session the request's cookie holds, or None."""
        if self._token is None:
            return None
        issued, _, rest = jar.get(SESSION_COOKIE, "").partition(".")
        session, _, mac = rest.partition(".")
        if not (issued.isascii() and issued.isdigit() and len(issued) < 20):
            return None
        expected = self._session_mac(issued, session).encode()
        if not hmac.compare_digest(mac.encode("utf-8", "replace"), expected):
            return None
        if not 0 <= _clock() - int(issued) <= SESSION_SECONDS:
            return None
        return session if session_is_open(session) else None

    def csrf_token(self, binding: str) -> str:
        """The CSRF token of the forms shown to a request ``binding`` identifies."""
        return _mac(self._key, "csrf|" + binding)

    def csrf_ok(self, binding: str, given: str) -> bool:
        """Whether ``given`` is the CSRF token for ``binding``, compared in constant time."""
        if not given:
            return False
        expected = self.csrf_token(binding).encode()
        return hmac.compare_digest(expected, given.encode("utf-8", "replace"))

    def _session_mac(self, issued: str, session: str) -> str:
        return _mac(self._session_key, f"session|{issued}|{session}")

    def _host_allows(self, environ: Mapping[str, Any]) -> bool:
        if self._trusted:
            return True
        if self._auth is None:
            return False
        try:
            return self._auth(environ) is True
        except Exception:  # a failing check lets no one in, and says why in the log
            logger.exception("the dashboard's auth callable raised; refused")
            return False

    def _bearer(self, environ: Mapping[str, Any]) -> bool:
        scheme, _, credentials = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if self._token is None or scheme.lower() != "bearer":
            return False
        # WSGI gives header values as latin-1 decoded text; this recovers the bytes sent.
        given = credentials.strip().encode("latin-1", "replace")
        return hmac.compare_digest(given, self._token)


def login_binding(nonce: str) -> str:
    """What binds the login form's CSRF token: the anonymous nonce, good for nothing else."""
    return "login|" + nonce


def new_nonce() -> str:
    return secrets.token_urlsafe(24)
