"""memcached-specific promises: restarts, outages, round trips and clients."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
from pymemcache.client.base import Client, PooledClient

import gaesignals
from gaesignals import Signal, SignalsMiddleware, StoreUnavailable, deliver, send
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.stores.memcached import MemcachedStore, _wire
from gaesignals.testing import CountingStore, MemcachedServer


@pytest.fixture
def own_server(own_memcached: Callable[..., MemcachedServer]) -> MemcachedServer:
    """A memcached this test alone may stop and restart."""
    return own_memcached()


def test_token_from_before_a_restart_cannot_wipe_new_payloads(own_server: MemcachedServer) -> None:
    """memcached restarts its CAS counter from 1, so a token read before a restart may equal
    the token of an item written after it. The stale token must be refused, not compared."""
    store = MemcachedStore.from_url(own_server.url)
    gaesignals.configure(store=store)
    key = signal_keys("restarted", "").queue
    try:
        with store.connection() as conn:
            send("restarted", "old")
            stale = conn.gets_many([key])[key]
            own_server.restart()
            store.sizes.clear()  # as a fresh process would: the same commands as before
            # The same writes on the fresh server yield the same CAS value as before...
            send("restarted", "new")
            raw = Client(own_server.address, default_noreply=False)
            _, fresh_cas = raw.gets(key)
            raw.close()
            assert fresh_cas == stale[1].cas  # type: ignore[attr-defined]
            # ...yet the reset with the stale token is refused, so "new" survives.
            with pytest.raises(StoreUnavailable):
                conn.cas_many({key: (b"", stale[1])})
            assert conn.cas_many({key: (b"", stale[1])}) == {key: False}
        got: list[Any] = []
        assert deliver({"restarted": got.append}) == 1
        assert got == ["new"]
    finally:
        store.close()


def test_outage_raises_store_unavailable_and_recovers(
    own_server: MemcachedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With memcached down, send and deliver raise StoreUnavailable (send never reports a
    success it did not have), the middleware logs once and serves the request, and service
    resumes when memcached is back, without restarting anything."""
    store = MemcachedStore.from_url(own_server.url + "?timeout=1")
    gaesignals.configure(store=store)
    got: list[Any] = []
    served: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        served.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = SignalsMiddleware(app, [("s", got.append)])
    try:
        send("s", 1)
        own_server.stop()
        with pytest.raises(StoreUnavailable):
            send("s", 2)
        with pytest.raises(StoreUnavailable):
            deliver({"s": got.append})
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="gaesignals"):
            assert wrapped({"PATH_INFO": "/down"}, lambda *a: None) == [b"ok"]
        assert served == ["/down"]
        assert len([r for r in caplog.records if r.name == "gaesignals"]) == 1
        own_server.start()
        send("s", 3)
        assert deliver({"s": got.append}) == 1
        assert got == [3]  # payload 1 died with the server's memory; 2 was never accepted
    finally:
        store.close()


def test_weak_delivery_of_50_signals_costs_two_calls(gaesignals_memcached: MemcachedServer) -> None:
    """Weak delivery of 50 non-empty signals makes one batched read and one batched reset,
    the counters riding ahead of the resets in the same pipeline (a failing handler or a lost
    race adds one call to correct them); with nothing pending it makes the read only (after
    the first delivery, which creates the signals' lost counters)."""
    gaesignals_memcached.flush()
    inner = MemcachedStore.from_url(gaesignals_memcached.url)
    store = CountingStore(inner)
    gaesignals.configure(store=store)
    names = [f"sig{i}" for i in range(50)]
    try:
        gaesignals.send_multi([(n, n) for n in names])
        deliver([(n, lambda d: None) for n in names])  # the first delivery creates counters
        gaesignals.send_multi([(n, n) for n in names])
        store.calls.clear()
        got: list[Any] = []
        assert deliver([(n, got.append) for n in names]) == 50
        assert dict(store.calls) == {"scan_many": 1, "cas_many": 1}
        store.calls.clear()
        assert deliver([(n, got.append) for n in names]) == 0
        assert dict(store.calls) == {"scan_many": 1}
    finally:
        inner.close()


def test_one_batched_call_is_one_network_round_trip(gaesignals_memcached: MemcachedServer) -> None:
    """On one server, each batched call is a single write and read on the socket: the 50-key
    reset, with the counter updates ahead of it, is pipelined, not 50 requests."""
    gaesignals_memcached.flush()
    store = MemcachedStore.from_url(gaesignals_memcached.url)
    gaesignals.configure(store=store)
    names = [f"rt{i}" for i in range(50)]
    gaesignals.send_multi([(n, 1) for n in names])
    deliver([(n, lambda d: None) for n in names])  # the first delivery creates counters
    gaesignals.send_multi([(n, 1) for n in names])
    sends: list[int] = []
    real_sendall = socket.socket.sendall

    def counting_sendall(self: socket.socket, data: Any, *args: Any) -> None:
        sends.append(len(data))
        real_sendall(self, data, *args)

    try:
        socket.socket.sendall = counting_sendall  # type: ignore[method-assign]
        assert deliver([(n, lambda d: None) for n in names]) == 50
    finally:
        socket.socket.sendall = real_sendall  # type: ignore[method-assign]
        store.close()
    assert len(sends) == 2


def test_uncontended_send_costs_one_call_with_append(gaesignals_memcached: MemcachedServer) -> None:
    """A send is one call: to a key this store has not seen yet, an append and an add of the
    same value in one pipeline (one of them stores it); otherwise an append (the one-send
    fast path, ``append_one``)."""
    gaesignals_memcached.flush()
    inner = MemcachedStore.from_url(gaesignals_memcached.url)
    store = CountingStore(inner)
    gaesignals.configure(store=store)
    try:
        send("fresh", 1)
        assert dict(store.calls) == {"append_many": 1}  # a key not seen yet: append + add
        store.calls.clear()
        send("fresh", 2)
        assert dict(store.calls) == {"append_one": 1}
        store.calls.clear()
        gaesignals.send_multi([("fresh", 3), ("fresh", 4), ("other", 5)])
        assert dict(store.calls) == {"append_many": 1}
        store.calls.clear()
        got: list[Any] = []
        assert deliver({"fresh": got.append, "other": got.append}) == 5
        assert got == [1, 2, 3, 4, 5]
    finally:
        inner.close()


def test_send_to_a_key_gone_since_last_seen_stores_it_and_counts_it_once(
    gaesignals_memcached: MemcachedServer,
) -> None:
    """The fast path appends to a key this process has seen; when the cache dropped it
    meanwhile (evicted, flushed), the append is refused and the general path adds the key:
    the payload is stored once and ``sent`` counted once, though its bump already went out."""
    gaesignals_memcached.flush()
    inner = MemcachedStore.from_url(gaesignals_memcached.url)
    store = CountingStore(inner)
    gaesignals.configure(store=store)
    try:
        send("gone", 1)
        gaesignals_memcached.flush()  # the key, and the counter, vanish
        store.calls.clear()
        send("gone", 2)
        assert dict(store.calls) == {"append_one": 1, "append_many": 1}
        assert gaesignals.stats("gone")["gone"]["sent"] == 1
        send("gone", 3)  # the key is known again: fast
        got: list[Any] = []
        assert deliver({"gone": got.append}) == 2
        assert got == [2, 3]
        assert gaesignals.stats("gone")["gone"]["sent"] == 2
    finally:
        inner.close()


def test_fast_send_on_a_dead_socket_raises_and_recovers(own_server: MemcachedServer) -> None:
    """A send through the fast path whose server died raises StoreUnavailable (the pooled
    socket is thrown away, never reused half-read); once the server is back the next send
    reconnects and stores."""
    store = MemcachedStore.from_url(own_server.url + "?timeout=1")
    gaesignals.configure(store=store)
    try:
        send("fast", 1)
        send("fast", 2)  # the fast path: a known key on an open socket
        own_server.restart()
        with pytest.raises(StoreUnavailable):
            send("fast", 3)  # the old socket is dead
        send("fast", 4)
        got: list[Any] = []
        assert deliver({"fast": got.append}) == 1
        assert got == [4]  # 1 and 2 died with the server's memory; 3 was never accepted
    finally:
        store.close()


def test_plain_and_pooled_clients_work(gaesignals_memcached: MemcachedServer) -> None:
    """The adapter takes a ready Client or PooledClient, whatever their noreply default."""
    gaesignals_memcached.flush()
    for client in (
        Client(gaesignals_memcached.address),  # default_noreply=True must not matter
        PooledClient(gaesignals_memcached.address, max_pool_size=4),
    ):
        store = MemcachedStore(client)
        gaesignals.configure(store=store)
        got: list[Any] = []
        Signal("c").send("x")
        assert deliver({"c": got.append}) == 1
        assert got == ["x"]
        key = signal_keys("c", get_settings().namespace).lock
        assert deliver({"c": got.append}, reliable=True) == 0
        with store.connection() as conn:
            assert conn.add_many({key: b"held"}) == {key: False}  # lock left as released marker
        store.close()


def test_cluster_spreads_and_drains_every_node(memcached_cluster: list[MemcachedServer]) -> None:
    """With a HashClient, signals land on both nodes and one delivery drains them all."""
    for server in memcached_cluster:
        server.flush()
    url = "memcached://" + ",".join(f"127.0.0.1:{s.port}" for s in memcached_cluster)
    store = MemcachedStore.from_url(url)
    gaesignals.configure(store=store)
    names = [f"spread{i}" for i in range(40)]
    try:
        gaesignals.send_multi([(n, n) for n in names])
        per_node = []
        for server in memcached_cluster:
            raw = Client(server.address, default_noreply=False)
            keys = [signal_keys(n, "").queue for n in names]
            per_node.append(len(raw.get_many(keys)))
            raw.close()
        assert all(count > 0 for count in per_node) and sum(per_node) == 40
        got: list[Any] = []
        assert deliver([(n, got.append) for n in names]) == 40
        assert sorted(got) == sorted(names)
    finally:
        store.close()


def test_cluster_fails_over_and_finds_stranded_payloads(
    own_memcached: Callable[..., MemcachedServer],
) -> None:
    """With one node of a three-node cluster down, sends keep working (its keys move to the
    other nodes); when it is back, payloads sent meanwhile are stranded away from their home
    node, and delivery still finds them (it reads every live node) before the newer ones."""
    import time

    from pymemcache.client.hash import HashClient

    servers = [own_memcached() for _ in range(3)]
    client = HashClient(
        [s.address for s in servers],
        use_pooling=True,
        retry_attempts=0,
        dead_timeout=1,
        connect_timeout=1,
        timeout=1,
    )
    store = MemcachedStore(client)
    gaesignals.configure(store=store)
    names = [f"node{i}" for i in range(60)]
    try:
        homed_on_victim = [
            n
            for n in names
            if store.client_for(signal_keys(n, "").queue).server == servers[0].address
        ]
        assert homed_on_victim
        servers[0].stop()
        gaesignals.send_multi([(n, "during") for n in names])  # no StoreUnavailable
        servers[0].start()
        deadline = time.monotonic() + 10
        while len(store.live_clients()) < 3:
            assert time.monotonic() < deadline, "the node never came back into the ring"
            time.sleep(0.1)
            store.client_for(signal_keys(names[0], "").queue)  # lets HashClient retry dead nodes
        gaesignals.send_multi([(n, "after") for n in names])
        got: dict[str, list[str]] = {n: [] for n in names}
        mapping = [(n, lambda d, n=n: got[n].append(d)) for n in names]
        assert deliver(mapping) == 120
        assert all(got[n] == ["during", "after"] for n in names), got
        assert deliver(mapping) == 0
    finally:
        store.close()


def test_reliable_delivery_drains_stranded_copies_too(
    own_memcached: Callable[..., MemcachedServer],
) -> None:
    """Reliable delivery on a cluster also takes the copies stranded on other nodes."""
    from pymemcache.client.hash import HashClient

    servers = [own_memcached() for _ in range(2)]
    client = HashClient([s.address for s in servers], use_pooling=True, default_noreply=False)
    store = MemcachedStore(client)
    gaesignals.configure(store=store)
    try:
        key = signal_keys("stray", "").queue
        home = store.client_for(key).server
        other = next(s for s in servers if s.address != home)
        import pickle

        from gaesignals import frames

        raw = Client(other.address, default_noreply=False)
        raw.set(key, frames.encode(pickle.dumps("stranded"), key.encode()))
        raw.close()
        send("stray", "home")
        got: list[Any] = []
        assert deliver({"stray": got.append}, reliable=True) == 2
        assert got == ["stranded", "home"]
        assert deliver({"stray": got.append}, reliable=True) == 0
    finally:
        store.close()


class _Chunked:
    """A socket stand-in that hands out a fixed reply in chunks of the given sizes."""

    def __init__(self, reply: bytes, sizes: list[int]) -> None:
        self.reply = reply
        self.sizes = sizes
        self.sent: list[bytes] = []

    def recv(self, limit: int) -> bytes:
        size = min(self.sizes.pop(0) if self.sizes else len(self.reply), limit)
        chunk, self.reply = self.reply[:size], self.reply[size:]
        return chunk


@pytest.mark.parametrize("seed", range(40))
def test_replies_parse_whatever_the_chunk_boundaries(seed: int) -> None:
    """The bulk reply readers give the same answer however the server's bytes are split
    into reads (values holding CR LF and "END" included), and refuse a short or garbled reply
    as a connection error rather than guessing."""
    import random

    rng = random.Random(seed)
    values = [b"", b"END\r\n", bytes(range(256)) * 3, b"\r\n" * 40, b"x" * rng.randint(0, 5000)]
    reply = b"".join(
        b"VALUE k%d 0 %d %d\r\n%s\r\n" % (i, len(v), 100 + i, v) for i, v in enumerate(values)
    )
    reply += b"END\r\n"
    sizes = [rng.randint(1, 7) for _ in range(len(reply))]
    found = _wire.read_values(_Chunked(reply, sizes))  # type: ignore[arg-type]
    assert found == [(b"k%d" % i, v, b"%d" % (100 + i)) for i, v in enumerate(values)]
    lines = b"STORED\r\nHD s12\r\nNOT_STORED\r\nHD\r\n"
    sizes = [rng.randint(1, 5) for _ in range(len(lines))]
    assert _wire.read_lines(_Chunked(lines, sizes), 4) == [  # type: ignore[arg-type]
        b"STORED",
        b"HD s12",
        b"NOT_STORED",
        b"HD",
    ]
    with pytest.raises(ConnectionError):
        _wire.read_values(_Chunked(reply[: rng.randint(0, len(reply) - 1)], sizes))  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        _wire.read_values(_Chunked(b"VALUE k 0 3 1\r\nabcd\r\nEND\r\n", []))  # type: ignore[arg-type]


def _open_sockets(store: MemcachedStore) -> list[Any]:
    """The sockets of the clients a pooled store holds idle: its pool's, and those it parked."""
    return [c.sock for c in [*store.client.client_pool._free_objs, *store._parked]]


def test_a_forked_child_opens_its_own_sockets(gaesignals_memcached: MemcachedServer) -> None:
    """A pre-forking server's workers inherit the parent's pooled sockets; two processes on one
    connection would read each other's replies. A forked child drops them (closing its copies
    only) and connects afresh, and the parent's connection keeps working."""
    import os

    gaesignals_memcached.flush()
    store = MemcachedStore.from_url(gaesignals_memcached.url)
    gaesignals.configure(store=store)
    try:
        send("forked", "parent 1")
        send("forked", "parent 2")  # a pooled socket is open now
        # The socket objects themselves are held, so that their ids cannot be reused.
        held = _open_sockets(store)
        inherited = {id(sock) for sock in held}
        assert held and None not in held
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                send("forked", "child")
                used = {id(sock) for sock in _open_sockets(store)}
                code = 0 if used and not used & inherited else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        send("forked", "parent 3")  # over the parent's own socket, still up
        assert {id(sock) for sock in _open_sockets(store)} == inherited
        got: list[Any] = []
        assert deliver({"forked": got.append}) == 4
        assert sorted(got) == ["child", "parent 1", "parent 2", "parent 3"]
    finally:
        store.close()


def test_the_byte_limit_across_processes_is_the_read_budget_and_loses_nothing(
    gaesignals_memcached: MemcachedServer,
) -> None:
    """On memcached each process checks a key's size as it last saw it, so processes that have
    not seen a key full may each append one payload past ``max_value_size``; past the read
    budget (twice the limit) a key's frames stay in its own item, which memcached bounds, and
    sends raise QueueFull. Every send that returned is delivered; none is dropped or lost."""
    gaesignals_memcached.flush()
    gaesignals.declare("big", shards=1)  # one key: an undeclared signal would spread
    processes = [MemcachedStore.from_url(gaesignals_memcached.url) for _ in range(4)]
    payload = b"x" * 900_000
    stored, refused = [], []
    try:
        gaesignals.configure(store=processes[0])
        send("big", (0, payload))
        with pytest.raises(gaesignals.QueueFull):  # one process never passes the limit
            send("big", (0, payload))
        for index, store in enumerate(processes):
            gaesignals.configure(store=store)
            try:
                send("big", (index + 1, payload))
                stored.append(index + 1)
            except gaesignals.QueueFull:
                refused.append(index + 1)
        assert stored == [2, 3] and refused == [1, 4]
        budget = 2 * processes[0].max_value_size
        assert gaesignals.pending("big")["big"].bytes <= budget + 1024 * 1024  # memcached's -I
        got: list[int] = []
        assert deliver({"big": lambda data: got.append(data[0])}) == 3
        assert sorted(got) == [0, 2, 3]
        counts = gaesignals.stats("big")["big"]
        assert (counts["dropped"], counts["lost"]) == (0, 0)
    finally:
        for store in processes:
            store.close()
