"""Payloads and raw-store probes shared by the segment suites (``test_segments_*``)."""

from __future__ import annotations

from typing import Any

from gaesignals.keys import signal_keys
from gaesignals.stores import segments

#: The ``raw`` fixture, a :class:`tests.conftest.RawAccess` (not imported: mypy flags conftest).
RawAccess = Any


def queue(name: str) -> str:
    return signal_keys(name, "").queue


def _ns(raw: RawAccess) -> dict[str, str]:
    return {"namespace": ""} if raw.kind == "appengine" else {}


def stored(raw: RawAccess, key: str) -> bytes | None:
    """The bytes the cache holds under ``key``, not joined (the queue key's home server)."""
    value: bytes | None = raw.client.get(key, **_ns(raw))
    return value


def _homes(raw: RawAccess) -> list[Any]:
    # On a cluster a segment lives on its queue's server, not where its own key would hash.
    return list(raw.client.clients.values()) if raw.kind == "memcached-cluster" else [raw.client]


def segment_exists(raw: RawAccess, name: str) -> bool:
    return any(client.get(name, **_ns(raw)) is not None for client in _homes(raw))


def spilled(raw: RawAccess, key: str) -> tuple[bytes, list[tuple[bytes, int]], list[str]]:
    """The raw queue value, its pointers and their segment keys; checks it was segmented."""
    value = stored(raw, key) or b""
    found, _ = segments.pointers(value)
    assert value.startswith(segments.POINTER_MAGIC)
    assert len(value) < segments.SEGMENT_BYTES + 4096
    assert len(found) >= 3
    names = segments.segment_keys(key, found)
    assert all(segment_exists(raw, name) for name in names)
    return value, found, names
