"""Bounded weak takes (``limits``) on every store: the oldest payloads of each key up to each
signal's limit, the rest left queued in order, counted right, at most once under threads that
share a backlog, and never crashed by what a key holds."""

from __future__ import annotations

import pickle
import random
import threading
from collections import Counter

import gaesignals
from gaesignals import frames
from gaesignals.accounting import flush
from gaesignals.config import get_settings
from gaesignals.keys import SignalKeys, shard_queues, signal_keys
from gaesignals.queue import weak_take
from gaesignals.queue.spread import marker
from gaesignals.queue.weak_take import Found, Parse, WeakTaken
from gaesignals.stores import Connection, Store
from gaesignals.timing import now_ms

from ..conftest import RawAccess
from .support import Layout as _Layout
from .support import MeddlingStore


class _Reader:
    """Reads values as bare bodies where it can (as delivery does), else by their parse."""

    def read(self, name: str, key: str, value: bytes) -> list[bytes] | Parse:
        bodies = frames.pickled_bodies(value, _signer(name), get_settings().secret_keys)
        return self.parse(name, key, value) if bodies is None else bodies

    def parse(self, name: str, key: str, value: bytes) -> Parse:
        parsed = frames.parse_queue(value, _signer(name), get_settings().secret_keys)
        held = [held.frame for held in parsed.held]
        return parsed.found, parsed.bad, parsed.marker_width, held, parsed.cancels

    def within_ttl(self, name: str, found: Found) -> Found:
        return found


def _signer(name: str) -> bytes:
    return _keys(name).queue.encode()


def _keys(name: str) -> SignalKeys:
    return signal_keys(name, get_settings().namespace)


def _frame(name: str, body: object, *, due: int = 0) -> bytes:
    meta = frames.meta_entry(frames.META_NOT_BEFORE, due.to_bytes(8, "big")) if due else b""
    return frames.encode(pickle.dumps(body), _signer(name), get_settings().secret_keys, meta=meta)


def _take(
    store: Store, limits: dict[str, int], *, shards: int = 1, now: int | None = None
) -> WeakTaken:
    """A bounded take of ``limits``' signals with its counts written, as delivery writes them."""
    settings = get_settings()
    layout = _Layout(settings, list(limits), shards)
    with store.connection() as conn:
        taken = weak_take.take(
            conn, settings, layout, _Reader(), now=now or now_ms(), limits=limits
        )
        flush(conn, taken.counts)
    return taken


def _bodies(taken: WeakTaken) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for key in taken.taken:
        out.setdefault(key.name, []).extend(
            pickle.loads(item if isinstance(item, bytes) else item.body) for item in key.within_ttl
        )
    return out


def _counter(raw: RawAccess, name: str, what: str) -> int:
    value = raw.get(_keys(name).counter(what))
    return int(value.rstrip(b" ")) if value else 0


def test_a_bounded_take_takes_the_oldest_and_leaves_the_rest_in_order(raw: RawAccess) -> None:
    """With a limit of 4, a take gives each signal's 4 oldest payloads and leaves the others
    in the key, byte for byte in send order; the next takes give the next ones, and the
    counters count only what was taken."""
    alpha = [_frame("alpha", i) for i in range(10)]
    raw.set(_keys("alpha").queue, b"".join(alpha))
    raw.set(_keys("beta").queue, b"".join(_frame("beta", i) for i in range(3)))
    first = _take(raw.store, {"alpha": 4, "beta": 4})
    assert _bodies(first) == {"alpha": [0, 1, 2, 3], "beta": [0, 1, 2]}
    assert raw.get(_keys("alpha").queue) == b"".join(alpha[4:])
    assert _counter(raw, "alpha", "accounted") == _counter(raw, "alpha", "delivered") == 4
    assert _bodies(_take(raw.store, {"alpha": 4, "beta": 4})) == {"alpha": [4, 5, 6, 7]}
    assert _bodies(_take(raw.store, {"alpha": 4, "beta": 4})) == {"alpha": [8, 9]}
    assert _take(raw.store, {"alpha": 4, "beta": 4}).taken == []
    assert _counter(raw, "alpha", "delivered") == 10
    assert _counter(raw, "beta", "delivered") == 3


def test_a_bounded_take_of_a_sharded_signal_gives_its_limit_across_shards(raw: RawAccess) -> None:
    """A signal on 4 shards gives at most its limit per take, from any shards; takes until
    empty give every payload once, each shard's in its send order."""
    queues = shard_queues(_keys("alpha").queue, 4)
    for shard, key in enumerate(queues):
        raw.set(key, b"".join(_frame("alpha", (shard, i)) for i in range(5)))
    seen: list[tuple[int, int]] = []
    for _ in range(10):
        taken = _bodies(_take(raw.store, {"alpha": 7}, shards=4)).get("alpha", [])
        assert len(taken) <= 7
        if not taken:
            break
        seen += [tuple(item) for item in taken]  # type: ignore[misc]
    assert sorted(seen) == [(shard, i) for shard in range(4) for i in range(5)]
    for shard in range(4):
        assert [i for s, i in seen if s == shard] == list(range(5))
    assert _counter(raw, "alpha", "delivered") == 20


def test_payloads_not_due_stay_in_place_around_a_bounded_take(raw: RawAccess) -> None:
    """A payload not due yet, before or after where a bounded take stops, stays queued in its
    place; the due ones are taken oldest first, two at a time."""
    now = now_ms()
    later = _frame("alpha", "later", due=now + 60_000)
    due = [_frame("alpha", i) for i in range(4)]
    raw.set(_keys("alpha").queue, due[0] + later + b"".join(due[1:]))
    assert _bodies(_take(raw.store, {"alpha": 2}, now=now)) == {"alpha": [0, 1]}
    assert raw.get(_keys("alpha").queue) == later + due[2] + due[3]
    assert _bodies(_take(raw.store, {"alpha": 2}, now=now)) == {"alpha": [2, 3]}
    assert raw.get(_keys("alpha").queue) == later
    assert _bodies(_take(raw.store, {"alpha": 2}, now=now + 60_000)) == {"alpha": ["later"]}


def test_unreadable_bytes_never_break_a_bounded_take(raw: RawAccess) -> None:
    """Garbage between payloads is dropped, counted, and never stops a bounded take: every
    readable payload is taken once, in order, at most 2 a take."""
    payloads = [_frame("alpha", i) for i in range(6)]
    raw.set(_keys("alpha").queue, payloads[0] + b"\xa7\x5c garbage" * 3 + b"".join(payloads[1:]))
    seen: list[object] = []
    for _ in range(10):
        taken = _bodies(_take(raw.store, {"alpha": 2})).get("alpha", [])
        assert len(taken) <= 2
        if not taken:
            break
        seen += taken
    assert seen == list(range(6))
    assert _counter(raw, "alpha", "delivered") == 6
    assert _counter(raw, "alpha", "dropped") >= 1


def test_random_bytes_among_payloads_never_crash_a_bounded_take(raw: RawAccess) -> None:
    """Keys holding payloads cut and spliced with random bytes: bounded takes never raise and
    never give a payload twice."""
    rng = random.Random(28)
    whole = [_frame("alpha", i) for i in range(30)]
    for shard, key in enumerate(shard_queues(_keys("alpha").queue, 3)):
        parts = whole[shard * 10 : shard * 10 + 10]
        value = bytearray(b"".join(parts))
        for _ in range(4):
            at = rng.randrange(len(value))
            value[at : at + rng.randrange(1, 6)] = rng.randbytes(rng.randrange(0, 8))
        raw.set(key, bytes(value))
    seen: list[object] = []
    for _ in range(40):
        taken = _bodies(_take(raw.store, {"alpha": 3}, shards=3)).get("alpha", [])
        assert len(taken) <= 3
        if not taken:
            break
        seen += taken
    assert len(seen) == len(set(seen))
    assert set(seen) <= set(range(30))


def test_threads_sharing_a_backlog_take_every_payload_once(raw: RawAccess) -> None:
    """Four threads taking 15 at a time from one signal's backlog on 2 shards: every payload is
    taken exactly once (lost == 0, duplicated == 0), and counted once."""
    queues = shard_queues(_keys("alpha").queue, 2)
    for shard, key in enumerate(queues):
        raw.set(key, b"".join(_frame("alpha", (shard, i)) for i in range(100)))
    sent = [(shard, i) for shard in range(2) for i in range(100)]
    seen: list[object] = []
    lock = threading.Lock()

    def deliverer() -> None:
        for _ in range(100):
            taken = _bodies(_take(raw.store, {"alpha": 15}, shards=2)).get("alpha", [])
            with lock:
                seen.extend(tuple(item) for item in taken)  # type: ignore[arg-type]

    threads = [threading.Thread(target=deliverer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(10):  # what contention left, if anything
        rest = _bodies(_take(raw.store, {"alpha": 1000}, shards=2)).get("alpha", [])
        if not rest:
            break
        seen.extend(tuple(item) for item in rest)  # type: ignore[arg-type]
    counts = Counter(seen)
    duplicated = [item for item, n in counts.items() if n > 1]
    lost = [item for item in sent if item not in counts]
    assert (len(lost), len(duplicated)) == (0, 0)
    assert _counter(raw, "alpha", "delivered") == 200


def test_resets_lost_round_after_round_are_each_taken_back(raw: RawAccess) -> None:
    """A bounded take whose resets lose to a sender twice counts the same payloads each round
    (the second round's count cancels the first's take-back): each lost round is still taken
    back, and the counters end counting only what the winning round took."""
    key = _keys("alpha").queue
    raw.set(key, b"".join(_frame("alpha", i) for i in range(10)))
    meddled = 0

    def sender_appends(conn: Connection) -> None:
        nonlocal meddled
        if meddled < 2:
            meddled += 1
            value = conn.gets_many([key])[key].value
            conn.set_many({key: value + _frame("alpha", 100 + meddled)})

    gaesignals.configure(store=MeddlingStore(raw.store, before_cas=sender_appends))
    taken = _take(get_settings().store, {"alpha": 4})
    assert (meddled, _bodies(taken)) == (2, {"alpha": [0, 1, 2, 3]})
    assert _counter(raw, "alpha", "accounted") == _counter(raw, "alpha", "delivered") == 4
    gaesignals.configure(store=raw.store)
    assert _bodies(_take(raw.store, {"alpha": 100})) == {"alpha": [*range(4, 10), 101, 102]}


def test_signed_payloads_are_taken_a_limit_at_a_time(raw: RawAccess) -> None:
    """Signed frames (a longer header) are cut at the right byte: each take gives the next 3,
    verified, and the key keeps the rest byte for byte."""
    gaesignals.configure(store=raw.store, secret_key=b"k" * 32)
    payloads = [_frame("alpha", i) for i in range(7)]
    raw.set(_keys("alpha").queue, b"".join(payloads))
    assert _bodies(_take(raw.store, {"alpha": 3})) == {"alpha": [0, 1, 2]}
    assert raw.get(_keys("alpha").queue) == b"".join(payloads[3:])
    assert _bodies(_take(raw.store, {"alpha": 3})) == {"alpha": [3, 4, 5]}
    assert _bodies(_take(raw.store, {"alpha": 3})) == {"alpha": [6]}


def test_a_spread_signals_marker_stays_at_the_head_of_its_key(raw: RawAccess) -> None:
    """A spread signal's own key keeps its marker first through bounded takes: each take
    gives the next 2 payloads after it, and the key ends holding only the marker."""
    settings = get_settings()
    base = _keys("alpha").queue
    home = marker(settings, base, 2)
    payloads = [_frame("alpha", i) for i in range(5)]
    raw.set(base, home + b"".join(payloads))
    layout = _Layout(settings, ["alpha"], 2)
    layout.markers[base] = home
    seen: list[object] = []
    for _ in range(5):
        with raw.store.connection() as conn:
            taken = weak_take.take(
                conn, settings, layout, _Reader(), now=now_ms(), limits={"alpha": 2}
            )
            flush(conn, taken.counts)
        got = _bodies(taken).get("alpha", [])
        assert len(got) <= 2
        if not got:
            break
        seen += got
        assert (raw.get(base) or b"").startswith(home)
    assert seen == list(range(5))
    assert raw.get(base) == home
    assert _counter(raw, "alpha", "delivered") == 5


def test_payloads_held_for_another_key_stay_queued_through_bounded_takes(raw: RawAccess) -> None:
    """Payloads signed with a key this deliverer lacks stay queued (held) while bounded takes
    give every readable payload once, at most 2 a take."""
    gaesignals.configure(store=raw.store, secret_key=b"k" * 32)
    held = [
        frames.encode(pickle.dumps(("held", i)), _signer("alpha"), [b"o" * 32]) for i in range(2)
    ]
    mine = [_frame("alpha", i) for i in range(4)]
    raw.set(_keys("alpha").queue, held[0] + mine[0] + mine[1] + held[1] + mine[2] + mine[3])
    seen: list[object] = []
    for _ in range(10):
        got = _bodies(_take(raw.store, {"alpha": 2})).get("alpha", [])
        assert len(got) <= 2
        if not got:
            break
        seen += got
    assert seen == [0, 1, 2, 3]
    left = raw.get(_keys("alpha").queue) or b""
    assert sorted(left.find(frame) >= 0 for frame in held) == [True, True]
    assert len(left) == len(held[0]) + len(held[1])
