"""Dead letters as queue operations (:mod:`gaesignals.queue.dead_letters`), on every store:
put, read, requeue and purge, what a key holding garbage reads as, and that a letter is never
lost to a concurrent writer or a failed requeue."""

from __future__ import annotations

from typing import Any

import pytest

import gaesignals
from gaesignals import Contention, deliver, frames, send
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.queue import counters, dead_letters
from gaesignals.stores import Connection, Store

from ..conftest import RawAccess
from .support import MeddlingStore, letter

KEYS = signal_keys("letters", "")
SECRET = b"s" * 32


def _stored(store: Store, key: str) -> bytes | None:
    with store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    return None if item is None else item[0]


def _put(store: Store, *raw: bytes) -> None:
    with store.connection() as conn:
        for each in raw:
            dead_letters.put(conn, store, KEYS, each)


def _accounted(store: Store) -> bytes | None:
    return _stored(store, KEYS.counter("accounted"))


def test_put_letters_read_back_in_order(store: Store) -> None:
    """Letters put one after another read back in that order, whole, with their attempts."""
    first, second = letter(KEYS, b'"a"', attempts=3), letter(KEYS, b'"b"', attempts=5)
    _put(store, first, second)
    held = dead_letters.read(get_settings(), "letters")
    assert held.value == first + second
    assert [f.body for f in held.found] == [b'"a"', b'"b"']
    assert [f.attempts for f in held.found] == [3, 5]
    assert held.bad == []


def test_a_signal_without_letters_reads_as_none(store: Store) -> None:
    """A missing dead-letter key, or an emptied one, reads as no letters."""
    assert dead_letters.read(get_settings(), "letters") == dead_letters.NO_LETTERS
    _put(store, letter(KEYS, b"1"))
    dead_letters.purge(get_settings(), "letters")
    assert dead_letters.read(get_settings(), "letters") == dead_letters.NO_LETTERS


def test_reading_leaves_the_letters_in_place(store: Store) -> None:
    """A read takes nothing: the key holds the same bytes after it."""
    _put(store, letter(KEYS, b"1"))
    before = _stored(store, KEYS.dead)
    assert len(dead_letters.read(get_settings(), "letters").found) == 1
    assert _stored(store, KEYS.dead) == before


def test_purge_takes_every_letter_and_counts_nothing(store: Store) -> None:
    """A purge returns the letters it removed, leaves none, and touches no counter; a second
    purge finds nothing."""
    _put(store, letter(KEYS, b"1"), letter(KEYS, b"2"))
    assert len(dead_letters.purge(get_settings(), "letters").found) == 2
    assert _stored(store, KEYS.dead) in (None, b"")
    assert dead_letters.purge(get_settings(), "letters").found == []
    assert _accounted(store) is None


def test_requeue_moves_letters_to_the_queue_with_attempts_reset(store: Store) -> None:
    """A requeue empties the dead-letter key and appends the letters to the queue with their
    attempts at 0 and their ids kept; ``accounted`` is taken back by the letters moved."""
    letters = [letter(KEYS, b'"a"', attempts=4), letter(KEYS, b'"b"', attempts=2)]
    _put(store, *letters)
    with store.connection() as conn:
        counters.bump(conn, {KEYS.counter("accounted"): 5})
    moved = dead_letters.requeue(get_settings(), "letters")
    assert len(moved.found) == 2
    assert _stored(store, KEYS.dead) in (None, b"")
    queued, bad = frames.parse(_stored(store, KEYS.queue) or b"", KEYS.queue.encode())
    assert bad == []
    assert [f.attempts for f in queued] == [0, 0]
    assert [f.ident for f in queued] == [f.ident for f in moved.found]
    assert _accounted(store) == b"3"


def test_requeued_letters_are_delivered_after_what_was_queued(store: Store) -> None:
    """Requeued letters join the queue behind what waits there and reach the handler."""
    send("letters", "queued")
    _put(store, letter(KEYS, b'"dead"'))
    assert len(dead_letters.requeue(get_settings(), "letters").found) == 1
    got: list[Any] = []
    assert deliver({"letters": got.append}) == 2
    assert got == ["queued", "dead"]


def test_requeue_of_no_letters_writes_nothing(store: Store) -> None:
    """With no letters, a requeue moves nothing and creates no queue key nor counter."""
    assert dead_letters.requeue(get_settings(), "letters") == dead_letters.NO_LETTERS
    assert _stored(store, KEYS.queue) is None
    assert _accounted(store) is None


def test_garbage_around_letters_is_reported_and_not_requeued(raw: RawAccess) -> None:
    """Garbage bytes around a letter in the dead-letter key read as bad regions: the letter is
    found, requeued alone, and the garbage is gone with the emptied key."""
    one = letter(KEYS, b'"kept"')
    raw.set(KEYS.dead, b"\xff\x00garbage" + one + b"\xa7\x5c" + b"\x00" * 40)
    held = dead_letters.read(get_settings(), "letters")
    assert [f.body for f in held.found] == [b'"kept"']
    assert held.bad and frames.dropped(held.bad) >= 1
    moved = dead_letters.requeue(get_settings(), "letters")
    assert len(moved.found) == 1 and moved.bad
    assert _stored(raw.store, KEYS.queue) == frames.with_attempts(one, 0)
    assert raw.get(KEYS.dead) in (None, b"")


def test_a_key_of_garbage_purges_to_nothing(raw: RawAccess) -> None:
    """A dead-letter key holding only garbage has no letters; a purge empties it all the same
    and says what it dropped."""
    raw.set(KEYS.dead, bytes(range(256)) * 4)
    assert dead_letters.read(get_settings(), "letters").found == []
    purged = dead_letters.purge(get_settings(), "letters")
    assert purged.found == [] and purged.bad
    assert raw.get(KEYS.dead) in (None, b"")


def test_letters_of_another_signal_are_not_letters(raw: RawAccess) -> None:
    """With a secret key, a letter copied from another signal's dead-letter key fails
    verification here (its signature names the other signal)."""
    gaesignals.configure(store=raw.store, secret_key=SECRET)
    other = signal_keys("other", "")
    raw.set(KEYS.dead, letter(other, b'"theirs"', secret=SECRET))
    held = dead_letters.read(get_settings(), "letters")
    assert held.found == [] and held.bad


def test_with_a_secret_key_only_signed_letters_count(raw: RawAccess) -> None:
    """With a secret key set, an unsigned letter planted beside a signed one is not read; a
    requeue moves the signed one with its attempts reset, and the unsigned one as it is, held
    for a deliverer without a key (never read here, never re-signed)."""
    gaesignals.configure(store=raw.store, secret_key=SECRET)
    planted = letter(KEYS, b'"planted"')
    signed = letter(KEYS, b'"signed"', secret=SECRET)
    raw.set(KEYS.dead, planted + signed)
    assert [f.body for f in dead_letters.read(get_settings(), "letters").found] == [b'"signed"']
    moved = dead_letters.requeue(get_settings(), "letters")
    assert [f.body for f in moved.found] == [b'"signed"'] and len(moved.held) == 1
    assert _stored(raw.store, KEYS.queue) == (
        frames.with_attempts(planted, 0) + frames.with_attempts(signed, 0)
    )


def test_a_letter_put_during_a_take_is_taken_too(store: Store) -> None:
    """A letter dead-lettered between a purge's read and its compare-and-set makes the purge
    read again: it takes both letters, and none is lost or left."""
    _put(store, letter(KEYS, b"1"))
    meddled: list[bool] = []

    def another_deliverer(conn: Connection) -> None:
        if not meddled:
            meddled.append(True)
            dead_letters.put(conn, store, KEYS, letter(KEYS, b"2"))

    gaesignals.configure(store=MeddlingStore(store, before_cas=another_deliverer))
    assert [f.body for f in dead_letters.purge(get_settings(), "letters").found] == [b"1", b"2"]
    assert _stored(store, KEYS.dead) in (None, b"")


def test_a_key_that_keeps_changing_raises_contention_and_keeps_the_letters(store: Store) -> None:
    """When every compare-and-set on the dead-letter key loses, a purge gives up with
    :class:`~gaesignals.Contention` naming the key, and the letters stay."""
    _put(store, letter(KEYS, b"1"))
    before = _stored(store, KEYS.dead)
    gaesignals.configure(store=MeddlingStore(store, refused=[KEYS.dead]))
    with pytest.raises(Contention) as raised:
        dead_letters.purge(get_settings(), "letters")
    assert raised.value.keys == (KEYS.dead,)
    assert "letters" in str(raised.value)
    assert _stored(store, KEYS.dead) == before


def test_a_requeue_that_cannot_append_puts_the_letters_back(store: Store) -> None:
    """When the queue refuses the letters, the requeue raises and the letters are back under
    the dead-letter key, ``accounted`` untouched."""
    letters = letter(KEYS, b'"a"') + letter(KEYS, b'"b"')
    _put(store, letters)
    gaesignals.configure(store=MeddlingStore(store, refused=[KEYS.queue]))
    with pytest.raises(Contention):
        dead_letters.requeue(get_settings(), "letters")
    assert _stored(store, KEYS.dead) == letters
    assert _stored(store, KEYS.queue) is None
    assert _accounted(store) is None
