"""Redis store promises on one server: round trips, scripts, expiry, limits, counters, outages
and hangs.

The contract suite and every store-parametrized test also run against Redis (``redis`` and
``redis-cluster`` in the ``store`` fixture); these are what only Redis has. The round trips and
counters run on a cluster and on Valkey too (``valkey``, ``valkey-cluster``)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

import gaesignals
from gaesignals import PartialFailure, StoreUnavailable, deliver, send
from gaesignals.keys import signal_keys
from gaesignals.pytest_plugin import make_store
from gaesignals.stores import Store
from gaesignals.stores.redis import RedisStore
from gaesignals.stores.redis._router import Router, Sent
from gaesignals.testing import CountingStore, RedisServer

from .conftest import REDIS_FIXTURES, redis_store_of


@pytest.fixture
def own_server(gaesignals_redis: RedisServer) -> Iterator[RedisServer]:
    """A redis-server this test alone may stop, hang and restart (asking for the plugin's
    server first skips or fails the test as the plugin does when Redis is missing)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def gaesignals_store_kind() -> str:
    """The plugin's ``gaesignals_store`` here is a Redis store on its session redis-server."""
    return "redis"


@pytest.fixture
def single(gaesignals_store: Store) -> RedisStore:
    """A store on the session's redis-server, flushed, configured for the test (the plugin's)."""
    assert isinstance(gaesignals_store, RedisStore)
    return gaesignals_store


class _CountingRouter(Router):
    """Counts the pipelines sent, i.e. the network round trips."""

    pipelines = 0

    def _pipeline(self, node: Any, group: list[Sent]) -> list[Any]:
        self.pipelines += 1
        return super()._pipeline(node, group)


class _CountingPipelines(RedisStore):
    Router = _CountingRouter


def _counting(store: RedisStore) -> _CountingRouter:
    assert isinstance(store.router, _CountingRouter)
    return store.router


def test_uncontended_send_costs_one_call_with_append(single: RedisStore) -> None:
    """A send is one append, to a missing key too (the append script creates it)."""
    store = CountingStore(single)
    gaesignals.configure(store=store)
    send("fresh", 1)
    assert dict(store.calls) == {"append_many": 1}
    store.calls.clear()
    send("fresh", 2)
    assert dict(store.calls) == {"append_many": 1}
    got: list[Any] = []
    assert deliver({"fresh": got.append}) == 2
    store.calls.clear()
    send("fresh", 3)  # weak delivery leaves an empty value, not a missing key
    assert dict(store.calls) == {"append_many": 1}


@pytest.mark.parametrize("kind", list(REDIS_FIXTURES))
def test_one_batched_call_is_one_round_trip_per_server(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Every batched call is one pipeline per server, whatever the number of keys: one on a
    single server, at most one per node on a cluster (once each server has seen the scripts:
    the first use of one on a server costs one more)."""
    plain = redis_store_of(kind, request)
    store = _CountingPipelines(plain.client)
    servers = 3 if kind.endswith("-cluster") else 1
    keys = [f"rt-{i}" for i in range(50)]
    try:
        with store.connection() as conn:
            counts: list[list[int]] = []
            for _ in range(2):
                conn.delete_many(keys)
                conn.add_many(dict.fromkeys(keys, b"v"))
                tokens = conn.gets_many(keys)
                counts.append([])
                for call in (
                    lambda: conn.add_many(dict.fromkeys(keys, b"v")),
                    lambda: conn.append_many(dict.fromkeys(keys, b"w")),
                    lambda: conn.gets_many(keys),
                    lambda tokens=tokens: conn.cas_many(
                        {k: (b"", t) for k, (_, t) in tokens.items()}
                    ),
                    lambda: conn.set_many(dict.fromkeys(keys, b"x"), expire=60),
                    lambda: conn.delete_many(keys),
                ):
                    _counting(store).pipelines = 0
                    call()
                    counts[-1].append(_counting(store).pipelines)
        # The first time each server sees a script, that call costs one more round trip to it.
        assert all(servers <= count <= 2 * servers for count in counts[0])
        # Then one each; a cluster's 50 keys are spread over every node.
        assert counts[1] == [servers] * 6
    finally:
        plain.close()


def test_scripts_are_reloaded_after_a_flush(
    single: RedisStore, gaesignals_redis: RedisServer
) -> None:
    """A server that forgot the Lua scripts (restart, SCRIPT FLUSH) gets them again in the
    same call: the commands it refused with NOSCRIPT had not run, so nothing is doubled."""
    with single.connection() as conn:
        conn.add_many({"s": b"a"})
        token = conn.gets_many(["s"])["s"][1]
        assert gaesignals_redis.command("SCRIPT", "FLUSH").startswith(b"+OK")
        assert conn.append_many({"s": b"b"}) == {"s": True}
        assert gaesignals_redis.command("SCRIPT", "FLUSH").startswith(b"+OK")
        assert conn.cas_many({"s": (b"c", token)}) == {"s": False}
        assert conn.gets_many(["s"])["s"][0] == b"ab"


def test_expiry_is_in_seconds_and_zero_means_none(single: RedisStore) -> None:
    """add, set and cas take an expiry in seconds (0: none, as on memcached); append keeps the
    key's expiry, and a cas without one removes it."""
    client = single.client
    with single.connection() as conn:
        conn.add_many({"lock": b"me"}, expire=7)
        conn.set_many({"cursor": b"1"})
        assert 0 < client.ttl("lock") <= 7
        assert client.ttl("cursor") == -1
        conn.append_many({"lock": b"!"})
        assert 0 < client.ttl("lock") <= 7
        token = conn.gets_many(["lock"])["lock"][1]
        assert conn.cas_many({"lock": (b"", token)}, expire=0) == {"lock": True}
        assert client.ttl("lock") == -1
        token = conn.gets_many(["lock"])["lock"][1]
        assert conn.cas_many({"lock": (b"you", token)}, expire=30) == {"lock": True}
        assert 7 < client.ttl("lock") <= 30


def test_append_refuses_what_would_pass_the_limit(request: pytest.FixtureRequest) -> None:
    """append stores nothing that would make a value larger than max_value_size (Redis's own
    APPEND has no such limit)."""
    store, closable = make_store("redis", request, max_value_size=100)
    try:
        with store.connection() as conn:
            assert conn.add_many({"q": b"x" * 90}) == {"q": True}
            assert conn.append_many({"q": b"y" * 11}) == {"q": False}
            assert conn.append_many({"q": b"y" * 10}) == {"q": True}
            assert len(conn.gets_many(["q"])["q"][0]) == 100
    finally:
        closable.close()


def test_a_token_is_the_value_read(single: RedisStore) -> None:
    """Redis has no CAS counter: a cas wins while the key holds the very bytes read, even if it
    changed in between and changed back (harmless: see the module docstring), and loses once
    any byte differs."""
    with single.connection() as conn:
        conn.add_many({"t": b"one"})
        token = conn.gets_many(["t"])["t"][1]
        conn.set_many({"t": b"two"})
        assert conn.cas_many({"t": (b"three", token)}) == {"t": False}
        conn.set_many({"t": b"one"})
        assert conn.cas_many({"t": (b"three", token)}) == {"t": True}
        assert conn.cas_many({"t": (b"four", object())}) == {"t": False}


def test_a_key_of_another_type_fails_its_send_not_a_delivery(single: RedisStore) -> None:
    """A queue key turned into a list refuses a send with StoreUnavailable (never a raw redis-py
    exception); deliveries read it as absent, so the other signals of the mapping, and stats,
    carry on, and the list is left as it is."""
    keys = signal_keys("wrong", "")
    single.client.lpush(keys.queue, b"not a string")
    single.client.lpush(keys.counter("delivered"), b"not a counter")
    with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
        send("wrong", 1)
    send("fine", 1)
    got: list[Any] = []
    for reliable in (False, True):
        send("fine", 2)
        assert deliver({"wrong": got.append, "fine": got.append}, reliable=reliable) >= 1
    assert sorted(got) == [1, 2, 2]
    assert gaesignals.stats("wrong")["wrong"]["delivered"] == 0
    assert single.client.lrange(keys.queue, 0, -1) == [b"not a string"]


def test_outage_raises_store_unavailable_and_recovers(own_server: RedisServer) -> None:
    """With Redis down, send and deliver raise StoreUnavailable; once it is back (with no
    scripts loaded), service resumes without restarting anything."""
    store = RedisStore.from_url(own_server.url + "?timeout=1")
    gaesignals.configure(store=store)
    got: list[Any] = []
    try:
        send("s", 1)
        own_server.stop()
        with pytest.raises(StoreUnavailable):
            send("s", 2)
        with pytest.raises(StoreUnavailable):
            deliver({"s": got.append})
        own_server.start()
        send("s", 3)
        send("s", 4)
        assert deliver({"s": got.append}) == 2
        assert got == [3, 4]  # payload 1 died with the server's memory; 2 was never accepted
    finally:
        store.close()


def test_a_hung_server_makes_a_send_raise_within_the_timeout(own_server: RedisServer) -> None:
    """A server that accepts connections but never answers (SIGSTOP) makes a send raise
    StoreUnavailable (never PartialFailure: there is one server) after the timeout, once: no
    retry re-sends a batch that may be applied."""
    store = RedisStore.from_url(own_server.url + "?timeout=0.5")
    gaesignals.configure(store=store)
    assert own_server.process is not None
    pid = own_server.process.pid
    try:
        send("hung", 1)
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            send("hung", 2)
        assert time.monotonic() - started < 1.5
        assert not isinstance(raised.value, PartialFailure)  # one server: nothing partial
    finally:
        os.kill(pid, signal.SIGCONT)
    # The stopped server still applies what it received before the timeout, once; it may
    # serve a new connection before it reads the old one, so deliver until both are seen.
    got: list[Any] = []
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        deliver({"hung": got.append})
    assert got == [1, 2]
    assert deliver({"hung": got.append}) == 0
    store.close()


@pytest.mark.parametrize("kind", list(REDIS_FIXTURES))
def test_counters(kind: str, request: pytest.FixtureRequest) -> None:
    """incr_many adds to decimal counters atomically: a missing one starts at max(delta, 0), a
    negative delta stops at 0, a counter keeps its expiry, and a key holding anything but
    digits (maybe then spaces) is left alone. append_many bumps its counters in the same
    round trip, after the appends, whether or not they were stored."""
    plain = redis_store_of(kind, request)
    store = _CountingPipelines(plain.client)
    try:
        with store.connection() as conn:
            conn.incr_many({"c1": 5, "c2": -3})
            assert {k: v for k, (v, _) in conn.gets_many(["c1", "c2"]).items()} == {
                "c1": b"5",
                "c2": b"0",
            }
            conn.set_many({"spaced": b"7  ", "text": b"seven"})
            conn.add_many({"ttl": b"1"}, expire=60)
            conn.incr_many({"c1": -2, "c2": 4, "spaced": 1, "text": 1, "ttl": 1})
            found = {k: v for k, (v, _) in conn.gets_many(["c1", "c2", "spaced", "text"]).items()}
            assert found == {"c1": b"3", "c2": b"4", "spaced": b"8", "text": b"seven"}
            assert conn.gets_many(["ttl"])["ttl"][0] == b"2"
            assert 0 < plain.client.ttl("ttl") <= 60
            conn.add_many({"q": b"a"})
            conn.incr_many({"n": 0})  # every node has seen the scripts from here on
            _counting(store).pipelines = 0
            result = conn.append_many({"q": b"b", "missing": b"x"}, {"n": 2, "q": 100})
            assert result == {"q": True, "missing": True}  # created, as APPEND does
            assert _counting(store).pipelines <= (1 if kind == "redis" else 3)  # one per server
            assert conn.gets_many(["q", "n"])["n"][0] == b"2"
            assert conn.gets_many(["q"])["q"][0] == b"ab"  # a counter named like an item is not
    finally:
        plain.close()
