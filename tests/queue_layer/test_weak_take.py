"""The weak take as a queue operation (:mod:`gaesignals.queue.weak_take`), on every store: what
it takes, keeps and counts, at most once, whatever a key holds, and that the generic take over
the primitives counts exactly as a store's native take does."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import pytest

import gaesignals
from gaesignals import StoreUnavailable, frames
from gaesignals.accounting import flush
from gaesignals.config import Settings, get_settings
from gaesignals.keys import SignalKeys, signal_keys
from gaesignals.queue import weak_take
from gaesignals.queue.spread import marker
from gaesignals.queue.weak_take import Found, Parse, WeakTaken
from gaesignals.stores import Connection, Store
from gaesignals.timing import now_ms

from ..conftest import RawAccess
from .support import Layout as _Layout
from .support import MeddlingStore

SECRET = b"s" * 32
NAMES = ("alpha", "beta", "gamma")
COUNTERS = ("accounted", "delivered", "dropped", "expired")


class _Reader:
    """Reads every value by its full parse, signed as the settings say; no ttl."""

    def __init__(self, settings: Settings) -> None:
        self.secret_keys = settings.secret_keys

    def read(self, name: str, key: str, value: bytes) -> list[bytes] | Parse:
        signer = signal_keys(name, get_settings().namespace).queue.encode()
        parsed = frames.parse_queue(value, signer, self.secret_keys)
        held = [held.frame for held in parsed.held]
        return parsed.found, parsed.bad, parsed.marker_width, held, parsed.cancels

    def within_ttl(self, name: str, found: Found) -> Found:
        return found

    def parse(self, name: str, key: str, value: bytes) -> Parse:
        got = self.read(name, key, value)
        assert not isinstance(got, list)  # this reader never gives bare bodies
        return got


def _keys(name: str) -> SignalKeys:
    return signal_keys(name, get_settings().namespace)


def _frame(name: str, body: object, *, due: int = 0, signer: str | None = None) -> bytes:
    """One payload frame of ``name`` (signed for ``signer``'s signal if given), due at ``due``."""
    meta = frames.meta_entry(frames.META_NOT_BEFORE, due.to_bytes(8, "big")) if due else b""
    signal = _keys(signer or name).queue.encode()
    return frames.encode(pickle.dumps(body), signal, get_settings().secret_keys, meta=meta)


def _take(store: Store, names: Sequence[str] = NAMES, *, now: int | None = None) -> WeakTaken:
    """A take of ``names`` with its counts written, as delivery writes them."""
    settings = get_settings()
    layout = _Layout(settings, names)
    with store.connection() as conn:
        taken = weak_take.take(
            conn, settings, layout, _Reader(settings), now=now_ms() if now is None else now
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


def _counters(raw: RawAccess, name: str) -> dict[str, int]:
    keys = _keys(name)
    values = {what: raw.get(keys.counter(what)) for what in COUNTERS}
    return {what: int(value.rstrip(b" ")) for what, value in values.items() if value}


def test_a_take_empties_every_signal_and_counts_what_it_took(raw: RawAccess) -> None:
    """Every payload of every signal is taken once, in queue order, each key emptied, and each
    counted ``accounted`` and ``delivered``; a second take finds nothing."""
    for name in NAMES:
        raw.set(_keys(name).queue, b"".join(_frame(name, (name, i)) for i in range(3)))
    taken = _take(raw.store)
    assert _bodies(taken) == {name: [(name, i) for i in range(3)] for name in NAMES}
    assert [key.name for key in taken.taken] == list(NAMES)
    assert (taken.failure, taken.widened) == (None, {})
    for name in NAMES:
        assert raw.get(_keys(name).queue) in (None, b"")
        assert _counters(raw, name) == {"accounted": 3, "delivered": 3}
    again = _take(raw.store)
    assert again.taken == []
    assert all(_counters(raw, name) == {"accounted": 3, "delivered": 3} for name in NAMES)


def test_payloads_not_due_stay_queued_until_due(raw: RawAccess) -> None:
    """A payload not due yet stays in its key, after what was due, and is neither taken nor
    counted until a take at or after its time."""
    now = now_ms()
    later = _frame("alpha", "later", due=now + 60_000)
    raw.set(_keys("alpha").queue, _frame("alpha", "now") + later)
    taken = _take(raw.store, ["alpha"], now=now)
    assert _bodies(taken) == {"alpha": ["now"]}
    assert raw.get(_keys("alpha").queue) == later
    assert taken.kept == {_keys("alpha").queue: later}
    assert _counters(raw, "alpha") == {"accounted": 1, "delivered": 1}
    assert _bodies(_take(raw.store, ["alpha"], now=now + 60_000)) == {"alpha": ["later"]}
    assert _counters(raw, "alpha") == {"accounted": 2, "delivered": 2}


HOSTILE = {
    "garbage": b"\x00not a frame at all\xff" * 20,
    "repeated magic": frames.MAGIC * 500,
    "magic and version": (frames.MAGIC + bytes((frames.VERSION,))) * 300,
    "a truncated frame": b"",  # filled in by the test: a valid frame cut short
}


@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_hostile_contents_never_crash_a_take_nor_stop_other_keys(raw: RawAccess, what: str) -> None:
    """Garbage, frame magic repeated, or a truncated frame in one key never raises, is never
    taken as a payload, leaves that key empty, and the other keys' payloads are all taken."""
    gaesignals.configure(store=raw.store, secret_key=SECRET)
    hostile = HOSTILE[what] or _frame("alpha", "cut")[:-7]
    raw.set(_keys("alpha").queue, hostile)
    raw.set(_keys("beta").queue, _frame("beta", "fine"))
    taken = _take(raw.store, ["alpha", "beta"])
    bodies = _bodies(taken)
    assert (bodies.get("alpha", []), bodies["beta"]) == ([], ["fine"])
    assert raw.get(_keys("alpha").queue) in (None, b"")
    assert _counters(raw, "beta") == {"accounted": 1, "delivered": 1}
    counted = _counters(raw, "alpha")
    assert counted.get("delivered", 0) == 0
    assert counted.get("accounted", 0) == counted.get("dropped", 0)


def test_payloads_around_garbage_are_taken(raw: RawAccess) -> None:
    """Valid frames before and after garbage in one key are both taken; the garbage between
    them is dropped, never handed on."""
    gaesignals.configure(store=raw.store, secret_key=SECRET)
    value = _frame("alpha", 1) + b"\x13garbage\x37" * 5 + _frame("alpha", 2)
    raw.set(_keys("alpha").queue, value)
    taken = _take(raw.store, ["alpha"])
    assert _bodies(taken) == {"alpha": [1, 2]}
    assert len(taken.taken[0].bad) == 1
    assert raw.get(_keys("alpha").queue) in (None, b"")
    counted = _counters(raw, "alpha")
    assert counted["delivered"] == 2
    assert counted["accounted"] == 2 + counted.get("dropped", 0)


def test_frames_signed_for_another_signal_are_never_taken_as_its_payloads(
    raw: RawAccess,
) -> None:
    """A frame signed for another signal, planted in a key, is dropped as unreadable and
    counted so; the key's own frames are taken."""
    gaesignals.configure(store=raw.store, secret_key=SECRET)
    planted = _frame("alpha", "forged", signer="beta")
    raw.set(_keys("alpha").queue, _frame("alpha", "own") + planted)
    taken = _take(raw.store, ["alpha"])
    assert _bodies(taken) == {"alpha": ["own"]}
    assert frames.dropped(taken.taken[0].bad) == 1
    assert _counters(raw, "alpha") == {"accounted": 2, "delivered": 1, "dropped": 1}
    assert raw.get(_keys("alpha").queue) in (None, b"")


def test_a_planted_spread_marker_is_learned_and_kept(raw: RawAccess) -> None:
    """A spread marker at the head of a signal's own key is no payload: the take reports the
    width (the caller takes again, wider), writes the marker back and counts only payloads."""
    settings = get_settings()
    base = _keys("alpha").queue
    home = marker(settings, base, 2)
    raw.set(base, home + _frame("alpha", "after the marker"))
    taken = _take(raw.store, ["alpha"])
    assert _bodies(taken) == {"alpha": ["after the marker"]}
    assert taken.widened == {"alpha": 2}
    assert taken.kept == {base: home}
    assert raw.get(base) == home
    assert _counters(raw, "alpha") == {"accounted": 1, "delivered": 1}
    assert _take(raw.store, ["alpha"]).taken == []


def test_a_payload_appended_during_a_generic_take_is_taken_once(raw: RawAccess) -> None:
    """A payload another sender appends between the take's read and its reset is neither lost
    nor taken twice: the take reads again, and what a lost race counted is taken back."""
    store = raw.store
    appended: list[bytes] = []

    def another_sender(conn: Connection) -> None:
        if not appended:
            appended.append(_frame("alpha", "late"))
            conn.set_many({_keys("alpha").queue: _frame("alpha", "early") + appended[0]})

    gaesignals.configure(store=MeddlingStore(store, before_cas=another_sender))
    raw.set(_keys("alpha").queue, _frame("alpha", "early"))
    taken = _take(get_settings().store, ["alpha"])
    assert _bodies(taken) == {"alpha": ["early", "late"]}
    assert raw.get(_keys("alpha").queue) in (None, b"")
    assert _counters(raw, "alpha") == {"accounted": 2, "delivered": 2}


def _mixed() -> dict[str, bytes]:
    """Contents of every kind at once: payloads, garbage, a forged frame, one not due yet."""
    far = now_ms() + 3_600_000
    return {
        "alpha": _frame("alpha", 1) + b"junk" * 9 + _frame("alpha", 2),
        "beta": _frame("beta", "x", signer="gamma") + _frame("beta", "y"),
        "gamma": _frame("gamma", "soon") + _frame("gamma", "later", due=far),
    }


def test_the_generic_take_counts_as_the_native_one(raw: RawAccess) -> None:
    """The same contents taken natively (where the store has a native take) and over the
    primitives leave the same payloads taken, the same kept and the same counters."""
    gaesignals.configure(store=raw.store, secret_key=SECRET)
    contents = _mixed()
    results = []
    for store in (raw.store, MeddlingStore(raw.store)):
        gaesignals.configure(store=store, secret_key=SECRET)
        for name in NAMES:
            raw.set(_keys(name).queue, contents[name])
            for what in COUNTERS:
                raw.set(_keys(name).counter(what), b"0")
        taken = _take(store)
        kept = {name: raw.get(_keys(name).queue) or b"" for name in NAMES}
        results.append((_bodies(taken), kept, {name: _counters(raw, name) for name in NAMES}))
    native, generic = results
    assert native == generic
    assert native[0] == {"alpha": [1, 2], "beta": ["y"], "gamma": ["soon"]}


def test_a_failed_reset_takes_nothing_and_reports_why(raw: RawAccess) -> None:
    """A reset that fails (the store timed out) takes nothing: the take returns the failure
    for its caller to raise, and every payload stays queued for the next take."""
    store = raw.store

    def store_goes_away(conn: Connection) -> None:
        raise StoreUnavailable("timed out")

    gaesignals.configure(store=MeddlingStore(store, before_cas=store_goes_away))
    raw.set(_keys("alpha").queue, _frame("alpha", "kept"))
    taken = _take(get_settings().store, ["alpha"])
    assert (taken.taken, taken.kept) == ([], {})
    assert isinstance(taken.failure, StoreUnavailable)
    gaesignals.configure(store=store)
    assert _bodies(_take(store, ["alpha"])) == {"alpha": ["kept"]}
