"""Records beside the queues (:mod:`gaesignals.queue.records`), on every store: kept, fetched
and forgotten whole, whatever bytes they hold."""

from __future__ import annotations

import pytest

from gaesignals import StoreUnavailable
from gaesignals.queue import records
from gaesignals.stores import Store
from gaesignals.testing import DownStore

KEY = "gs::s:{record}"


def test_a_kept_record_is_fetched_whole(store: Store) -> None:
    """A record reads back as written, every byte value included, until it is replaced."""
    value = bytes(range(256)) + b"\r\nEND\r\n"
    assert records.keep(store, KEY, value, 60)
    assert records.fetch(store, KEY) == value
    assert records.keep(store, KEY, b"again", 0)
    assert records.fetch(store, KEY) == b"again"


def test_a_forgotten_or_never_kept_record_is_none(store: Store) -> None:
    """Fetching a record never kept, or forgotten, finds None; forgetting twice is fine."""
    assert records.fetch(store, KEY) is None
    records.keep(store, KEY, b"1", 60)
    records.forget(store, KEY)
    records.forget(store, KEY)
    assert records.fetch(store, KEY) is None


def test_an_empty_record_is_a_record(store: Store) -> None:
    """An empty record exists: it fetches as empty bytes, not as None."""
    assert records.keep(store, KEY, b"", 60)
    assert records.fetch(store, KEY) == b""


def test_records_on_a_store_that_is_down_raise() -> None:
    """Every record call on a store that cannot be reached raises StoreUnavailable."""
    down = DownStore()
    for call in (
        lambda: records.keep(down, KEY, b"1", 60),
        lambda: records.fetch(down, KEY),
        lambda: records.forget(down, KEY),
    ):
        with pytest.raises(StoreUnavailable):
            call()
