"""The shared frame vectors (tests/frame_vectors.py) read by both frame walkers: the Python
walker, and the Redis take script's header walk run on a real Redis and a real Valkey."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from gaesignals import frames
from gaesignals.stores.redis._scripts import TAKE
from gaesignals.testing import RedisServer

from .frame_vectors import NOW_MS, SIGNAL, VECTORS, Vector

QUEUE = "vectors:queue"


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_the_python_walker_answers_each_vector(vector: Vector) -> None:
    """The walker reads each vector's payloads, bad regions, held frames and spread."""
    read = frames.Walker(vector.value, SIGNAL, vector.keys).read()
    assert len(read.found) == vector.found
    assert [(region.start, region.end) for region in read.bad] == list(vector.bad)
    assert frames.dropped(read.bad) == vector.dropped
    assert len(read.held) == vector.held
    assert read.marker_width == vector.marker_width
    assert len(read.cancels) == vector.cancels


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_the_bodies_mode_answers_only_clean_pickle_values(vector: Vector) -> None:
    """The bodies mode gives the bodies of a vector the walker reads whole, as plain payloads
    (no bad region, hold, metadata or marker), and None for any other."""
    read = frames.Walker(vector.value, SIGNAL, vector.keys).read()
    plain = bool(read.found) and not (read.bad or read.held or read.marker_width or read.cancels)
    plain = plain and not any(frame.meta for frame in read.found)
    bodies = frames.Walker(vector.value, SIGNAL, vector.keys).bodies()
    assert bodies == ([frame.body for frame in read.found] if plain else None)


@pytest.fixture(params=["gaesignals_redis", "gaesignals_valkey"], ids=["redis", "valkey"])
def server(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A client of the session's real redis-server, then of its real valkey-server."""
    running: RedisServer = request.getfixturevalue(request.param)
    client = redis.Redis(*running.address)
    try:
        yield client
    finally:
        client.delete(QUEUE)
        client.close()


def _take(client: redis.Redis, value: bytes) -> tuple[int, int, bytes]:
    """Run the take script over one queue holding ``value``: the frames it counts, where its
    walk stopped, and what it left in the queue."""
    client.set(QUEUE, value)
    # One group: no key read first, one queue, no counters, nothing kept in an emptied queue,
    # no limit, the first queue first.
    out = client.eval(TAKE, 1, QUEUE, "1", str(NOW_MS), "0", "1", "0", "", "-1", "0")
    assert out[0] == value
    stopped = out[2:]
    reach = stopped[1] if stopped else len(value)
    return out[1], reach, client.get(QUEUE) or b""


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_the_take_script_answers_each_vector(server: redis.Redis, vector: Vector) -> None:
    """The take script's header walk counts, stops and keeps as each vector says."""
    taken, reach, left = _take(server, vector.value)
    assert taken == vector.taken
    assert reach == (len(vector.value) if vector.reach is None else vector.reach)
    assert left == vector.kept


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_both_walkers_agree_on_a_clean_value(vector: Vector) -> None:
    """Where the Python walker finds no bad region, the take script walks the whole value and
    takes every frame read or held but those not due (the vectors say so alike)."""
    read = frames.Walker(vector.value, SIGNAL, vector.keys).read()
    if read.bad:
        assert vector.reach is not None or vector.taken >= len(read.found)
        return
    due = [f for f in read.found if not f.meta or frames.not_before(f) <= NOW_MS]
    assert vector.reach in (None, 0) and vector.taken == len(due) + len(read.held)
    assert vector.kept == b"".join(
        vector.value[f.start : f.end] for f in read.found if f not in due
    )
