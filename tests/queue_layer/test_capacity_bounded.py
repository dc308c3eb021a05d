"""A signal spread past the shards a sweep reads in full, delivered by bounded deliveries
(``deliver(limit=N)``), on every store: each payload once, and every rung's first shard keeps
its marker (a bounded native take reads those shards under the signal's one quota)."""

from __future__ import annotations

from gaesignals import deliver, frames, pending
from gaesignals.config import get_settings
from gaesignals.keys import shard_queues
from gaesignals.queue import spread
from gaesignals.stores import Store

from ..conftest import RawAccess
from .test_capacity import fill, home, learned, small


def test_bounded_deliveries_of_a_wide_signal_deliver_each_payload_once_and_keep_its_markers(
    store: Store, raw: RawAccess
) -> None:
    """Bounded weak deliveries drain a signal wider than a sweep's full read, each taking at
    most its limit, every payload once; shard 0 and each rung's first shard then still hold
    the marker of the signal's width, each rung's first shard one of its rung's."""
    small(store)
    fill("wide", 600)
    width = learned("wide")
    assert width > spread.SWEPT
    got: list[int] = []
    for _ in range(200):  # bounded: 600 payloads at 25 a delivery take 24 or more
        count = deliver({"wide": lambda data: got.append(data["id"])}, limit=25)
        assert count <= 25
        if not count and not pending("wide")["wide"].count:
            break
    assert sorted(got) == list(range(600))
    signer, keys = home("wide").encode(), get_settings().secret_keys
    anchors = spread.anchors(width)
    marked = [
        frames.parse_queue(raw.get(key) or b"", signer, keys).marker_width
        for key in shard_queues(home("wide"), (0, *anchors))
    ]
    assert marked[0] == width
    # Each rung's first shard shows at least the width that rung reached.
    assert all(seen >= 2 * anchor for seen, anchor in zip(marked[1:], anchors, strict=True))
