"""Hot signals that spread over more shards by themselves (``gaesignals.queue.spread``), on
every store: the marker in the signal's own key, what senders and deliverers learn from it,
and what never happens (a payload stranded, a loss reported that was not one)."""

from __future__ import annotations

from typing import Any

import pytest

import gaesignals
from gaesignals import config, deliver, frames, pending, send, stats
from gaesignals.config import get_settings
from gaesignals.keys import shard_queues, signal_keys, spread_key
from gaesignals.pytest_plugin import make_store
from gaesignals.queue import routing, spread
from gaesignals.queue.append import RESET_RETRIES, SEND_ATTEMPTS, look_up_width, widen
from gaesignals.stores import Cached, Store
from gaesignals.stores.memory import MemoryStore

from .conftest import RawAccess

SECRET = b"s" * 32


def home(name: str) -> str:
    return signal_keys(name, get_settings().namespace).queue


def spread_to(name: str, shards: int) -> tuple[str, ...]:
    """Spread ``name`` as its senders would, until it has ``shards`` shards."""
    settings = get_settings()
    queues = shard_queues(home(name), 1)
    with settings.store.connection() as conn:
        while len(queues) < shards:
            queues = widen(conn, settings, queues)
    assert len(queues) == shards
    return queues


def send_on(name: str, shard: int, data: Any) -> None:
    """Send ``data`` from this thread's shard ``shard`` of ``name``."""
    queues = routing.queues_of(name, get_settings())
    routing.stick(queues, queues[shard])
    send(name, data)


def restart(store: Store) -> None:
    """Forget what this process learned, as a new process would start."""
    config.reset()
    gaesignals.configure(store=store)


def marked(raw: RawAccess, name: str) -> int:
    """The width the marker in ``name``'s own key claims (0: no marker)."""
    value = raw.get(home(name)) or b""
    return frames.parse_queue(value, home(name).encode(), get_settings().secret_keys).marker_width


# -- the marker -----------------------------------------------------------------------------------


def test_a_marker_is_read_as_a_width_never_as_a_payload() -> None:
    """A spread marker beside payload frames tells the width and its bytes; only the payloads
    are frames, and a marker claiming more than the cap reads as the cap."""
    key = b"gs::q:{m}"
    payload = frames.encode(b"body", key)
    value = frames.spread_marker(4, key) + payload + frames.spread_marker(2, key)
    parsed = frames.parse_queue(value, key)
    assert [f.body for f in parsed.found] == [b"body"]
    assert (parsed.marker_width, parsed.bad) == (4, [])
    assert parsed.marker_bytes == len(value) - len(payload)
    huge = frames.encode(b"\xff\xff", key, flags=frames.FLAG_SPREAD)
    assert frames.parse_queue(huge, key).marker_width == frames.MAX_SPREAD


def test_a_forged_or_malformed_marker_is_unreadable() -> None:
    """With a secret key, an unsigned marker or one signed for another signal is a bad region
    (dropped, one payload's worth), and so is a marker whose body is not two width bytes."""
    key = b"gs::q:{m}"
    for forged in (
        frames.spread_marker(16, key),
        frames.spread_marker(16, b"gs::q:{other}", SECRET),
        frames.encode(b"\x04", key, (SECRET,), flags=frames.FLAG_SPREAD),
        frames.encode(b"\x00\x00", key, (SECRET,), flags=frames.FLAG_SPREAD),
    ):
        parsed = frames.parse_queue(forged, key, (SECRET,))
        assert parsed.marker_width == 0 and frames.dropped(parsed.bad) == 1
    marker = frames.spread_marker(8, key, SECRET)
    assert frames.parse_queue(marker, key, (SECRET,)).marker_width == 8
    with pytest.raises(ValueError):
        frames.spread_marker(frames.MAX_SPREAD + 1, key)


# -- on every store -------------------------------------------------------------------------------


def test_every_shard_of_a_spread_signal_is_delivered(store: Store, raw: RawAccess) -> None:
    """Payloads on each of a spread signal's shards are all delivered, weakly, and the
    signal's own key keeps its marker once emptied."""
    spread_to("hot", 4)
    for shard in range(4):
        send_on("hot", shard, shard)
    got: list[int] = []
    assert deliver({"hot": got.append}) == 4
    assert sorted(got) == [0, 1, 2, 3]
    assert raw.get(home("hot")) == spread.marker(get_settings(), home("hot"), 4)
    assert pending("hot")["hot"] == (0, 0, None, 0, None, (), 0)
    send_on("hot", 0, "again")  # the marker stays ahead of new payloads
    assert deliver({"hot": got.append}) == 1 and got[-1] == "again"


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_a_deliverer_new_to_the_spread_delivers_every_shard_at_once(
    store: Store, raw: RawAccess, reliable: bool
) -> None:
    """A deliverer that knows nothing of the spread (a new process) learns it from the marker
    and reads the new shards in the same delivery: nothing is stranded, a delivery that
    returns 0 found nothing anywhere, and the marker is still in place after it."""
    spread_to("hot", 8)
    send_on("hot", 0, "home")
    send_on("hot", 7, "far")
    restart(store)
    got: list[str] = []
    assert deliver({"hot": got.append}, reliable=reliable) == 2
    assert sorted(got) == ["far", "home"]
    assert marked(raw, "hot") == 8
    send_on("hot", 5, "later")
    restart(store)
    assert deliver({"hot": got.append}, reliable=reliable) == 1


def test_a_deliverer_writes_back_a_marker_the_cache_lost(store: Store, raw: RawAccess) -> None:
    """If the signal's own key is evicted, a deliverer that knows the width puts the marker
    back with its next reset there, so processes that start later still find every shard."""
    spread_to("hot", 4)
    with store.connection() as conn:
        conn.delete_many([home("hot")])
    send_on("hot", 0, "x")
    assert deliver({"hot": lambda data: None}) == 1
    assert marked(raw, "hot") == 4


def test_pending_reads_every_shard_of_a_spread_signal(store: Store, raw: RawAccess) -> None:
    """``pending`` of a spread signal counts every shard, even in a process that did not know
    the spread, and its bytes leave the marker out."""
    spread_to("hot", 4)
    send_on("hot", 3, "far")
    restart(store)
    backlog = pending("hot")["hot"]
    assert backlog.count == 1
    assert backlog.bytes == len(raw.get(shard_queues(home("hot"), 4)[3]) or b"")


def test_no_loss_is_reported_while_a_deliverer_learns_a_spread(
    store: Store, raw: RawAccess
) -> None:
    """Payloads on shards a deliverer does not read yet are not counted as lost by its lost
    check (they are in the cache), and are delivered next time."""
    spread_to("hot", 4)
    send_on("hot", 0, "home")
    send_on("hot", 2, "far")
    restart(store)
    got: list[str] = []
    for _ in range(3):
        deliver({"hot": got.append})
    assert sorted(got) == ["far", "home"]
    assert stats("hot")["hot"]["lost"] == 0


def test_a_backlog_alone_never_spreads_a_signal(store: Store, raw: RawAccess) -> None:
    """One sender's long backlog (past ``crowded_bytes``, nothing contended) stays on one key,
    in send order: a signal spreads on contention, or rather than refuse a send."""
    count = spread.crowded_bytes(store) // 4096 + 2
    for n in range(count):
        send("backlog", (n, "x" * 4096))
    assert marked(raw, "backlog") == 0
    got: list[tuple[int, str]] = []
    assert deliver({"backlog": got.append}) == count
    assert [n for n, _ in got] == list(range(count))


class Interfering(MemoryStore):
    """A store without append where another sender appends to a key just before this
    process's first CAS."""

    def __init__(self) -> None:
        super().__init__(append=False)
        self.done = False

    def cas_many(self, items: Any, expire: int = 0, counters: Any = None) -> Any:
        if not self.done:
            self.done = True
            for key in items:
                current = self.gets_many([key])[key][0]
                self.set_raw(key, current + frames.encode(b"N.", key.encode()))
        return super().cas_many(items, expire, counters)


def test_a_cas_lost_to_another_sender_spreads_an_undeclared_signal() -> None:
    """On a store without append (App Engine), a send that lost its CAS to another sender
    spreads the signal over two shards, the marker in its own key, and moves itself and the
    thread's next sends to the new shard."""
    store = Interfering()
    gaesignals.configure(store=store)
    with store.connection() as conn:
        conn.add_many({home("c"): b""})
    send("c", 1)
    send("c", 2)
    queues = shard_queues(home("c"), 2)
    values = store.gets_many(list(queues))
    parsed = [frames.parse_queue(values[q][0], queues[0].encode()) for q in queues]
    assert parsed[0].marker_width == 2 and len(parsed[0].found) == 1  # the other sender's
    assert len(parsed[1].found) == 2
    got: list[Any] = []
    assert deliver({"c": got.append}) == 3


def test_a_signal_declared_with_shards_never_spreads() -> None:
    """``declare(name, shards=1)`` keeps one key (and each sender's order) under contention:
    the lost CAS is retried there."""
    store = Interfering()
    gaesignals.configure(store=store)
    gaesignals.declare("c", shards=1)
    with store.connection() as conn:
        conn.add_many({home("c"): b""})
    send("c", 1)
    assert spread.widths(get_settings()) == {}
    assert frames.parse_queue(store.gets_many([home("c")])[home("c")][0], b"").marker_width == 0


class AppendsWin(MemoryStore):
    """A store without append where a sender appends to every queue key just before each of a
    delivery's resets: the resets never win."""

    def cas_many(self, items: Any, expire: int = 0, counters: Any = None) -> Any:
        for key, (value, _) in items.items():
            if not value and key.startswith("gs::q"):
                current = self.gets_many([key])[key][0]
                self.set_raw(key, current + frames.encode(b"N.", key.encode()))
        return super().cas_many(items, expire, counters)


def test_a_delivery_that_keeps_losing_to_the_sends_spreads_the_signal() -> None:
    """A weak delivery whose resets of a key lose to appends round after round (the key is
    left for the next delivery) spreads its signal: the marker goes into its own key."""
    store = AppendsWin(append=False)
    gaesignals.configure(store=store)
    send("busy", 1)
    deliver({"busy": lambda data: None})
    assert spread.widths(get_settings())[home("busy")] == 2
    value = store.gets_many([home("busy")])[home("busy")][0]
    assert frames.parse_queue(value, home("busy").encode()).marker_width == 2


def test_a_sender_learns_a_spread_rather_than_refuse_a_send(store: Store, raw: RawAccess) -> None:
    """A sender that does not know a signal has spread (another process spread it) and finds
    the signal's own key full moves its payload to another shard instead of raising
    ``QueueFull``, even where the cache evicted the signal's spread key (it reads shard 0)."""
    spread_to("full", 4)
    with store.connection() as conn:
        conn.delete_many([spread_key(home("full"))])
    restart(store)
    chunk = b"y" * (store.max_value_size // 4)
    for _ in range(8):  # twice what one key holds
        send("full", chunk)
    assert pending("full")["full"].count == 8


def test_a_memcached_sender_learns_a_spread_once_its_key_grows_long(
    request: pytest.FixtureRequest,
) -> None:
    """On memcached, whose appends report the key's size, a sender whose key grows past
    ``crowded_bytes`` reads the signal's spread key and sends to the new shards from then on."""
    store, closable = make_store("memcached", request)
    try:
        gaesignals.configure(store=store)
        spread_to("long", 4)
        restart(store)
        chunk = "x" * 4096
        sends = spread.crowded_bytes(store) // 4096 + 1
        for _ in range(sends):
            send("long", chunk)
        assert spread.widths(get_settings())[home("long")] == 4
        send("long", chunk)
        assert pending("long")["long"].count == sends + 1
        with store.connection() as conn:
            values = conn.gets_many(list(shard_queues(home("long"), 4)))
        assert len(values) >= 2  # a shard besides its own key
    finally:
        closable.close()


def test_a_forged_marker_spreads_nothing_when_frames_are_signed(
    store: Store, raw: RawAccess
) -> None:
    """With a secret key, a marker planted by someone who can write to the cache is dropped
    as unreadable, and the signal is read as before."""
    gaesignals.configure(store=store, secret_key=SECRET)
    raw.set(home("plain"), frames.spread_marker(16, home("plain").encode()))
    send("plain", 1)
    got: list[int] = []
    assert deliver({"plain": got.append}) == 1
    assert got == [1]
    assert spread.widths(get_settings()).get(home("plain")) is None
    assert stats("plain")["plain"]["dropped"] == 1


class ResettingStore(MemoryStore):
    """App Engine's rules (no append), where a delivery resets ``key`` just before each of
    the first ``resets`` CAS writes to it, so each of them is lost."""

    def __init__(self, key: str, resets: int) -> None:
        super().__init__(append=False)
        self.key, self.resets = key, resets

    def cas_many(
        self,
        items: Any,
        expire: int = 0,
        counters: Any = None,
    ) -> dict[str, bool]:
        if self.key in items and self.resets:
            self.resets -= 1
            self.set_many({self.key: b""})
        return super().cas_many(items, expire, counters)


def test_cas_writes_lost_to_deliveries_use_no_attempt_of_a_send() -> None:
    """A send whose CAS loses more times than it has attempts, each time to a delivery's
    reset (reliable deliveries acknowledge by CAS), still stores its payload once, and the
    signal does not spread: resets say nothing of other senders."""
    store = ResettingStore(home("busy"), resets=0)
    gaesignals.configure(store=store)
    send("busy", 0)  # the key exists: the next send writes by CAS
    store.resets = SEND_ATTEMPTS + 4
    assert SEND_ATTEMPTS + 4 <= SEND_ATTEMPTS + RESET_RETRIES
    send("busy", 1)
    got: list[int] = []
    assert deliver({"busy": got.append}) == 1 and got == [1]
    assert store.resets == 0
    assert spread.widths(get_settings()).get(home("busy"), 1) == 1


# -- whatever the cache lost or a writer planted ------------------------------------------------


class Processes:
    """A sender and a deliverer with settings of their own (each learns widths apart, as two
    processes would), sharing one store; the deliverer's sweeps run on a clock of the test's."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.clock = [1000.0]
        monkeypatch.setattr(spread, "_monotonic", lambda: self.clock[0])
        self.deliverer = gaesignals.configure(store=store, lost_check_interval=3600)
        self.sender = gaesignals.configure(store=store, lost_check_interval=3600)
        self.got: list[Any] = []
        self.mapping = gaesignals.SignalMapping({"hot": self.got.append})

    def restart_deliverer(self, store: Store) -> None:
        """The deliverer's process starts again: it knows no width."""
        self.deliverer = gaesignals.configure(store=store, lost_check_interval=3600)
        self.monkeypatch.setattr(config, "_settings", self.sender)

    def deliver(self, reliable: bool) -> int:
        self.monkeypatch.setattr(config, "_settings", self.deliverer)
        try:
            return deliver(self.mapping, reliable=reliable)
        finally:
            self.monkeypatch.setattr(config, "_settings", self.sender)


def left(raw: RawAccess, name: str) -> int:
    """How many payloads stay on any shard ``name``'s senders may use."""
    queues = shard_queues(home(name), frames.MAX_SPREAD)
    values = [raw.get(queue) or b"" for queue in queues]
    return sum(len(frames.parse_queue(v, queues[0].encode()).found) for v in values)


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_a_lost_shard_0_strands_nothing_senders_send_past_it(
    store: Store, raw: RawAccess, monkeypatch: pytest.MonkeyPatch, reliable: bool
) -> None:
    """With shard 0 and the spread key gone (evicted or deleted) while senders keep the width
    they learned, a deliverer that never knew it takes shard 0's payloads at once and the
    other shards' at its next sweep (a new deliverer: at its first), each once; it then reads
    them on every delivery, so later sends wait for no sweep."""
    run = Processes(store, monkeypatch)
    assert run.deliver(reliable) == 0  # the deliverer's sweep, before the signal spread
    spread_to("hot", 4)
    with store.connection() as conn:
        conn.delete_many([home("hot"), spread_key(home("hot"))])
    for n in range(80):
        send_on("hot", n % 4, n)
    assert run.deliver(reliable) == 20  # shard 0's: 60 wait on shards 1..3
    run.clock[0] += 3600
    assert run.deliver(reliable) == 60
    for n in range(80, 120):
        send_on("hot", 1 + n % 3, n)
    assert run.deliver(reliable) == 40
    assert sorted(run.got) == list(range(120))
    run.restart_deliverer(store)  # a new deliverer sweeps at once
    for n in range(120, 180):
        send_on("hot", 1 + n % 3, n)
    assert run.deliver(reliable) == 60
    assert sorted(run.got) == list(range(180)) and left(raw, "hot") == 0
    assert stats("hot")["hot"]["lost"] == 0  # also writes the sent counts held back


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_a_marker_planted_in_the_spread_key_strands_nothing(
    store: Store, raw: RawAccess, monkeypatch: pytest.MonkeyPatch, reliable: bool
) -> None:
    """Without a secret key, a width planted in a signal's spread key that senders learn (as
    when their key grows long) is written into shard 0 too: deliverers read every shard the
    senders then use at their next delivery, sweep or not, and take each payload once."""
    run = Processes(store, monkeypatch)
    assert run.deliver(reliable) == 0  # the deliverer's sweep
    raw.set(spread_key(home("hot")), frames.spread_marker(16, home("hot").encode()))
    with store.connection() as conn:
        assert len(look_up_width(conn, get_settings(), (home("hot"),))) == 16
    for n in range(40):
        send_on("hot", n % 16, n)
    assert run.deliver(reliable) == 40
    assert sorted(run.got) == list(range(40)) and left(raw, "hot") == 0
    assert marked(raw, "hot") == 16  # kept for the next deliverer
    assert stats("hot")["hot"]["lost"] == 0  # also writes the sent counts held back


def test_a_declared_signal_learns_no_width_from_a_planted_marker(
    store: Store, raw: RawAccess
) -> None:
    """A signal declared with ``shards`` keeps exactly those whatever a marker says, so its
    senders never use a shard its deliverers do not read."""
    gaesignals.declare("fixed", shards=2)
    raw.set(spread_key(home("fixed")), frames.spread_marker(16, home("fixed").encode()))
    raw.set(home("fixed"), frames.spread_marker(16, home("fixed").encode()))
    with store.connection() as conn:
        assert len(look_up_width(conn, get_settings(), shard_queues(home("fixed"), 2))) == 2
    assert routing.queues_of("fixed", get_settings()) == list(shard_queues(home("fixed"), 2))
    for n in range(10):
        send("fixed", n)
    got: list[int] = []
    assert deliver({"fixed": got.append}) == 10 and sorted(got) == list(range(10))
    assert spread.widths(get_settings()) == {}


class Reading(MemoryStore):
    """The in-process store, noting how many keys each batched read asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[int] = []

    def scan_many(self, keys: Any) -> dict[str, Cached]:
        self.read.append(len(keys))
        return super().gets_many(keys)


@pytest.mark.parametrize("kept", [False, True], ids=["built-each-time", "kept"])
def test_sweeps_are_paced_per_signal_whatever_the_mapping(
    monkeypatch: pytest.MonkeyPatch, kept: bool
) -> None:
    """A signal is swept on its first delivery in a process and then once per
    ``lost_check_interval``, whether its mapping is kept or built anew for each delivery (a
    dict): the deliveries between read its one known key."""
    clock = [1000.0]
    monkeypatch.setattr(spread, "_monotonic", lambda: clock[0])
    store = Reading()
    gaesignals.configure(store=store, lost_check_interval=30)
    mapping = gaesignals.SignalMapping({"quiet": lambda data: None})
    for _ in range(3):
        deliver(mapping if kept else {"quiet": lambda data: None})
        clock[0] += 10
    deliver(mapping if kept else {"quiet": lambda data: None})
    assert [n >= spread.SWEPT for n in store.read] == [True, False, False, True]
    assert store.read[1:3] == [1, 1]
