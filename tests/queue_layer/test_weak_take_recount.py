"""A generic weak take whose resets keep losing to appends that add no payload (a late
cancellation) counts each payload once: a round whose counts exactly offset the previous lost
round's take-backs sends no counters, yet its own lost resets are taken back too."""

from __future__ import annotations

import pytest

import gaesignals
from gaesignals import deliver, frames, send, stats
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.stores import Connection

from ..conftest import RawAccess
from .support import MeddlingStore


@pytest.mark.parametrize("store_kind", ["memory", "memory-cas", "memcached"])
def test_resets_lost_to_late_cancellations_count_each_payload_once(raw: RawAccess) -> None:
    """Two resets in a row lose to a cancellation of a payload long gone (the same payloads
    are read again each round); the third wins: the payload is delivered and counted once."""
    settings = get_settings()
    queue = signal_keys("s", settings.namespace).queue
    late = frames.cancel_frame(bytes(8), queue.encode(), settings.secret_keys)
    meddled = []

    def append_a_late_cancellation(conn: Connection) -> None:
        if len(meddled) < 2:
            meddled.append(True)
            value = conn.gets_many([queue])[queue].value
            assert conn.set_many({queue: value + late})[queue]  # as an append would

    gaesignals.configure(store=MeddlingStore(raw.store, before_cas=append_a_late_cancellation))
    send("s", "once")
    got: list[object] = []
    assert deliver({"s": got.append}) == 1
    assert got == ["once"] and len(meddled) == 2
    counts = stats("s")["s"]
    assert (counts["sent"], counts["delivered"], counts["cancelled"]) == (1, 1, 0)
