"""Helpers for testing code that sends and delivers signals.

``MemcachedServer``, ``RedisServer`` and ``ValkeyServer`` run a real memcached, redis-server or
valkey-server on a free loopback port for the length of a test or a session
(``RedisClusterServers``, ``ValkeyClusterServers``: a cluster);
``CountingStore`` wraps any store and counts the calls (round trips) made through it;
``DownStore`` is a store that cannot be reached. ``captured_signals()`` records what was sent;
``eager_signals(mapping)`` delivers at send time. Both work by putting a wrapper in front of the
configured store, so they see sends from any code path and any thread. The pytest fixtures are
in :mod:`gaesignals.pytest_plugin`.

The modules: :mod:`~gaesignals.testing.servers` (the server runners),
:mod:`~gaesignals.testing.doubles` (the stores that stand in for one) and
:mod:`~gaesignals.testing.capture` (seeing and short-circuiting sends).
"""

from __future__ import annotations

from .capture import CapturedSignals, Sent, captured_signals, eager_signals
from .doubles import CountingStore, DownStore
from .servers import (
    MemcachedServer,
    RedisClusterServers,
    RedisServer,
    ValkeyClusterServers,
    ValkeyServer,
    free_port,
)

__all__ = [
    "CapturedSignals",
    "CountingStore",
    "DownStore",
    "MemcachedServer",
    "RedisClusterServers",
    "RedisServer",
    "Sent",
    "ValkeyClusterServers",
    "ValkeyServer",
    "captured_signals",
    "eager_signals",
    "free_port",
]
