"""Fixtures: every store the library supports, each behind the same ``store`` fixture.

Real memcached and redis-server processes (and a three-node Redis cluster) are started on free
loopback ports once per session and flushed before each test. Without the binaries those tests
skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

import gaesignals
from gaesignals import config
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import MemcachedServer, RedisClusterServers, RedisServer

STORES = [
    "memory",
    "memory-cas",
    "appengine",
    "memcached",
    "memcached-cluster",
    "redis",
    "redis-cluster",
]


def _need_memcached() -> None:
    if shutil.which("memcached") is None:
        message = "memcached is not installed (apt-get install -y memcached)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the memcached tests", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    _need_memcached()
    with MemcachedServer() as server:
        yield server


@pytest.fixture(scope="session")
def memcached_cluster() -> Iterator[list[MemcachedServer]]:
    _need_memcached()
    servers = [MemcachedServer().start(), MemcachedServer().start()]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def _need_redis() -> None:
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (apt-get install -y redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the redis tests", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    _need_redis()
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    _need_redis()
    with RedisClusterServers() as cluster:
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
        elif self.kind.startswith("redis"):
            assert self.client.set(key, value)
        else:
            assert self.client.set(key, value, noreply=False)

    def set_pickled(self, key: str, obj: object) -> None:
        """Store ``obj`` the way the cache client would if asked to pickle it."""
        if self.kind == "appengine":
            from google.appengine.api import memcache

            memcache.Client().set(key, obj, namespace="")  # the SDK pickles non-bytes values
        elif isinstance(self.store, MemoryStore) or self.kind.startswith("redis"):
            self.set(key, pickle.dumps(obj))  # Redis has no flags: a value is only bytes
        else:
            # flags=1 is pymemcache's pickle_serde marker for pickled values.
            assert self.client.set(key, pickle.dumps(obj), noreply=False, flags=1)

    def get(self, key: str) -> bytes | None:
        with self.store.connection() as conn:
            item = conn.gets_many([key]).get(key)
        return None if item is None else item[0]


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def raw(store_kind: str, request: pytest.FixtureRequest) -> Iterator[RawAccess]:
    """The configured store for ``store_kind`` plus raw access to its keys."""
    if store_kind in ("memory", "memory-cas"):
        store = MemoryStore(append=store_kind == "memory")
        gaesignals.configure(store=store)
        yield RawAccess(store_kind, store)
    elif store_kind == "appengine":
        from google.appengine.api import memcache
        from google.appengine.ext import testbed

        bed = testbed.Testbed()
        bed.activate()
        bed.init_memcache_stub()
        try:
            from gaesignals.stores.appengine import AppEngineStore

            store = AppEngineStore()
            gaesignals.configure(store=store)
            yield RawAccess(store_kind, store, memcache.Client())
        finally:
            bed.deactivate()
    elif store_kind.startswith("redis"):
        from gaesignals.stores.redis import RedisStore

        running: RedisServer | RedisClusterServers = request.getfixturevalue(
            "redis_server" if store_kind == "redis" else "redis_cluster"
        )
        running.flush()
        store = RedisStore.from_url(running.url)
        gaesignals.configure(store=store)
        try:
            yield RawAccess(store_kind, store, store.client)
        finally:
            store.close()
    else:
        from pymemcache.client.base import Client

        from gaesignals.stores.memcached import MemcachedStore

        if store_kind == "memcached":
            server: MemcachedServer = request.getfixturevalue("memcached_server")
            server.flush()
            store = MemcachedStore.from_url(server.url)
            client = Client(server.address, default_noreply=False)
        else:
            servers: list[MemcachedServer] = request.getfixturevalue("memcached_cluster")
            for each in servers:
                each.flush()
            store = MemcachedStore.from_url(
                "memcached://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
            )
            from pymemcache.client.hash import HashClient

            client = HashClient([s.address for s in servers], default_noreply=False)
        gaesignals.configure(store=store)
        try:
            yield RawAccess(store_kind, store, client)
        finally:
            client.close()
            store.close()


@pytest.fixture
def store(raw: RawAccess) -> Store:
    """Each supported store in turn, configured as gaesignals' store for the test."""
    return raw.store
