"""Property tests of the send/deliver round trip amid hostile bytes: sent payloads survive garbage
injected into their key, and hostile values in every key a signal owns never make a delivery
raise nor lose a payload.

Each property is registered in ``fuzz_support.PROPERTIES``, for ``scripts/fuzz_long.py``."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

import gaesignals
from gaesignals.keys import (
    signal_keys,
)
from gaesignals.stores.memory import MemoryStore

from .fuzz_support import (
    HOSTILE_NAME,
    HOSTILE_ROLES,
    KEY,
    MAGIC,
    _hostile_key,
    fuzz,
    hostile_chunks,
    hostile_values,
    may_give_up,
)

# -- send and deliver with garbage injected -------------------------------------------------------

json_payloads = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=40),
    st.lists(st.integers(-1000, 1000), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(-1000, 1000), max_size=3),
)


@fuzz(
    200,
    steps=st.lists(st.tuples(json_payloads, st.lists(hostile_chunks, max_size=2)), max_size=6),
    leading=st.lists(hostile_chunks, max_size=2),
    signed=st.booleans(),
    codec=st.sampled_from(["pickle", "json"]),
    append=st.booleans(),
    reliable=st.booleans(),
)
def test_sent_payloads_survive_injected_garbage(
    steps: list[tuple[Any, list[bytes]]],
    leading: list[bytes],
    signed: bool,
    codec: str,
    append: bool,
    reliable: bool,
) -> None:
    """On the memory store, garbage written into a signal's key before and between sends
    never makes deliver raise, and every sent payload is delivered once, in order (without a
    key the garbage is kept free of the frame magic)."""
    store = MemoryStore(append=append)
    gaesignals.configure(store=store, secret_key=KEY if signed else [], codec=codec)
    key = signal_keys("fuzz", "").queue

    def inject(chunks: list[bytes]) -> None:
        junk = b"".join(chunks)
        if not signed:
            junk = junk.replace(MAGIC, b"\x00\x00")
        with store.connection() as conn:
            current = conn.gets_many([key]).get(key)
        store.set_raw(key, (current[0] if current else b"") + junk)

    inject(leading)
    for payload, chunks in steps:
        gaesignals.send("fuzz", payload)
        inject(chunks)
    with store.connection() as conn:
        value = conn.gets_many([key])[key][0]
    sent = [payload for payload, _ in steps]
    got: list[Any] = []
    delivered = gaesignals.deliver({"fuzz": got.append}, reliable=reliable)
    if may_give_up(value):  # too much garbage: the parser may give the rest up, never reorder
        assert got == sent[: len(got)]
    else:
        assert got == sent
    assert delivered == len(got)
    assert gaesignals.deliver({"fuzz": got.append}, reliable=reliable) == 0


@fuzz(
    150,
    planted=st.dictionaries(st.sampled_from(HOSTILE_ROLES), hostile_values),
    garbage=st.binary(max_size=200),
    reliable_first=st.booleans(),
)
def test_hostile_values_in_every_key_never_raise_nor_lose(
    planted: dict[str, bytes], garbage: bytes, reliable_first: bool
) -> None:
    """Whatever bytes sit in a signal's lock, cursor, dead letters and counters, and around
    its frames: pending, stats, health, both delivery modes and the dead-letter calls raise
    nothing, and every payload sent is either handled or still pending, never silently gone."""
    store = MemoryStore()
    gaesignals.configure(store=store, secret_key=KEY, lost_check_interval=0)
    queue = signal_keys(HOSTILE_NAME, "").queue
    store.set_raw(queue, garbage)
    for role, value in planted.items():
        store.set_raw(_hostile_key(role), value)
    sent = [f"payload-{i}" for i in range(3)]
    for payload in sent:
        gaesignals.send(HOSTILE_NAME, payload)
    got: list[Any] = []
    for reliable in (reliable_first, not reliable_first):
        gaesignals.pending(HOSTILE_NAME)
        gaesignals.stats(HOSTILE_NAME)
        assert gaesignals.health([HOSTILE_NAME])["store"]["reachable"]
        gaesignals.deliver({HOSTILE_NAME: got.append}, reliable=reliable)
    gaesignals.dead_letters(HOSTILE_NAME)
    gaesignals.requeue_dead_letters(HOSTILE_NAME)
    left = gaesignals.pending(HOSTILE_NAME)[HOSTILE_NAME].count
    handled = [p for p in got if isinstance(p, str) and p.startswith("payload-")]
    assert set(handled) == set(sent) or left >= len(set(sent) - set(handled))
