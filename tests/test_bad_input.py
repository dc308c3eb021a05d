"""Bad input gets a clear exception, and nothing already stored is lost because of it."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import (
    InvalidSignalName,
    PayloadTooLarge,
    QueueFull,
    Signal,
    deliver,
    frames,
    send,
    send_multi,
)
from gaesignals.config import get_settings
from gaesignals.keys import MAX_NAME_LENGTH, signal_keys
from gaesignals.stores import MAX_KEY_LENGTH, Store

from .conftest import RawAccess

ODD_NAMES = [
    "with space",
    "new\nline",
    "nul\x00byte",
    "tab\tand\rcr",
    "zażółć gęślą jaźń",
    "日本語のシグナル",
    "emoji 🚀",
    "x" * 300,
    "lone surrogate \ud800",
]


def queue_key(name: str) -> str:
    return signal_keys(name, get_settings().namespace).queue


@pytest.mark.parametrize("name", ["", None, 42, b"bytes", "x" * (MAX_NAME_LENGTH + 1)])
def test_unusable_names_raise_at_once(name: Any) -> None:
    """Empty, non-str and absurdly long names raise InvalidSignalName (a ValueError too)."""
    with pytest.raises(InvalidSignalName):
        Signal(name)
    with pytest.raises(InvalidSignalName):
        send(name, 1)
    with pytest.raises(ValueError):
        deliver({name: print})


def test_odd_names_work_on_every_store(store: Store) -> None:
    """Names with spaces, control characters, non-ASCII or 300 characters send and deliver."""
    got: list[tuple[str, Any]] = []
    for i, name in enumerate(ODD_NAMES):
        send(name, i)
    mapping = [(name, lambda data, name=name: got.append((name, data))) for name in ODD_NAMES]
    assert deliver(mapping) == len(ODD_NAMES)
    assert sorted(got, key=lambda pair: pair[1]) == [(n, i) for i, n in enumerate(ODD_NAMES)]


def test_keys_are_safe_and_distinct() -> None:
    """Every name maps to a memcached-safe key, and no two names share one (hashed names
    can never meet plain ones, nor can two signals' lock, queue and dead-letter keys)."""
    names = [*ODD_NAMES, "plain", "a:b", "q:x", "gs::q:x", "h", "x" * 239, "x" * 240]
    names += [signal_keys(n, "").queue for n in names]  # a name that looks like a key
    keys = [k for n in names for k in vars_of(signal_keys(n, ""))]
    keys += [k for n in names for k in vars_of(signal_keys(n, "tenant-1"))]
    assert len(keys) == len(set(keys))
    for key in keys:
        assert len(key) <= MAX_KEY_LENGTH
        assert all(0x21 <= ord(c) <= 0x7E for c in key), key


def vars_of(keys: Any) -> list[str]:
    return [keys.queue, keys.lock, keys.dead]


def test_oversized_payload_raises_before_writing(store: Store, raw: RawAccess) -> None:
    """A payload that cannot fit in one item raises PayloadTooLarge; pending ones stay intact."""
    send("big", "small one")
    before = raw.get(queue_key("big"))
    with pytest.raises(PayloadTooLarge):
        send("big", b"x" * store.max_value_size)
    assert raw.get(queue_key("big")) == before
    got: list[Any] = []
    assert deliver({"big": got.append}) == 1
    assert got == ["small one"]


def test_full_queue_raises_queue_full(store: Store, raw: RawAccess) -> None:
    """A signal declared with one shard whose pending bytes would pass the item limit raises
    QueueFull and loses nothing: every payload accepted before is still delivered."""
    gaesignals.declare("full", shards=1)
    chunk = b"y" * (store.max_value_size // 4)
    accepted = 0
    with pytest.raises(QueueFull):
        for _ in range(8):
            send("full", chunk)
            accepted += 1
    assert 1 <= accepted < 8
    got: list[Any] = []
    assert deliver({"full": got.append}) == accepted
    assert got == [chunk] * accepted
    send("full", chunk)  # room again after delivery
    assert deliver({"full": got.append}) == 1


def test_payload_errors_name_the_signal_not_its_key(store: Store, raw: RawAccess) -> None:
    """PayloadTooLarge, QueueFull (from send and send_multi) and UnserializablePayload say
    which signal they are about, and never show its internal cache key."""
    gaesignals.declare("big", shards=1)  # full at one key (an undeclared signal spreads)
    chunk = b"y" * (store.max_value_size // 4)
    raised: list[Exception] = []
    for attempt in (
        lambda: send("big", b"x" * store.max_value_size),
        lambda: send("big", lambda: None),
        lambda: [send("big", chunk) for _ in range(8)],
        lambda: send_multi([("big", chunk)] * 8),
        lambda: send_multi([("big", chunk), ("other", 1)]),
    ):
        with pytest.raises(gaesignals.GaeSignalsError) as caught:
            attempt()
        raised.append(caught.value)
    assert [type(error) for error in raised] == [
        PayloadTooLarge,
        gaesignals.UnserializablePayload,
        QueueFull,
        QueueFull,
        QueueFull,
    ]
    for error in raised:
        assert "signal 'big'" in str(error)
        assert queue_key("big") not in str(error) and "gs::" not in str(error)
    for error in raised[2:]:
        assert isinstance(error, QueueFull)
        assert error.signals[0] == "big"
        assert error.keys  # the keys stay available to code that wants them
    # What send_multi left unwritten is named: the other signal, unless it was stored.
    got: list[Any] = []
    deliver({"other": got.append})
    assert ("other" in raised[-1].signals) == (got == [])


@pytest.mark.parametrize(
    ("mapping", "shown"),
    [
        ([("x", 42)], "the handler 42 of signal 'x' is not callable"),
        ({"x": [print, "print"]}, "the handler 'print' of signal 'x' is not callable"),
        ("explode", "expected a signal mapping, got 'explode'"),
        (42, "expected a signal mapping, got 42"),
        (["x"], "expected a ('signal_name', handler) pair, got 'x'"),
    ],
)
def test_a_mapping_of_the_wrong_shape_says_what_one_looks_like(mapping: Any, shown: str) -> None:
    """A handler that is not callable, or something that is not a mapping, raises
    InvalidMapping (a TypeError) naming the culprit and showing the shapes a mapping takes."""
    with pytest.raises(gaesignals.InvalidMapping) as raised:
        deliver(mapping)
    assert isinstance(raised.value, TypeError)
    assert shown in str(raised.value)
    assert "a dict {'signal_name': handler}" in str(raised.value)
    assert "callable" in str(raised.value)
    with pytest.raises(gaesignals.InvalidMapping):
        gaesignals.connect("x", 42)  # type: ignore[arg-type]


def test_unserializable_payload_raises_its_own_error(store: Store, raw: RawAccess) -> None:
    """A payload the codec cannot encode raises UnserializablePayload (a TypeError) and
    writes nothing; with the JSON codec, so does a payload JSON cannot represent."""
    with pytest.raises(gaesignals.UnserializablePayload):
        send("unpicklable", lambda: None)
    gaesignals.configure(store=store, codec="json")
    with pytest.raises(TypeError):
        send("unpicklable", {1, 2})
    assert raw.get(queue_key("unpicklable")) is None


def test_send_multi_checks_every_payload_first(store: Store, raw: RawAccess) -> None:
    """One oversized payload in a batch means nothing in the batch is written."""
    with pytest.raises(PayloadTooLarge):
        send_multi([("ok", 1), ("huge", b"z" * store.max_value_size)])
    assert raw.get(queue_key("ok")) is None


def test_garbage_in_a_key_is_dropped_and_neighbours_delivered(
    store: Store, raw: RawAccess, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage between valid frames is logged and counted out; the frames before and after it
    are delivered, and deliver never raises."""
    key = queue_key("dirty")
    good1 = frames.encode(pickle.dumps("before"), key.encode())
    good2 = frames.encode(pickle.dumps("after"), key.encode())
    raw.set(key, good1 + b"\x00garbage\xff" * 7 + good2[:-3] + good2)
    got: list[Any] = []
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert deliver({"dirty": got.append}) == 2
    assert got == ["before", "after"]
    assert "'dirty'" in caplog.text and "unreadable" in caplog.text


class Gadget:
    """Unpickling this creates a file: proof that foreign code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_pickled_gadget_in_a_key_never_runs(store: Store, raw: RawAccess, tmp_path: Path) -> None:
    """A pickled object written straight into a signal's key (bare, or with the cache client's
    pickle flag) is never unpickled: the marker file it would create does not appear."""
    marker = tmp_path / "pwned"
    got: list[Any] = []
    for write in (raw.set_pickled, lambda k, o: raw.set(k, pickle.dumps(o))):
        write(queue_key("victim"), Gadget(marker))
        send("victim", "legit")
        assert deliver({"victim": got.append}) == 1
        assert deliver({"victim": got.append}, reliable=True) == 0
        assert not marker.exists()
    assert got == ["legit", "legit"]


def test_tampered_frame_is_dropped_with_a_secret_key(
    store: Store, raw: RawAccess, caplog: pytest.LogCaptureFixture
) -> None:
    """With a secret key set, a frame whose body was altered fails its tag and is dropped;
    its neighbours are delivered."""
    gaesignals.configure(store=store, secret_key="k" * 32)
    for data in ("first", "second-SECRET", "third"):
        send("signed", data)
    key = queue_key("signed")
    value = raw.get(key)
    assert value is not None
    at = value.index(b"second-SECRET")
    raw.set(key, value[:at] + b"X" + value[at + 1 :])
    got: list[Any] = []
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert deliver({"signed": got.append}) == 2
    assert got == ["first", "third"]
    assert "signature mismatch" in caplog.text or "CRC mismatch" in caplog.text
    assert "SECRET" not in caplog.text
