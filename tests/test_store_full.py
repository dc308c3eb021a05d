"""A memcached out of memory (run with ``-M``, it evicts nothing) refuses sends with
``QueueFull``, never ``Contention``, whether a signal's key can no longer grow or a new key
finds no room; every payload it took is still delivered, and sends work again after."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import gaesignals
from gaesignals import QueueFull, deliver, send
from gaesignals.exceptions import StoreFull
from gaesignals.testing import MemcachedServer

SECRET_KEY = "gaesignals-store-full-tests-secret-key-0123456789"


def full_memcached(own_memcached: Callable[..., MemcachedServer]) -> None:
    """Configure a memcached of 2 MB that evicts nothing."""
    server = own_memcached(memory_mb=2, extra_args=["-M"])
    gaesignals.configure(store=server.url, secret_key=SECRET_KEY)


def test_a_signal_whose_key_the_cache_will_not_grow_raises_queue_full(
    own_memcached: Callable[..., MemcachedServer],
) -> None:
    """Sends to one signal until memcached has no memory to grow its key raise
    ``QueueFull``; what was taken is delivered, in order, and the signal takes sends again."""
    full_memcached(own_memcached)
    taken = 0
    with pytest.raises(QueueFull) as raised:
        for index in range(100_000):
            send("grows", {"id": index, "pad": "x" * 100})
            taken += 1
    assert raised.value.signals == ("grows",) and "out of memory" in str(raised.value)
    got: list[int] = []
    assert deliver({"grows": lambda data: got.append(data["id"])}) == taken
    assert got == list(range(taken))
    send("grows", {"id": -1, "pad": ""})
    assert deliver({"grows": lambda data: got.append(data["id"])}) == 1


def test_a_new_key_the_cache_has_no_memory_for_raises_store_full(
    own_memcached: Callable[..., MemcachedServer],
) -> None:
    """Sends to ever new signals until memcached has no memory for one more key raise
    ``StoreFull`` (a ``QueueFull``) for that signal alone; every other was stored."""
    full_memcached(own_memcached)
    names: list[str] = []
    with pytest.raises(StoreFull) as raised:
        for index in range(100_000):
            send(f"new-{index}", "x" * 1000)
            names.append(f"new-{index}")
    assert raised.value.signals == (f"new-{len(names)}",)
    assert deliver({name: lambda data: None for name in names}) == len(names)
