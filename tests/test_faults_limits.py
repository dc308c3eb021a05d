"""Faults of limits: a small memcached evicting queues (every loss reported), payloads and
queues at the item limit, a full queue with a failing head, and a send_multi written in part.

The counts (lost, duplicated, unexpected) are described in :mod:`tests.fault_harness`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

import gaesignals
from gaesignals import PayloadTooLarge, QueueFull, dead_letters, deliver, send, send_multi
from gaesignals.codec import encode_payload
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.stores.memcached import MemcachedStore
from gaesignals.testing import MemcachedServer

from . import concurrency_workers as cw
from .fault_harness import EVICTION_ARGS, EVICTION_DELIVER_EVERY, SCALE, evicting_run
from .fault_stores import RacingStore, limited_store, payload_of_frame_size, raw_value
from .harness import drain

pytestmark = pytest.mark.slow


# -- eviction: what the cache loses is reported ---------------------------------------------------


@pytest.mark.parametrize("mode", ["weak", "reliable"])
def test_eviction_losses_are_counted_exactly_per_signal(
    own_memcached: Callable[..., MemcachedServer], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every payload a 2 MiB memcached evicts is counted as lost, exactly per signal, and logged."""
    # memcached with 2 MiB of memory under sustained sends to many signals evicts queues (its
    # ``stats`` counts the evictions). Every payload the cache lost is reported: per signal, the
    # ``lost`` counter equals the payloads sent and never delivered, ``sent`` the sends that
    # returned normally and ``delivered`` the handler calls; nothing delivered twice, and the loss
    # is logged as a warning.
    server = own_memcached(memory_mb=2, extra_args=EVICTION_ARGS)
    with caplog.at_level(logging.WARNING, "gaesignals"):
        run = evicting_run(server, mode=mode, sends=None)
    names, ok, got, counters = run["names"], run["ok"], run["got"], run["counters"]
    sent = sum(len(ids) for ids in ok.values())
    delivered = sum(len(ids) for ids in got.values())
    lost = {name: ok[name] - set(got[name]) for name in names}
    reported = sum(c["lost"] for c in counters.values())
    print(
        f"\n[eviction {mode} {SCALE}] {run['seconds']:.1f}s signals={len(names)} "
        f"sends={run['sends']} stored={sent} evictions={run['evictions']} delivered={delivered} "
        f"lost={sum(map(len, lost.values()))} reported lost={reported} "
        f"signals with a loss={sum(1 for ids in lost.values() if ids)}"
    )
    assert run["evictions"] > 0
    assert all(len(ids) == len(set(ids)) for ids in got.values()), "delivered twice"
    over = [name for name in names if counters[name]["lost"] > len(lost[name])]
    assert not over, f"losses over-reported for {over[:5]}"
    assert all(set(ids) <= ok[name] for name, ids in got.items()), "never sent"
    mismatched = {
        name: (counters[name], len(lost[name]))
        for name in names
        if counters[name]["lost"] != len(lost[name])
        or counters[name]["sent"] != len(ok[name])
        or counters[name]["delivered"] != len(got[name])
    }
    assert not mismatched, f"{len(mismatched)} signals misreported: {list(mismatched.items())[:3]}"
    assert reported == sent - delivered > 0
    assert "vanished from the cache before delivery" in caplog.text


def test_without_eviction_no_loss_is_reported(
    own_memcached: Callable[..., MemcachedServer],
) -> None:
    """The same sends on a memcached large enough never to evict report nothing lost, and counters
    that match."""
    # The control run: the same sends and deliveries on a memcached large enough never to evict
    # report nothing lost, and every counter matches what happened.
    server = own_memcached(memory_mb=64, extra_args=EVICTION_ARGS)
    run = evicting_run(server, mode="weak", sends=EVICTION_DELIVER_EVERY * 3)
    counters = run["counters"]
    assert run["evictions"] == 0
    for name in run["names"]:
        assert counters[name]["lost"] == 0
        assert counters[name]["sent"] == len(run["ok"][name]) == len(run["got"][name])
        assert counters[name]["delivered"] == len(run["got"][name])
    print(f"\n[eviction control {SCALE}] sends={run['sends']} evictions=0 reported lost=0")


# -- item limits and partial writes ---------------------------------------------------------------

MAX_ATTEMPTS = 3


@pytest.mark.parametrize("kind", ["memcached", "appengine"])
def test_a_payload_over_the_item_limit_is_refused_and_writes_nothing(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A payload one byte over the item limit raises PayloadTooLarge and writes nothing, and one
    exactly at the limit is delivered."""
    # A payload one byte over the item limit raises PayloadTooLarge and writes nothing, even in a
    # send_multi with payloads that would fit; one exactly at the limit is stored and delivered (on
    # memcached also at the default 1,000,000-byte limit).
    limits = [4096] + ([1_000_000] if kind == "memcached" else [])
    for limit in limits:
        with limited_store(kind, request, limit):
            name = f"big-{limit}"
            queue = signal_keys(name, "").queue
            over = {**payload_of_frame_size(name, limit + 1), "id": 1}
            exact = {**payload_of_frame_size(name, limit), "id": 2}
            with pytest.raises(PayloadTooLarge):
                send(name, over)
            with pytest.raises(PayloadTooLarge):
                send_multi([("small", {"id": 3}), (name, over)])
            nothing = raw_value(queue), raw_value(signal_keys("small", "").queue)
            send(name, exact)
            got = drain([name, "small"])
            print(
                f"\n[payload limit {kind} {limit}] after the refused sends: {nothing}; "
                f"delivered={got}"
            )
            assert nothing == (None, None)
            assert got == [2]


@pytest.mark.parametrize("kind", ["memcached", "appengine"])
def test_a_full_queue_refuses_sends_and_delivers_those_it_took(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Sends to a signal declared with one shard until QueueFull deliver every send that
    returned, in order, none that raised, and never pass the item limit."""
    # Sends to one signal until QueueFull (10 KB payloads, then 100-byte ones): every send that
    # returned normally is delivered, in order, none that raised QueueFull is, and the pending bytes
    # never pass the item limit (the README: "QueueFull: the signal's pending bytes would pass the
    # item limit"; "Item limit: 1,000,000 bytes per signal key").
    limit = 1_000_000
    with limited_store(kind, request, limit):
        name = "full"
        gaesignals.declare(name, shards=1)  # fixed: full at one key (undeclared ones spread)
        ok: list[int] = []
        refused: list[int] = []
        pid = 0
        for pad in (10_000, 100):
            while True:
                pid += 1
                try:
                    send(name, {"id": pid, "pad": "x" * pad})
                except QueueFull:
                    refused.append(pid)
                    break
                ok.append(pid)
        pending = len(raw_value(signal_keys(name, "").queue) or b"")
        got: list[int] = []
        deliver({name: lambda d: got.append(d["id"])})
        print(
            f"\n[queue limit {kind}] sends stored={len(ok)} refused with QueueFull="
            f"{len(refused)} pending bytes at the end={pending:,} (limit {limit:,}) "
            f"delivered={len(got)} in order={got == ok} refused yet delivered="
            f"{len(set(got) & set(refused))}"
        )
        assert got == ok
        assert not set(got) & set(refused)
        assert pending <= limit, (
            f"the queue holds {pending:,} bytes, over the {limit:,}-byte item limit (on "
            "memcached, append_many must refuse an append the last seen size says would pass "
            "max_value_size)"
        )


@pytest.mark.parametrize("kind", ["memcached", "appengine"])
def test_a_full_queue_with_a_failing_head_still_dead_letters_it(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A full queue whose first payload always fails still dead-letters it after max_attempts and
    delivers the rest."""
    # A full queue whose first payload always fails: reliable delivery counts an attempt each time,
    # dead-letters it after max_attempts and delivers the rest.
    with limited_store(kind, request, 1_000_000):
        name = "stuck"
        gaesignals.declare(name, retry_delay=0, shards=1)  # retried at once; full at one key
        sent = 0
        try:
            while True:
                send(name, {"id": sent, "pad": "x" * 10_000})
                sent += 1
        except QueueFull:
            pass
        pending = len(raw_value(signal_keys(name, "").queue) or b"")
        got: list[int] = []

        def handler(data: dict[str, Any]) -> None:
            if data["id"] == 0:
                raise RuntimeError("refused")
            got.append(data["id"])

        for _ in range(MAX_ATTEMPTS):
            deliver({name: handler}, reliable=True, max_attempts=MAX_ATTEMPTS)
        dead = [d["id"] for d in dead_letters(name)]
        print(
            f"\n[full queue, failing head {kind}] payloads={sent} pending bytes={pending:,} "
            f"after {MAX_ATTEMPTS} reliable deliveries: dead letters={dead} delivered="
            f"{len(got)}"
        )
        assert dead == [0], (
            f"the failing payload was never dead-lettered (dead letters {dead}, {len(got)} of "
            f"{sent - 1} others delivered): the queue ({pending:,} bytes) is over "
            "max_value_size, so the acknowledgement's cas (which rewrites the queue with the "
            "failed payload's attempt count) is refused by the adapter before it is sent "
            "(gaesignals/stores/memcached/_connection.py) and the signal is stuck"
        )
        assert got == list(range(1, sent))


@pytest.mark.parametrize("kind", ["memcached", "appengine"])
def test_send_multi_to_a_full_signal_names_every_key_it_left_unwritten(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A send_multi that raises QueueFull names in its keys every key it left unwritten, so every
    payload of a signal not named arrives."""
    # send_multi to a full signal and to others: QueueFull lists in ``args[1]`` the keys left
    # unwritten, "the other signals' payloads were stored" (its docstring). So every payload of a
    # signal not listed must arrive. On App Engine (gets + cas) the room check runs before any
    # write; on memcached the other signal's key is created by a concurrent first send between this
    # send's append and add.
    with limited_store(kind, request, 1_000_000) as store:
        gaesignals.declare("a", shards=1)  # full at one key (an undeclared signal spreads)
        for filler in ({"id": 0, "pad": "x" * 10_000}, {"id": 0}):  # the last as big as {"id": 1}
            with pytest.raises(QueueFull):
                for _ in range(200_000):
                    send("a", filler)
        settings = get_settings()
        if kind == "memcached":
            assert isinstance(store, MemcachedStore)
            key = signal_keys("b", "").queue
            rival = encode_payload("b", {"id": -1}, signal_keys("b", ""), settings)
            server = request.getfixturevalue("gaesignals_memcached")
            gaesignals.configure(
                store=RacingStore(store, server, key, rival), secret_key=cw.SECRET_KEY
            )
        batch = [("a", {"id": 1}), ("b", {"id": 2}), ("c", {"id": 3})]
        with pytest.raises(QueueFull) as raised:
            send_multi(batch)
        unwritten = raised.value.keys
        gaesignals.configure(store=store, secret_key=cw.SECRET_KEY)
        got: dict[str, list[int]] = {"a": [], "b": [], "c": []}
        deliver([(name, lambda d, name=name: got[name].append(d["id"])) for name in got])
        reported_stored = {
            pid
            for name, data in batch
            for pid in [data["id"]]
            if signal_keys(name, "").queue not in unwritten
        }
        arrived = {pid for ids in got.values() for pid in ids}
        print(
            f"\n[send_multi partial write {kind}] QueueFull args[1]={unwritten} reported "
            f"stored={sorted(reported_stored)} arrived={sorted(arrived & {1, 2, 3})} "
            f"reported stored but never arrived={sorted(reported_stored - arrived)}"
        )
        assert reported_stored <= arrived, (
            f"send_multi reported {sorted(reported_stored - arrived)} stored (their keys are "
            f"not in QueueFull's args[1] = {unwritten}) but they never arrived: append_frames "
            "raises QueueFull naming only the full keys while other keys of the batch are still "
            "unwritten (gaesignals/signals.py, append_frames/_make_room)"
        )
        assert 1 not in arrived
