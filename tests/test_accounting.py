"""Honest loss accounting: ``dropped`` counts payloads, and dropped payloads are never ``lost``.

One test per way a payload fails to arrive, on every store: a signature from a key this process
does not hold (kept for one that does: neither dropped nor lost), CRC garbage, a truncated value
(dropped as unreadable: counted, logged with their reason, never reported as vanished) and a real
eviction (reported as lost, exactly).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

import gaesignals
from gaesignals import deliver, frames, send, stats
from gaesignals.keys import signal_keys

from .conftest import RawAccess

KEY_A = b"a" * 32
KEY_B = b"b" * 32


def _queue(name: str) -> str:
    return signal_keys(name, "").queue


def _frames_of(raw: RawAccess, name: str) -> list[bytes]:
    """The frames a signal's queue holds, each whole."""
    value = raw.get(_queue(name)) or b""
    found, bad = frames.parse(value, _queue(name).encode())
    assert not bad
    return [value[f.start : f.end] for f in found]


def _delivered(name: str, reliable: bool) -> list[Any]:
    got: list[Any] = []
    deliver({name: got.append}, reliable=reliable)
    return got


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_payloads_signed_with_a_key_not_held_wait_neither_dropped_nor_lost(
    raw: RawAccess, reliable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Five payloads signed with key A, delivered with only key B: none dropped, none lost,
    all five still pending and named in the log by A's key id; a deliverer holding A then
    delivers every one."""
    gaesignals.configure(store=raw.store, secret_key=KEY_A, lost_check_interval=0)
    for i in range(5):
        send("rotated", i)
    gaesignals.configure(store=raw.store, secret_key=KEY_B, lost_check_interval=0)
    send("rotated", "fresh")
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert _delivered("rotated", reliable) == ["fresh"]
        assert _delivered("rotated", reliable) == []
    counts = stats("rotated")["rotated"]
    assert (counts["dropped"], counts["lost"], counts["delivered"]) == (0, 0, 1)
    text = caplog.text
    assert f"5 payload(s) of 'rotated' signed with key id {frames.key_id(KEY_A).hex()}" in text
    assert "dropped" not in text and "vanished" not in text
    gaesignals.configure(store=raw.store, secret_key=[KEY_B, KEY_A], lost_check_interval=0)
    assert sorted(_delivered("rotated", reliable)) == [0, 1, 2, 3, 4]
    counts = stats("rotated")["rotated"]
    assert (counts["dropped"], counts["lost"], counts["delivered"]) == (0, 0, 6)


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_frames_that_fail_their_crc_are_dropped_not_lost(raw: RawAccess, reliable: bool) -> None:
    """Three frames with a flipped byte each (apart from one another): three dropped, the good
    ones delivered, nothing lost."""
    gaesignals.configure(store=raw.store, lost_check_interval=0)
    for i in range(6):
        send("garbled", i)
    whole = _frames_of(raw, "garbled")
    damaged = [
        frame[:-6] + bytes([frame[-6] ^ 0xFF]) + frame[-5:] if i % 2 else frame
        for i, frame in enumerate(whole)
    ]
    raw.set(_queue("garbled"), b"".join(damaged))
    assert _delivered("garbled", reliable) == [0, 2, 4]
    counts = stats("garbled")["garbled"]
    assert (counts["dropped"], counts["lost"]) == (3, 0)


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_a_truncated_value_drops_its_last_payload_not_loses_it(
    raw: RawAccess, reliable: bool
) -> None:
    """A value cut inside its last frame: that payload is dropped (counted once), the others
    delivered, nothing lost."""
    gaesignals.configure(store=raw.store, lost_check_interval=0)
    for i in range(3):
        send("cut", i)
    value = b"".join(_frames_of(raw, "cut"))
    raw.set(_queue("cut"), value[:-7])
    assert _delivered("cut", reliable) == [0, 1]
    counts = stats("cut")["cut"]
    assert (counts["dropped"], counts["lost"]) == (1, 0)


def test_an_evicted_queue_is_still_reported_lost_exactly(
    raw: RawAccess, caplog: pytest.LogCaptureFixture
) -> None:
    """Four payloads whose queue the cache evicted are lost, exactly four, and said so."""
    gaesignals.configure(store=raw.store, lost_check_interval=0)
    send("evicted", "before")
    assert _delivered("evicted", False) == ["before"]
    for i in range(4):
        send("evicted", i)
    with raw.store.connection() as conn:
        conn.delete_many([_queue("evicted")])
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert _delivered("evicted", False) == []
    counts = stats("evicted")["evicted"]
    assert (counts["lost"], counts["dropped"]) == (4, 0)
    assert "4 payload(s) of signal 'evicted' vanished" in caplog.text


def test_magic_bytes_inside_a_dropped_frame_are_not_counted_again() -> None:
    """A bad region's payloads are counted by walking the headers it holds, so frame magic
    that happens to sit in a tag or a body does not count as one more payload."""
    key = b"gs::q:{magic}"
    inside = [frames.encode(frames.MAGIC * 40, b"gs::q:other", [KEY_A]) for _ in range(3)]
    found, bad = frames.parse(b"".join(inside), key, [KEY_A])
    assert found == [] and len(bad) == 1
    assert frames.dropped(bad) == 3
