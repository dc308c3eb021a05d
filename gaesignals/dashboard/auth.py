"""Who may use the dashboard, and proof that a form posted to it was its own.

Three ways in, chosen when the app is built, so a dashboard is never an open page by mistake:

* a bearer token (``token=`` or ``GAESIGNALS_DASHBOARD_TOKEN``, 32 bytes or more), sent as
  ``Authorization: Bearer <token>`` by scripts and Prometheus, or typed once into the login form
  by a person: the browser then keeps a session cookie holding a MAC of its issue time, never
  the token (HttpOnly, SameSite=Strict, valid for :data:`SESSION_SECONDS`);
* ``auth=callable(environ) -> bool``: the host app's own check, asked on every request;
* ``trust_host_auth=True``: the host app lets only its operators reach the mount point.

Every POST carries a CSRF token: a MAC of a random nonce kept in its own cookie (the signed
double-submit pattern), so a form another site makes the browser post is refused. The MACs'
key comes from ``secret``, else from the token, else it is random per process.
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
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def cookies(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's cookies; a header that does not parse counts as none."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(str(environ.get("HTTP_COOKIE", "")))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def set_cookie(environ: Mapping[str, Any], name: str, value: str, max_age: int) -> str:
    """A ``Set-Cookie`` value scoped to the mount point: HttpOnly, SameSite=Strict, and Secure
    when the request came over HTTPS."""
    path = str(environ.get("SCRIPT_NAME", "")).rstrip("/") or "/"
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

    @property
    def has_login(self) -> bool:
        """Whether a person can log in with the token (else only the host app lets them in)."""
        return self._token is not None

    def allowed(self, environ: Mapping[str, Any], jar: Mapping[str, str]) -> bool:
        """Whether the request comes from an operator, by any of the ways configured."""
        return self._host_allows(environ) or self._bearer(environ) or self._session(jar)

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the token, compared in constant time."""
        if self._token is None:
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token)

    def new_session(self) -> str:
        """A session cookie's value: its issue time and a MAC of it."""
        issued = str(int(_clock()))
        return f"{issued}.{_mac(self._key, 'session|' + issued)}"

    def csrf_token(self, nonce: str) -> str:
        return _mac(self._key, "csrf|" + nonce)

    def csrf_ok(self, jar: Mapping[str, str], given: str) -> bool:
        """Whether ``given`` is the CSRF token for the nonce in the request's cookie."""
        nonce = jar.get(CSRF_COOKIE, "")
        if not nonce or not given:
            return False
        expected = self.csrf_token(nonce).encode()
        return hmac.compare_digest(expected, given.encode("utf-8", "replace"))

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

    def _session(self, jar: Mapping[str, str]) -> bool:
        if self._token is None:
            return False
        issued, _, mac = jar.get(SESSION_COOKIE, "").partition(".")
        if not issued.isdigit() or not hmac.compare_digest(
            mac.encode("utf-8", "replace"), _mac(self._key, "session|" + issued).encode()
        ):
            return False
        return 0 <= _clock() - int(issued) <= SESSION_SECONDS


def new_nonce() -> str:
    return secrets.token_urlsafe(24)
