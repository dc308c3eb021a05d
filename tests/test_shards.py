"""Sharded signals (``declare(name, shards=N)``) and ``ttl``, the same on every store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import gaesignals
from gaesignals import (
    QueueFull,
    dead_letters,
    declare,
    deliver,
    frames,
    requeue_dead_letters,
    send,
    send_multi,
)
from gaesignals.codec import encode_payload
from gaesignals.config import get_settings
from gaesignals.keys import base_queue_key, shard_keys, signal_keys
from gaesignals.queue import routing
from gaesignals.queue.routing import queues_of
from gaesignals.stores import Cached
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import CountingStore, captured_signals, eager_signals

from .conftest import RawAccess


def on_shard(name: str, index: int) -> None:
    """Make this thread's next sends of ``name`` go to shard ``index``."""
    queues = queues_of(name, get_settings())
    routing.stick(queues, queues[index])


def pending_per_shard(raw: RawAccess, name: str) -> list[int]:
    """How many payloads each shard of ``name`` holds, read behind the library's back."""
    counts = []
    base = signal_keys(name, get_settings().namespace).queue.encode()
    for key in queues_of(name, get_settings()):
        value = raw.get(key) or b""
        counts.append(len(frames.parse(value, base, get_settings().secret_keys)[0]))
    return counts


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The time frame ids are stamped with (and ttl is judged by), set by the test."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    yield now


# -- keys -----------------------------------------------------------------------------------------


def test_shard_keys_are_distinct_and_shard_zero_is_the_signal_queue() -> None:
    """Shard 0 keeps the undeclared queue key; every other shard key (queue, cursor, lock) is
    new, and none is any key (queue, lock, dead letters, cursor) of another signal, plain or
    hashed."""
    settings = get_settings()
    assert queues_of("plain", settings) == [signal_keys("plain", "").queue]
    declare("plain", shards=64)
    declare("spaced name", shards=64)
    keys = queues_of("plain", settings) + queues_of("spaced name", settings)
    assert keys[0] == signal_keys("plain", "").queue
    assert keys[64] == signal_keys("spaced name", "").queue
    cursors = [
        key
        for name in ("plain", "spaced name")
        for shard in shard_keys(signal_keys(name, ""), 64)
        for key in (shard.cursor, shard.lock)
    ]
    assert len(set(keys + cursors)) == 384
    others = set()
    for name in ["3:plain", "q3:plain", "plain:3", "1", "spaced name1", "plain3"]:
        k = signal_keys(name, "")
        others |= {k.queue, k.lock, k.dead, k.cursor}
    assert not others & set(keys + cursors)
    for key in keys[:64]:
        assert base_queue_key(key) == keys[0]
    for key in keys[64:]:
        assert base_queue_key(key) == keys[64]
    assert base_queue_key(signal_keys("plain", "").lock) is None
    assert all(len(key) <= 250 for key in queues_of("x" * 242, settings))


def test_long_names_fit_every_shard_key() -> None:
    """A name just short enough to stay plain still gives legal keys with two-digit shards."""
    name = "n" * (250 - 10)
    declare(name, shards=64)
    assert signal_keys(name, "").queue.endswith("{" + name + "}")
    assert max(len(key) for key in queues_of(name, get_settings())) == 250


# -- sending and delivering -----------------------------------------------------------------------


def spread(name: str, count: int, shards: int) -> list[int]:
    """Send payloads 0..count-1 of ``name``, payload i to shard i % shards."""
    for i in range(count):
        on_shard(name, i % shards)
        send(name, i)
    return list(range(count))


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_sharded_sends_are_all_delivered_once(store: Any, raw: RawAccess, reliable: bool) -> None:
    """Payloads on several shards are all delivered, each once, in either mode; each shard
    keeps its own order and nothing is left behind."""
    declare("hot", shards=4)
    sent = spread("hot", 12, 3)
    assert pending_per_shard(raw, "hot") == [4, 4, 4, 0]
    got: list[int] = []
    assert deliver({"hot": got.append}, reliable=reliable) == 12
    assert sorted(got) == sent
    for shard in range(3):
        mine = [n for n in got if n % 3 == shard]
        assert mine == sorted(mine)
    assert pending_per_shard(raw, "hot") == [0, 0, 0, 0]
    assert deliver({"hot": got.append}, reliable=reliable) == 0


def test_one_thread_keeps_its_shard_and_its_order(store: Any, raw: RawAccess) -> None:
    """A thread sends a sharded signal to one shard, chosen once: its payloads keep their
    send order, as with one shard."""
    declare("ordered", shards=8)
    for i in range(20):
        send("ordered", i)
    send_multi([("ordered", 20), ("ordered", 21)])
    assert sorted(pending_per_shard(raw, "ordered")) == [0] * 7 + [22]
    got: list[int] = []
    assert deliver({"ordered": got.append}) == 22
    assert got == list(range(22))


def test_threads_spread_over_shards() -> None:
    """The threads of a process take different shards (up to the number of shards), each
    keeping its own payloads in order."""
    gaesignals.configure(store=MemoryStore())
    declare("busy", shards=16)
    barrier = threading.Barrier(8)

    def sender(index: int) -> None:
        barrier.wait()
        for n in range(10):
            send("busy", (index, n))

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    settings = get_settings()
    with settings.store.connection() as conn:
        current = conn.gets_many(queues_of("busy", settings))
    assert len([v for v, _ in current.values() if v]) == 8
    got: list[tuple[int, int]] = []
    assert deliver({"busy": got.append}) == 80
    for index in range(8):
        assert [n for i, n in got if i == index] == list(range(10))  # per thread: in order


def test_weak_delivery_of_all_shards_is_two_calls(store: Any) -> None:
    """Every shard of every signal is read in one batched call and reset in one more (the
    counters ride in those two; the first delivery of a signal also creates its lost
    counter, one call more); a store with a native take (Redis) takes them all in one."""
    declare("a", shards=4)
    declare("b", shards=3)
    counting = CountingStore(store)
    gaesignals.configure(store=counting)
    spread("a", 1, 4)
    spread("b", 1, 3)
    assert deliver({"a": lambda d: None, "b": lambda d: None}) == 2  # the first: creates them
    spread("a", 8, 4)
    spread("b", 6, 3)
    gaesignals.stats(["a", "b"])  # writes the sent counts a gets + cas store holds back
    counting.calls.clear()
    assert deliver({"a": lambda d: None, "b": lambda d: None}) == 14
    generic = {"scan_many": 1, "cas_many": 1}
    assert dict(counting.calls) == ({"take_many": 1} if store.native else generic)
    counting.calls.clear()
    assert deliver({"a": lambda d: None, "b": lambda d: None}) == 0
    assert counting.total == 1


def test_reliable_keeps_a_failing_payload_per_shard(store: Any) -> None:
    """Reliable: a failing payload holds back the rest of its own shard only; the other
    shards are delivered and acknowledged."""
    declare("jobs", shards=2, reliable=True, retry_delay=0)
    on_shard("jobs", 0)
    for item in ("a0", "a1", "a2"):
        send("jobs", item)
    on_shard("jobs", 1)
    for item in ("b0", "b1"):
        send("jobs", item)
    failing = {"a1"}
    got: list[str] = []

    def handler(data: str) -> None:
        if data in failing:
            raise RuntimeError("not yet")
        got.append(data)

    assert deliver({"jobs": handler}) == 3
    assert got == ["a0", "b0", "b1"]
    failing.clear()
    assert deliver({"jobs": handler}) == 2
    assert got == ["a0", "b0", "b1", "a1", "a2"]
    assert deliver({"jobs": handler}) == 0


class Crash(BaseException):
    """Stands in for the process dying inside a handler."""


def test_interrupted_reliable_delivery_resumes_per_shard(store: Any) -> None:
    """Each shard has its own progress cursor: after a crash in the second shard, the next
    delivery repeats only the payload that was running."""
    declare("batch", shards=2, reliable=True)
    spread("batch", 8, 2)  # shard 0: 0 2 4 6; shard 1: 1 3 5 7
    seen: list[int] = []

    def dies_on_five(data: int) -> None:
        seen.append(data)
        if data == 5:
            raise Crash

    with pytest.raises(Crash):
        deliver({"batch": dies_on_five})
    assert seen == [0, 2, 4, 6, 1, 3, 5]
    got: list[int] = []
    assert deliver({"batch": got.append}) == 2
    assert got == [5, 7]
    assert deliver({"batch": got.append}) == 0


def test_dead_letters_are_per_signal_and_requeue_to_a_shard(store: Any) -> None:
    """A payload failing on any shard lands in the signal's one dead-letter key; requeued,
    it is delivered again."""
    declare("mail", shards=3, reliable=True, retry_delay=0, max_attempts=2)
    on_shard("mail", 2)
    send("mail", "poison")
    on_shard("mail", 1)
    send("mail", "fine")

    def handler(data: str) -> None:
        if data == "poison":
            raise ValueError("cannot")

    assert deliver({"mail": handler}) == 1
    assert deliver({"mail": handler}) == 0
    assert dead_letters("mail") == ["poison"]
    assert requeue_dead_letters("mail") == 1
    got: list[str] = []
    assert deliver({"mail": got.append}) == 1
    assert got == ["poison"]
    assert dead_letters("mail") == []


def test_a_frame_moves_between_shards_but_not_between_signals(store: Any, raw: RawAccess) -> None:
    """Frames are signed for the signal, not the shard: copied to another shard of the same
    signal they are delivered; copied to another signal they are dropped."""
    gaesignals.configure(store=store, secret_key="s" * 32)
    declare("mine", shards=2)
    declare("other", shards=2)
    on_shard("mine", 0)
    send("mine", "moved")
    mine = queues_of("mine", get_settings())
    value = raw.get(mine[0])
    assert value
    raw.set(mine[0], b"")
    raw.set(mine[1], value)
    raw.set(queues_of("other", get_settings())[1], value)
    got: list[Any] = []
    assert deliver({"mine": got.append, "other": got.append}) == 1
    assert got == ["moved"]


@pytest.mark.parametrize("append", [True, False], ids=["append", "gets+cas"])
def test_a_full_shard_sends_to_another_then_queue_full(append: bool) -> None:
    """A send whose shard is full moves to another shard; QueueFull only when all are."""
    store = MemoryStore(append=append, max_value_size=1000)
    gaesignals.configure(store=store)
    declare("small", shards=3)
    frame = len(encode_payload("small", "x" * 100, signal_keys("small", ""), get_settings()))
    fits = 1000 // frame
    on_shard("small", 0)
    sent = 0
    with pytest.raises(QueueFull):
        for _ in range(3 * fits + 1):
            send("small", "x" * 100)
            sent += 1
    assert sent == 3 * fits
    got: list[str] = []
    assert deliver({"small": got.append}) == sent


class Interfering(MemoryStore):
    """A store without append where, before this process's first CAS, someone else writes
    the key: ``interfere(key, value)`` returns what they leave there."""

    def __init__(self, interfere: Any) -> None:
        super().__init__(append=False)
        self.interfere = interfere
        self.done = False

    def cas_many(
        self,
        items: Mapping[str, Cached],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> Any:
        if not self.done:
            self.done = True
            for key in items:
                self.set_raw(key, self.interfere(key, self.gets_many([key])[key][0]))
        return super().cas_many(items, expire, counters)


def shard_counts(store: MemoryStore, name: str) -> list[int]:
    """How many payloads each shard of ``name`` holds."""
    queues = queues_of(name, get_settings())
    with store.connection() as conn:
        values = conn.gets_many(queues)
    return [len(frames.parse(values[q][0], queues[0].encode())[0]) for q in queues]


def test_a_cas_lost_to_another_sender_moves_to_another_shard() -> None:
    """On a store without append, a thread that lost a CAS to another sender on a signal
    declared with shards (which never spreads) sends that payload and the next ones to
    another shard."""
    other = encode_payload("c", "other", signal_keys("c", ""), get_settings())
    store = Interfering(lambda key, value: value + other)
    gaesignals.configure(store=store)
    declare("c", shards=2)
    with store.connection() as conn:
        conn.add_many(dict.fromkeys(queues_of("c", get_settings()), b""))
    on_shard("c", 0)
    send("c", 1)
    send("c", 2)
    got: list[Any] = []
    assert shard_counts(store, "c") == [1, 2]  # "other" on shard 0, 1 and 2 on shard 1
    assert deliver({"c": got.append}) == 3
    assert sorted(got, key=str) == [1, 2, "other"]


def test_a_cas_lost_to_a_delivery_keeps_the_shard() -> None:
    """A CAS lost because a delivery reset the shard is retried there, and the thread stays."""
    store = Interfering(lambda key, value: b"")
    gaesignals.configure(store=store)
    declare("c", shards=2)
    with store.connection() as conn:
        conn.add_many(dict.fromkeys(queues_of("c", get_settings()), b""))
    on_shard("c", 0)
    send("c", 1)
    send("c", 2)
    assert shard_counts(store, "c") == [2, 0]


def test_a_thread_moves_on_once_its_shard_grew(
    store: Any, raw: RawAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread leaves a shard once it holds SHARD_ROLL_BYTES, so one busy sender's backlog
    spreads and no key grows without bound."""
    monkeypatch.setattr(routing, "SHARD_ROLL_BYTES", 500)
    declare("log", shards=4)
    for i in range(40):
        send("log", i)
    counts = pending_per_shard(raw, "log")
    assert sum(counts) == 40 and max(counts) < 40
    got: list[int] = []
    assert deliver({"log": got.append}) == 40
    assert sorted(got) == list(range(40))


def test_captured_and_eager_signals_see_sharded_sends(store: Any) -> None:
    """The testing helpers see a sharded signal's payloads under its name."""
    declare("cap", shards=4)
    with captured_signals() as sent:
        spread("cap", 4, 4)
    assert sent.data("cap") == [0, 1, 2, 3]
    got: list[int] = []
    with eager_signals({"cap": got.append}):
        spread("cap", 4, 4)
    assert got == [0, 1, 2, 3]


# -- ttl ------------------------------------------------------------------------------------------


def test_frame_ids_carry_the_senders_time(clock: list[float]) -> None:
    """A frame id starts with the send's Unix time in seconds, then 4 random bytes."""
    one = frames.encode(b"x", b"k")
    two = frames.encode(b"x", b"k")
    ident_one, ident_two = one[12:20], two[12:20]
    assert frames.sent_at(ident_one) == frames.sent_at(ident_two) == 1_800_000_000
    assert ident_one[:4] == (1_800_000_000).to_bytes(4, "big")
    assert ident_one != ident_two


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_ttl_drops_old_payloads(
    store: Any,
    raw: RawAccess,
    clock: list[float],
    reliable: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Payloads older than the signal's ttl at delivery are dropped and logged, never handed
    to a handler, and removed like delivered ones; younger ones are delivered."""
    declare("news", ttl=60, shards=2)
    on_shard("news", 0)
    send("news", "stale")
    clock[0] += 30
    on_shard("news", 1)
    send("news", "borderline")
    clock[0] += 31
    send("news", "fresh")
    got: list[str] = []
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert deliver({"news": got.append}, reliable=reliable) == 2
    assert got == ["borderline", "fresh"]
    assert "dropped 1 payload(s) of signal 'news' older than its ttl of 60 s" in caplog.text
    assert pending_per_shard(raw, "news") == [0, 0]
    assert deliver({"news": got.append}, reliable=reliable) == 0


def test_ttl_applies_to_payloads_kept_by_reliable_delivery(store: Any, clock: list[float]) -> None:
    """A payload that keeps failing is dropped once it outlives the ttl, not retried."""
    declare("retry", ttl=10, reliable=True, retry_delay=0)
    send("retry", 1)
    calls: list[int] = []

    def fails(data: int) -> None:
        calls.append(data)
        raise RuntimeError("down")

    assert deliver({"retry": fails}) == 0
    clock[0] += 11
    assert deliver({"retry": fails}) == 0
    assert calls == [1]
    assert dead_letters("retry") == []


def test_requeued_dead_letters_keep_their_ttl_from_the_send(clock: list[float]) -> None:
    """A requeued letter keeps its id and send time: within its ttl it is delivered again,
    past it dropped as expired, so a requeue never extends a payload's life."""
    gaesignals.configure(store=MemoryStore())
    declare("late", ttl=10, reliable=True, max_attempts=1)
    send("late", "fresh")

    def fails(data: str) -> None:
        raise RuntimeError("down")

    deliver({"late": fails})
    clock[0] += 5
    send("late", "stale")
    deliver({"late": fails})
    assert dead_letters("late") == ["fresh", "stale"]
    clock[0] += 6  # "fresh" is 11 s old, "stale" 6 s
    assert requeue_dead_letters("late") == 2
    got: list[str] = []
    assert deliver({"late": got.append}) == 1
    assert got == ["stale"]
    assert gaesignals.stats("late")["late"]["expired"] == 1
