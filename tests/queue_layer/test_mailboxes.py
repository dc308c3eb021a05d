"""Mailboxes (:mod:`gaesignals.queue.mailboxes`), on every store: posted in one call, read in
one, bounded, resumed from a mark, a reset when messages were lost, and garbage or forged
lines skipped."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import pytest

from gaesignals import Contention, StoreUnavailable
from gaesignals.queue import mailboxes
from gaesignals.queue.mailboxes import Mark
from gaesignals.stores import Connection, Store
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import CountingStore, DownStore
from tests.conftest import RawAccess

from .support import MeddlingStore

SECRET = b"s" * 32


@pytest.fixture
def memory_clocked() -> tuple[Store, list[float]]:
    """An in-process store whose clock the test moves (``clock[0]``, seconds)."""
    clock = [0.0]
    return MemoryStore(clock=lambda: clock[0]), clock


def new_key(kind: str = "w") -> str:
    """A mailbox no other test (nor this process's post tally) has seen."""
    return mailboxes.mailbox_key(kind, secrets.token_hex(8), "")


def post(store: Store, keys: Sequence[str], body: bytes, secret: bytes | None = None) -> str:
    """Post ``body`` to every mailbox of ``keys``; the message's ident."""
    ident = secrets.token_hex(8)
    keys_ = [secret] if secret else []
    mailboxes.post(store, {k: mailboxes.message_line(k, ident, body, keys_) for k in keys})
    return ident


def catch(
    store: Store, key: str, mark: Mark | None, secret: bytes | None = None
) -> mailboxes.Caught:
    value = mailboxes.read(store, [key]).get(key)
    return mailboxes.catch_up(key, value, mark, [secret] if secret else [])


def bodies(caught: mailboxes.Caught) -> list[bytes]:
    return [body for _, body in caught.messages]


def test_posted_messages_are_read_in_order_from_a_mark(store: Store) -> None:
    """A reader from the start gets every message in order, then only the newer ones."""
    key = new_key()
    for n in range(3):
        post(store, [key], b'{"n":%d}' % n)
    first = catch(store, key, Mark(0, ""))
    assert bodies(first) == [b'{"n":0}', b'{"n":1}', b'{"n":2}'] and not first.reset
    assert first.mark.next == 3
    post(store, [key], b'{"n":3}')
    again = catch(store, key, first.mark)
    assert bodies(again) == [b'{"n":3}'] and again.mark.next == 4 and not again.reset


def test_a_new_reader_starts_at_the_end(store: Store) -> None:
    """A reader without a mark gets none of the past messages, then every later one."""
    key = new_key("b")
    post(store, [key], b"1")
    caught = catch(store, key, None)
    assert caught.messages == [] and caught.mark.next == 1 and not caught.reset
    post(store, [key], b"2")
    assert bodies(catch(store, key, caught.mark)) == [b"2"]


def test_a_missing_mailbox_has_nothing_and_later_messages_arrive(store: Store) -> None:
    """A mailbox never posted to reads as empty; what is posted next arrives from the first."""
    key = new_key("s")
    caught = catch(store, key, None)
    assert caught == mailboxes.Caught([], Mark(0, ""), False)
    post(store, [key], b"hello")
    assert bodies(catch(store, key, caught.mark)) == [b"hello"]


def test_one_post_reaches_every_mailbox_named(store: Store) -> None:
    """One post to several mailboxes puts the same message, by the same ident, in each."""
    keys = [new_key("w"), new_key("s"), new_key("u")]
    ident = post(store, keys, b"all")
    for key in keys:
        assert catch(store, key, Mark(0, "")).messages == [(ident, b"all")]


def test_a_mailbox_stays_bounded_and_a_late_reader_resets(store: Store) -> None:
    """However many posts, a mailbox keeps at most its bound (plus the appends between two
    rewrites); a reader left behind the trimmed head is told to reset and moved to the end,
    one that kept up is not."""
    key = new_key("b")
    late = catch(store, key, None).mark
    post(store, [key], b"0")
    keeping = catch(store, key, late)
    for n in range(1, 3 * mailboxes.KEEP_MESSAGES):
        post(store, [key], b"%d" % n)
        keeping = catch(store, key, keeping.mark)
        assert bodies(keeping) == [b"%d" % n] and not keeping.reset
    value = mailboxes.read(store, [key])[key]
    base, lines = mailboxes.parse(value)
    assert len(lines) <= mailboxes.KEEP_MESSAGES + mailboxes.CHECK_EVERY
    assert base + len(lines) == 3 * mailboxes.KEEP_MESSAGES
    fallen = catch(store, key, Mark(1, late.last or "x"))
    assert fallen.reset and fallen.messages == [] and fallen.mark == keeping.mark


def test_a_mailbox_the_cache_lost_resets_a_reader_who_had_seen_messages(
    store: Store,
) -> None:
    """An evicted mailbox resets a reader who had seen messages in it, not one who had not;
    a mailbox made anew in its place (other messages at the same numbers) resets too."""
    key = new_key("u")
    post(store, [key], b"a")
    seen = catch(store, key, Mark(0, "")).mark
    with store.connection() as conn:
        conn.delete_many([key])
    assert catch(store, key, seen).reset
    assert not catch(store, key, Mark(0, "")).reset
    post(store, [key], b"b")
    replaced = catch(store, key, seen)
    assert replaced.reset and replaced.messages == []


def test_garbage_in_a_mailbox_is_skipped_and_never_raises(raw: RawAccess) -> None:
    """Bytes another program wrote in a mailbox (no ident, binary, a bad header) take a
    place in the numbering and are skipped; the messages around them arrive."""
    store = raw.store
    key = new_key()
    raw.set(key, b"#not a number\n\xff\xfe garbage\nno-ident here\n")
    post(store, [key], b"after")
    caught = catch(store, key, Mark(0, ""))
    assert bodies(caught) == [b"after"] and caught.mark.next == 3
    raw.set(key, b"\x00" * 100)
    assert catch(store, key, caught.mark).reset


def test_with_a_secret_key_forged_and_copied_lines_are_skipped(raw: RawAccess) -> None:
    """With a secret key, a line without its MAC, with a wrong one, or copied from another
    mailbox is never read as a message; the signed ones are."""
    store = raw.store
    key, other = new_key(), new_key()
    post(store, [other], b'"elsewhere"', SECRET)
    copied = mailboxes.read(store, [other])[other]
    forged = mailboxes.message_line(key, "0123456789abcdef", b'"forged"', [b"x" * 32])
    unsigned = mailboxes.message_line(key, "0123456789abcdee", b'"unsigned"', [])
    raw.set(key, copied + forged + unsigned)
    post(store, [key], b'"signed"', SECRET)
    caught = catch(store, key, Mark(0, ""), SECRET)
    assert bodies(caught) == [b'"signed"'] and caught.mark.next == 4


def test_a_rotated_key_still_reads_what_the_old_one_signed(store: Store) -> None:
    """Lines signed with an older key verify while it is still among the keys."""
    key = new_key()
    post(store, [key], b"old", SECRET)
    value = mailboxes.read(store, [key])[key]
    caught = mailboxes.catch_up(key, value, Mark(0, ""), [b"n" * 32, SECRET])
    assert bodies(caught) == [b"old"]


def test_a_post_is_one_call_once_the_mailboxes_exist(store: Store) -> None:
    """Where the store appends, posting to several existing mailboxes is one append call (a
    first post from this process rewrites instead); reading them is one batched read."""
    keys = [new_key("w"), new_key("s"), new_key("b")]
    post(store, keys, b"first")
    counting = CountingStore(store)
    post(counting, keys, b"second")
    if store.supports_append:
        assert dict(counting.calls) == {"append_many": 1}
    else:
        assert counting.calls["gets_many"] == 1 and "append_many" not in counting.calls
    counting.calls.clear()
    found = mailboxes.read(counting, keys)
    assert set(found) == set(keys) and dict(counting.calls) == {"gets_many": 1}


def test_a_mailbox_that_keeps_changing_raises_contention(store: Store) -> None:
    """A rewrite whose mailbox changes before every compare-and-set gives up with
    Contention naming it, after a bounded number of attempts."""
    key = new_key()
    post(store, [key], b"one")

    def meddle(conn: Connection) -> None:
        conn.set_many({key: conn.gets_many([key])[key].value + b"x\n"})

    meddling = MeddlingStore(store, before_cas=meddle)
    with pytest.raises(Contention) as raised:
        for _ in range(mailboxes.CHECK_EVERY):  # one of these posts is a rewrite
            post(meddling, [key], b"two")
    assert raised.value.keys == (key,)


def test_mailboxes_on_a_store_that_is_down_raise() -> None:
    """Posting to or reading a mailbox on an unreachable store raises StoreUnavailable."""
    down = DownStore()
    with pytest.raises(StoreUnavailable):
        post(down, [new_key()], b"x")
    with pytest.raises(StoreUnavailable):
        mailboxes.read(down, [new_key()])


def test_a_message_line_refuses_what_would_break_the_log() -> None:
    """A body holding a newline, or an ident that is not 16 hex digits, is refused."""
    with pytest.raises(ValueError):
        mailboxes.message_line("k", "0123456789abcdef", b"a\nb", [])
    with pytest.raises(ValueError):
        mailboxes.message_line("k", "xyz", b"a", [])
    with pytest.raises(ValueError):
        mailboxes.mailbox_key("x", "name", "")


def test_a_value_the_cache_client_would_unpickle_is_only_bytes(raw: RawAccess) -> None:
    """A mailbox holding what a cache client stored pickled (with memcached's pickle flag) is
    read as bytes and skipped, never unpickled; later messages still arrive."""
    store = raw.store
    key = new_key()
    raw.set_pickled(key, {"not": "a mailbox"})
    caught = catch(store, key, Mark(0, ""))
    assert caught.messages == [] and not caught.reset
    post(store, [key], b"after")
    assert bodies(catch(store, key, caught.mark)) == [b"after"]


def test_a_mailbox_nobody_posts_to_expires_and_posts_keep_it(
    memory_clocked: tuple[Store, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mailbox lives :data:`MAILBOX_SECONDS` past its last rewrite: one posted to at least
    every half of that keeps living (such a post rewrites it), one left alone expires, and its
    reader is then told to reset."""
    store, clock = memory_clocked
    monkeypatch.setattr(mailboxes, "_tally", mailboxes._Tally(clock=lambda: clock[0]))
    key = new_key()
    post(store, [key], b"first")
    mark = catch(store, key, Mark(0, "")).mark
    for n in range(5):
        clock[0] += mailboxes.MAILBOX_SECONDS * 0.6
        post(store, [key], b"%d" % n)
        caught = catch(store, key, mark)
        assert bodies(caught) == [b"%d" % n] and not caught.reset
        mark = caught.mark
    clock[0] += mailboxes.MAILBOX_SECONDS + 1
    assert catch(store, key, mark).reset
