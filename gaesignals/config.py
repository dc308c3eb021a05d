"""Where the store, namespace, secret keys and codec come from.

Explicit :func:`configure` arguments win; anything not given comes from the environment
(``GAESIGNALS_STORE``, ``GAESIGNALS_NAMESPACE``, ``GAESIGNALS_SECRET_KEY``,
``GAESIGNALS_CODEC``, ``GAESIGNALS_EAGER``, ``GAESIGNALS_COUNTERS``,
``GAESIGNALS_LOST_CHECK_INTERVAL``); anything still missing has a default: App Engine's
memcache when running on App Engine, otherwise the embedded in-process store. Settings are
resolved once, on first use, and shared by every thread.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from .exceptions import ConfigurationError
from .stores import Store, masked_url

logger = logging.getLogger("gaesignals")

#: Secret keys shorter than this are refused: they can be guessed.
MIN_SECRET_KEY_BYTES = 32
CODECS = ("pickle", "json")
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{0,64}\Z")

#: Default seconds between a process's lost checks of one signal (see Settings).
DEFAULT_LOST_CHECK_INTERVAL = 30.0

SecretKeys = str | bytes | bytearray | memoryview | Sequence[str | bytes]


@dataclass(frozen=True)
class Settings:
    """The resolved configuration every send and delivery uses."""

    store: Store
    namespace: str = ""
    #: Frames are signed with the first key and accepted with any (rotation); never shown
    #: by the repr, which ends up in logs and tracebacks.
    secret_keys: tuple[bytes, ...] = field(default=(), repr=False)
    codec: str = "pickle"
    #: Every send to a signal with registered receivers runs them at once (tests, development).
    eager: bool = False
    #: Keep per-signal counters in the store (sent, delivered, ..., lost): what stats() reports
    #: and lost detection needs, at some cost per send and per delivery.
    counters: bool = True
    #: Seconds between one process's checks of a signal for lost (evicted) payloads, which
    #: read three counters per signal on top of its queue, and between its deliveries' reads
    #: of every shard a hot signal's senders may use (:mod:`gaesignals.queue.spread`); 0
    #: does both on every delivery.
    lost_check_interval: float = DEFAULT_LOST_CHECK_INTERVAL

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        text = ", ".join(f"{name}={value!r}" for name, value in shown.items())
        return f"Settings({text}, secret_keys=<{len(self.secret_keys)} key(s), not shown>)"


_lock = threading.Lock()
_settings: Settings | None = None


def configure(
    store: Store | str | None = None,
    namespace: str | None = None,
    secret_key: SecretKeys | None = None,
    codec: str | None = None,
    eager: bool | None = None,
    counters: bool | None = None,
    lost_check_interval: float | None = None,
) -> Settings:
    """Set the store (a :class:`~gaesignals.stores.Store` or a URL), the key namespace, the
    secret key(s) that sign frames, the payload codec (``"pickle"`` or ``"json"``), whether
    sends are ``eager`` (see :func:`~gaesignals.send_now`), and whether per-signal
    ``counters`` are kept (default True: :func:`~gaesignals.stats` and lost detection need
    them; they ride in the sends' and resets' own round trips on memcached and Redis, and are
    written in batches at most once a second on App Engine), and how often, in seconds, a
    process checks a signal for payloads the cache lost and reads every shard a hot signal may
    have spread to (``lost_check_interval``, default 30; 0 does both on every delivery).

    Arguments left out are read from the environment, as on first use without ``configure``.
    Call it once at start-up, before sending or delivering.
    """
    global _settings
    resolved = _resolve(store, namespace, secret_key, codec, eager, counters, lost_check_interval)
    with _lock:
        _settings = resolved
    return resolved


def get_settings() -> Settings:
    """The current settings, resolved from the environment on first use."""
    global _settings
    current = _settings
    if current is None:
        with _lock:
            if _settings is None:
                _settings = _resolve(None, None, None, None, None, None, None)
            current = _settings
    return current


def reset() -> None:
    """Forget the settings; the next use resolves them from the environment again."""
    global _settings
    with _lock:
        _settings = None


def on_app_engine() -> bool:
    """True inside App Engine's standard environment (not merely the local dev tools).

    Only ``GAE_ENV=standard`` says so: the SDK's ``testbed`` sets ``GAE_APPLICATION`` (with the
    other request variables) in the test process, where acting as deployed would trust the
    ``X-Appengine-Cron`` header and have an app call ``wrap_wsgi_app``, which reloads
    ``threading`` and ``concurrent.futures.thread`` under the threads already running."""
    return os.environ.get("GAE_ENV") == "standard"


def store_from_url(url: str) -> Store:
    """``memory://``, ``appengine://``, ``memcached://host:port[,host:port...]``, or Redis and
    Valkey: ``redis://``, ``rediss://``, ``valkey://``, ``valkeys://``, ``unix://`` (a cluster
    with ``?cluster=true``). A store whose extra is not installed raises
    :class:`~gaesignals.exceptions.MissingExtra`, naming what to install."""
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from .stores.memory import MemoryStore

        return MemoryStore()
    if scheme == "appengine":
        from .stores.appengine import AppEngineStore

        return AppEngineStore()
    if scheme == "memcached":
        from .stores.memcached import MemcachedStore

        return MemcachedStore.from_url(url)
    if scheme in ("redis", "rediss", "valkey", "valkeys", "unix"):
        from .stores.redis import RedisStore

        return RedisStore.from_url(url)
    raise ConfigurationError(
        f"unknown store URL {masked_url(url)!r}: expected memory://, appengine://, "
        "memcached://host:port[,host:port...], redis://host:port[/db], rediss://host:port "
        "(TLS), valkey://host:port[/db], valkeys://host:port (TLS), unix:///path/to/redis.sock "
        "or redis://host:port,host:port?cluster=true (valkey:// too)"
    )


#: What the library reads of a store: every member of the Store protocol.
_STORE_MEMBERS = ("max_value_size", "supports_append", "shared", "sizes", "fast_send", "native")


def is_store(candidate: object) -> bool:
    """Whether ``candidate`` has what the library uses of a store, looked up as the library
    will (``getattr``), so a store that delegates to another through ``__getattr__`` counts:
    ``isinstance`` against the runtime-checkable protocol looks members up statically on
    Python 3.12 and later, and would refuse it."""
    if not callable(getattr(candidate, "connection", None)):
        return False
    missing = object()
    return all(getattr(candidate, name, missing) is not missing for name in _STORE_MEMBERS)


def _resolve(
    store: Store | str | None,
    namespace: str | None,
    secret_key: SecretKeys | None,
    codec: str | None,
    eager: bool | None,
    counters: bool | None,
    lost_check_interval: float | None,
) -> Settings:
    env = os.environ
    if eager is None:
        flag = env.get("GAESIGNALS_EAGER", "").strip().lower()
        if flag not in ("", "0", "1", "false", "true", "no", "yes", "off", "on"):
            raise ConfigurationError(f"GAESIGNALS_EAGER={flag!r} is not a boolean (use 1 or 0)")
        eager = flag in ("1", "true", "yes", "on")
    if counters is None:
        flag = env.get("GAESIGNALS_COUNTERS", "1").strip().lower()
        if flag not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
            raise ConfigurationError(f"GAESIGNALS_COUNTERS={flag!r} is not a boolean")
        counters = flag not in ("0", "false", "no", "off")
    if lost_check_interval is None:
        text = env.get("GAESIGNALS_LOST_CHECK_INTERVAL", "").strip()
        try:
            lost_check_interval = float(text) if text else DEFAULT_LOST_CHECK_INTERVAL
        except ValueError:
            raise ConfigurationError(
                f"GAESIGNALS_LOST_CHECK_INTERVAL={text!r} is not a number of seconds"
            ) from None
    if isinstance(lost_check_interval, bool) or not isinstance(lost_check_interval, int | float):
        raise ConfigurationError(
            f"lost_check_interval must be a number of seconds, not {lost_check_interval!r}"
        )
    if not 0 <= lost_check_interval < float("inf"):
        raise ConfigurationError(
            f"lost_check_interval must be 0 or more seconds, got {lost_check_interval!r}"
        )
    if namespace is None:
        namespace = env.get("GAESIGNALS_NAMESPACE", "")
    if not _NAMESPACE.match(namespace):
        raise ConfigurationError(
            f"namespace {namespace!r} must be at most 64 letters, digits, '_' or '-'"
        )
    if codec is None:
        codec = env.get("GAESIGNALS_CODEC", "pickle") or "pickle"
    if codec not in CODECS:
        raise ConfigurationError(f"codec {codec!r} is not one of {', '.join(CODECS)}")
    if secret_key is None:
        raw = env.get("GAESIGNALS_SECRET_KEY", "")
        secret_key = [part for part in raw.split(",") if part.strip()]
    keys = _secret_keys(secret_key)
    if store is None:
        store = env.get("GAESIGNALS_STORE") or None
    if isinstance(store, str):
        store = store_from_url(store)
    elif store is None:
        store = _default_store()
    elif not is_store(store):
        raise TypeError(f"store must be a Store or a URL string, not {type(store).__name__}")
    if store.shared and not keys and codec == "pickle":
        logger.warning(
            "no secret key is set, so pickled payloads read from %r are trusted "
            "as they are; anyone who can write to that cache can run code in this process. "
            "Set GAESIGNALS_SECRET_KEY (32+ bytes) to sign and verify every payload.",
            store,
        )
    return Settings(
        store=store,
        namespace=namespace,
        secret_keys=keys,
        codec=codec,
        eager=bool(eager),
        counters=bool(counters),
        lost_check_interval=float(lost_check_interval),
    )


def _secret_keys(secret_key: SecretKeys) -> tuple[bytes, ...]:
    items: Sequence[str | bytes | bytearray | memoryview]
    if isinstance(secret_key, str | bytes | bytearray | memoryview):
        items = [secret_key]
    else:
        items = secret_key
    keys = []
    for item in items:
        key = item.strip().encode("utf-8") if isinstance(item, str) else bytes(item)
        if len(key) < MIN_SECRET_KEY_BYTES:
            raise ConfigurationError(
                f"a secret key must be at least {MIN_SECRET_KEY_BYTES} bytes, got {len(key)}; "
                'make one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        keys.append(key)
    return tuple(keys)


def _default_store() -> Store:
    if on_app_engine():
        from .stores.appengine import AppEngineStore

        return AppEngineStore()
    from .stores.memory import MemoryStore

    logger.info(
        "no GAESIGNALS_STORE set, using the embedded in-process store; signals are "
        "process-local (other processes and workers will not see them)"
    )
    return MemoryStore()
