"""What the example's signal handlers did, kept in the signals' own store.

The record lives next to the pending payloads (memory, App Engine memcache or memcached), so
every gunicorn worker, or every App Engine instance, shows the same page. Each list is one JSON
value updated with gets + cas, the same primitive the library sends with, so concurrent
workers never lose each other's entries.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

from gaesignals import frames
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys

PREFIX = "gaesignals-example"
#: How many entries each list keeps, newest first.
LIMIT = 30
ATTEMPTS = 32

Entry = dict[str, Any]


def _key(name: str) -> str:
    return f"{PREFIX}:{get_settings().namespace}:{name}"


def _load(value: bytes) -> list[Entry]:
    """Entries from a stored value; anything unreadable counts as empty (it is only a demo)."""
    try:
        entries = json.loads(value)
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def _update(name: str, change: Callable[[list[Entry]], list[Entry]]) -> None:
    key = _key(name)
    store = get_settings().store
    with store.connection() as conn:
        for attempt in range(ATTEMPTS):
            item = conn.gets_many([key]).get(key)
            if item is None:
                if conn.add_many({key: json.dumps(change([])).encode()})[key]:
                    return
            else:
                value = json.dumps(change(_load(item[0]))).encode()
                if conn.cas_many({key: (value, item[1])})[key]:
                    return
            time.sleep(random.uniform(0, 0.001 * min(2**attempt, 64)))
    raise RuntimeError(f"could not update the record {name!r}: it kept changing")


def push(name: str, **fields: Any) -> Entry:
    """Add an entry (stamped with the time and the worker's pid) to the front of a list."""
    entry: Entry = {"at": time.time(), "pid": os.getpid(), **fields}
    _update(name, lambda entries: [entry, *entries][:LIMIT])
    return entry


def read(name: str) -> list[Entry]:
    """The entries of a list, newest first."""
    key = _key(name)
    with get_settings().store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    return [] if item is None else _load(item[0])


def pending(signal_name: str) -> int:
    """How many payloads of a signal wait for delivery (valid frames in its key)."""
    settings = get_settings()
    key = signal_keys(signal_name, settings.namespace).queue
    with settings.store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    if item is None:
        return 0
    return len(frames.parse(item[0], key.encode(), settings.secret_keys)[0])
