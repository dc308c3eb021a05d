"""Reliable delivery's queue operations on every store: the shard read, the progress cursor kept,
read and cleared, a failed payload rescheduled; and what a cache writer's cursor can do.

A cursor is believed only when it is ours (its MAC, with a secret key set) and dated within
bounds, so hostile cursors (garbage, forged, dated in year 33658 or in 1970, copied from another
signal, naming frames that are not there) never skip a payload, never make a delayed one run
early and never get one re-signed for a time that never comes. Time is a clock seam here
(:data:`gaesignals.frames.clock`): nothing sleeps.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest

import gaesignals
from gaesignals import Retry, deliver, frames, pending, send
from gaesignals.keys import signal_keys
from gaesignals.queue import held
from gaesignals.queue.lease import CLOCK_SKEW
from gaesignals.queue.progress import MAX_AGE, Cursor, CursorState, Progress, Rescheduled
from gaesignals.queue.reliable import META_ERROR, read, reschedule
from gaesignals.timing import MAX_DELAY, now_ms

from ..conftest import RawAccess

KEY = hashlib.sha256(b"gaesignals reliable queue test").digest()
OTHER_KEY = hashlib.sha256(b"gaesignals reliable queue test: another key").digest()
#: A decision time in year 33658, as the hostile finding's cursor carried.
YEAR_33658 = 999_999_999_999_999


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The library's wall clock, moved by hand."""
    now = [float(int(frames.clock()))]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    return now


def use(raw: RawAccess, secret_key: bytes | None) -> None:
    """Configure gaesignals on the test's store, with ``secret_key`` or none."""
    gaesignals.configure(store=raw.store, secret_key=secret_key, lost_check_interval=0)


def frames_of(raw: RawAccess, name: str, key: bytes | None) -> list[frames.Frame]:
    """The frames queued for ``name``, verified with ``key``."""
    queue = signal_keys(name, "").queue
    value = raw.get(queue) or b""
    return frames.parse_queue(value, queue.encode(), [key] if key else []).found


def cursor_for(name: str, progress: Progress, key: bytes | None) -> bytes:
    """``progress`` as ``name``'s cursor text, signed with ``key`` if given."""
    keys = signal_keys(name, "")
    return progress.encode(keys.cursor, keys.queue.encode(), [key] if key else [])


def reader_of(key: bytes | None) -> bytes:
    return held.reader([key] if key else [], "pickle")


def collect() -> tuple[list[Any], Any]:
    got: list[Any] = []
    return got, got.append


# -- the operations -------------------------------------------------------------------------------


def test_read_gives_each_queue_and_cursor_that_exists(raw: RawAccess) -> None:
    """One read returns the shard's queue and its cursor with their values; a missing key is
    absent from the answer."""
    use(raw, None)
    keys = signal_keys("r", "")
    send("r", 1)
    raw.set(keys.cursor, b"some cursor")
    with raw.store.connection() as conn:
        current = read(conn, [keys.queue, "gs::q:{absent}"], [keys.cursor, "gs::c:{absent}"])
    assert current[keys.cursor][0] == b"some cursor"
    assert len(frames.parse(current[keys.queue][0], keys.queue.encode())[0]) == 1
    assert "gs::q:{absent}" not in current and "gs::c:{absent}" not in current


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_a_kept_cursor_reads_back_and_clears(raw: RawAccess, key: bytes | None) -> None:
    """A cursor kept through the store reads back as the same progress, and clearing it
    removes the key; clearing a cursor that was never there writes nothing."""
    use(raw, key)
    keys = signal_keys("kept", "")
    secret = [key] if key else []
    progress = Progress(
        120, b"\x01" * 8, 3, now_ms(), (Rescheduled(b"\x02" * 8, 2, now_ms() + 5000),), b"j"
    )
    with raw.store.connection() as conn:
        cursor = Cursor(conn, keys.cursor, b"", keys.queue.encode(), secret)
        assert cursor.state is CursorState.EMPTY
        cursor.keep(progress)
        assert cursor.state is CursorState.WRITTEN
        found = read(conn, [], [keys.cursor])[keys.cursor][0]
        again = Cursor(conn, keys.cursor, found, keys.queue.encode(), secret)
        assert again.state is CursorState.FOUND
        assert again.read("kept", now_ms()) == progress
        again.clear()
        assert raw.get(keys.cursor) is None
        never = Cursor(conn, keys.cursor, b"", keys.queue.encode(), secret)
        never.clear()
        assert never.state is CursorState.EMPTY
    assert raw.get(keys.cursor) is None


def test_a_rescheduled_frame_keeps_its_id_and_body_and_names_its_error(raw: RawAccess) -> None:
    """Rescheduling rewrites a failed frame with its attempts, due time and last error, signed
    anew: the same id and body, and it verifies."""
    use(raw, KEY)
    send("again", {"n": 1})
    frame = frames_of(raw, "again", KEY)[0]
    queue = signal_keys("again", "").queue
    due = now_ms() + 5000
    rewritten = reschedule(frame, queue.encode(), [KEY], attempts=2, due=due, error="E: no")
    (new,), bad = frames.parse(rewritten, queue.encode(), [KEY])
    assert bad == []
    assert (new.ident, new.body, new.attempts) == (frame.ident, frame.body, 2)
    assert frames.not_before(new) == due
    assert (frames.metadata(new.meta) or {})[META_ERROR] == b"E: no"


# -- what a cursor is believed for ----------------------------------------------------------------


def test_a_signed_cursor_is_not_believed_under_another_cursor_key(raw: RawAccess) -> None:
    """A cursor's MAC names its key and signal: copied to another signal's (or shard's) cursor
    key, or checked with another secret key, it reads as absent."""
    use(raw, KEY)
    progress = Progress(10, b"\x03" * 8, None, now_ms())
    mine = cursor_for("mine", progress, KEY)
    theirs = signal_keys("theirs", "")
    with raw.store.connection() as conn:
        moved = Cursor(conn, theirs.cursor, mine, theirs.queue.encode(), [KEY])
        assert moved.read("theirs", now_ms()) is None
        keys = signal_keys("mine", "")
        other = Cursor(conn, keys.cursor, mine, keys.queue.encode(), [OTHER_KEY])
        assert other.read("mine", now_ms()) is None
        rotated = Cursor(conn, keys.cursor, mine, keys.queue.encode(), [OTHER_KEY, KEY])
        assert rotated.read("mine", now_ms()) == progress


@pytest.mark.parametrize(
    "decided",
    [YEAR_33658, "future", "past", 1],
    ids=["year-33658", "past-the-skew", "older-than-max-age", "year-1970"],
)
def test_a_cursor_dated_out_of_bounds_is_not_believed(raw: RawAccess, decided: Any) -> None:
    """Even with a valid MAC, a cursor whose decision time lies further ahead than the clock
    skew, or further back than any lock lives, reads as absent."""
    use(raw, KEY)
    now = now_ms()
    when = {"future": now + (CLOCK_SKEW + 1) * 1000, "past": now - (MAX_AGE + 1) * 1000}
    progress = Progress(10, b"\x03" * 8, None, when.get(decided, decided))
    keys = signal_keys("dated", "")
    raw.set(keys.cursor, cursor_for("dated", progress, KEY))
    found = raw.get(keys.cursor) or b""
    assert Progress.decode(found, keys.cursor, keys.queue.encode(), [KEY], now) is None
    within = Progress(10, b"\x03" * 8, None, now + CLOCK_SKEW * 1000)
    raw_within = cursor_for("dated", within, KEY)
    assert Progress.decode(raw_within, keys.cursor, keys.queue.encode(), [KEY], now) == within


def test_a_cursor_rescheduling_past_the_longest_wait_is_not_believed(raw: RawAccess) -> None:
    """A cursor naming a rescheduled payload due further ahead than a retry may wait reads as
    absent; one due within it is believed."""
    use(raw, None)
    now = now_ms()
    keys = signal_keys("far", "")
    for due, believed in ((now + (MAX_DELAY + CLOCK_SKEW + 1) * 1000, False), (now + 1000, True)):
        progress = Progress(10, b"\x03" * 8, None, now, (Rescheduled(b"\x04" * 8, 1, due),))
        raw.set(keys.cursor, cursor_for("far", progress, None))
        found = raw.get(keys.cursor) or b""
        decoded = Progress.decode(found, keys.cursor, keys.queue.encode(), [], now)
        assert (decoded == progress) is believed


# -- hostile cursors in a delivery ----------------------------------------------------------------


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
@pytest.mark.parametrize(
    "planted",
    [b"garbage", b"\xff" * 300, b"1:2:3:4:5:6:7", b":" * 6, b"9" * 5000],
    ids=["word", "binary", "numbers", "colons", "long"],
)
def test_a_garbage_cursor_is_ignored_and_logged(
    raw: RawAccess, key: bytes | None, planted: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are no cursor of ours never crash a delivery nor skip a payload: they read
    as absent, the log says so, and the cursor key is cleared once the shard is done."""
    use(raw, key)
    for i in range(3):
        send("g", i)
    raw.set(signal_keys("g", "").cursor, planted)
    got, handler = collect()
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert deliver({"g": handler}, reliable=True) == 3
    assert got == [0, 1, 2]
    assert "progress cursor of signal 'g'" in caplog.text
    assert raw.get(signal_keys("g", "").cursor) in (None, b"")


def test_a_refused_cursor_is_said_once_and_removed(
    raw: RawAccess, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """A cursor not believed is removed when read, even by a delivery that finds nothing due,
    so deliveries run every request warn about it once."""
    use(raw, KEY)
    send("w", "later", delay=60)
    raw.set(signal_keys("w", "").cursor, b"planted")
    got, handler = collect()
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        for _ in range(3):
            assert deliver({"w": handler}, reliable=True) == 0
    assert caplog.text.count("progress cursor of signal 'w'") == 1
    assert raw.get(signal_keys("w", "").cursor) in (None, b"")
    clock[0] += 61
    assert deliver({"w": handler}, reliable=True) == 1
    assert got == ["later"]


@pytest.mark.parametrize("signed_with", [None, OTHER_KEY], ids=["unsigned", "another-key"])
def test_a_forged_cursor_cannot_make_a_delayed_payload_run_at_once(
    raw: RawAccess, clock: list[float], signed_with: bytes | None
) -> None:
    """With a secret key set, a cursor forged without it (dated in year 33658, naming the
    first payload as running) is ignored: the payload sent with a delay waits its time."""
    use(raw, KEY)
    send("d", "now")
    send("d", "later", delay=60)
    first = frames_of(raw, "d", KEY)[0]
    forged = Progress(first.end, first.ident, 1, YEAR_33658, (), reader_of(KEY))
    raw.set(signal_keys("d", "").cursor, cursor_for("d", forged, signed_with))
    got, handler = collect()
    assert deliver({"d": handler}, reliable=True) == 1
    assert got == ["now"]
    clock[0] += 61
    assert deliver({"d": handler}, reliable=True) == 1
    assert got == ["now", "later"]


def test_an_unsigned_cursor_from_year_33658_is_not_believed_without_a_key(
    raw: RawAccess, clock: list[float]
) -> None:
    """Without a secret key a cursor cannot be authenticated, but its decision time is still
    bounded: one dated in year 33658 never makes a delayed payload due."""
    use(raw, None)
    send("d", "now")
    send("d", "later", delay=60)
    first = frames_of(raw, "d", None)[0]
    forged = Progress(first.end, first.ident, 1, YEAR_33658, (), reader_of(None))
    raw.set(signal_keys("d", "").cursor, cursor_for("d", forged, None))
    got, handler = collect()
    assert deliver({"d": handler}, reliable=True) == 1
    assert got == ["now"]
    assert pending("d")["d"].waiting == 1


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_a_cursor_cannot_get_a_payload_re_signed_for_a_time_that_never_comes(
    raw: RawAccess, key: bytes | None
) -> None:
    """A cursor naming the last payload finished and the first rescheduled for year 33658
    (forged without the key, or within bounds but for no time a retry may wait) never gets
    our deliverer to rewrite that payload: every payload is delivered now."""
    use(raw, key)
    for i in range(3):
        send("s", i)
    found = frames_of(raw, "s", key)
    again = (Rescheduled(found[0].ident, 1, YEAR_33658),)
    forged = Progress(found[2].end, found[2].ident, None, now_ms(), again, reader_of(key))
    raw.set(signal_keys("s", "").cursor, cursor_for("s", forged, key))
    got, handler = collect()
    assert deliver({"s": handler}, reliable=True) == 3
    assert got == [0, 1, 2]
    assert pending("s")["s"].count == 0


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_a_cursor_from_1970_never_holds_payloads_back(
    raw: RawAccess, clock: list[float], key: bytes | None
) -> None:
    """A cursor decided in 1970, naming the first payload finished, is not believed: the
    shard is delivered from its start, the delayed payload once due as usual."""
    use(raw, key)
    send("old", "first")
    send("old", "due", delay=5)
    clock[0] += 10
    first = frames_of(raw, "old", key)[0]
    ancient = Progress(first.end, first.ident, None, 1000, (), reader_of(key))
    raw.set(signal_keys("old", "").cursor, cursor_for("old", ancient, key))
    got, handler = collect()
    assert deliver({"old": handler}, reliable=True) == 2
    assert got == ["first", "due"]


def test_a_cursor_copied_from_another_signal_skips_nothing(raw: RawAccess) -> None:
    """A valid cursor of one signal copied into another's cursor key is not believed there:
    every payload of the second signal is delivered."""
    use(raw, KEY)
    for name in ("a", "b"):
        for i in range(3):
            send(name, i)
    found = frames_of(raw, "a", KEY)
    theirs = Progress(found[2].end, found[2].ident, None, now_ms(), (), reader_of(KEY))
    raw.set(signal_keys("b", "").cursor, cursor_for("a", theirs, KEY))
    got, handler = collect()
    assert deliver({"b": handler}, reliable=True) == 3
    assert got == [0, 1, 2]


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_a_cursor_naming_frames_not_present_skips_nothing(
    raw: RawAccess, key: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A believed cursor naming a frame the queue does not hold (left from an older value) is
    quietly ignored: every payload runs, and the cursor is cleared."""
    use(raw, key)
    for i in range(3):
        send("n", i)
    found = frames_of(raw, "n", key)
    stale = Progress(found[1].end, b"\x00" * 8, None, now_ms(), (), reader_of(key))
    raw.set(signal_keys("n", "").cursor, cursor_for("n", stale, key))
    got, handler = collect()
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert deliver({"n": handler}, reliable=True) == 3
    assert got == [0, 1, 2]
    assert "progress cursor" not in caplog.text
    assert raw.get(signal_keys("n", "").cursor) in (None, b"")


class _Killed(BaseException):
    """Stands for a handler that kills its process (nothing catches it)."""


def test_our_own_signed_cursor_still_resumes_a_killed_delivery(raw: RawAccess) -> None:
    """With a secret key set, the cursor a killed deliverer left is believed: its successor
    repeats only the payload that was running, not those already finished."""
    use(raw, KEY)
    for i in range(4):
        send("k", i)
    seen: list[int] = []

    def dies_on_two(data: int) -> None:
        seen.append(data)
        if data == 2:
            raise _Killed

    with pytest.raises(_Killed):
        deliver({"k": dies_on_two}, reliable=True)
    got, handler = collect()
    assert deliver({"k": handler}, reliable=True) == 2
    assert seen == [0, 1, 2] and got == [2, 3]


def test_a_retry_asking_an_endless_wait_waits_the_longest_a_send_may(
    raw: RawAccess, clock: list[float]
) -> None:
    """A handler raising ``Retry(delay=inf)`` crashes nothing: the payload is rescheduled for
    the longest wait a send may ask, and delivered then."""
    use(raw, KEY)
    send("inf", "x")
    calls: list[str] = []

    def handler(data: str) -> None:
        calls.append(data)
        if len(calls) == 1:
            raise Retry(delay=float("inf"))

    assert deliver({"inf": handler}, reliable=True) == 0
    assert pending("inf")["inf"].waiting == 1
    clock[0] += MAX_DELAY - 10
    assert deliver({"inf": handler}, reliable=True) == 0
    clock[0] += 20
    assert deliver({"inf": handler}, reliable=True) == 1
    assert calls == ["x", "x"]
