"""No target: the memory a pending payload takes.

Framing overhead: the bytes a send adds to the signal's value minus ``len(pickle.dumps(x))``,
read back from memcached, unsigned and signed. Server memory: memcached's ``bytes`` stat
(item headers + keys + values) grown by 10,000 payloads pending in one signal, per payload,
next to 10,000 pickles stored one per key with ``set`` (the one-item-per-task layout).
"""

from __future__ import annotations

import pickle
from typing import Any

from common import (
    PAYLOAD,
    PICKLE_PROTOCOL,
    SECRET,
    Memcached,
    Row,
    arguments,
    emit,
    prepare,
    print_table,
    quiet_library,
    raw_client,
)

import gaesignals
from gaesignals.keys import signal_keys

PAYLOADS: list[tuple[str, Any]] = [
    ("None", None),
    ("small dict (the usual payload)", PAYLOAD),
    ("1 KB str", "x" * 1000),
]
COUNT = 10_000


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    pinning = prepare()
    quiet_library()
    bench = "memory/memcached"
    rows: list[Row] = []
    with Memcached() as server:
        raw = raw_client(server.port)
        for signed in (False, True):
            gaesignals.configure(store=server.url, secret_key=SECRET if signed else None)
            for label, payload in PAYLOADS:
                name = f"bench_mem_{len(rows)}"
                gaesignals.send(name, payload)
                framed = raw.get(signal_keys(name, "").queue) or b""
                pickled = len(pickle.dumps(payload, protocol=PICKLE_PROTOCOL))
                rows.append(
                    Row(bench, f"framing overhead, {label}, {'signed' if signed else 'unsigned'}",
                        f"{len(framed) - pickled} bytes",
                        f"{pickled} bytes pickled, {len(framed)} framed")
                )  # fmt: skip
        # No flush between the two: flushed items still count in "bytes" until reclaimed.
        gaesignals.configure(store=server.url)
        body = pickle.dumps(PAYLOAD, protocol=PICKLE_PROTOCOL)
        before = int(server.stats()["bytes"])
        for start in range(0, COUNT, 500):
            raw.set_many({f"bench_item_{i}": body for i in range(start, start + 500)})
        middle = int(server.stats()["bytes"])
        for start in range(0, COUNT, 500):
            gaesignals.send_multi([("bench_mem_many", PAYLOAD)] * min(500, COUNT - start))
        pending = int(server.stats()["bytes"]) - middle
        items = middle - before
        rows.append(
            Row(bench, f"memcached bytes per pending payload ({COUNT:,} in one signal)",
                f"{pending / COUNT:.1f} bytes", f"{items / COUNT:.1f} bytes one item per payload",
                f"{pending / items:.2f}x")
        )  # fmt: skip
    notes = [pinning, "no target; memcached's 'bytes' stat, slab rounding not included"]
    print_table("memory per pending payload (no target)", rows, notes)
    emit(args, rows)


if __name__ == "__main__":
    main()
