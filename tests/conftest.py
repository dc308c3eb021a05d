"""Fixtures: every store the library supports, each behind the same ``store`` fixture.

The real servers are the shipped pytest plugin's (``gaesignals_memcached``, ``gaesignals_redis``,
``gaesignals_valkey`` and ``gaesignals_testbed``, from :mod:`gaesignals.pytest_plugin`), started
on free loopback ports once per session and flushed before each test; the clusters here are
built on them. Valkey runs the Redis store's code, so only the contract suite and the Redis
suites run it (:data:`VALKEY_STORES`), not every store-parametrized test. Without a
binary, a client library or the App Engine SDK those tests skip locally and fail under
``CI=true``, as the plugin decides.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import gaesignals
from gaesignals import config
from gaesignals.pytest_plugin import _missing as missing
from gaesignals.pytest_plugin import make_store
from gaesignals.stores import Store
from gaesignals.stores.memcached import MemcachedStore
from gaesignals.stores.memory import MemoryStore
from gaesignals.stores.redis import RedisStore
from gaesignals.testing import (
    MemcachedServer,
    RedisClusterServers,
    RedisServer,
    ValkeyClusterServers,
    ValkeyServer,
)

STORES = [
    "memory",
    "memory-cas",
    "appengine",
    "memcached",
    "memcached-cluster",
    "redis",
    "redis-cluster",
]
#: Valkey, standalone and as a cluster: the Redis store against the other server.
VALKEY_STORES = ["valkey", "valkey-cluster"]
#: The store kinds served by redis-server or valkey-server (the Redis store).
REDIS_LIKE = ("redis", "valkey")


@pytest.fixture(scope="session")
def memcached_cluster(gaesignals_memcached: MemcachedServer) -> Iterator[list[MemcachedServer]]:
    """Two memcached nodes: the plugin's session server and one more of the same kind."""
    with MemcachedServer() as other:
        yield [gaesignals_memcached, other]


@pytest.fixture
def own_memcached(
    gaesignals_memcached: MemcachedServer,
) -> Iterator[Callable[..., MemcachedServer]]:
    """Starts memcached servers this test alone owns, to stop, pause or shrink (``kwargs`` go
    to :class:`~gaesignals.testing.MemcachedServer`); each is resumed, in case the test paused
    it, and stopped after the test. Asking for the plugin's server skips or fails the test as
    the plugin does when memcached is missing."""
    started: list[MemcachedServer] = []

    def start(**kwargs: Any) -> MemcachedServer:
        started.append(MemcachedServer(**kwargs).start())
        return started[-1]

    yield start
    for server in started:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def new_redis_cluster(kind: type[RedisClusterServers] = RedisClusterServers) -> RedisClusterServers:
    """A Redis (or Valkey) cluster not yet started; without its server binary the test skips
    locally and fails under CI, as the plugin decides (ask for ``gaesignals_redis`` or
    ``gaesignals_valkey`` first: they check redis-py too)."""
    try:
        return kind()
    except FileNotFoundError as error:
        missing(str(error))


@pytest.fixture(scope="session")
def redis_cluster(gaesignals_redis: RedisServer) -> Iterator[RedisClusterServers]:
    """A three-node Redis cluster for the session."""
    with new_redis_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def valkey_cluster(gaesignals_valkey: ValkeyServer) -> Iterator[RedisClusterServers]:
    """A three-node Valkey cluster for the session."""
    with new_redis_cluster(ValkeyClusterServers) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Every delivery checks for lost payloads, so a test sees a loss at the next delivery
    # (worker processes inherit it); test_stats covers the periodic default.
    monkeypatch.setenv("GAESIGNALS_LOST_CHECK_INTERVAL", "0")
    config.reset()
    gaesignals.registry.clear()
    yield
    config.reset()
    gaesignals.registry.clear()


class RawAccess:
    """Reads and writes a store's keys behind the library's back, as another program could."""

    def __init__(self, kind: str, store: Store, client: Any = None) -> None:
        self.kind = kind
        self.store = store
        self.client = client

    def set(self, key: str, value: bytes) -> None:
        if isinstance(self.store, MemoryStore):
            self.store.set_raw(key, value)
        elif self.kind == "appengine":
            self.client.set(key, value, namespace="")
        elif self.kind.startswith(REDIS_LIKE):
            assert self.client.set(key, value)
        else:
            assert self.client.set(key, value, noreply=False)

    def set_pickled(self, key: str, obj: object) -> None:
        """Store ``obj`` the way the cache client would if asked to pickle it."""
        if self.kind == "appengine":
            from google.appengine.api import memcache

            memcache.Client().set(key, obj, namespace="")  # the SDK pickles non-bytes values
        elif isinstance(self.store, MemoryStore) or self.kind.startswith(REDIS_LIKE):
            self.set(key, pickle.dumps(obj))  # Redis has no flags: a value is only bytes
        else:
            # flags=1 is pymemcache's pickle_serde marker for pickled values.
            assert self.client.set(key, pickle.dumps(obj), noreply=False, flags=1)

    def get(self, key: str) -> bytes | None:
        with self.store.connection() as conn:
            item = conn.gets_many([key]).get(key)
        return None if item is None else item[0]


#: The session fixture running each Redis-like kind's server or cluster.
REDIS_FIXTURES = {
    "redis": "gaesignals_redis",
    "redis-cluster": "redis_cluster",
    "valkey": "gaesignals_valkey",
    "valkey-cluster": "valkey_cluster",
}


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(params=[False, True], ids=["weak", "reliable"])
def reliable(request: pytest.FixtureRequest) -> bool:
    """Both delivery modes: they read and parse the key on different paths."""
    value: bool = request.param
    return value


def cluster_store(store_kind: str, request: pytest.FixtureRequest) -> Store:
    """A store on one of this conftest's clusters, flushed (the plugin serves single servers)."""
    if store_kind == "memcached-cluster":
        servers: list[MemcachedServer] = request.getfixturevalue("memcached_cluster")
        for each in servers:
            each.flush()
        return MemcachedStore.from_url(
            "memcached://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
        )
    running: RedisClusterServers = request.getfixturevalue(REDIS_FIXTURES[store_kind])
    running.flush()
    return RedisStore.from_url(running.url)


def redis_store_of(kind: str, request: pytest.FixtureRequest) -> RedisStore:
    """A fresh store of a ``REDIS_FIXTURES`` kind: the plugin's (``make_store``) on its single
    servers, or one on a cluster here; the test closes it."""
    if kind.endswith("-cluster"):
        store = cluster_store(kind, request)
    else:
        store, _ = make_store(kind, request)
    assert isinstance(store, RedisStore)
    return store


def _raw_client(store_kind: str, store: Store, request: pytest.FixtureRequest) -> Any:
    """The client :class:`RawAccess` writes with: the cache's own, beside the store's."""
    if store_kind in ("memory", "memory-cas"):
        return None
    if store_kind == "appengine":
        from google.appengine.api import memcache

        return memcache.Client()
    if isinstance(store, RedisStore):
        return store.client
    from pymemcache.client.base import Client
    from pymemcache.client.hash import HashClient

    if store_kind == "memcached":
        server: MemcachedServer = request.getfixturevalue("gaesignals_memcached")
        return Client(server.address, default_noreply=False)
    servers: list[MemcachedServer] = request.getfixturevalue("memcached_cluster")
    return HashClient([s.address for s in servers], default_noreply=False)


@pytest.fixture
def raw(store_kind: str, request: pytest.FixtureRequest) -> Iterator[RawAccess]:
    """The configured store for ``store_kind`` plus raw access to its keys: built by the
    plugin (``make_store``, as for ``gaesignals_store``), or on a cluster here."""
    if store_kind.endswith("-cluster"):
        store = cluster_store(store_kind, request)
        closable: Any = store
    else:
        store, closable = make_store(store_kind, request)
    gaesignals.configure(store=store)
    client = _raw_client(store_kind, store, request)
    try:
        yield RawAccess(store_kind, store, client)
    finally:
        if client is not None and not isinstance(store, RedisStore) and store_kind != "appengine":
            client.close()
        if closable is not None:
            closable.close()


@pytest.fixture
def memory(request: pytest.FixtureRequest) -> MemoryStore:
    """The plugin's memory store, configured for this test (which every main() call shares)."""
    store, _ = make_store("memory", request)
    assert isinstance(store, MemoryStore)
    gaesignals.configure(store=store)
    return store


@pytest.fixture
def store(raw: RawAccess) -> Store:
    """Each supported store in turn, configured as gaesignals' store for the test."""
    return raw.store
