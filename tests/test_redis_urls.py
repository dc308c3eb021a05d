"""Redis URLs and clients: the URL forms (redis, rediss, unix, valkey, cluster), a client built
by the application, and what cannot work refused with gaesignals' own errors."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import gaesignals
from gaesignals import ConfigurationError, StoreUnavailable, deliver, send
from gaesignals.stores.redis import RedisStore
from gaesignals.testing import RedisClusterServers, RedisServer

from .conftest import REDIS_FIXTURES


def test_url_forms() -> None:
    """redis://, rediss:// and unix:// URLs build clients with the URL's database, credentials
    and a 3 s timeout by default; nothing connects until first use."""
    store = RedisStore.from_url("redis://:s3cret@10.0.0.9:6380/2?max_value_size=5000")
    kwargs = store.client.get_connection_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("10.0.0.9", 6380, 2)
    assert kwargs["password"] == "s3cret"
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 3.0
    assert store.max_value_size == 5000
    tls = RedisStore.from_url("rediss://cache.internal:6379?timeout=0.5")
    assert tls.client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert tls.client.get_connection_kwargs()["socket_timeout"] == 0.5
    unix = RedisStore.from_url("unix:///run/redis.sock?db=1")
    assert unix.client.get_connection_kwargs()["path"] == "/run/redis.sock"
    assert unix.client.get_connection_kwargs()["db"] == 1
    assert repr(unix) == "RedisStore(/run/redis.sock/1)"
    for each in (store, tls, unix):
        each.close()


def test_valkey_url_forms() -> None:
    """valkey:// and valkeys:// (TLS) URLs build the clients redis:// and rediss:// do: Valkey
    speaks Redis's protocol; a scheme the store does not take is refused, naming those it
    does."""
    plain = RedisStore.from_url("valkey://:s3cret@10.0.0.9:6380/2?timeout=0.5")
    kwargs = plain.client.get_connection_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("10.0.0.9", 6380, 2)
    assert (kwargs["password"], kwargs["socket_timeout"]) == ("s3cret", 0.5)
    assert plain.client.connection_pool.connection_class.__name__ == "Connection"
    tls = RedisStore.from_url("VALKEYS://cache.internal")
    assert tls.client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert tls.client.get_connection_kwargs()["host"] == "cache.internal"
    for each in (plain, tls):
        each.close()
    with pytest.raises(ConfigurationError, match="valkeys://") as refused:
        RedisStore.from_url("memcached://:hunter2@h:1")
    assert "hunter2" not in str(refused.value)


def test_configure_accepts_redis_urls(gaesignals_redis: RedisServer) -> None:
    """GAESIGNALS_STORE and configure(store=...) take Redis URLs."""
    settings = gaesignals.configure(store=gaesignals_redis.url)
    assert isinstance(settings.store, RedisStore)
    settings.store.close()


@pytest.mark.parametrize("kind", ["valkey", "valkey-cluster"])
def test_valkey_urls_reach_a_valkey_server(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valkey:// URL in GAESIGNALS_STORE (a cluster with ?cluster=true) is a Redis store on
    that Valkey server: what is sent there is delivered from there."""
    running: RedisServer | RedisClusterServers = request.getfixturevalue(REDIS_FIXTURES[kind])
    running.flush()
    assert running.url.startswith("valkey://")
    monkeypatch.setenv("GAESIGNALS_STORE", running.url)
    store = gaesignals.config.get_settings().store
    assert isinstance(store, RedisStore) and store.clustered == kind.endswith("-cluster")
    try:
        send("on-valkey", 1)
        got: list[Any] = []
        assert deliver({"on-valkey": got.append}) == 1 and got == [1]
        server = store.client.get_nodes()[0].redis_connection if store.clustered else store.client
        assert server.info("server")["server_name"] == "valkey"
    finally:
        store.close()


def test_a_client_that_decodes_responses_is_refused() -> None:
    """Values are bytes: a client built with decode_responses=True is a programming error."""
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(redis.Redis(decode_responses=True))


def test_a_ready_client_works(
    gaesignals_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The adapter takes a redis.Redis built by the application, and warns when that client
    would retry (and so could apply a timed-out batch twice)."""
    gaesignals_redis.flush()
    quiet = redis.Redis(port=gaesignals_redis.port, retry=Retry(NoBackoff(), 0))
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        gaesignals.configure(store=RedisStore(quiet), secret_key="k" * 32)
    assert "retries" not in caplog.text
    got: list[Any] = []
    send("own", 1)
    assert deliver({"own": got.append}) == 1 and got == [1]
    quiet.close()
    retrying = redis.Redis(port=gaesignals_redis.port, retry=Retry(NoBackoff(), 3))
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        RedisStore(retrying)
    assert "retries failed commands" in caplog.text
    retrying.close()


def test_bad_cluster_urls_raise_configuration_error() -> None:
    """A cluster URL with a database or a unix socket cannot work."""
    with pytest.raises(ConfigurationError):
        RedisStore.from_url("unix:///tmp/r.sock?cluster=true")


def test_an_unreachable_cluster_is_store_unavailable() -> None:
    """Building a cluster store asks a node for the slot map: none answering is
    StoreUnavailable, not a redis-py exception."""
    with pytest.raises(StoreUnavailable):
        RedisStore.from_url("redis://127.0.0.1:1?cluster=true&timeout=0.5")
