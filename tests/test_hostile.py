"""A cache writer's cheap attacks on availability and accounting, on every store.

The rule under test: no cache content makes a delivery, ``pending``, ``stats`` or ``health``
raise anything but :class:`~gaesignals.StoreUnavailable`, cost more than linear in the bytes it
reads, or remove a payload without running its handlers. Signing (tested in test_security_*.py)
keeps forged payloads out; these tests are about the keys around the queue: counters, locks,
cursors and dead letters.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gaesignals
from gaesignals import accounting, deliver, frames, health, send, stats
from gaesignals.keys import COUNTERS, signal_keys
from gaesignals.queue import lease
from gaesignals.stores import masked_url, segments

from .conftest import RawAccess
from .fuzz_support import HOSTILE_NAME, HOSTILE_ROLES, _hostile_key, hostile_values

#: Past the 4,300 digits ``int()`` accepts: a counter parsed without a bound raises.
HUGE_NUMBER = b"9" * 5000

POISONS = {
    "huge": HUGE_NUMBER,
    "huge-padded": HUGE_NUMBER + b" " * 10,
    "word": b"garbage",
    "negative": b"-5",
    "unicode-digits": "\u0663\u0663".encode(),
    "binary": b"\xff\x00" * 40,
}


def _poison_counters(raw: RawAccess, name: str, value: bytes) -> None:
    keys = signal_keys(name, "")
    for counter in COUNTERS:
        raw.set(keys.counter(counter), value)


@pytest.mark.parametrize("poison", list(POISONS), ids=list(POISONS))
def test_poisoned_counters_never_stop_a_delivery(raw: RawAccess, poison: str) -> None:
    """Every counter of a signal holding something that is not a counter (5,000 digits, a word,
    binary): delivery of it and of the other signals in the mapping goes on, and so do stats and
    health, each counter reading as absent."""
    gaesignals.configure(store=raw.store, lost_check_interval=0)
    for i in range(3):
        send("poisoned", i)
        send("bystander", i)
    _poison_counters(raw, "poisoned", POISONS[poison])
    got: list[Any] = []
    assert deliver({"poisoned": got.append, "bystander": got.append}) == 6
    assert sorted(got) == [0, 0, 1, 1, 2, 2]
    send("poisoned", "later")
    assert deliver({"poisoned": got.append}) == 1
    assert got[-1] == "later"
    counts = stats(["poisoned", "bystander"])
    assert counts["bystander"]["delivered"] == 3
    assert all(isinstance(value, int) and value >= 0 for value in counts["poisoned"].values())
    report = health(["poisoned"])
    assert report["ok"] is True
    assert report["signals"]["poisoned"]["pending"] == 0


def test_poisoned_counters_are_logged_once(
    raw: RawAccess, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corrupt counter is reported in the log, once per key, not on every delivery."""
    monkeypatch.setattr(accounting, "_reported_corrupt", set())
    gaesignals.configure(store=raw.store, lost_check_interval=0)
    keys = signal_keys("logged", "")
    send("logged", 1)
    raw.set(keys.counter("sent"), HUGE_NUMBER)
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        for _ in range(3):
            deliver({"logged": lambda data: None})
    corrupt = [r for r in caplog.records if "not a counter" in r.getMessage()]
    assert len(corrupt) == 1
    assert keys.counter("sent") in corrupt[0].getMessage()
    assert "9999999999" not in corrupt[0].getMessage()  # the value itself is not echoed at length


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_huge_counter_is_not_bumped_into_an_error(raw: RawAccess, reliable: bool) -> None:
    """Bumping a counter that holds 5,000 digits leaves it alone instead of raising, on every
    store (the in-process store used to parse it with ``int()``)."""
    gaesignals.configure(store=raw.store)
    keys = signal_keys("bumped", "")
    raw.set(keys.counter("delivered"), HUGE_NUMBER)
    send("bumped", 1)
    assert deliver({"bumped": lambda data: None}, reliable=reliable) == 1
    assert stats("bumped")["bumped"]["delivered"] == 0


# -- locks ----------------------------------------------------------------------------------------


class _Clock:
    """The lease module's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lock_clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(lease, "_clock", clock)
    monkeypatch.setattr(lease, "_sightings", {})
    return clock


@pytest.mark.parametrize(
    "planted", [b"x", b"\xff" * 64, b"ab" * 16, b"ab" * 16 + b":99999999:1"], ids=str
)
def test_a_lock_not_in_our_format_is_taken_over(
    raw: RawAccess, planted: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock value no deliverer of ours writes (planted with no expiry) is taken over at once,
    with a warning, instead of halting the signal's reliable delivery for ever."""
    gaesignals.configure(store=raw.store)
    send("locked", 1)
    raw.set(signal_keys("locked", "").lock, planted)
    assert health(["locked"])["signals"]["locked"]["lock"] == "foreign"
    assert health(["locked"])["ok"] is False
    got: list[Any] = []
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert deliver({"locked": got.append}, reliable=True) == 1
    assert got == [1]
    assert any("taken over" in r.getMessage() for r in caplog.records)
    assert health(["locked"])["signals"]["locked"]["lock"] == "free"
    assert health(["locked"])["ok"] is True


def test_a_lock_held_past_its_lease_is_taken_over(raw: RawAccess, lock_clock: _Clock) -> None:
    """A lock in our format that stays unchanged longer than its lease lets it live (written
    with no expiry) is taken over once this process has seen it that long; before, it is
    respected as a live deliverer's."""
    gaesignals.configure(store=raw.store)
    send("stuck", 1)
    raw.set(signal_keys("stuck", "").lock, lease.lock_value(b"ef" * 16, 5))
    got: list[Any] = []
    assert deliver({"stuck": got.append}, reliable=True) == 0
    lock_clock.now += lease.lock_expiry(5)
    assert deliver({"stuck": got.append}, reliable=True) == 0
    assert health(["stuck"])["signals"]["stuck"]["lock"] == "held"
    lock_clock.now += 1.5
    assert health(["stuck"])["signals"]["stuck"]["lock"] == "foreign"
    assert deliver({"stuck": got.append}, reliable=True) == 1
    assert got == [1]


def test_a_renewed_lock_is_never_taken_for_foreign(raw: RawAccess, lock_clock: _Clock) -> None:
    """Every renewal writes a new value, so a live deliverer's long run never looks stuck."""
    gaesignals.configure(store=raw.store)
    key = signal_keys("renewed", "").lock
    owner = b"01" * 16
    with raw.store.connection() as conn:
        assert lease.acquire(conn, [key], owner, 5) == {key}
        for _ in range(10):
            assert not lease.is_foreign(key, conn.gets_many([key])[key][0], 5)
            lock_clock.now += 3
            assert lease.renew(conn, [key], owner, 5) == {key}
        assert lease.acquire(conn, [key], b"02" * 16, 5) == set()


# -- dead letters ---------------------------------------------------------------------------------

KEY_OLD = b"o" * 32
KEY_NEW = b"n" * 32


def test_a_requeued_letter_keeps_the_key_it_was_signed_with(raw: RawAccess) -> None:
    """A letter signed with a key since retired is not re-signed by a requeue: once the key is
    gone it waits like any frame signed with it (held, never dropped), and never reaches a
    handler of a process without that key."""
    gaesignals.configure(store=raw.store, secret_key=[KEY_NEW, KEY_OLD])
    keys = signal_keys("letters", "")
    old = frames.encode(b'"old"', keys.queue.encode(), [KEY_OLD], json_body=True)
    new = frames.encode(b'"new"', keys.queue.encode(), [KEY_NEW], json_body=True)
    raw.set(keys.dead, old + new + b"garbage")
    assert gaesignals.requeue_dead_letters("letters") == 2
    gaesignals.configure(store=raw.store, secret_key=KEY_NEW)  # the old key retired
    got: list[Any] = []
    assert deliver({"letters": got.append}) == 1
    assert got == ["new"]
    assert stats("letters")["letters"]["dropped"] == 0
    assert gaesignals.pending("letters")["letters"].held == ((frames.key_id(KEY_OLD).hex(), 1),)


def test_a_planted_stale_letter_expires_after_a_requeue(raw: RawAccess) -> None:
    """A letter whose id says it was sent before the signal's ttl ran out stays expired when
    requeued: the requeue keeps its send time."""
    gaesignals.configure(store=raw.store, secret_key=KEY_NEW)
    gaesignals.declare("aged", ttl=60)
    keys = signal_keys("aged", "")
    ident = (int(frames.clock()) - 3600).to_bytes(4, "big") + b"\x00" * 4
    stale = frames.encode(b'"stale"', keys.queue.encode(), [KEY_NEW], json_body=True, ident=ident)
    raw.set(keys.dead, stale)
    assert gaesignals.requeue_dead_letters("aged") == 1
    got: list[Any] = []
    assert deliver({"aged": got.append}) == 0
    assert got == []
    assert stats("aged")["aged"]["expired"] == 1


# -- segment pointers -----------------------------------------------------------------------------

#: The stores that keep long queues in segments (see gaesignals.stores.segments).
SEGMENTED_NOW = ["appengine", "memcached", "memcached-cluster"]
SEGMENT_SIZE = 100_000


def _set_segment(raw: RawAccess, name: str, value: bytes) -> None:
    """Write a segment where a read of its queue looks: on a memcached cluster that is the
    queue's server, so it goes to every server."""
    if raw.kind == "memcached-cluster":
        for client in raw.client.clients.values():
            assert client.set(name, value, noreply=False)
    else:
        raw.set(name, value)


def _plant_pointers(raw: RawAccess, name: str, key: str, count: int) -> bytes:
    """One real segment of frame magic and ``count`` pointers all naming it, at ``key``."""
    ident = segments.new_id()
    segment = segments.segment_key(signal_keys(name, "").queue, ident)
    _set_segment(raw, segment, frames.MAGIC * (SEGMENT_SIZE // 2))
    forged = segments.pointer(ident, SEGMENT_SIZE) * count
    raw.set(key, forged)
    return forged


@pytest.mark.parametrize("store_kind", SEGMENTED_NOW)
def test_a_segment_named_by_many_pointers_is_joined_once(raw: RawAccess) -> None:
    """1,024 pointers naming one 100 KB segment of frame magic: a read joins it once (the rest
    stay as unreadable bytes), so it costs the bytes stored, not a thousand times them; the
    delivery drops them as unreadable and the payload sent after them arrives."""
    gaesignals.configure(store=raw.store, lost_check_interval=0)
    key = signal_keys("amplified", "").queue
    forged = _plant_pointers(raw, "amplified", key, segments.MAX_POINTERS)
    with raw.store.connection() as conn:
        joined = conn.gets_many([key])[key][0]
    assert len(joined) == SEGMENT_SIZE + len(forged) - segments.POINTER_SIZE
    send("amplified", "after")
    got: list[Any] = []
    assert deliver({"amplified": got.append}) == 1
    assert got == ["after"]
    assert stats("amplified")["amplified"]["dropped"] >= 1
    assert gaesignals.pending("amplified")["amplified"].count == 0


@pytest.mark.parametrize("store_kind", SEGMENTED_NOW)
def test_pointers_past_the_budget_are_not_read(raw: RawAccess) -> None:
    """Distinct pointers whose declared lengths add up past twice ``max_value_size`` are not
    followed: the read stops at the budget whatever they claim."""
    gaesignals.configure(store=raw.store)
    key = signal_keys("greedy", "").queue
    limit = segments.budget(raw.store.max_value_size)
    count = limit // SEGMENT_SIZE + 5
    pointers = b""
    for _ in range(count):
        ident = segments.new_id()
        _set_segment(raw, segments.segment_key(key, ident), b"\x00" * SEGMENT_SIZE)
        pointers += segments.pointer(ident, SEGMENT_SIZE)
    raw.set(key, pointers)
    with raw.store.connection() as conn:
        joined = conn.gets_many([key])[key][0]
    assert len(joined) <= limit + len(pointers)
    assert deliver({"greedy": lambda data: None}) == 0


@pytest.mark.parametrize("store_kind", SEGMENTED_NOW)
def test_a_segment_not_the_length_its_pointer_says_is_not_joined(raw: RawAccess) -> None:
    """A pointer declaring 10 bytes for a segment of 100 KB reads as its own bytes."""
    gaesignals.configure(store=raw.store)
    key = signal_keys("liar", "").queue
    ident = segments.new_id()
    _set_segment(raw, segments.segment_key(key, ident), b"\x00" * SEGMENT_SIZE)
    raw.set(key, segments.pointer(ident, 10))
    with raw.store.connection() as conn:
        assert conn.gets_many([key])[key][0] == segments.pointer(ident, 10)


@pytest.mark.parametrize("store_kind", SEGMENTED_NOW)
def test_pointers_in_counters_and_locks_are_not_followed(raw: RawAccess) -> None:
    """Only queue keys hold segments: pointers planted in a counter or a lock read as the bytes
    they are, so stats, health and reliable delivery pay nothing for them."""
    gaesignals.configure(store=raw.store)
    keys = signal_keys("counted", "")
    sent = _plant_pointers(raw, "counted", keys.counter("sent"), 256)
    lock = _plant_pointers(raw, "counted", keys.lock, 256)
    with raw.store.connection() as conn:
        read = conn.gets_many([keys.counter("sent"), keys.lock])
    assert read[keys.counter("sent")][0] == sent
    assert read[keys.lock][0] == lock
    assert stats("counted")["counted"]["sent"] == 0
    send("counted", 1)
    assert deliver({"counted": lambda data: None}, reliable=True) == 1


# -- secrets in messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "memcached://user:hunter2-secret@127.0.0.1:11211",
        "memcached://127.0.0.1:11211?timeout=x&password=hunter2-secret",
        "memcached://127.0.0.1:11211?password=hunter2-secret",
        "nosuch://user:hunter2-secret@host",
        "redis://:hunter2-secret@127.0.0.1:6379?timeout=x",
        "redis://alice:hunter2-secret@127.0.0.1:6379?what=1",
        "redis://:hunter2-secret@h1:1,h2:2",
        "rediss://:hunter2-secret@h1:1,nonsense?cluster=true",
    ],
)
def test_store_url_errors_never_show_the_password(url: str) -> None:
    """A store URL that is refused is echoed in the error with its password masked."""
    with pytest.raises(gaesignals.ConfigurationError) as raised:
        gaesignals.configure(store=url)
    assert "hunter2-secret" not in str(raised.value)
    assert "***" in str(raised.value)


def test_masked_url_keeps_everything_but_the_secret() -> None:
    """Only the password goes: scheme, user, host, port and other options stay readable."""
    masked = masked_url("redis://alice:s3cret@cache.local:6380/2?timeout=1&password=x")
    assert masked == "redis://alice:***@cache.local:6380/2?timeout=1&password=***"


# -- any bytes in any key, on every store ----------------------------------------------------------


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    planted=st.dictionaries(st.sampled_from(HOSTILE_ROLES), hostile_values, max_size=4),
    pointers=st.integers(0, 40),
)
def test_any_bytes_in_a_signals_keys_never_raise_nor_lose(
    raw: RawAccess, planted: dict[str, bytes], pointers: int
) -> None:
    """On every store: whatever sits in a signal's lock, cursor, dead letters and counters,
    with forged segment pointers in front of its queue, both delivery modes, pending, stats
    and health raise nothing, and every payload sent is handled or still pending."""
    gaesignals.configure(store=raw.store, secret_key=KEY_NEW, lost_check_interval=0)
    name = HOSTILE_NAME
    keys = signal_keys(name, "")
    with raw.store.connection() as conn:  # the previous example's payloads and letters
        conn.delete_many([keys.queue, keys.dead, keys.lock, keys.cursor])
    ident = segments.new_id()
    _set_segment(raw, segments.segment_key(keys.queue, ident), frames.MAGIC * 500)
    raw.set(keys.queue, segments.pointer(ident, 1000) * pointers)
    for role, value in planted.items():
        raw.set(_hostile_key(role), value)
    sent = [f"payload-{i}" for i in range(3)]
    for payload in sent:
        send(name, payload)
    got: list[Any] = []
    for reliable in (True, False):
        gaesignals.pending(name)
        stats(name)
        assert health([name])["store"]["reachable"]
        deliver({name: got.append}, reliable=reliable)
    gaesignals.dead_letters(name)
    left = gaesignals.pending(name)[name].count
    handled = {p for p in got if isinstance(p, str) and p.startswith("payload-")}
    assert handled == set(sent) or left >= len(set(sent) - handled)
