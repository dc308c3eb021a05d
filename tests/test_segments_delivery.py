"""Long queues kept as segments (:mod:`gaesignals.stores.segments`): what delivery sees is one
value in send order, on every store, whatever the memcached and App Engine stores did with it.

The segmenting stores are checked behind the library's back too: the raw queue value stays
small and points to segments that exist while pending and are gone once delivered; a vanished,
forged or copied pointer costs only its own payloads."""

from __future__ import annotations

from typing import Any

import pytest

from gaesignals import QueueFull, configure, declare, deliver, pending, send
from gaesignals.stores import segments

from .segments_support import RawAccess, _homes, _ns, queue, segment_exists, spilled, stored

SEGMENTING = ["appengine", "memcached", "memcached-cluster"]
segmenting = pytest.mark.parametrize("store_kind", SEGMENTING)
N = 3000


def payload(i: int, pad: int = 80) -> dict[str, str]:
    """Payload ``i``; every payload of one ``pad`` frames to the same number of bytes."""
    return {"n": f"{i:05d}", "pad": "x" * pad}


def send_all(name: str, count: int = N) -> None:
    for i in range(count):
        send(name, payload(i))


def collect(got: list[int]) -> Any:
    return lambda data: got.append(int(data["n"]))


def delete_segment(raw: RawAccess, name: str) -> None:
    for client in _homes(raw):
        client.delete(name, **_ns(raw))


def test_a_long_queue_is_delivered_whole_and_in_order(raw: RawAccess) -> None:
    """3,000 payloads (about 400 KB) to one signal come back all, in send order; where the
    store segments them, its raw value stays under a segment and the segments go with it."""
    send_all("long")
    names: list[str] = []
    if raw.kind in SEGMENTING:
        _, _, names = spilled(raw, queue("long"))
    got: list[int] = []
    assert deliver({"long": collect(got)}) == N
    assert got == list(range(N))
    assert pending("long")["long"].count == 0
    if raw.kind in SEGMENTING:
        assert not stored(raw, queue("long"))
        assert not any(segment_exists(raw, name) for name in names)


def test_reliable_delivery_stops_and_resumes_inside_a_segment(raw: RawAccess) -> None:
    """A reliable handler failing at payload 1,500 (mid-way through a middle segment) stops
    there; the next delivery retries it first and finishes; nothing is left behind."""
    send_all("rel")
    names: list[str] = []
    if raw.kind in SEGMENTING:
        _, _, names = spilled(raw, queue("rel"))
    got: list[int] = []

    def failing(data: dict[str, str]) -> None:
        if int(data["n"]) == 1500:
            raise RuntimeError("handler down")
        got.append(int(data["n"]))

    assert deliver({"rel": failing}, reliable=True, retry_delay=0) == 1500
    assert got == list(range(1500))
    assert pending("rel")["rel"].count == N - 1500
    if raw.kind in SEGMENTING:
        assert not any(segment_exists(raw, name) for name in names)  # rewritten, not leaked
    got.clear()
    assert deliver({"rel": collect(got)}, reliable=True, retry_delay=0) == N - 1500
    assert got == list(range(1500, N))
    assert pending("rel")["rel"].count == 0
    assert deliver({"rel": collect(got)}, reliable=True, retry_delay=0) == 0
    if raw.kind in SEGMENTING:
        assert not stored(raw, queue("rel"))
        assert not any(segment_exists(raw, name) for name in names)


def fill(name: str, pad: int) -> int:
    """Send payloads of ``name`` until the store refuses one; how many it took."""
    count = 0
    while True:
        try:
            send(name, payload(count, pad))
        except QueueFull:
            return count
        count += 1
        assert count < 10_000, "never refused"


def test_queue_full_counts_every_segment(raw: RawAccess) -> None:
    """A queue is full at max_value_size logical bytes (its segments' and its frames'), as it
    was before segments, not when its small raw value would be; what was taken is delivered,
    and once delivered the queue takes as many again."""
    limit = raw.store.max_value_size
    declare("full", shards=1)  # one key: an undeclared signal would spread
    send("full", payload(0, 900))
    frame = len(raw.get(queue("full")) or b"")
    got: list[int] = []
    assert deliver({"full": collect(got)}) == 1
    for _ in range(2):
        taken = fill("full", 900)
        assert taken == limit // frame
        if raw.kind in SEGMENTING:
            spilled(raw, queue("full"))
        with pytest.raises(QueueFull):
            send("full", payload(taken, 900))
        got.clear()
        assert deliver({"full": collect(got)}) == taken
        assert got == list(range(taken))


@pytest.mark.parametrize("store_kind", ["memcached"])
def test_an_overshot_queue_still_dead_letters_its_failing_head(
    raw: RawAccess, request: pytest.FixtureRequest
) -> None:
    """A process that has not seen a full queue's size appends once without checking: the
    queue then holds more than max_value_size, more than memcached's 1 MiB item limit even.
    Reliable delivery must still rewrite it (bumping its failing head's attempts, then
    dead-lettering it); it once failed there on the item limit, retrying the head forever."""
    from gaesignals.config import get_settings, store_from_url
    from gaesignals.pytest_plugin import store_url
    from gaesignals.registration import declare

    url = store_url("memcached", request)
    declare("over", shards=1)
    taken = fill("over", 900)
    configure(store=store_from_url(url))  # a fresh process: no sizes seen
    send("over", {"n": "99999", "pad": "y" * 600_000})
    assert pending("over")["over"].bytes > 1024 * 1024
    declare("over", reliable=True, retry_delay=0, max_attempts=2)
    calls: list[int] = []

    def failing_head(data: dict[str, str]) -> None:
        calls.append(int(data["n"]))
        if data["n"] == "00000":
            raise RuntimeError("the head fails")

    for _ in range(3):
        deliver({"over": failing_head}, reliable=True, retry_delay=0)
    assert calls.count(0) == 2
    assert calls[2:] == [*range(1, taken), 99999]
    assert pending("over")["over"].count == 0
    get_settings().store.close()  # type: ignore[attr-defined]


@segmenting
def test_a_vanished_segment_costs_only_its_own_payloads(raw: RawAccess) -> None:
    """An evicted segment (deleted behind the library's back) loses its payloads only: every
    other one is delivered, in order, and nothing raises."""
    send_all("evicted")
    value, found, names = spilled(raw, queue("evicted"))
    frame = (sum(length for _, length in found) + len(value) - 14 * len(found)) // N
    assert all(length % frame == 0 for _, length in found)
    first, gone = found[0][1] // frame, found[1][1] // frame
    delete_segment(raw, names[1])
    got: list[int] = []
    assert deliver({"evicted": collect(got)}) == N - gone
    assert got == [i for i in range(N) if not first <= i < first + gone]
    assert not stored(raw, queue("evicted"))
    assert not any(segment_exists(raw, name) for name in names)


@segmenting
def test_a_pointer_to_no_segment_is_skipped(raw: RawAccess) -> None:
    """A queue value holding a pointer to a segment that never existed, then a valid frame:
    the frame is delivered and nothing raises."""
    send("tampered", payload(7))
    frame = stored(raw, queue("tampered"))
    assert frame is not None and frame[:2] != segments.POINTER_MAGIC
    raw.set(queue("tampered"), segments.pointer(segments.new_id(), 5000) + frame)
    got: list[int] = []
    assert deliver({"tampered": collect(got)}) == 1
    assert got == [7]
    assert not stored(raw, queue("tampered"))


@segmenting
@pytest.mark.parametrize("reliable", [False, True])
def test_thousands_of_huge_pointers_are_harmless(raw: RawAccess, reliable: bool) -> None:
    """Tampered pointers by the thousand, each claiming 4 GiB: a read asks for at most
    MAX_POINTERS segments, the size they claim fits no flag field yet breaks nothing, and the
    valid frames after them are delivered, in both modes (the reliable one rewriting the
    queue after a failing payload)."""
    send("forged", payload(1))
    send("forged", payload(2))
    frames_ = stored(raw, queue("forged"))
    assert frames_ is not None
    forged = b"".join(segments.pointer(segments.new_id(), 0xFFFFFFFF) for _ in range(3000))
    raw.set(queue("forged"), forged + frames_)
    got: list[int] = []

    def first_fails(data: dict[str, str]) -> None:
        if reliable and data["n"] == "00001" and 1 not in got:
            got.append(1)
            raise RuntimeError("once")
        got.append(int(data["n"]))

    deliver({"forged": first_fails}, reliable=reliable, retry_delay=0)
    if reliable:
        deliver({"forged": first_fails}, reliable=True, retry_delay=0)
    assert got == ([1, 1, 2] if reliable else [1, 2])
    assert pending("forged")["forged"].count == 0


@segmenting
def test_pointers_claiming_more_than_flags_hold_do_not_stop_moves(raw: RawAccess) -> None:
    """Two tampered pointers claiming 4 GiB each: memcached records what segments hold in 32
    flag bits, so the claim is clamped there, and later sends still move frames to segments."""
    forged = b"".join(segments.pointer(segments.new_id(), 0xFFFFFFFF) for _ in range(2))
    raw.set(queue("claims"), forged)
    send_all("claims", 1500)
    value = stored(raw, queue("claims"))
    assert value is not None and len(segments.pointers(value)[0]) > 2
    got: list[int] = []
    assert deliver({"claims": collect(got)}) == 1500
    assert got == list(range(1500))


@pytest.mark.parametrize("store_kind", ["appengine", "memcached"])
def test_a_read_that_races_a_delivery_is_made_again(
    raw: RawAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader reads the queue key, then its segments; a delivery in between takes the queue
    and deletes the segments. The reader must not return the key's last frames alone (lost
    detection would count the rest as lost): it sees the segments gone and the key changed,
    and reads again."""
    send_all("raced", 1500)
    spilled(raw, queue("raced"))
    delivered: list[int] = []
    raced: list[bool] = []

    def with_a_delivery_first(real: Any) -> Any:
        def planned(*args: Any) -> Any:
            if not raced:
                raced.append(True)
                deliver({"raced": collect(delivered)})
            return real(*args)

        return planned

    for step in ("plan", "segment_keys"):  # where a store learns which segments to read
        monkeypatch.setattr(segments, step, with_a_delivery_first(getattr(segments, step)))
    with raw.store.connection() as conn:
        item = conn.gets_many([queue("raced")]).get(queue("raced"))
    assert raced and delivered == list(range(1500))
    assert item is not None and item[0] == b""


@segmenting
def test_a_pointer_copied_to_another_queue_names_nothing_there(raw: RawAccess) -> None:
    """Signal A's pointers copied into signal B's queue neither deliver A's payloads as B's
    nor delete A's segments: A is still delivered whole afterwards."""
    send_all("a")
    value, found, names = spilled(raw, queue("a"))
    send("b", payload(9))
    b_frame = stored(raw, queue("b")) or b""
    raw.set(queue("b"), value[: 14 * len(found)] + b_frame)
    got_b: list[int] = []
    assert deliver({"b": collect(got_b)}) == 1
    assert got_b == [9]
    assert all(segment_exists(raw, name) for name in names)
    got_a: list[int] = []
    assert deliver({"a": collect(got_a)}) == N
    assert got_a == list(range(N))
