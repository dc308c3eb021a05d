"""Redis cluster promises: keys spread over every node, MOVED and ASK followed, a command's error
or a hung node costs only its own keys.

A node hung mid-batch (paused with SIGSTOP) is resumed by the test that paused it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

import gaesignals
from gaesignals import PartialFailure, StoreUnavailable, deliver, send
from gaesignals.keys import signal_keys
from gaesignals.stores.redis import RedisStore
from gaesignals.stores.redis._router import Router
from gaesignals.stores.redis._scripts import CAS, SHA, TAKE
from gaesignals.testing import RedisClusterServers, RedisServer

from .conftest import cluster_store, new_redis_cluster


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    """A store on the session's three-node Redis cluster, flushed, configured for the test."""
    store = cluster_store("redis-cluster", request)
    assert isinstance(store, RedisStore)
    gaesignals.configure(store=store)
    yield store
    store.close()


def test_cluster_spreads_and_drains_every_node(
    cluster: RedisStore, redis_cluster: RedisClusterServers
) -> None:
    """Signals land on every node of a cluster, and one delivery drains them all."""
    names = [f"spread-{i}" for i in range(30)]
    gaesignals.send_multi([(name, name) for name in names])
    client: RedisCluster = cluster.client
    queues = [client.get_redis_connection(n).keys("gs::q:*") for n in client.get_primaries()]
    assert len(queues) == 3 and all(queues)
    assert sorted(key for keys in queues for key in keys) == sorted(
        signal_keys(name, "").queue.encode() for name in names
    )
    got: list[Any] = []
    assert deliver({name: got.append for name in names}) == len(names)
    assert sorted(got) == sorted(names)


def test_cluster_follows_moved_with_a_stale_slot_map(cluster: RedisStore) -> None:
    """A command sent to the wrong node (a stale slot map, as after a failover or resharding)
    is answered MOVED, not run there, and is sent again to the key's node."""
    client: RedisCluster = cluster.client
    slot = client.keyslot("moved")
    manager = client.nodes_manager
    home = manager.get_node_from_slot(slot)
    other = next(node for node in client.get_primaries() if node.name != home.name)
    with cluster.connection() as conn:
        manager.slots_cache[slot] = [other]
        assert conn.add_many({"moved": b"v"}) == {"moved": True}
        assert manager.get_node_from_slot(slot).name == home.name
        manager.slots_cache[slot] = [other]
        assert conn.append_many({"moved": b"w"}) == {"moved": True}
        assert conn.gets_many(["moved"])["moved"][0] == b"vw"


def test_a_cluster_command_answered_with_an_error_fails_alone(cluster: RedisStore) -> None:
    """On a cluster, a command answered with an error (here: a key of the wrong type) fails
    alone: every other command of the batch runs, then PartialFailure carries their answers."""
    keys = [f"typed-{i}" for i in range(12)]
    cluster.client.lpush("typed-3", b"a list")
    with cluster.connection() as conn:
        assert conn.add_many(dict.fromkeys(keys, b"v")) == {k: k != "typed-3" for k in keys}
        with pytest.raises(PartialFailure, match="WRONGTYPE") as raised:
            conn.append_many(dict.fromkeys(keys, b"w"))
        assert raised.value.results == {k: True for k in keys if k != "typed-3"}
        assert {k: v for k, (v, _) in conn.gets_many(keys[4:]).items()} == dict.fromkeys(
            keys[4:], b"vw"
        )


def _node_id(server: RedisServer) -> str:
    return server.command("CLUSTER", "MYID").split(b"\r\n")[1].decode()


def test_cluster_follows_ask_during_a_slot_migration(
    cluster: RedisStore, redis_cluster: RedisClusterServers
) -> None:
    """While a slot migrates, keys already moved are answered ASK: the command goes to the
    importing node after ASKING, and is applied there once."""
    client: RedisCluster = cluster.client
    slot = client.keyslot("asked")
    home_port = client.nodes_manager.get_node_from_slot(slot).port
    source = next(n for n in redis_cluster.nodes if n.port == home_port)
    target = next(n for n in redis_cluster.nodes if n.port != home_port)
    assert target.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", _node_id(source))[:3] == (
        b"+OK"
    )
    assert source.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", _node_id(target))[:3] == (
        b"+OK"
    )
    try:
        with cluster.connection() as conn:
            assert conn.add_many({"asked": b"v"}) == {"asked": True}  # missing on the source
            assert conn.append_many({"asked": b"w"}) == {"asked": True}
            assert conn.gets_many(["asked"])["asked"][0] == b"vw"
        assert target.command("DBSIZE").startswith(b":1")
        assert source.command("DBSIZE").startswith(b":0")
    finally:
        for node in (source, target):
            node.command("CLUSTER", "SETSLOT", str(slot), "STABLE")
        redis_cluster.flush()


# -- a cluster node that hangs mid-batch ---------------------------------------------------------


@pytest.fixture(scope="module")
def hanging_cluster(gaesignals_redis: RedisServer) -> Iterator[RedisClusterServers]:
    """A three-node cluster of this module's own, whose nodes its tests SIGSTOP."""
    with new_redis_cluster() as running:
        yield running


def _node_of(store: RedisStore, running: RedisClusterServers, key: str) -> RedisServer:
    port = store.client.nodes_manager.get_node_from_slot(store.client.keyslot(key)).port
    return next(node for node in running.nodes if node.port == port)


def _resume(node: RedisServer, running: RedisClusterServers) -> None:
    """SIGCONT ``node``, then wait until it has run what it read while stopped (the
    connections of then are gone: close every store first) and the cluster is ok again."""
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    with redis.Redis(port=node.port, socket_timeout=2, retry=Retry(NoBackoff(), 0)) as probe:
        while probe.info("clients")["connected_clients"] > 1 or not all(
            b"cluster_state:ok" in each.command("CLUSTER", "INFO") for each in running.nodes
        ):
            assert time.monotonic() < deadline, "the resumed node did not settle within 10 s"
            time.sleep(0.02)


@contextmanager
def _hung(node: RedisServer, store: RedisStore, running: RedisClusterServers) -> Iterator[None]:
    """``node`` hangs for the block: it accepts connections and reads requests, and answers
    nothing (well below the cluster's 5 s node timeout, so the others never mark it failed)."""
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        store.close()
        _resume(node, running)


def test_a_hung_cluster_node_costs_only_its_own_keys(hanging_cluster: RedisClusterServers) -> None:
    """On a cluster, a node that took a batch and never answers stops nothing else: the other
    nodes' commands run, then PartialFailure carries their answers keyed as the method answers
    (a key of the hung node is left out: its command may yet be applied; one refused before
    sending is False). cas_many's counters go first in a round trip of their own: a failure
    there is plain StoreUnavailable, and no write was sent."""
    hanging_cluster.flush()
    store = RedisStore.from_url(hanging_cluster.url + "&timeout=0.5")
    victim = hanging_cluster.nodes[1]
    keys = [f"part-{i}" for i in range(30)]
    hung = {key for key in keys if _node_of(store, hanging_cluster, key) is victim}
    answering = [key for key in keys if key not in hung]
    assert hung and answering
    counter = next(
        f"count-{i}" for i in range(100) if _node_of(store, hanging_cluster, f"count-{i}") is victim
    )
    try:
        with store.connection() as conn:
            conn.add_many(dict.fromkeys(keys, b"v"))
            tokens = conn.gets_many(keys)
            with _hung(victim, store, hanging_cluster):
                with pytest.raises(PartialFailure) as read:
                    conn.gets_many(keys)
                assert {k: v for k, (v, _) in read.value.results.items()} == dict.fromkeys(
                    answering, b"v"
                )
                resets = {key: (b"w", token) for key, (_, token) in tokens.items()}
                with pytest.raises(PartialFailure) as written:
                    conn.cas_many(resets | {"refused": (b"w", object())})
                assert written.value.results == dict.fromkeys(answering, True) | {"refused": False}
                assert isinstance(written.value.__cause__, redis.TimeoutError)
            tokens = conn.gets_many(answering)
            with _hung(victim, store, hanging_cluster):
                with pytest.raises(StoreUnavailable) as counted:
                    conn.cas_many(
                        {key: (b"x", token) for key, (_, token) in tokens.items()},
                        counters={counter: 1},
                    )
                assert not isinstance(counted.value, PartialFailure)
                with pytest.raises(PartialFailure) as bumped:
                    conn.incr_many(dict.fromkeys([counter, *(f"tally-{i}" for i in range(9))], 1))
                assert bumped.value.results == {}
            assert {k: v for k, (v, _) in conn.gets_many(answering).items()} == dict.fromkeys(
                answering, b"w"
            )
    finally:
        store.close()


class _HangsBeforeTheTake(Router):
    """SIGSTOPs ``victim`` right before the batch that takes a weak delivery's ``queues``: it
    then holds its part of the take unanswered, as a node that hangs mid-batch would."""

    victim: RedisServer | None = None
    queues: frozenset[str] = frozenset()

    def execute(self, commands: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        victim = self.victim
        taking = {SHA[CAS], SHA[TAKE]}
        if victim is not None and any(
            args[0] == "EVALSHA" and args[1] in taking and key in self.queues
            for key, args in commands
        ):
            assert victim.process is not None
            os.kill(victim.process.pid, signal.SIGSTOP)
            self.victim = None
        return super().execute(commands)


class _HangsBeforeTheResets(RedisStore):
    Router = _HangsBeforeTheTake


@pytest.mark.parametrize("scripts", ["loaded", "flushed"])
def test_weak_delivery_keeps_the_resets_it_won_when_a_cluster_node_hangs(
    scripts: str, hanging_cluster: RedisClusterServers
) -> None:
    """A weak delivery over a cluster whose node hangs as the batched reset goes out runs the
    handlers of every signal on the other nodes, whose resets went through (sent before and
    after the hung node's part), then raises PartialFailure; nothing is delivered twice. The
    hung node's own payloads are decided by what it does with the reset it got: with the
    script loaded it applies it once resumed, so they are lost, and the next delivery reports
    them lost; a node that had forgotten the script refused it, and they are delivered then."""
    hanging_cluster.flush()
    plain = RedisStore.from_url(hanging_cluster.url + "&timeout=0.5")
    store = _HangsBeforeTheResets(plain.client)
    gaesignals.configure(store=store)

    def home(name: str, counter: str = "") -> RedisServer:
        keys = signal_keys(name, "")
        return _node_of(store, hanging_cluster, keys.counter(counter) if counter else keys.queue)

    # Signals on the first node, then on the victim, then on the last: the victim's part of the
    # batched reset is sent after one node's and before another's.
    first, victim, last = hanging_cluster.nodes
    rank = {first.port: 0, victim.port: 1, last.port: 2}
    names = sorted((f"hang-{i:02d}" for i in range(30)), key=lambda n: rank[home(n).port])
    on_victim = {i for i, name in enumerate(names) if home(name) is victim}
    elsewhere = set(range(len(names))) - on_victim
    assert {home(name).port for name in names} == set(rank)  # every node homes some signals
    got: list[int] = []
    mapping = [(name, lambda data: got.append(data["id"])) for name in names]
    try:
        for name in names:
            send(name, {"id": -1})
        deliver(mapping)  # every node has run the reset script, as in a long-lived app
        got.clear()
        if scripts == "flushed":  # as after a restart or SCRIPT FLUSH
            assert victim.command("SCRIPT", "FLUSH").startswith(b"+OK")
        for i, name in enumerate(names):
            send(name, {"id": i})
        router = store.router
        assert isinstance(router, _HangsBeforeTheTake)
        router.victim = victim
        router.queues = frozenset(signal_keys(name, "").queue for name in names)
        try:
            with pytest.raises(PartialFailure):
                deliver(mapping)
        finally:
            store.close()
            _resume(victim, hanging_cluster)
        assert sorted(got) == sorted(elsewhere), (
            f"handled {len(got)} payloads; {len(elsewhere)} were on the nodes that answered"
        )
        again = deliver(mapping)
        counts = gaesignals.stats(names)
        lost = {i for i, name in enumerate(names) if counts[name]["lost"]}
        assert len(got) == len(set(got))  # nothing twice
        if scripts == "loaded":
            assert again == 0 and set(got) == elsewhere
            # A signal's counters share its hash slot, so they live on the hung node too,
            # which may never have got the take-back sent when its reset failed: lost
            # detection may under-report there, never over-report.
            assert lost <= on_victim
            assert all(counts[names[i]]["lost"] == 1 for i in lost)
        else:
            assert again == len(on_victim) and lost == set()
            assert sorted(got) == list(range(len(names)))  # each exactly once
        assert deliver(mapping) == 0
        assert all(p.count == 0 for p in gaesignals.pending(names).values())
    finally:
        store.close()  # the next test waits for the node's clients to be gone
