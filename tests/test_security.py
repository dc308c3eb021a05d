"""Hostile bytes in the cache: pickles, forged, tampered and copied frames, garbage, key rotation.

The attacker here can write any key of the cache (another service sharing it, a compromised
host). The promises under test: no store adapter ever unpickles a value by itself; with a secret
key set, no frame without a valid tag for its own signal's key is ever deserialized; with the
JSON codec, no pickle is ever loaded; and whatever the bytes, ``deliver`` does not raise and the
valid payloads around the bad bytes still arrive.

Each gadget below creates a marker file under ``tmp_path`` when unpickled, so "never
unpickled" is checked by the marker's absence; ``test_gadgets_are_live`` proves the markers work.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pathlib
import pickle
import random
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest

import gaesignals
from gaesignals import ConfigurationError, deliver, frames, send
from gaesignals.codec import encode_payload
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.stores.memory import MemoryStore

from .conftest import RawAccess

KEY_OLD = hashlib.sha256(b"gaesignals test key: old").digest()
KEY_NEW = hashlib.sha256(b"gaesignals test key: new").digest()
KEY_ATTACKER = hashlib.sha256(b"gaesignals test key: attacker").digest()
TEXT_KEY_OLD = "old-test-key-0123456789abcdefghijklmnop"
TEXT_KEY_NEW = "new-test-key-0123456789abcdefghijklmnop"
SECRET_TEXT = "TOP-SECRET-PAYLOAD-7f3a9c"


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


@pytest.fixture(params=[False, True], ids=["weak", "reliable"])
def reliable(request: pytest.FixtureRequest) -> bool:
    """Both delivery modes: they read and parse the key on different paths."""
    value: bool = request.param
    return value


# -- helpers --------------------------------------------------------------------------------------


def use(raw: RawAccess, **options: Any) -> None:
    """Reconfigure gaesignals on the fixture's store with extra options."""
    gaesignals.configure(store=raw.store, **options)


def queue_key(name: str) -> str:
    return signal_keys(name, get_settings().namespace).queue


def framed(name: str, data: Any) -> bytes:
    """One frame for ``name`` exactly as ``send`` would write it under the current settings."""
    settings = get_settings()
    return encode_payload(name, data, signal_keys(name, settings.namespace), settings)


def collector() -> tuple[list[Any], Callable[[Any], None]]:
    got: list[Any] = []

    def handler(data: Any) -> None:
        got.append(data)
        close = getattr(data, "close", None)  # a file a gadget opened: never leak it
        if callable(close):
            close()

    return got, handler


def recrc(frame: bytes) -> bytes:
    """Reseal a frame for its declared layout, as an attacker who tampers would: the seal
    after the declared body is made the CRC of every byte before it."""
    fields = frames.HEADER.unpack_from(frame)
    flags, meta, length = fields[2], fields[4], fields[5]
    tag = frames.KEY_ID_SIZE + frames.TAG_SIZE if flags & frames.FLAG_SIGNED else 0
    end = frames.HEADER_SIZE + tag + meta + length
    head = frame[:end]
    return head + zlib.crc32(head, frames.SEALED).to_bytes(4, "little") + frame[end + 4 :]


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    return data[:index] + bytes((data[index] ^ (1 << bit),)) + data[index + 1 :]


def run_deliver(name: str, handler: Callable[[Any], None], reliable: bool, **kw: Any) -> int:
    return deliver({name: handler}, reliable=reliable, **kw)


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


# -- tampering and copying ------------------------------------------------------------------------


@pytest.mark.parametrize("fix_crc", [False, True], ids=["crc-left", "crc-fixed"])
@pytest.mark.parametrize("where", ["body", "tag", "flags"])
def test_tampered_frame_is_dropped_and_logged(
    raw: RawAccess, where: str, fix_crc: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed frame with one flipped bit (CRC left stale, or recomputed by the attacker) is
    dropped and logged with the key and reason but not the payload; its neighbours arrive."""
    use(raw, secret_key=KEY_NEW)
    key = queue_key("target")
    frame = framed("target", SECRET_TEXT)
    assert SECRET_TEXT.encode() in frame  # so its absence from the log means something
    body_end = len(frame) - frames.SEAL_SIZE
    index = {"body": body_end - 3, "tag": frames.HEADER_SIZE + 7, "flags": 3}[where]
    bad = flip(frame, index, 1)  # flags bit 1: the JSON flag, covered by tag and CRC
    if fix_crc:
        bad = recrc(bad)
    raw.set(key, framed("target", "before") + bad + framed("target", "after"))
    got, handler = collector()
    with caplog.at_level(logging.DEBUG, logger="gaesignals"):
        assert deliver({"target": handler}) == 2
    assert got == ["before", "after"]
    reason = "signature mismatch" if fix_crc else "CRC mismatch"
    assert reason in caplog.text and key in caplog.text and "'target'" in caplog.text
    assert SECRET_TEXT not in caplog.text
    assert all(SECRET_TEXT not in record.getMessage() for record in caplog.records)


def test_attempts_field_is_unsigned_by_design(raw: RawAccess) -> None:
    """The attempts counter (bytes 4-5) is outside the CRC and the tag, so rewriting it leaves
    a signed frame valid: an attacker can change retry counts, never the payload."""
    use(raw, secret_key=KEY_NEW)
    key = queue_key("target")
    raw.set(key, frames.with_attempts(framed("target", "payload"), 7))
    found, bad = frames.parse(raw.get(key) or b"", key.encode(), [KEY_NEW])
    assert [f.attempts for f in found] == [7] and bad == []
    got, handler = collector()
    assert deliver({"target": handler}) == 1
    assert got == ["payload"]


def test_frame_copied_to_another_signal_is_rejected(
    raw: RawAccess, reliable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """With a key, a frame copied from one signal's key to another's (queue or dead letters)
    fails verification there and is dropped; the original still arrives."""
    use(raw, secret_key=KEY_NEW)
    send("alice", "for-alice")
    value = raw.get(queue_key("alice"))
    assert value
    raw.set(queue_key("bob"), value)
    raw.set(signal_keys("bob", "").dead, value)
    got, handler = collector()
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert run_deliver("bob", handler, reliable) == 0
        assert gaesignals.dead_letters("bob") == []
    assert "signature mismatch" in caplog.text and queue_key("bob") in caplog.text
    assert run_deliver("alice", handler, reliable) == 1
    assert got == ["for-alice"]


def test_frame_copied_to_another_namespace_is_rejected(
    raw: RawAccess, caplog: pytest.LogCaptureFixture
) -> None:
    """The namespace is part of the signed key: a frame copied from tenant_a's key to the same
    signal in tenant_b is dropped, even with the same secret key."""
    use(raw, secret_key=KEY_NEW, namespace="tenant_a")
    send("sig", "for-a")
    value = raw.get(queue_key("sig"))
    assert value
    use(raw, secret_key=KEY_NEW, namespace="tenant_b")
    raw.set(queue_key("sig"), value)
    got, handler = collector()
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert deliver({"sig": handler}) == 0
    assert "signature mismatch" in caplog.text
    use(raw, secret_key=KEY_NEW, namespace="tenant_a")
    assert deliver({"sig": handler}) == 1
    assert got == ["for-a"]


@pytest.mark.parametrize("store_kind", ["memory"])
def test_signing_does_not_stop_replay(raw: RawAccess) -> None:
    """Documents a limit of the threat model: a signed frame copied back into its own key is
    valid and delivered again, so handlers with side effects must be idempotent."""
    use(raw, secret_key=KEY_NEW)
    send("target", "once")
    captured = raw.get(queue_key("target"))
    got, handler = collector()
    assert deliver({"target": handler}) == 1
    raw.set(queue_key("target"), captured or b"")
    assert deliver({"target": handler}) == 1
    assert got == ["once", "once"]


@pytest.mark.parametrize(
    "cursor",
    [b"", b"garbage", b":", b"0:", b"99999999999999999999:zz", b"\xff" * 300, b"54:" + b"0" * 16],
    ids=["empty", "word", "colon", "zero", "huge", "binary", "wrong-ident"],
)
def test_planted_progress_cursor_is_harmless(raw: RawAccess, cursor: bytes) -> None:
    """Bytes planted in a signal's reliable-delivery progress cursor never make delivery raise
    or skip payloads: a cursor only counts if it names a verified frame of the current value."""
    use(raw, secret_key=KEY_NEW)
    keys = signal_keys("target", "")
    cursor_key = getattr(keys, "cursor", None)
    if cursor_key is None:
        pytest.skip("this version has no progress cursor")
    for i in range(3):
        send("target", i)
    raw.set(cursor_key, cursor)
    got, handler = collector()
    assert deliver({"target": handler}, reliable=True) == 3
    assert got == [0, 1, 2]


# -- key rotation and configuration ---------------------------------------------------------------


def test_rotation_accepts_frames_signed_with_the_old_key(raw: RawAccess, reliable: bool) -> None:
    """Frames signed with the old key are accepted when the keys are [new, old]."""
    use(raw, secret_key=KEY_OLD)
    send("rot", "from-old")
    use(raw, secret_key=[KEY_NEW, KEY_OLD])
    send("rot", "from-new")
    got, handler = collector()
    assert run_deliver("rot", handler, reliable) == 2
    assert got == ["from-old", "from-new"]


def test_rotation_signs_with_the_first_key(raw: RawAccess) -> None:
    """With keys [new, old], new frames are signed with new: they verify with [new] alone and
    fail with [old] alone."""
    use(raw, secret_key=[KEY_NEW, KEY_OLD])
    send("rot", "x")
    key = queue_key("rot")
    value = raw.get(key) or b""
    found, bad = frames.parse(value, key.encode(), [KEY_NEW])
    assert len(found) == 1 and bad == []
    found, bad = frames.parse(value, key.encode(), [KEY_OLD])
    new_id = frames.key_id(KEY_NEW).hex()
    assert found == [] and [b.reason for b in bad] == [
        f"signed with key id {new_id}, not held here"
    ]


def test_retired_key_frames_are_held_for_a_deliverer_holding_it(
    raw: RawAccess, reliable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the old key is no longer listed, frames it signed are held (logged with both key
    ids), never dropped, and a deliverer that lists it again delivers them."""
    use(raw, secret_key=KEY_OLD)
    send("rot", "from-old")
    use(raw, secret_key=[KEY_NEW])
    send("rot", "from-new")
    got, handler = collector()
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert run_deliver("rot", handler, reliable) == 1
    assert got == ["from-new"]
    old_id, new_id = frames.key_id(KEY_OLD).hex(), frames.key_id(KEY_NEW).hex()
    assert f"signed with key id {old_id} wait; this process holds {new_id}" in caplog.text
    use(raw, secret_key=[KEY_NEW, KEY_OLD])
    assert run_deliver("rot", handler, reliable) == 1
    assert got == ["from-new", "from-old"]


@pytest.mark.parametrize(
    "secret_key",
    [
        "k" * 31,
        b"k" * 31,
        "  " + "k" * 31 + "\n",  # str keys are stripped before they are measured
        "\u00e9" * 15,  # 30 bytes of UTF-8
        [KEY_NEW, b"short"],
        ["k" * 40, ""],
    ],
    ids=["str31", "bytes31", "str31-padded", "utf8-30", "list-one-short", "list-one-empty"],
)
def test_short_secret_key_is_refused(secret_key: Any) -> None:
    """Any key shorter than 32 bytes, alone or in a rotation list, raises ConfigurationError,
    whose message does not echo the key."""
    with pytest.raises(ConfigurationError) as caught:
        gaesignals.configure(store=MemoryStore(), secret_key=secret_key)
    assert "kkkk" not in str(caught.value) and "short" not in str(caught.value)


def test_32_byte_keys_are_accepted() -> None:
    """Exactly 32 bytes is enough, measured in bytes (16 two-byte characters count as 32)."""
    settings = gaesignals.configure(store=MemoryStore(), secret_key=["\u00e9" * 16, b"k" * 32])
    assert settings.secret_keys == (("\u00e9" * 16).encode(), b"k" * 32)


@pytest.mark.parametrize(
    "wrap",
    [bytearray, memoryview, lambda key: [bytearray(key)], lambda key: (memoryview(key),)],
    ids=["bytearray", "memoryview", "list-of-bytearray", "tuple-of-memoryview"],
)
def test_bytes_like_secret_key_is_not_turned_into_zero_keys(wrap: Callable[[bytes], Any]) -> None:
    """A bytes-like key (alone or in a list) is used as it is or refused; it never becomes
    the all-zero keys that iterating its bytes as ints would make."""
    key = TEXT_KEY_NEW.encode()  # every byte >= 32, so no accidental "too short" refusal
    try:
        settings = gaesignals.configure(store=MemoryStore(), secret_key=wrap(key))
    except (TypeError, ConfigurationError):
        return
    assert settings.secret_keys == (key,)


def test_secret_key_env_list_is_honoured(
    raw: RawAccess, monkeypatch: pytest.MonkeyPatch, reliable: bool
) -> None:
    """GAESIGNALS_SECRET_KEY is a comma-separated rotation list (blanks and spaces ignored):
    the first key signs, every listed key verifies."""
    from gaesignals import config

    for name in ("GAESIGNALS_STORE", "GAE_ENV", "GAE_APPLICATION"):
        monkeypatch.delenv(name, raising=False)
    use(raw, secret_key=TEXT_KEY_OLD)
    send("env", "from-old")
    monkeypatch.setenv("GAESIGNALS_SECRET_KEY", f" {TEXT_KEY_NEW} , {TEXT_KEY_OLD} ,")
    config.reset()
    assert get_settings().secret_keys == (TEXT_KEY_NEW.encode(), TEXT_KEY_OLD.encode())
    gaesignals.configure(store=raw.store)  # secret_key left out: read from the environment
    send("env", "from-new")
    key = queue_key("env")
    found, _ = frames.parse(raw.get(key) or b"", key.encode(), [TEXT_KEY_NEW.encode()])
    assert len(found) == 1  # only the frame sent after the switch is signed with the new key
    got, handler = collector()
    assert run_deliver("env", handler, reliable) == 2
    assert got == ["from-old", "from-new"]


def test_short_secret_key_in_env_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short key anywhere in GAESIGNALS_SECRET_KEY fails configuration, not silently."""
    from gaesignals import config

    monkeypatch.setenv("GAESIGNALS_SECRET_KEY", f"{TEXT_KEY_NEW},too-short")
    monkeypatch.setenv("GAESIGNALS_STORE", "memory://")
    config.reset()
    with pytest.raises(ConfigurationError):
        get_settings()


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


# -- garbage --------------------------------------------------------------------------------------


def fake_header(flags: int, length: int, crc: int = 0) -> bytes:
    """A frame header with the given flags, declared length and CRC, zeros elsewhere."""
    header = bytearray(frames.HEADER_SIZE)
    struct.pack_into(">2sBBHHII", header, 0, frames.MAGIC, frames.VERSION, flags, 0, 0, length, crc)
    return bytes(header)


def _garbage(kind: str) -> bytes:
    """Bytes that are not a valid frame for the current settings."""
    frame = framed("target", "garbage-source")
    if kind == "random":
        return random.Random(1234).randbytes(257)
    if kind == "truncated-frame":
        return frame[: len(frame) // 2]
    if kind == "truncated-header":
        return frame[:9]
    if kind == "huge-length":
        return fake_header(0, 0xFFFFFFFF) + b"tail"
    if kind == "signed-past-end":
        return fake_header(frames.FLAG_SIGNED, 900_000) + b"x" * 40
    if kind == "wrong-version":
        return recrc(frame[:2] + b"\x04" + frame[3:])
    if kind == "unknown-flags":
        return recrc(frame[:3] + bytes((frame[3] | 0x80,)) + frame[4:])
    if kind == "magic-storm":
        return frames.MAGIC * 100 + b"\xa7"
    if kind == "bad-empty-frame":
        return fake_header(0, 0, crc=12345)
    if kind == "pickle":
        return pickle.dumps({"not": "framed"})
    raise AssertionError(kind)


GARBAGE_KINDS = [
    "random",
    "truncated-frame",
    "truncated-header",
    "huge-length",
    "signed-past-end",
    "wrong-version",
    "unknown-flags",
    "magic-storm",
    "bad-empty-frame",
    "pickle",
]


@pytest.mark.parametrize("kind", GARBAGE_KINDS)
def test_garbage_between_frames_is_skipped(
    raw: RawAccess, kind: str, reliable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """With a key set, garbage before, between and after valid frames never makes deliver
    raise, is logged, and every valid frame around it is delivered."""
    use(raw, secret_key=KEY_NEW)
    junk = _garbage(kind)
    key = queue_key("target")
    value = junk + framed("target", 0) + junk + framed("target", 1) + junk
    raw.set(key, value)
    send("target", 2)
    got, handler = collector()
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert run_deliver("target", handler, reliable) == 3
    assert got == [0, 1, 2]
    assert "dropped" in caplog.text and key in caplog.text
    assert not raw.get(key)


def test_every_kind_of_garbage_at_once_without_a_key(raw: RawAccess, reliable: bool) -> None:
    """Without a key, every kind of garbage interleaved with unsigned frames is skipped and
    every frame is delivered in order."""
    key = queue_key("target")
    parts = []
    for i, kind in enumerate(GARBAGE_KINDS):
        parts += [_garbage(kind), framed("target", i)]
    raw.set(key, b"".join(parts) + _garbage("truncated-frame"))
    got, handler = collector()
    assert run_deliver("target", handler, reliable) == len(GARBAGE_KINDS)
    assert got == list(range(len(GARBAGE_KINDS)))
