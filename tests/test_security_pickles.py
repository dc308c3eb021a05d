"""Hostile pickles in the cache: no store adapter ever unpickles a value by itself; with a secret
key set, a pickle without a valid tag for its own signal's key is never deserialized; with the
JSON codec, no pickle is ever loaded.

The attacker here can write any key of the cache (another service sharing it, a compromised
host). Each gadget below creates a marker file under ``tmp_path`` when unpickled, so "never
unpickled" is checked by the marker's absence; ``test_gadgets_are_live`` proves the markers work."""

from __future__ import annotations

import io
import json
import logging
import pathlib
import pickle
from typing import Any

import pytest

import gaesignals
from gaesignals import deliver, frames, send

from .conftest import RawAccess
from .security_support import KEY_ATTACKER, KEY_NEW, collector, queue_key, run_deliver, use

# -- gadgets --------------------------------------------------------------------------------------


class OpenGadget:
    """Unpickles to ``open(marker, "w")``: creates the marker file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


class TouchGadget:
    """Unpickles to ``Path.touch(marker)``: creates the marker file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


Gadget = OpenGadget | TouchGadget


@pytest.fixture(params=["open", "touch"])
def gadget(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Gadget:
    """A pickle gadget whose marker file does not exist yet."""
    marker = tmp_path / f"pwned-by-{request.param}"
    return OpenGadget(marker) if request.param == "open" else TouchGadget(marker)


# -- pickles planted in a signal's key ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["open", "touch"])
def test_gadgets_are_live(kind: str, tmp_path: pathlib.Path) -> None:
    """Positive control: unpickling each gadget does create its marker, so its absence means
    the gadget was never unpickled."""
    marker = tmp_path / "marker"
    gadget = OpenGadget(marker) if kind == "open" else TouchGadget(marker)
    loaded = pickle.loads(pickle.dumps(gadget))
    if hasattr(loaded, "close"):
        loaded.close()
    assert marker.exists()


@pytest.mark.parametrize("signed", [False, True], ids=["no-key", "key"])
@pytest.mark.parametrize("planting", ["client-pickle", "raw-bytes"])
def test_planted_pickle_is_never_unpickled(
    raw: RawAccess, gadget: Gadget, planting: str, signed: bool, reliable: bool
) -> None:
    """A pickle written straight into a signal's key (the cache client's pickle flag, or bare
    pickle bytes) is dropped unexecuted, with or without a key, and later payloads arrive."""
    if signed:
        use(raw, secret_key=KEY_NEW)
    key = queue_key("target")
    got, handler = collector()

    def plant() -> None:
        if planting == "client-pickle":
            raw.set_pickled(key, gadget)
        else:
            raw.set(key, pickle.dumps(gadget))

    plant()
    send("target", "after-1")
    assert run_deliver("target", handler, reliable) == 1
    plant()
    assert run_deliver("target", handler, reliable) == 0
    send("target", "after-2")
    assert run_deliver("target", handler, reliable) == 1
    assert got == ["after-1", "after-2"]
    assert not gadget.marker.exists()


@pytest.mark.parametrize("forgery", ["unsigned", "attacker-key", "other-signal"])
def test_framed_pickle_without_valid_tag_is_never_unpickled(
    raw: RawAccess,
    gadget: Gadget,
    forgery: str,
    reliable: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a secret key set, a well-formed frame holding a pickle gadget that is unsigned,
    signed with another key, or signed for another signal is never unpickled: the first two
    stay queued for a deliverer holding their key (held), the last is tampered and dropped."""
    use(raw, secret_key=KEY_NEW)
    key = queue_key("target")
    body = pickle.dumps(gadget)
    if forgery == "unsigned":
        frame = frames.encode(body, key.encode())
        reason = "unsigned payload(s) of 'target' wait"
    elif forgery == "attacker-key":
        frame = frames.encode(body, key.encode(), [KEY_ATTACKER])
        reason = f"signed with key id {frames.key_id(KEY_ATTACKER).hex()} wait"
    else:
        frame = frames.encode(body, queue_key("other").encode(), [KEY_NEW])
        reason = "signature mismatch"
    raw.set(key, frame)
    send("target", "after")
    got, handler = collector()
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert run_deliver("target", handler, reliable) == 1
    assert got == ["after"]
    assert not gadget.marker.exists()
    assert reason in caplog.text
    assert (raw.get(key) or b"").count(frame) == (0 if forgery == "other-signal" else 1)


@pytest.mark.parametrize("store_kind", ["memory"])
def test_without_secret_key_a_framed_pickle_is_trusted(
    raw: RawAccess, tmp_path: pathlib.Path
) -> None:
    """Without a key a well-formed pickle frame IS unpickled: the documented trust model, and
    why a cache others can write to needs a secret key (or the JSON codec)."""
    gadget = TouchGadget(tmp_path / "trusted")
    key = queue_key("target")
    raw.set(key, frames.encode(pickle.dumps(gadget), key.encode()))
    got, handler = collector()
    assert deliver({"target": handler}) == 1
    assert gadget.marker.exists()
    assert got == [None]


# -- the adapters never unpickle ------------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["appengine"])
def test_appengine_pickled_value_reads_as_foreign_bytes(
    raw: RawAccess, gadget: Gadget, caplog: pytest.LogCaptureFixture
) -> None:
    """A value the App Engine SDK stored with its pickle flag (or as str/int) reads back as
    FOREIGN_VALUE through the adapter, the RefusingUnpickler runs nothing, and delivery drops it."""
    from google.appengine.api import memcache

    from gaesignals.stores.appengine import FOREIGN_VALUE, RefusingUnpickler

    key = queue_key("target")
    raw.set_pickled(key, gadget)
    with raw.store.connection() as conn:
        value, _ = conn.gets_many([key])[key]
    assert value == FOREIGN_VALUE
    assert not gadget.marker.exists()

    refused = RefusingUnpickler(io.BytesIO(pickle.dumps(gadget))).load()
    assert not isinstance(refused, str | bytes | OpenGadget | TouchGadget)
    assert not gadget.marker.exists()

    # An int (what offset_multi makes of a counter) reads as its digits: no frame, no code.
    for other, reads_as in (("text", FOREIGN_VALUE), (42, b"42"), (True, FOREIGN_VALUE)):
        memcache.Client().set("gs::q:typed", other, namespace="")
        with raw.store.connection() as conn:
            assert conn.gets_many(["gs::q:typed"])["gs::q:typed"][0] == reads_as

    got, handler = collector()
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert deliver({"target": handler}) == 0
    assert "no frame magic" in caplog.text
    send("target", "after")
    assert deliver({"target": handler}) == 1
    assert got == ["after"]
    assert not gadget.marker.exists()


@pytest.mark.parametrize("store_kind", ["memcached", "memcached-cluster"])
def test_memcached_pickle_flag_reads_as_raw_bytes(raw: RawAccess, gadget: Gadget) -> None:
    """A value stored with pymemcache's pickle flag (flags=1) reads back as its raw pickle
    bytes through the adapter, never unpickled, and delivery drops it."""
    key = queue_key("target")
    raw.set_pickled(key, gadget)
    with raw.store.connection() as conn:
        value, _ = conn.gets_many([key])[key]
    assert value == pickle.dumps(gadget)
    send("target", "after")
    got, handler = collector()
    assert deliver({"target": handler}) == 1
    assert got == ["after"]
    assert not gadget.marker.exists()


def test_memcached_client_serde_is_never_used(gaesignals_memcached: Any, gadget: Gadget) -> None:
    """A MemcachedStore built on a pymemcache client with pickle_serde still reads a pickled
    item as raw bytes: the adapter never hands values to the client's serde."""
    from pymemcache.client.base import Client
    from pymemcache.serde import pickle_serde

    from gaesignals.stores.memcached import MemcachedStore

    gaesignals_memcached.flush()
    writer = Client(gaesignals_memcached.address, serde=pickle_serde, default_noreply=False)
    store = MemcachedStore(Client(gaesignals_memcached.address, serde=pickle_serde))
    try:
        gaesignals.configure(store=store)
        key = queue_key("target")
        assert writer.set(key, gadget)
        stored, flags = pickle_serde.serialize(key, gadget)
        assert flags == 1
        with store.connection() as conn:
            assert conn.gets_many([key])[key][0] == stored
        send("target", "after")
        got, handler = collector()
        assert deliver({"target": handler}) == 1
        assert got == ["after"]
        assert not gadget.marker.exists()
    finally:
        writer.close()
        store.close()


# -- the JSON codec -------------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True], ids=["no-key", "key"])
def test_json_codec_round_trips(raw: RawAccess, signed: bool, reliable: bool) -> None:
    """With codec json, payloads are stored as JSON frames and come back as JSON would give
    them (tuples as lists); a value JSON cannot encode is refused before anything is written."""
    use(raw, codec="json", secret_key=KEY_NEW if signed else None)
    payloads: list[Any] = [
        {"a": [1, 2.5, None, True], "b": {"c": "d"}},
        "text \u00e9 \u2603 \U0001f600",
        42,
        None,
        [],
    ]
    for payload in payloads:
        send("j", payload)
    send("j", (1, 2))
    key = queue_key("j")
    value = raw.get(key) or b""
    found, bad = frames.parse(value, key.encode(), [KEY_NEW] if signed else [])
    assert bad == []
    assert all(f.flags & frames.FLAG_JSON for f in found)
    assert [json.loads(f.body) for f in found] == [*payloads, [1, 2]]
    with pytest.raises(TypeError):
        send("j", object())
    assert raw.get(key) == value
    got, handler = collector()
    assert run_deliver("j", handler, reliable) == len(payloads) + 1
    assert got == [*payloads, [1, 2]]


def test_json_codec_never_unpickles_without_a_key(
    raw: RawAccess,
    gadget: Gadget,
    reliable: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With codec json and no key, a well-formed pickle frame is never unpickled: it stays
    queued (held, logged) for a deliverer whose codec is pickle, and the JSON payload after it
    still arrives."""
    use(raw, codec="json")
    key = queue_key("target")
    planted = frames.encode(pickle.dumps(gadget), key.encode())
    raw.set(key, planted)
    send("target", {"ok": 1})
    got, handler = collector()
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert run_deliver("target", handler, reliable) == 1
    assert got == [{"ok": 1}]
    assert not gadget.marker.exists()
    assert "1 pickled payload(s) of 'target' wait" in caplog.text
    assert raw.get(key) == planted


def test_json_codec_reads_pickles_a_key_verified(raw: RawAccess, reliable: bool) -> None:
    """With codec json and a key, a pickled frame signed with that key was written by one of
    this deployment's senders: it is delivered (a codec switch loses nothing)."""
    use(raw, secret_key=KEY_NEW)
    send("target", ("pickled", 1))
    use(raw, codec="json", secret_key=KEY_NEW)
    send("target", {"ok": 1})
    got, handler = collector()
    assert run_deliver("target", handler, reliable) == 2
    assert got == [("pickled", 1), {"ok": 1}]


@pytest.mark.parametrize("store_kind", ["memory"])
def test_dead_letters_survives_an_undecodable_letter(raw: RawAccess, gadget: Gadget) -> None:
    """Listing dead letters skips (or reports) a letter that cannot be decoded instead of
    raising, and never unpickles it under the JSON codec."""
    use(raw, codec="json")
    key = queue_key("target")
    raw.set(key, frames.encode(pickle.dumps(gadget), key.encode()))
    send("target", "fine")
    assert deliver({"target": lambda data: None}, reliable=True, max_attempts=1) == 1
    try:
        letters = gaesignals.dead_letters("target")
    finally:
        assert not gadget.marker.exists()
    assert letters == []
