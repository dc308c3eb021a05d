"""A million payloads to one undeclared signal, from several processes (issue 28): the signal
holds them all by spreading over more keys as its keys fill, on memcached (given the memory)
and on Redis; no send raises, and a weak delivery delivers each payload once, counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import gaesignals
from gaesignals import SignalMapping, deliver, pending, stats
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.queue import spread
from gaesignals.testing import MemcachedServer, RedisServer

from . import capacity_workers as workers
from .harness import Run

PAYLOADS = 1_000_000
SENDERS = 4
#: Payloads per ``send_multi``: one append of about 14 KB.
BATCH = 200
#: Seconds the children have to send everything.
DEADLINE = 600.0


@pytest.fixture(params=["memcached", "redis"])
def roomy_url(request: pytest.FixtureRequest, gaesignals_redis: RedisServer) -> Iterator[str]:
    """A store with room for the million: a memcached of its own with 1 GB of memory, or the
    session's Redis (no memory limit), flushed."""
    if request.param == "redis":
        gaesignals_redis.flush()
        yield gaesignals_redis.url
        return
    request.getfixturevalue("gaesignals_memcached")  # skips or fails as the plugin decides
    with MemcachedServer(memory_mb=1024) as server:
        yield server.url


def drain(mapping: SignalMapping) -> int:
    """Deliver until a delivery finds nothing; how many were delivered."""
    total = 0
    while delivered := deliver(mapping):
        total += delivered
    return total


@pytest.mark.slow
def test_a_million_payloads_to_one_undeclared_signal_from_several_processes(
    roomy_url: str, tmp_path: Path
) -> None:
    """Four processes send a million payloads to one signal nobody declared: no send raises,
    the signal spreads over as many keys as it needs, and a weak delivery delivers each
    payload once, with the counters agreeing."""
    run = Run(tmp_path, DEADLINE)
    share = PAYLOADS // SENDERS
    senders = [
        run.process(workers.flood, f"sender-{i}", roomy_url, i * share, share, BATCH)
        for i in range(SENDERS)
    ]
    with run.running():
        run.join(senders)  # (each sender's send_multi raising fails it)
    assert sum(run.report(f"sender-{i}")["sent"] for i in range(SENDERS)) == PAYLOADS
    workers.configure(roomy_url)
    seen = bytearray(PAYLOADS)
    mapping = SignalMapping({workers.FLOODED: lambda n: seen.__setitem__(n, seen[n] + 1)})
    assert drain(mapping) == PAYLOADS
    assert seen.count(1) == PAYLOADS  # each once
    base = signal_keys(workers.FLOODED, get_settings().namespace).queue
    width = spread.widths(get_settings())[base]
    print(f"\n[a million payloads] {width} shards, {run.elapsed:.1f} s to send")
    assert width >= PAYLOADS * 60 // (1 << 20)  # a key holds at most a million bytes
    counts = stats(workers.FLOODED)[workers.FLOODED]
    assert (counts["sent"], counts["delivered"], counts["lost"]) == (PAYLOADS, PAYLOADS, 0)
    assert pending(workers.FLOODED)[workers.FLOODED].count == 0
    assert run.logs() == {}
    gaesignals.config.reset()
