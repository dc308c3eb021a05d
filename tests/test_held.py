"""Nothing lost to a misconfigured deploy: frames a process may not read wait for one that can.

A key rotation and a codec switch, in both deploy orders, on every store, weak and reliable,
count every payload: each is delivered exactly once, none dropped, none lost. A cache writer
planting frames with made-up key ids cannot grow what a key keeps past its bound, and what is
held expires by age (the frames' clock seam, no sleeping).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import deliver, frames, health, pending, send, stats
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.queue import held
from gaesignals.queue.progress import Progress, Rescheduled
from gaesignals.timing import now_ms

from .conftest import RawAccess

KEY_A = hashlib.sha256(b"gaesignals held test: A").digest()
KEY_B = hashlib.sha256(b"gaesignals held test: B").digest()
ID_A, ID_B = frames.key_id(KEY_A).hex(), frames.key_id(KEY_B).hex()

#: Each deploy order of a rotation from key A to key B, as the keys the senders and the
#: deliverers hold at each step: the new configuration lists B first (it signs) and keeps A
#: (it verifies what is still pending), then A is retired once nothing signed with it waits.
ROTATIONS = {
    "senders-first": [
        ([KEY_A], [KEY_A]),
        ([KEY_B, KEY_A], [KEY_A]),
        ([KEY_B, KEY_A], [KEY_B, KEY_A]),
    ],
    "deliverers-first": [
        ([KEY_A], [KEY_A]),
        ([KEY_A], [KEY_B, KEY_A]),
        ([KEY_B, KEY_A], [KEY_B, KEY_A]),
    ],
    # A botched one: deliverers hold only B while senders still sign with A; a deliverer
    # holding A too (the fix) later delivers what waited.
    "botched": [
        ([KEY_A], [KEY_A]),
        ([KEY_A], [KEY_B]),
        ([KEY_B], [KEY_B]),
        ([KEY_B], [KEY_B, KEY_A]),
    ],
}


@pytest.fixture(params=[False, True], ids=["weak", "reliable"])
def reliable(request: pytest.FixtureRequest) -> bool:
    """Both delivery modes."""
    value: bool = request.param
    return value


def use(raw: RawAccess, **options: Any) -> None:
    """Configure gaesignals as one process of the deploy would be."""
    gaesignals.configure(store=raw.store, lost_check_interval=0, **options)


class Tally:
    """Every payload delivered, to check each arrives exactly once."""

    def __init__(self) -> None:
        self.got: Counter[Any] = Counter()

    def handler(self, data: Any) -> None:
        self.got[data if not isinstance(data, list) else tuple(data)] += 1

    def deliver(self, name: str, reliable: bool) -> int:
        return deliver({name: self.handler}, reliable=reliable)


def held_ids(name: str) -> dict[str, int]:
    """What ``pending`` says waits of ``name``, by kind."""
    return dict(pending(name)[name].held)


@pytest.mark.parametrize("order", list(ROTATIONS))
def test_a_key_rotation_loses_nothing_in_any_deploy_order(
    raw: RawAccess, reliable: bool, order: str
) -> None:
    """Senders and deliverers change keys step by step in ``order``; two payloads are sent and
    a delivery runs at each step: every payload is delivered exactly once, none is dropped or
    lost, and nothing is held once every process reads every key in use."""
    tally, sent = Tally(), []
    for step, (senders, deliverers) in enumerate(ROTATIONS[order]):
        use(raw, secret_key=senders)
        for i in range(2):
            sent.append(f"{step}-{i}")
            send("audit", sent[-1])
        use(raw, secret_key=deliverers)
        tally.deliver("audit", reliable)
    assert tally.got == Counter(sent)
    assert held_ids("audit") == {}
    counts = stats("audit")["audit"]
    assert (counts["delivered"], counts["dropped"], counts["lost"]) == (len(sent), 0, 0)


def test_health_names_the_key_that_signed_what_waits(
    raw: RawAccess, reliable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """While payloads signed with a key no deliverer holds wait, the log and health() say how
    many, which key id signed them and which this process holds, and ``ok`` is False; once
    they are delivered ``ok`` is True again."""
    use(raw, secret_key=KEY_A)
    for i in range(3):
        send("audit", i)
    use(raw, secret_key=[KEY_B])
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert Tally().deliver("audit", reliable) == 0
    sentence = (
        f"3 payload(s) of 'audit' signed with key id {ID_A} wait; this process holds {ID_B}: "
        "check GAESIGNALS_SECRET_KEY on senders and deliverers"
    )
    assert sentence in caplog.text
    report = health(["audit"])
    assert report["ok"] is False
    assert report["problems"] == [sentence]
    assert report["signals"]["audit"]["held"] == {ID_A: 3}
    assert report["signals"]["audit"]["pending"] == 0
    use(raw, secret_key=[KEY_B, KEY_A])
    assert Tally().deliver("audit", reliable) == 3
    report = health(["audit"])
    assert (report["ok"], report["problems"]) == (True, [])


def test_unsigned_payloads_wait_for_a_deliverer_without_a_key(
    raw: RawAccess, reliable: bool
) -> None:
    """A key set on deliverers before senders: the unsigned payloads sent meanwhile are held
    (never unpickled, health says so), and a deliverer without a key still delivers them."""
    use(raw)
    send("audit", "unsigned")
    use(raw, secret_key=KEY_A)
    tally = Tally()
    assert tally.deliver("audit", reliable) == 0
    assert held_ids("audit") == {"unsigned": 1}
    assert "1 unsigned payload(s) of 'audit' wait" in health(["audit"])["problems"][0]
    use(raw)
    assert tally.deliver("audit", reliable) == 1
    assert tally.got == Counter(["unsigned"])


@pytest.mark.parametrize("signed", [False, True], ids=["no-key", "key"])
@pytest.mark.parametrize("order", ["senders-first", "deliverers-first"])
def test_a_codec_switch_loses_nothing(
    raw: RawAccess, reliable: bool, signed: bool, order: str
) -> None:
    """From pickle to JSON in either deploy order: with a key, verified pickled payloads are
    read by JSON deliverers; without one they wait for a pickle deliverer (one not yet
    switched). Every payload arrives exactly once, none dropped."""
    keys = {"secret_key": KEY_A} if signed else {}
    steps = [("pickle", "pickle"), ("json", "json")]
    steps.insert(1, ("json", "pickle") if order == "senders-first" else ("pickle", "json"))
    tally, sent = Tally(), []
    for step, (senders, deliverers) in enumerate(steps):
        use(raw, codec=senders, **keys)
        sent.append(f"{step}-{senders}")
        send("audit", sent[-1])
        use(raw, codec=deliverers, **keys)
        tally.deliver("audit", reliable)
    waiting = held_ids("audit")
    if not signed and order == "deliverers-first":
        assert waiting == {"pickled": 1}  # the pickled payload the JSON deliverer could not read
        use(raw, codec="pickle")
        tally.deliver("audit", reliable)
    assert tally.got == Counter(sent)
    assert held_ids("audit") == {}
    assert stats("audit")["audit"]["dropped"] == 0


def plant(raw: RawAccess, name: str, count: int, *, sent_at: int | None = None) -> bytes:
    """``count`` frames signed with made-up keys (each a different key id), appended to
    ``name``'s queue as a cache writer could; returns them."""
    key = signal_keys(name, "").queue
    ident = None if sent_at is None else sent_at.to_bytes(4, "big") + bytes(4)
    forged = b"".join(
        frames.encode(pickle.dumps(i), key.encode(), [b"forger %d" % i * 4], ident=ident)
        for i in range(count)
    )
    raw.set(key, (raw.get(key) or b"") + forged)
    return forged


def kept(raw: RawAccess, name: str) -> list[frames.Held]:
    """The frames ``name``'s queue holds for another deliverer, as this process reads it."""
    key = signal_keys(name, "").queue
    value = raw.get(key) or b""
    return frames.parse_queue(value, key.encode(), get_settings().secret_keys).held


def test_planted_foreign_frames_cannot_grow_past_the_bound(
    raw: RawAccess, reliable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer planting frames with made-up key ids, again and again, never makes a queue
    keep more than the bound: the first frames stay, the rest are dropped and counted, and
    the real payloads are delivered."""
    monkeypatch.setattr(held, "MAX_FRAMES", 4)
    use(raw, secret_key=KEY_A)
    tally = Tally()
    for round_ in range(3):
        plant(raw, "audit", 6)
        send("audit", round_)
        assert tally.deliver("audit", reliable) == 1
        assert len(kept(raw, "audit")) == 4
    assert tally.got == Counter([0, 1, 2])
    assert stats("audit")["audit"]["dropped"] == 6 * 3 - 4


def test_planted_foreign_frames_cannot_pass_the_byte_bound(raw: RawAccess, reliable: bool) -> None:
    """Held frames a key keeps take at most half its ``max_value_size``: bulky forged frames
    past that are dropped."""
    use(raw, secret_key=KEY_A)
    key = signal_keys("audit", "").queue.encode()
    limit = held.max_bytes(raw.store.max_value_size)
    bulky = [frames.encode(bytes(limit // 3), key, [b"forger %d" % i * 4]) for i in range(4)]
    raw.set(key.decode(), b"".join(bulky))
    assert Tally().deliver("audit", reliable) == 0
    waiting = kept(raw, "audit")
    assert len(waiting) == 2
    assert sum(h.frame.end - h.frame.start for h in waiting) <= limit
    assert stats("audit")["audit"]["dropped"] == 2


def test_held_frames_expire_by_age(
    raw: RawAccess, reliable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held frame older than the age bound (on the frames' clock) is dropped and counted,
    as is one dated far in the future (forged); younger ones stay."""
    use(raw, secret_key=KEY_B)
    now = int(frames.clock())
    send_clock = now - held.MAX_AGE - 10
    monkeypatch.setattr(frames, "clock", lambda: float(send_clock))
    use(raw, secret_key=KEY_A)
    send("audit", "old")
    monkeypatch.setattr(frames, "clock", lambda: float(now))
    send("audit", "young")
    plant(raw, "audit", 1, sent_at=now + held.MAX_AGE + 10)
    use(raw, secret_key=KEY_B)
    assert Tally().deliver("audit", reliable) == 0
    assert held_ids("audit") == {ID_A: 1}
    assert stats("audit")["audit"]["dropped"] == 2
    use(raw, secret_key=KEY_A)
    tally = Tally()
    assert tally.deliver("audit", reliable) == 1
    assert tally.got == Counter(["young"])


@pytest.mark.parametrize("store_kind", ["memory"])
def test_a_successor_runs_what_its_predecessor_held(raw: RawAccess) -> None:
    """A reliable successor resuming from a cursor left by a deliverer that held a payload
    (signed with a key it lacked) before the resume point does not take that payload as done:
    it stays queued, and the next delivery runs it."""
    use(raw, secret_key=KEY_B)
    send("audit", "signed-with-B")
    use(raw, secret_key=KEY_A)
    send("audit", "done-by-A")
    send("audit", "after")
    keys = signal_keys("audit", "")
    value = raw.get(keys.queue) or b""
    found = frames.parse_queue(value, keys.queue.encode(), [KEY_A, KEY_B]).found
    # The cursor a deliverer holding only A leaves after finishing "done-by-A" and dying.
    done = Progress(
        found[1].end, found[1].ident, None, now_ms(), (), held.reader([KEY_A], "pickle")
    )
    raw.set(keys.cursor, done.encode(keys.cursor, keys.queue.encode(), [KEY_A]))
    use(raw, secret_key=[KEY_A, KEY_B])
    tally = Tally()
    assert tally.deliver("audit", True) == 1
    assert tally.deliver("audit", True) == 1
    assert tally.got == Counter(["signed-with-B", "after"])
    assert raw.get(keys.queue) in (None, b"")


def test_what_waits_is_logged_once_a_minute_per_key(
    raw: RawAccess, reliable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Deliveries that run every request do not repeat the warning about what waits: one per
    queue key a minute (health() says it at any time)."""
    use(raw, secret_key=KEY_A)
    send("audit", "signed with A")
    use(raw, secret_key=KEY_B)
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        for _ in range(3):
            assert Tally().deliver("audit", reliable) == 0
    assert caplog.text.count(f"signed with key id {ID_A} wait") == 1


def test_a_requeue_moves_letters_signed_with_a_key_not_held(raw: RawAccess) -> None:
    """Requeueing dead letters in a process that lacks the key one was signed with moves that
    letter back too, unchanged, and a deliverer holding the key delivers it."""
    use(raw, secret_key=KEY_A)
    keys = signal_keys("audit", "")
    letter = frames.encode(pickle.dumps("dead"), keys.queue.encode(), [KEY_A], attempts=5)
    raw.set(keys.dead, letter)
    use(raw, secret_key=KEY_B)
    assert gaesignals.requeue_dead_letters("audit") == 1
    assert held_ids("audit") == {ID_A: 1}
    use(raw, secret_key=KEY_A)
    tally = Tally()
    assert tally.deliver("audit", False) == 1
    assert tally.got == Counter(["dead"])


class _Marker:
    """Unpickles to ``Path.touch(path)``: proof that a payload was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("store_kind", ["memory"])
def test_a_planted_cursor_cannot_get_a_held_frame_signed(raw: RawAccess, tmp_path: Path) -> None:
    """A cache writer plants an unsigned pickle and a progress cursor naming it as rescheduled:
    reliable delivery never rewrites (re-signs) a frame it holds, so it is never unpickled."""
    use(raw, secret_key=KEY_A)
    keys = signal_keys("audit", "")
    marker = tmp_path / "unpickled"
    planted = frames.encode(pickle.dumps(_Marker(marker)), keys.queue.encode())
    raw.set(keys.queue, planted)
    send("audit", "real")
    value = raw.get(keys.queue) or b""
    real = frames.parse_queue(value, keys.queue.encode(), [KEY_A]).found[0]
    ident = frames.parse_queue(value, keys.queue.encode(), [KEY_A]).held[0].frame.ident
    again = (Rescheduled(ident, 1, 0),)
    cursor = Progress(real.end, real.ident, None, now_ms(), again, held.reader([KEY_A], "pickle"))
    raw.set(keys.cursor, cursor.encode(keys.cursor, keys.queue.encode(), [KEY_A]))
    for _ in range(3):
        Tally().deliver("audit", True)
    assert not marker.exists()
    assert held_ids("audit") == {"unsigned": 1}
